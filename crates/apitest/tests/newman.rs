//! Newman parity. Collections from Newman's own repository
//! (`tests/fixtures/newman/`, provenance in its README) run against a local
//! echo server that answers like postman-echo.com for the endpoints they call,
//! and must give the counts Newman gave on the same server
//! (`tests/fixtures/newman/counts.json`, written by `record.js` there, which
//! serves this file's echo server through the ignored `serve_echo_for_newman`).
//!
//! The other tests here pin each piece of that parity on its own: compressed
//! replies, the cookie jar, the headers Newman sends, v2.0 auth.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use axum::extract::{OriginalUri, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Map, Value};
use testbed_apitest::postman::{self, PostmanRun, RunOptions, Vars};

// ------------------------------------------------------------ echo server

/// The subset of postman-echo.com the fixtures and the tests here call.
fn echo_app() -> Router {
    Router::new()
        .route("/get", any(echo_get))
        .route("/headers", get(echo_headers))
        .route("/gzip", get(gzip))
        .route("/deflate", get(deflate))
        .route("/brotli", get(brotli_reply))
        .route("/cookies", get(cookies))
        .route("/cookies/set", get(cookies_set))
        .route("/basic-auth", get(basic_auth))
        .route("/digest-auth", get(digest_auth))
        .route("/oauth1", any(oauth1_auth))
        .route("/auth/hawk", any(hawk_auth))
        .route("/aws/{*rest}", any(aws_auth))
        .route("/edgegrid/{*rest}", any(edgegrid_auth))
        .route("/response-headers", get(response_headers))
        .route("/post", any(echo_body))
        .route("/put", any(echo_body))
        .route("/patch", any(echo_body))
        .route("/delete", any(echo_body))
}

/// postman-echo's JSON: `application/json; charset=utf-8` (a fixture asserts
/// the exact value).
fn json_reply(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

/// Query arguments as postman-echo gives them: a repeated name becomes a list.
fn args(query: Option<&str>) -> Value {
    let mut out = Map::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), Value::String(v.into_owned()));
        match out.get_mut(&k) {
            None => {
                out.insert(k, v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => *first = Value::Array(vec![first.clone(), v]),
        }
    }
    Value::Object(out)
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = BTreeMap::new();
    for (k, v) in headers {
        out.insert(
            k.as_str().to_string(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    json!(out)
}

async fn echo_get(
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    json_reply(
        StatusCode::OK,
        &json!({
            "args": args(query.as_deref()),
            "headers": headers_json(&headers),
            "url": format!("http://{host}{uri}"),
        }),
    )
}

/// The text fields of a `multipart/form-data` body (files are left out; the
/// fixtures send none).
fn multipart_fields(content_type: &str, body: &[u8]) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return out;
    };
    let boundary = format!("--{}", boundary.trim_matches('"'));
    let text = String::from_utf8_lossy(body);
    for part in text.split(boundary.as_str()) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        if head.contains("filename=") {
            continue;
        }
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        out.insert(name.to_string(), Value::String(value.to_string()));
    }
    out
}

/// postman-echo's `/post` (and `/put`, …): the query, the body as `data`, its
/// fields as `form`, its JSON as `json`.
async fn echo_body(
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut form = Map::new();
    let mut data = Value::String(String::new());
    let mut json_body = Value::Null;
    if ct.starts_with("application/x-www-form-urlencoded") {
        form = args(Some(&String::from_utf8_lossy(&body)))
            .as_object()
            .cloned()
            .unwrap_or_default();
    } else if ct.starts_with("multipart/form-data") {
        form = multipart_fields(&ct, &body);
    } else {
        let text = String::from_utf8_lossy(&body).into_owned();
        json_body = serde_json::from_str(&text).unwrap_or(Value::Null);
        data = Value::String(text);
    }
    json_reply(
        StatusCode::OK,
        &json!({
            "args": args(query.as_deref()),
            "data": data,
            "files": {},
            "form": form,
            "headers": headers_json(&headers),
            "json": json_body,
        }),
    )
}

/// Each query argument becomes a header of the reply, and the body lists them.
async fn response_headers(RawQuery(query): RawQuery) -> Response {
    let set = args(query.as_deref());
    let mut r = json_reply(StatusCode::OK, &set);
    for (k, v) in set.as_object().into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            v.as_str().map(HeaderValue::from_str),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}

async fn echo_headers(headers: HeaderMap) -> Response {
    json_reply(StatusCode::OK, &json!({"headers": headers_json(&headers)}))
}

/// postman-echo compresses these whatever the request accepts.
fn encoded(encoding: &'static str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::CONTENT_ENCODING, encoding),
        ],
        body,
    )
        .into_response()
}

/// What an encoded reply carries: `flag: true`, the request's headers and method.
fn encoded_doc(flag: &str, method: &Method, headers: &HeaderMap) -> String {
    let mut doc = json!({"headers": headers_json(headers), "method": method.as_str()});
    doc[flag] = json!(true);
    doc.to_string()
}

async fn gzip(method: Method, headers: HeaderMap) -> Response {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(encoded_doc("gzipped", &method, &headers).as_bytes())
        .unwrap();
    encoded("gzip", z.finish().unwrap())
}

async fn deflate(method: Method, headers: HeaderMap) -> Response {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(encoded_doc("deflated", &method, &headers).as_bytes())
        .unwrap();
    encoded("deflate", z.finish().unwrap())
}

async fn brotli_reply(method: Method, headers: HeaderMap) -> Response {
    let doc = encoded_doc("brotli", &method, &headers);
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut doc.as_bytes(), &mut out, &Default::default()).unwrap();
    encoded("br", out)
}

fn request_cookies(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for h in headers.get_all(header::COOKIE) {
        for pair in h.to_str().unwrap_or("").split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                out.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    Value::Object(out)
}

async fn cookies(headers: HeaderMap) -> Response {
    json_reply(
        StatusCode::OK,
        &json!({"cookies": request_cookies(&headers)}),
    )
}

/// Sets each query argument as a cookie and redirects to `/cookies`, as
/// postman-echo does.
async fn cookies_set(RawQuery(query): RawQuery) -> Response {
    let mut r = (StatusCode::FOUND, [(header::LOCATION, "/cookies")]).into_response();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let c = HeaderValue::from_str(&format!("{k}={v}; Path=/")).unwrap();
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// postman-echo's fixed credentials: postman / password.
async fn basic_auth(headers: HeaderMap) -> Response {
    let ok = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == "Basic cG9zdG1hbjpwYXNzd29yZA==");
    if ok {
        json_reply(StatusCode::OK, &json!({"authenticated": true}))
    } else {
        (StatusCode::UNAUTHORIZED, "Unauthorized").into_response()
    }
}

/// The `key="value", …` fields of an auth header after its scheme.
fn auth_fields(value: &str) -> BTreeMap<String, String> {
    let rest = value.split_once(' ').map_or("", |(_, r)| r);
    rest.split(',')
        .filter_map(|f| f.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

fn authorization(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn md5_hex(s: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// postman-echo's digest endpoint: postman / password in realm Users; no or
/// a wrong Authorization gets the challenge.
async fn digest_auth(method: Method, uri: OriginalUri, headers: HeaderMap) -> Response {
    const NONCE: &str = "ni1LiL0O37PRRhofWdCLmwFsnEtH1lew";
    let auth = authorization(&headers);
    if auth.starts_with("Digest ") {
        let f = auth_fields(&auth);
        let ha1 = md5_hex("postman:Users:password");
        let ha2 = md5_hex(&format!("{}:{}", method.as_str(), uri.0));
        let want = md5_hex(&format!(
            "{ha1}:{NONCE}:{}:{}:auth:{ha2}",
            f.get("nc").map_or("", String::as_str),
            f.get("cnonce").map_or("", String::as_str)
        ));
        if f.get("response") == Some(&want)
            && f.get("uri").map(String::as_str) == Some(&uri.0.to_string())
        {
            return json_reply(StatusCode::OK, &json!({"authenticated": true}));
        }
    }
    let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Digest realm=\"Users\", nonce=\"ni1LiL0O37PRRhofWdCLmwFsnEtH1lew\", qop=\"auth\"",
        ),
    );
    r
}

fn rfc3986(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// postman-echo's OAuth 1.0a endpoint: consumer key RKCGzna7bv9YD57c, secret
/// D+EdQ-gs$-%@2Nu7, no token; the HMAC-SHA1 signature recomputed here.
async fn oauth1_auth(
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let auth = authorization(&headers);
    let f: BTreeMap<String, String> = auth_fields(&auth)
        .into_iter()
        .map(|(k, v)| (k, pct_decode(&v)))
        .collect();
    let mut params: Vec<(String, String)> = f
        .iter()
        .filter(|(k, _)| k.starts_with("oauth_") && *k != "oauth_signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.extend(url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned());
    let mut enc: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (rfc3986(k), rfc3986(v)))
        .collect();
    enc.sort();
    let text = enc
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let base = format!(
        "{}&{}&{}",
        method.as_str(),
        rfc3986(&format!("http://{host}{}", uri.0.path())),
        rfc3986(&text)
    );
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}&", rfc3986("D+EdQ-gs$-%@2Nu7")).as_bytes(),
    );
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, base.as_bytes()).as_ref());
    if f.get("oauth_consumer_key").map(String::as_str) == Some("RKCGzna7bv9YD57c")
        && f.get("oauth_signature") == Some(&want)
    {
        json_reply(
            StatusCode::OK,
            &json!({"status": "pass", "message": "OAuth-1.0a signature verification was successful"}),
        )
    } else {
        json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"status": "fail", "message": "HMAC-SHA1 verification failed", "base_uri": base}),
        )
    }
}

/// postman-echo's Hawk endpoint: id dh37fgj492je, key
/// werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn, sha256.
async fn hawk_auth(method: Method, uri: OriginalUri, headers: HeaderMap) -> Response {
    let f = auth_fields(&authorization(&headers));
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let (name, port) = host.split_once(':').unwrap_or((host, "80"));
    let get = |k: &str| f.get(k).map_or("", String::as_str);
    let normalized = format!(
        "hawk.1.header\n{}\n{}\n{}\n{}\n{name}\n{port}\n{}\n{}\n",
        get("ts"),
        get("nonce"),
        method.as_str(),
        uri.0,
        get("hash"),
        get("ext")
    );
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        b"werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn",
    );
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, normalized.as_bytes()).as_ref());
    if get("id") == "dh37fgj492je" && get("mac") == want {
        json_reply(
            StatusCode::OK,
            &json!({"message": "Hawk Authentication Successful"}),
        )
    } else {
        json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"statusCode": 401, "error": "Unauthorized"}),
        )
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// A header's values as the signing specs canonicalise them: trimmed, runs of
/// spaces as one, repeated headers joined with commas.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The secret of the access key AKIDEXAMPLE (AWS's example credentials).
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// Verifies AWS Signature V4, in the headers or in the query, written from
/// AWS's description of the canonical request (not from the signer): the
/// path as received encoded again segment by segment (once only for S3),
/// every query parameter but the signature encoded and sorted, the headers
/// named in SignedHeaders, the SHA-256 of the body as received. Answers what
/// it verified, for the collection's tests to check.
async fn aws_auth(
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let uri = uri.0;
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let q = |k: &str| {
        query
            .iter()
            .find(|(qk, _)| qk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let auth = authorization(&headers);
    let in_query = query.iter().any(|(k, _)| k == "X-Amz-Signature");
    let (credential, signed, signature, datetime) = if in_query {
        (
            q("X-Amz-Credential"),
            q("X-Amz-SignedHeaders"),
            q("X-Amz-Signature"),
            q("X-Amz-Date"),
        )
    } else {
        let f: BTreeMap<&str, &str> = auth
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .unwrap_or("")
            .split(", ")
            .filter_map(|p| p.split_once('='))
            .collect();
        let get = |k: &str| f.get(k).map_or(String::new(), |v| v.to_string());
        (
            get("Credential"),
            get("SignedHeaders"),
            get("Signature"),
            header_text(&headers, "x-amz-date").unwrap_or_default(),
        )
    };
    let scope: Vec<&str> = credential.splitn(2, '/').collect();
    let (key_id, scope) = (scope[0], scope.get(1).copied().unwrap_or(""));
    let parts: Vec<&str> = scope.split('/').collect();
    let [date, region, service, "aws4_request"] = parts[..] else {
        return json_reply(
            StatusCode::FORBIDDEN,
            &json!({"authenticated": false, "error": "bad credential scope", "auth": auth}),
        );
    };
    let path = if service == "s3" {
        uri.path().to_string()
    } else {
        uri.path()
            .split('/')
            .map(rfc3986)
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut canonical_query: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (rfc3986(k), rfc3986(v)))
        .collect();
    canonical_query.sort();
    let canonical_query = canonical_query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = signed
        .split(';')
        .map(|name| {
            format!(
                "{name}:{}\n",
                header_text(&headers, name).unwrap_or_default()
            )
        })
        .collect();
    let body_hash = hex(&sha256(&body));
    let hash_header = header_text(&headers, "x-amz-content-sha256");
    let canonical = format!(
        "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed}\n{body_hash}",
        method.as_str()
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{datetime}\n{scope}\n{}",
        hex(&sha256(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{AWS_SECRET}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let want = hex(&hmac_sha256(&key, to_sign.as_bytes()));
    let ok = key_id == "AKIDEXAMPLE"
        && signature == want
        && datetime.starts_with(date)
        && signed.split(';').any(|h| h == "host")
        && hash_header.as_ref().is_none_or(|h| *h == body_hash);
    let token = if in_query {
        q("X-Amz-Security-Token")
    } else {
        header_text(&headers, "x-amz-security-token").unwrap_or_default()
    };
    json_reply(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        },
        &json!({
            "authenticated": ok,
            "inQuery": in_query,
            "service": service,
            "region": region,
            "signedHeaders": signed,
            "token": token,
            "bodyHashHeader": hash_header,
            "canonical": canonical,
        }),
    )
}

/// The client secret of client token `ct`, access token `at`.
const EDGEGRID_SECRET: &str = "edgegrid-client-secret";

/// Verifies Akamai EdgeGrid (EG1-HMAC-SHA256) from Akamai's client-auth
/// description: method, scheme, host, path and query, the X-Test1/X-Test2
/// headers (this server's headers to sign), the body's SHA-256 for a POST,
/// and the header without its signature, tab-separated, signed with the
/// HMAC of the timestamp.
async fn edgegrid_auth(
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let auth = authorization(&headers);
    let Some(at) = auth.find("signature=") else {
        return json_reply(StatusCode::UNAUTHORIZED, &json!({"authenticated": false}));
    };
    let (unsigned, signature) = (&auth[..at], &auth[at + "signature=".len()..]);
    let f: BTreeMap<&str, &str> = unsigned
        .strip_prefix("EG1-HMAC-SHA256 ")
        .unwrap_or("")
        .split(';')
        .filter_map(|p| p.split_once('='))
        .collect();
    let get = |k: &str| f.get(k).copied().unwrap_or("");
    let signed_headers: Vec<String> = ["x-test1", "x-test2"]
        .iter()
        .filter_map(|n| header_text(&headers, n).map(|v| format!("{n}:{v}")))
        .collect();
    let content_hash = if method == Method::POST && !body.is_empty() {
        b64(&sha256(&body))
    } else {
        String::new()
    };
    let data = [
        method.as_str(),
        "http",
        &header_text(&headers, "host").unwrap_or_default(),
        uri.0.path_and_query().map_or("/", |p| p.as_str()),
        &signed_headers.join("\t"),
        &content_hash,
        unsigned,
    ]
    .join("\t");
    let key = b64(&hmac_sha256(
        EDGEGRID_SECRET.as_bytes(),
        get("timestamp").as_bytes(),
    ));
    let want = b64(&hmac_sha256(key.as_bytes(), data.as_bytes()));
    let ok = get("client_token") == "ct" && get("access_token") == "at" && signature == want;
    json_reply(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        },
        &json!({"authenticated": ok, "signedHeaders": signed_headers.len(), "bodyHashed": !content_hash.is_empty()}),
    )
}

async fn serve_on(port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, echo_app()).await.unwrap();
    });
    format!("http://{addr}")
}

async fn serve() -> String {
    serve_on(0).await
}

/// Serves the echo server until killed, for `record.js` to run Newman against
/// (`NEWMAN_ECHO_PORT` picks the port). Not a check: ignored.
#[tokio::test]
#[ignore = "serves the echo server for record.js; not a check"]
async fn serve_echo_for_newman() {
    let port = std::env::var("NEWMAN_ECHO_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5599);
    let url = serve_on(port).await;
    println!("echo server listening on {url}");
    std::future::pending::<()>().await;
}

// ------------------------------------------------------------ helpers

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/newman")
        .join(name)
}

/// A fixture's text with postman-echo.com pointed at the local echo server
/// (record.js does the same for Newman): in URL texts, and in URL objects
/// whose `host` parts are `["postman-echo", "com"]`.
fn localized(name: &str, base: &str) -> String {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let host = base.trim_start_matches("http://");
    let text = text
        .replace("https://postman-echo.com", base)
        .replace("http://postman-echo.com", base)
        .replace("postman-echo.com", host);
    let Ok(mut doc) = serde_json::from_str::<Value>(&text) else {
        return text;
    };
    let (ip, port) = host.split_once(':').unwrap();
    fn walk(v: &mut Value, ip: &str, port: &str) {
        match v {
            Value::Object(o) => {
                if o.get("host") == Some(&json!(["postman-echo", "com"])) {
                    o.insert("host".into(), json!(ip.split('.').collect::<Vec<_>>()));
                    o.insert("port".into(), json!(port));
                    o.insert("protocol".into(), json!("http"));
                }
                o.values_mut().for_each(|v| walk(v, ip, port));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| walk(v, ip, port)),
            _ => {}
        }
    }
    walk(&mut doc, ip, port);
    doc.to_string()
}

fn v20(items: Value) -> String {
    json!({
        "info": {"name": "inline", "schema": "https://schema.getpostman.com/json/collection/v2.0.0/collection.json"},
        "item": items,
    })
    .to_string()
}

fn get_item(name: &str, url: String, test: &str) -> Value {
    json!({
        "name": name,
        "request": {"url": url, "method": "GET", "header": [], "body": {"mode": "formdata", "formdata": []}},
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": test.lines().collect::<Vec<_>>()}}],
    })
}

async fn run_text(text: &str, options: RunOptions) -> PostmanRun {
    let c = postman::load(text).unwrap_or_else(|p| panic!("{p:?}"));
    postman::run(&c, options).await
}

/// Every assertion of the run, as `name: outcome (message)`, for messages.
fn assertions(run: &PostmanRun) -> String {
    run.executions
        .iter()
        .flat_map(|e| e.assertions.iter())
        .map(|a| format!("{}: {:?} {:?}", a.name, a.outcome, a.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_all_pass(run: &PostmanRun, executed: usize) {
    let text = format!(
        "{}\n{}\nunsupported: {:?}",
        postman::newman_summary(run),
        assertions(run),
        run.unsupported
    );
    assert_eq!(
        (run.stats.assertions.executed, run.stats.assertions.failed),
        (executed, 0),
        "{text}"
    );
    assert_eq!(run.stats.requests.failed, 0, "{text}");
    assert!(run.unsupported.is_empty(), "{text}");
}

// ------------------------------------------------------------ each piece

#[tokio::test]
async fn compressed_replies_are_decoded_with_content_encoding_kept() {
    let base = serve().await;
    let check = |flag: &str, encoding: &str| {
        format!(
            "var res = JSON.parse(responseBody);\n\
             tests['decoded'] = res.{flag} === true;\n\
             tests['offered'] = res.headers['accept-encoding'] === 'gzip, deflate, br';\n\
             pm.test('encoding header kept', () => pm.expect(pm.response.headers.get('Content-Encoding')).to.equal('{encoding}'));"
        )
    };
    let text = v20(json!([
        get_item("gzip", format!("{base}/gzip"), &check("gzipped", "gzip")),
        get_item(
            "deflate",
            format!("{base}/deflate"),
            &check("deflated", "deflate")
        ),
        get_item("brotli", format!("{base}/brotli"), &check("brotli", "br")),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 9);
}

#[tokio::test]
async fn requests_carry_newmans_default_headers_unless_set() {
    let base = serve().await;
    let test = "var h = JSON.parse(responseBody).headers;\n\
        tests['token'] = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(h['postman-token']);\n\
        tests['cache-control'] = h['cache-control'] === 'no-cache';\n\
        tests['accept'] = h['accept'] === '*/*';\n\
        tests['user agent'] = h['user-agent'].indexOf('PostmanRuntime/') === 0;\n\
        pm.environment.set('token' + pm.info.iteration, h['postman-token']);";
    let mut own = get_item(
        "own headers",
        format!("{base}/headers"),
        "var h = JSON.parse(responseBody).headers;\n\
         tests['own accept kept'] = h['accept'] === 'application/json';\n\
         tests['own cache-control kept'] = h['cache-control'] === 'max-age=0';\n\
         tests['one accept'] = h['accept'].indexOf(',') < 0;",
    );
    own["request"]["header"] = json!([
        {"key": "Accept", "value": "application/json"},
        {"key": "cache-control", "value": "max-age=0"},
    ]);
    let text = v20(json!([
        get_item("defaults", format!("{base}/headers"), test),
        own
    ]));
    let run = run_text(
        &text,
        RunOptions {
            iterations: Some(2),
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 14);
    // A fresh Postman-Token on every request.
    let (a, b) = (
        run.environment.get_str("token0"),
        run.environment.get_str("token1"),
    );
    assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
}

#[tokio::test]
async fn cookies_set_by_a_reply_are_sent_back_within_the_run_only() {
    let base = serve().await;
    let text = v20(json!([
        // postman-echo sets the cookies and redirects to /cookies; the jar
        // already sends them on the redirected request.
        get_item(
            "set",
            format!("{base}/cookies/set?foo1=bar1&foo2=bar2"),
            "var c = JSON.parse(responseBody).cookies;\ntests['after redirect'] = c.foo1 === 'bar1' && c.foo2 === 'bar2';"
        ),
        get_item(
            "later",
            format!("{base}/cookies"),
            "var c = JSON.parse(responseBody).cookies;\n\
             tests['sent back'] = c.foo1 === 'bar1' && c.foo2 === 'bar2';\n\
             tests['legacy cookie'] = postman.getResponseCookie('foo1').value === 'bar1' && postman.getResponseCookie('nope') === undefined;\n\
             tests['responseCookies'] = responseCookies.length === 2 && responseCookies[1].name === 'foo2';\n\
             pm.test('pm.cookies', () => { pm.expect(pm.cookies.get('foo2')).to.equal('bar2'); pm.expect(pm.cookies.has('x')).to.be.false; pm.expect(pm.cookies.toObject()).to.eql({foo1: 'bar1', foo2: 'bar2'}); });"
        ),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 5);
    // A new run starts with an empty jar.
    let text = v20(json!([get_item(
        "fresh",
        format!("{base}/cookies"),
        "tests['empty jar'] = Object.keys(JSON.parse(responseBody).cookies).length === 0;"
    )]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 1);
}

#[tokio::test]
async fn v2_0_auth_objects_and_legacy_scripts_run() {
    let base = serve().await;
    // v2.0 writes auth parameters as an object; this is postman-echo's own
    // example, with a legacy test script.
    let text = json!({
        "info": {"name": "v2.0 auth", "schema": "https://schema.getpostman.com/json/collection/v2.0.0/collection.json"},
        "item": [{
            "name": "basic",
            "request": {
                "url": format!("{base}/basic-auth"),
                "method": "GET",
                "auth": {"type": "basic", "basic": {"username": "postman", "password": "password", "saveHelperData": true, "showPassword": false}}
            },
            "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": [
                "tests['status'] = responseCode.code === 200;",
                "tests['body has'] = responseBody.has('authenticated');",
                "tests['json'] = JSON.parse(responseBody).authenticated === true;",
                "postman.setEnvironmentVariable('code', responseCode.code);"
            ]}}]
        }]
    })
    .to_string();
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 3);
    assert_eq!(run.report.properties["format"], "postman collection v2.0");
    // Legacy setters store text, as Newman does.
    assert_eq!(run.environment.get("code"), Some(&Value::from("200")));
}

#[tokio::test]
async fn send_request_callback_and_promise_forms_use_the_runs_jar() {
    let base = serve().await;
    let script = format!(
        "pm.sendRequest('{base}/cookies/set?sr=1', function (err, res) {{\n\
           pm.test('callback', () => {{ pm.expect(err).to.equal(null); pm.expect(res.code).to.equal(200); pm.expect(res.json().cookies.sr).to.equal('1'); }});\n\
         }});\n\
         const res = await pm.sendRequest({{url: '{base}/post', method: 'POST', header: {{'X-A': 'b'}}, body: {{mode: 'urlencoded', urlencoded: [{{key: 'k', value: 'v'}}]}}}});\n\
         pm.test('promise', () => {{ pm.expect(res.json().form).to.eql({{k: 'v'}}); pm.expect(res.json().headers['x-a']).to.equal('b'); pm.response.to.have.status(200); }});\n\
         pm.sendRequest('http://127.0.0.1:1/none', (err, r) => pm.test('error', () => {{ pm.expect(err).to.be.an('error'); pm.expect(r).to.equal(undefined); }}));\n\
         pm.visualizer.set('<b>{{{{x}}}}</b>', {{x: 1}});"
    );
    let text = v20(json!([
        get_item("send", format!("{base}/get"), &script),
        // The cookie the script's request got is in the run's jar.
        get_item(
            "later",
            format!("{base}/cookies"),
            "pm.test('jar', () => pm.expect(pm.response.json().cookies.sr).to.equal('1'));"
        ),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 4);
    // What a callback throws fails its script, as a throw in the script would.
    let text = v20(json!([get_item(
        "throws",
        format!("{base}/get"),
        &format!("pm.sendRequest('{base}/get', () => {{ throw new TypeError('late'); }});")
    )]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_eq!(run.stats.test_scripts.failed, 1, "{}", assertions(&run));
    assert!(
        assertions(&run).contains("TypeError: late"),
        "{}",
        assertions(&run)
    );
}

#[tokio::test]
async fn auth_helpers_are_accepted_by_servers_that_check_them() {
    let base = serve().await;
    let item = |name: &str, path: &str, auth: Value, test: &str| {
        let mut i = get_item(name, format!("{base}{path}"), test);
        i["request"]["auth"] = auth;
        i
    };
    let text = v20(json!([
        item("digest", "/digest-auth?x=1", json!({"type": "digest", "digest": {"username": "{{user}}", "password": "password"}}),
             "pm.test('digest', () => pm.expect(pm.response.json().authenticated).to.equal(true));"),
        item("digest wrong", "/digest-auth", json!({"type": "digest", "digest": {"username": "postman", "password": "nope"}}),
             "pm.test('refused', () => pm.response.to.have.status(401));"),
        item("oauth1", "/oauth1?a=b%20c", json!({"type": "oauth1", "oauth1": {"consumerKey": "RKCGzna7bv9YD57c", "consumerSecret": "D+EdQ-gs$-%@2Nu7", "signatureMethod": "HMAC-SHA1"}}),
             "pm.test('oauth1', () => pm.expect(pm.response.json().status).to.equal('pass'));"),
        item("hawk", "/auth/hawk?q=1", json!({"type": "hawk", "hawk": {"authId": "dh37fgj492je", "authKey": "werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn", "algorithm": "sha256", "extraData": "some-app-data"}}),
             "pm.test('hawk', () => pm.response.to.have.status(200));"),
        item("oauth2", "/headers", json!({"type": "oauth2", "oauth2": {"accessToken": "tok", "addTokenTo": "header"}}),
             "pm.test('bearer', () => pm.expect(pm.response.json().headers.authorization).to.equal('Bearer tok'));"),
        item("oauth2 query", "/get", json!({"type": "oauth2", "oauth2": {"accessToken": "tok", "addTokenTo": "queryParams"}}),
             "pm.test('query', () => pm.expect(pm.response.json().args.access_token).to.equal('tok'));"),
    ]));
    let mut env = Vars::new();
    env.set("user", "postman");
    let run = run_text(
        &text,
        RunOptions {
            environment: env,
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 6);
    // The challenge and its answer are two requests, as Newman counts them.
    assert_eq!(run.stats.requests.executed, 8);
}

#[tokio::test]
async fn awsv4_and_edgegrid_are_accepted_by_servers_that_verify_them() {
    let base = serve().await;
    let aws = |extra: Value| {
        let mut a = json!({"accessKey": "AKIDEXAMPLE", "secretKey": "{{awsSecret}}"});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"type": "awsv4", "awsv4": a})
    };
    let edge = |extra: Value| {
        let mut a = json!({"clientToken": "ct", "accessToken": "at", "clientSecret": "edgegrid-client-secret"});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"type": "edgegrid", "edgegrid": a})
    };
    let item = |name: &str,
                method: &str,
                path: &str,
                auth: Value,
                body: Value,
                header: Value,
                test: &str| {
        let mut i = get_item(name, format!("{base}{path}"), test);
        i["request"]["auth"] = auth;
        i["request"]["method"] = json!(method);
        i["request"]["body"] = body;
        i["request"]["header"] = header;
        i
    };
    let none = json!({});
    let no_headers = json!([]);
    let raw = json!({"mode": "raw", "raw": "{\"k\": \"{{v}}\"}", "options": {"raw": {"language": "json"}}});
    let form = json!({"mode": "urlencoded", "urlencoded": [{"key": "a b", "value": "c&d"}]});
    let empty_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let text = v20(json!([
        item("aws get", "GET", "/aws/a%20b/c?b=2&a=1&a=0&e=", aws(json!({"sessionToken": "tok"})), none.clone(), no_headers.clone(),
             "pm.test('aws get', () => { const r = pm.response.json(); pm.expect(r.authenticated).to.equal(true); pm.expect([r.service, r.region, r.token, r.bodyHashHeader]).to.eql(['execute-api', 'us-east-1', 'tok', null]); pm.expect(r.signedHeaders).to.equal('host;x-amz-date;x-amz-security-token'); });"),
        item("aws raw", "POST", "/aws/fn/invoke", aws(json!({"service": "lambda", "region": "eu-west-1"})), raw, json!([{"key": "X-Custom", "value": "  a   b "}, {"key": "X-Amz-Date", "value": "stale"}]),
             "pm.test('aws raw', () => { const r = pm.response.json(); pm.expect(r.authenticated).to.equal(true); pm.expect(r.signedHeaders).to.equal('content-type;host;x-amz-content-sha256;x-amz-date;x-custom'); pm.expect(r.bodyHashHeader).to.have.lengthOf(64); });"),
        item("aws form s3", "PUT", "/aws/bucket/key.txt", aws(json!({"service": "s3"})), form, no_headers.clone(),
             "pm.test('aws form', () => { pm.response.to.have.status(200); pm.expect(pm.response.json().signedHeaders).to.include('x-amz-content-sha256'); });"),
        item("aws s3 empty", "GET", "/aws/bucket/", aws(json!({"service": "s3", "region": "us-west-2"})), none.clone(), no_headers.clone(),
             &format!("pm.test('aws s3 empty', () => pm.expect(pm.response.json().bodyHashHeader).to.equal('{empty_hash}'));")),
        item("aws query", "GET", "/aws/q?x=1", aws(json!({"addAuthDataToQuery": true, "sessionToken": "qtok"})), none.clone(), no_headers.clone(),
             "pm.test('aws query', () => { const r = pm.response.json(); pm.expect([r.authenticated, r.inQuery, r.token, r.signedHeaders]).to.eql([true, true, 'qtok', 'host']); });"),
        item("aws wrong secret", "GET", "/aws/x", json!({"type": "awsv4", "awsv4": {"accessKey": "AKIDEXAMPLE", "secretKey": "nope"}}), none.clone(), no_headers.clone(),
             "pm.test('aws refused', () => pm.response.to.have.status(403));"),
        item("edgegrid get", "GET", "/edgegrid/x?p=1&q=2", edge(json!({})), none.clone(), no_headers.clone(),
             "pm.test('edgegrid get', () => pm.expect(pm.response.json()).to.eql({authenticated: true, signedHeaders: 0, bodyHashed: false}));"),
        item("edgegrid post", "POST", "/edgegrid/post", edge(json!({"headersToSign": "X-Test1, x-test2"})), json!({"mode": "raw", "raw": "datadata"}),
             json!([{"key": "X-Test1", "value": "  one   two "}, {"key": "X-Test2", "value": "b"}]),
             "pm.test('edgegrid post', () => pm.expect(pm.response.json()).to.eql({authenticated: true, signedHeaders: 2, bodyHashed: true}));"),
        item("edgegrid base url", "GET", "/edgegrid/b", edge(json!({"baseURL": base})), none.clone(), no_headers.clone(),
             "pm.test('edgegrid base url', () => pm.response.to.have.status(200));"),
        item("edgegrid wrong secret", "GET", "/edgegrid/x", edge(json!({"clientSecret": "nope"})), none.clone(), no_headers.clone(),
             "pm.test('edgegrid refused', () => pm.response.to.have.status(401));"),
    ]));
    let mut env = Vars::new();
    env.set("awsSecret", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    env.set("v", "body value");
    let run = run_text(
        &text,
        RunOptions {
            environment: env,
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 10);
}

#[tokio::test]
async fn cookie_jar_methods_reach_the_runs_jar() {
    let base = serve().await;
    let host = base
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let mut first = get_item(
        "jar set",
        format!("{base}/cookies"),
        &format!(
            "pm.test('sent', () => pm.expect(pm.response.json().cookies).to.eql({{pre: 'one', obj: 'two', raw: 'three'}}));\n\
             pm.test('set callbacks', () => pm.expect([pm.environment.get('setErr'), pm.environment.get('setName')]).to.eql(['null', 'pre']));\n\
             pm.test('foreign domain refused', () => pm.expect(pm.environment.get('domainErr')).to.include('domain'));\n\
             pm.test('bad arguments', () => {{ pm.expect(() => pm.cookies.jar().get(null, 'x', () => {{}})).to.throw(TypeError); pm.expect(() => pm.cookies.jar().get('{base}/', 'x')).to.throw(TypeError); }});\n\
             const jar = pm.cookies.jar();\n\
             jar.get('{base}/cookies', 'raw', (err, value) => pm.test('get', () => pm.expect([err, value]).to.eql([null, 'three'])));\n\
             jar.get('{base}/', 'raw', (err, value) => pm.test('path kept', () => pm.expect(value).to.equal(null)));\n\
             jar.getAll('{base}/cookies', (err, cookies) => pm.test('getAll', () => {{\n\
               pm.expect(cookies.count()).to.equal(3);\n\
               pm.expect(cookies.toObject()).to.eql({{pre: 'one', obj: 'two', raw: 'three'}});\n\
               const o = cookies.one('obj');\n\
               pm.expect([o.path, o.httpOnly, o.hostOnly, o.domain, o.expires]).to.eql(['/', true, true, '{host}', null]);\n\
               pm.expect(cookies.one('raw').path).to.equal('/cookies');\n\
             }}));\n\
             jar.unset('{base}/cookies', 'pre', (err) => pm.test('unset', () => pm.expect(err).to.equal(null)));"
        ),
    );
    first["event"].as_array_mut().unwrap().push(json!({"listen": "prerequest", "script": {"exec": [
        "pm.test('empty before the reply', () => pm.expect(pm.cookies.count()).to.equal(0));",
        "const jar = pm.cookies.jar();",
        format!("jar.set('{base}/cookies', 'pre', 'one', (err, cookie) => {{ pm.environment.set('setErr', String(err)); pm.environment.set('setName', cookie.name); }});"),
        format!("jar.set('{base}/', {{name: 'obj', value: 'two', path: '/', httpOnly: true}}, () => {{}});"),
        format!("jar.set('{base}/', 'raw=three; Path=/cookies');"),
        format!("jar.set('{base}/', {{name: 'elsewhere', value: 'x', domain: 'example.com'}}, (err) => pm.environment.set('domainErr', err ? err.message : 'none'));"),
    ]}}));
    let text = v20(json!([
        first,
        get_item(
            "after unset",
            format!("{base}/cookies"),
            &format!(
                "pm.test('pre gone', () => pm.expect(pm.response.json().cookies).to.eql({{obj: 'two', raw: 'three'}}));\n\
                 pm.cookies.jar().clear('{base}/cookies', (err) => pm.test('clear', () => pm.expect(err).to.equal(null)));"
            )
        ),
        get_item(
            "after clear",
            format!("{base}/cookies"),
            "pm.test('all gone', () => pm.expect(pm.response.json().cookies).to.eql({}));"
        ),
    ]));
    let run = run_text(&text, RunOptions::default()).await;
    assert_all_pass(&run, 12);
}

#[tokio::test]
async fn v1_collections_run_converted_as_newman_converts_them() {
    let base = serve().await;
    // A v1 export: folders placed by folders_order (a subfolder by its
    // parent), requests by each order, the top-level ones last; one request
    // no order lists, which Newman does not run either.
    let text = json!({
        "id": "c1", "name": "v1 collection",
        "order": ["top"],
        "folders_order": ["f1"],
        "folders": [
            {"id": "f1", "name": "outer", "order": ["form"], "folders_order": ["f2"]},
            {"id": "f2", "name": "inner", "order": ["raw"]}
        ],
        "requests": [
            {"id": "top", "name": "top", "method": "GET", "url": format!("{base}/basic-auth"),
             "currentHelper": "basicAuth", "helperAttributes": {"username": "postman", "password": "password"},
             "tests": "tests['order'] = pm.environment.get('seen') === 'raw,form';\ntests['auth'] = responseCode.code === 200;"},
            {"id": "form", "name": "form", "method": "POST", "url": format!("{base}/post"),
             "dataMode": "urlencoded", "data": [{"key": "a", "value": "1", "type": "text"}, {"key": "off", "value": "x", "enabled": false}],
             "headers": "X-Text: t\n// X-Off: o\nX-Both: from text",
             "headerData": [{"key": "X-Both", "value": "from data"}],
             "preRequestScript": "pm.environment.set('seen', pm.environment.get('seen') + ',form');",
             "tests": "var r = JSON.parse(responseBody);\ntests['form'] = JSON.stringify(r.form) === '{\"a\":\"1\"}';\ntests['headers'] = r.headers['x-text'] === 't' && r.headers['x-off'] === undefined && r.headers['x-both'] === 'from data';"},
            {"id": "raw", "name": "raw", "method": "POST", "url": format!("{base}/post"),
             "dataMode": "raw", "rawModeData": "{\"k\": \"{{v}}\"}", "headers": "Content-Type: application/json",
             "preRequestScript": "pm.environment.set('seen', 'raw');",
             "tests": "pm.test('raw', () => pm.expect(pm.response.json().json).to.eql({k: 'var'}));"},
            {"id": "orphan", "name": "orphan", "method": "GET", "url": format!("{base}/get"), "tests": "tests['never'] = false;"}
        ]
    })
    .to_string();
    let collection = postman::load(&text).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(collection.version, "1.0");
    let mut env = Vars::new();
    env.set("v", "var");
    let run = postman::run(
        &collection,
        RunOptions {
            environment: env,
            ..RunOptions::default()
        },
    )
    .await;
    assert_all_pass(&run, 5);
    assert_eq!(run.stats.requests.executed, 3);
    assert_eq!(run.report.properties["format"], "postman collection v1.0");
}

// ------------------------------------------------------------ Newman's counts

/// One collection of the corpus, as counts.json lists it.
struct Case {
    name: String,
    collection: String,
    environment: Option<String>,
    globals: Option<String>,
    data: Option<String>,
    newman: Value,
}

fn cases() -> (Value, Vec<Case>) {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("counts.json")).unwrap()).unwrap();
    let file = |c: &Value, k: &str| c[k].as_str().map(str::to_string);
    let cases = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            collection: file(c, "collection").unwrap(),
            environment: file(c, "environment"),
            globals: file(c, "globals"),
            data: file(c, "data"),
            newman: c["newman"].clone(),
        })
        .collect();
    (doc, cases)
}

/// `run.stats` of our json reporter (`-r json`), without the `pending`
/// counts (always 0) that counts.json leaves out: what Newman's json reporter
/// gave is compared with what ours writes, not with a copy of its shape.
fn newman_stats(run: &PostmanRun) -> Value {
    let mut stats = postman::newman_json(run)["run"]["stats"].take();
    for row in stats.as_object_mut().expect("stats").values_mut() {
        assert_eq!(row["pending"], 0, "{row}");
        row.as_object_mut().expect("row").remove("pending");
    }
    stats
}

#[tokio::test]
async fn newman_fixtures_give_newmans_counts() {
    let base = serve().await;
    let (doc, cases) = cases();
    assert!(
        doc["recorded_with"]
            .as_str()
            .is_some_and(|s| s.contains("newman")),
        "counts.json says which Newman recorded it"
    );
    assert!(
        cases.len() >= 20,
        "the corpus shrank: {} cases",
        cases.len()
    );
    let mut v20 = 0;
    let mut v1 = 0;
    let mut mismatches = Vec::new();
    for case in &cases {
        let text = localized(&case.collection, &base);
        let collection = postman::load(&text).unwrap_or_else(|p| panic!("{}: {p:?}", case.name));
        if collection.version == "2.0" {
            v20 += 1;
        }
        if collection.version == "1.0" {
            v1 += 1;
        }
        let vars = |file: &Option<String>| -> Vars {
            file.as_ref().map_or_else(Vars::new, |f| {
                postman::load_environment(&localized(f, &base))
                    .unwrap_or_else(|p| panic!("{f}: {p:?}"))
            })
        };
        let data = case.data.as_ref().map_or_else(Vec::new, |f| {
            let text = localized(f, &base);
            postman::load_data(&text, postman::DataFormat::of(&fixture(f), &text))
                .unwrap_or_else(|p| panic!("{f}: {p:?}"))
        });
        let options = RunOptions {
            environment: vars(&case.environment),
            globals: vars(&case.globals),
            data,
            working_dir: Some(fixture("")),
            ..RunOptions::default()
        };
        let run = postman::run(&collection, options).await;
        let ours = newman_stats(&run);
        if ours != case.newman {
            mismatches.push(format!(
                "{}: Newman {} / Testbed {}\n{}\n{}unsupported: {:?}",
                case.name,
                case.newman,
                ours,
                assertions(&run),
                postman::newman_summary(&run),
                run.unsupported
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "counts differ from Newman's:\n{}",
        mismatches.join("\n\n")
    );
    assert!(
        v20 >= 11,
        "the corpus must keep its v2.0 collections: {v20}"
    );
    assert!(v1 >= 1, "the corpus must keep its v1 collection");
}
