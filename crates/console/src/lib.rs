//! The web console: static assets embedded in the binary at compile time
//! (no Node.js, no build step) and the axum [`router`] that serves them.
//!
//! * `/` and the console's own deep links (`/agents/…`, `/runs/…`, see
//!   [`PAGES`]) answer `index.html`, so a shared URL opens the right page;
//!   the History-API router in `app.js` takes it from there. The page list is
//!   explicit, so the console can never shadow `/api`, `/v2.1`, `/ws` or
//!   `/healthz` (axum refuses overlapping routes when the router is built).
//! * Assets live under `/console/{version}/…`, where `version` is a hash of
//!   every embedded file: a new build gets new URLs, so assets are cached for
//!   a year (`immutable`) while `index.html` is revalidated (`no-cache` + ETag)
//!   on every load.
//! * Each file is gzipped once, when first served, and sent compressed to
//!   clients that accept gzip.
//!
//! The console talks to the server only through the public HTTP API.

use std::collections::HashMap;
use std::io::Write;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;

/// Console pages: each serves `index.html` at `/{page}` and `/{page}/…`.
pub const PAGES: &[&str] = &[
    "login",
    "agents",
    "groups",
    "runs",
    "plans",
    "tasks",
    "performance",
    "reports",
    "results",
];

/// Prefixes the console never answers (the API's own space).
pub const RESERVED: &[&str] = &["/api", "/v2.1", "/ws", "/healthz"];

/// The embedded files: path under `/console/{version}/`, bytes.
const FILES: &[(&str, &[u8])] = &[
    ("app.js", include_bytes!("../assets/app.js")),
    ("style.css", include_bytes!("../assets/style.css")),
    (
        "vendor/preact.module.js",
        include_bytes!("../assets/vendor/preact.module.js"),
    ),
    (
        "vendor/hooks.module.js",
        include_bytes!("../assets/vendor/hooks.module.js"),
    ),
    (
        "vendor/htm.module.js",
        include_bytes!("../assets/vendor/htm.module.js"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        include_bytes!("../assets/vendor/uPlot.min.css"),
    ),
    (
        "vendor/LICENSE-preact",
        include_bytes!("../assets/vendor/LICENSE-preact"),
    ),
    (
        "vendor/LICENSE-htm",
        include_bytes!("../assets/vendor/LICENSE-htm"),
    ),
    (
        "vendor/LICENSE-uplot",
        include_bytes!("../assets/vendor/LICENSE-uplot"),
    ),
    (
        "vendor/VENDORED.md",
        include_bytes!("../assets/vendor/VENDORED.md"),
    ),
];

const INDEX_TEMPLATE: &str = include_str!("../assets/index.html");

/// Cache lifetime of versioned assets.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One servable file.
struct Asset {
    body: &'static [u8],
    /// Present when compressing saved bytes.
    gzip: Option<Vec<u8>>,
    etag: HeaderValue,
    content_type: &'static str,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let etag = format!("\"{}\"", hex(&digest.as_ref()[..12]));
        let gzip = gzip(body).filter(|z| z.len() < body.len());
        Asset {
            body,
            gzip,
            // A quoted hex string is always a valid header value.
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
            content_type,
        }
    }
}

struct Bundle {
    version: String,
    index: Asset,
    /// The Content-Security-Policy of `index.html` (it allows exactly the
    /// inline import map by its hash).
    csp: HeaderValue,
    files: HashMap<&'static str, Asset>,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(build);

fn build() -> Bundle {
    let mut all = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, body) in FILES {
        all.update(name.as_bytes());
        all.update(&(body.len() as u64).to_le_bytes());
        all.update(body);
    }
    all.update(INDEX_TEMPLATE.as_bytes());
    let version = hex(&all.finish().as_ref()[..6]);
    let base = format!("/console/{version}");
    let import_map = format!(
        r#"{{"imports":{{"preact":"{base}/vendor/preact.module.js","preact/hooks":"{base}/vendor/hooks.module.js","htm":"{base}/vendor/htm.module.js"}}}}"#
    );
    let map_hash = base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        import_map.as_bytes(),
    ));
    let index = INDEX_TEMPLATE
        .replace("%IMPORTMAP%", &import_map)
        .replace("%BASE%", &base);
    // Leaked once per process: the page lives as long as the server.
    let index: &'static [u8] = Box::leak(index.into_bytes().into_boxed_slice());
    let csp = format!(
        "default-src 'self'; script-src 'self' 'sha256-{map_hash}'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         frame-src 'self'; frame-ancestors 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'"
    );
    Bundle {
        version,
        index: Asset::new(index, "text/html; charset=utf-8"),
        csp: HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'self'")),
        files: FILES
            .iter()
            .map(|(name, body)| (*name, Asset::new(body, content_type(name))))
            .collect(),
    }
}

/// The version segment of asset URLs in this build.
pub fn version() -> &'static str {
    &BUNDLE.version
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("md") => "text/markdown; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// The console's routes, to merge into the server's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new()
        .route("/", get(index))
        .route("/console", get(|| async { Redirect::permanent("/") }))
        .route("/console/{version}/{*path}", get(asset));
    for page in PAGES {
        r = r
            .route(&format!("/{page}"), get(index))
            .route(&format!("/{page}/{{*rest}}"), get(index));
    }
    r
}

async fn index(headers: HeaderMap) -> Response {
    let b = &*BUNDLE;
    let mut res = respond(&b.index, &headers, "no-cache");
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, b.csp.clone());
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    res
}

async fn asset(Path((version, path)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let b = &*BUNDLE;
    let Some(file) = b.files.get(path.as_str()) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"error":"no console asset {path:?}"}}"#),
        )
            .into_response();
    };
    // A page from another build (a replica not yet upgraded, an old tab)
    // still gets the file, but must not pin it in its cache.
    let cache = if version == b.version {
        IMMUTABLE
    } else {
        "no-cache"
    };
    respond(file, &headers, cache)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn respond(a: &Asset, headers: &HeaderMap, cache: &'static str) -> Response {
    let not_modified = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == a.etag.to_str().unwrap_or_default()
        });
    let common = [
        (header::ETAG, a.etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (header::VARY, HeaderValue::from_static("Accept-Encoding")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if not_modified {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let ct = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    )];
    match &a.gzip {
        Some(z) if accepts_gzip(headers) => (
            common,
            ct,
            [(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"))],
            z.clone(),
        )
            .into_response(),
        _ => (common, ct, a.body).into_response(),
    }
}

/// Bytes a first visit downloads (index, app, style and the modules the
/// first page imports), compressed as served to a browser.
pub fn first_load_bytes() -> usize {
    let b = &*BUNDLE;
    let size = |a: &Asset| a.gzip.as_ref().map_or(a.body.len(), Vec::len);
    size(&b.index)
        + [
            "app.js",
            "style.css",
            "vendor/preact.module.js",
            "vendor/hooks.module.js",
            "vendor/htm.module.js",
        ]
        .iter()
        .filter_map(|n| b.files.get(n))
        .map(size)
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
