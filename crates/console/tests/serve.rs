//! The console router on its own: what each URL answers, with which headers.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let app: Router = testbed_console::router();
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn index_and_deep_links_serve_the_page() {
    for path in [
        "/",
        "/agents",
        "/agents/0b7c",
        "/runs/r-1/steps/build",
        "/login",
    ] {
        let (s, h, body) = get(path, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(
            h[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert!(h.contains_key(header::ETAG));
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self' 'sha256-"));
        let text = String::from_utf8(body).unwrap();
        let base = format!("/console/{}", testbed_console::version());
        assert!(text.contains(&format!("{base}/app.js")), "{text}");
        assert!(!text.contains('%'), "placeholders left in {text}");
    }
}

#[tokio::test]
async fn api_space_is_never_the_console() {
    for path in [
        "/api",
        "/api/agents",
        "/v2.1/slaves/detail",
        "/ws/tasks/x/log",
        "/healthz",
        "/agentsx",
        "/nope",
    ] {
        let (s, _, _) = get(path, &[]).await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "{path} must fall through to the API"
        );
    }
}

#[tokio::test]
async fn assets_are_typed_compressed_and_cached() {
    let v = testbed_console::version();
    let (s, h, body) = get(
        &format!("/console/{v}/app.js"),
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    assert_eq!(
        h[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(h[header::VARY], "Accept-Encoding");
    let (_, plain_h, plain) = get(&format!("/console/{v}/app.js"), &[]).await;
    assert!(!plain_h.contains_key(header::CONTENT_ENCODING));
    assert_eq!(gunzip(&body), plain);

    let (_, h, _) = get(&format!("/console/{v}/style.css"), &[]).await;
    assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");

    // Revalidation: the ETag answers 304 without a body.
    let etag = h[header::ETAG].to_str().unwrap().to_string();
    let (s, _, body) = get(
        &format!("/console/{v}/style.css"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    // Another build's URL still works but is not pinned in caches.
    let (s, h, _) = get("/console/000000000000/style.css", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");

    let (s, h, _) = get(&format!("/console/{v}/nope.js"), &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn vendored_libraries_carry_their_licences() {
    let v = testbed_console::version();
    for lic in [
        "LICENSE-preact",
        "LICENSE-htm",
        "LICENSE-uplot",
        "VENDORED.md",
    ] {
        let (s, _, body) = get(&format!("/console/{v}/vendor/{lic}"), &[]).await;
        assert_eq!(s, StatusCode::OK, "{lic}");
        assert!(body.len() > 500, "{lic}");
    }
}

#[test]
fn first_page_load_is_under_200_kb_compressed() {
    let n = testbed_console::first_load_bytes();
    println!("first page load: {n} bytes compressed");
    assert!(n < 200 * 1024, "{n} bytes");
}
