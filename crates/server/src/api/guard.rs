//! Request and response guards that hold for every route: names in paths
//! are checked before any handler can turn them into store keys, and every
//! error leaves as `{"error": …}` even when it was produced by a layer or an
//! extractor that speaks plain text.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// Longest request path accepted.
pub const MAX_PATH: usize = 2048;

/// Refuses a path whose decoded segments could reach another store key or
/// file: an encoded `/` (`victim%2Flock` would address `/groups/victim/lock`),
/// `\`, `.` and `..`, NUL and other control characters, or invalid UTF-8.
pub async fn check_path(req: Request, next: Next) -> Response {
    match path_problem(req.uri().path()) {
        Some(err) => err.into_response(),
        None => next.run(req).await,
    }
}

fn path_problem(path: &str) -> Option<ApiError> {
    if path.len() > MAX_PATH {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("request path longer than {MAX_PATH} bytes"),
        ));
    }
    for (i, raw) in path.split('/').enumerate().skip(1) {
        let decoded = match percent_decode_str(raw).decode_utf8() {
            Ok(d) => d,
            Err(_) => {
                return Some(ApiError::bad_request(format!(
                    "path segment {i} is not valid UTF-8 once decoded"
                )))
            }
        };
        let bad_char = decoded
            .chars()
            .find(|c| *c == '/' || *c == '\\' || c.is_control());
        if let Some(c) = bad_char {
            return Some(ApiError::bad_request(format!(
                "path segment {i} ({raw:?}) contains {c:?}, which no name or id may contain"
            )));
        }
        if decoded == "." || decoded == ".." {
            return Some(ApiError::bad_request(format!(
                "path segment {i} may not be `{decoded}`"
            )));
        }
    }
    None
}

/// Largest plain-text error body carried over into `{"error"}`.
const MAX_TEXT_ERROR: usize = 4096;

/// Rewrites error responses that are not JSON (axum's own rejections: body
/// too large, not a WebSocket upgrade, bad path parameters…) into the API's
/// `{"error": "…"}` shape, keeping their status.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = match axum::body::to_bytes(body, MAX_TEXT_ERROR).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let body = serde_json::json!({ "error": text }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::path_problem;

    #[test]
    fn names_cannot_reach_other_keys() {
        assert!(path_problem("/api/groups/victim%2Flock").is_some());
        assert!(path_problem("/api/groups/victim%2flock").is_some());
        assert!(path_problem("/api/testcases/a%5Cb").is_some());
        assert!(path_problem("/api/testcases/%2E%2E").is_some());
        assert!(path_problem("/api/testcases/a%00b").is_some());
        assert!(path_problem("/api/testcases/%FF").is_some());
        assert!(path_problem(&format!("/api/testcases/{}", "a".repeat(3000))).is_some());
    }

    #[test]
    fn ordinary_paths_pass() {
        assert!(path_problem("/api/groups/lab-1").is_none());
        assert!(path_problem("/ws/performance/exec_1/").is_none());
        assert!(path_problem("/api/testcases/my%20case").is_none());
        assert!(path_problem("/").is_none());
    }
}
