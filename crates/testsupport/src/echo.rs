//! A stand-in for postman-echo.com: the endpoints the Newman fixtures
//! (`crates/apitest/tests/fixtures/newman/`) and the Postman tests of the
//! apitest and CLI crates call, answering as postman-echo does. Newman's
//! recorded counts (`counts.json`, written by `record.js` there) were taken
//! against this server, through apitest's ignored `serve_echo_for_newman`.

use std::collections::BTreeMap;
use std::io::Write as _;

use axum::extract::{OriginalUri, Path as UrlPath, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Map, Value};

/// The subset of postman-echo.com the fixtures and the tests call.
pub fn app() -> Router {
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
        .route("/status/{code}", get(status))
        .route("/delay/{ms}", get(delay))
}

/// Serves [`app`] on 127.0.0.1:`port` (0: any free port) on the current
/// tokio runtime; returns its base URL.
pub async fn serve_on(port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app()).await.expect("serve");
    });
    format!("http://{addr}")
}

/// [`serve_on`] a free port.
pub async fn serve() -> String {
    serve_on(0).await
}

/// The server on a thread (and runtime) of its own, so that the blocking
/// processes a test waits for never starve it; returns its base URL.
pub fn serve_in_thread() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app()).await.expect("serve");
        });
    });
    format!("http://{addr}")
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

async fn status(UrlPath(code): UrlPath<u16>) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    json_reply(code, &json!({"status": code.as_u16()}))
}

async fn delay(UrlPath(ms): UrlPath<u64>) -> Response {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    json_reply(StatusCode::OK, &json!({"delay": ms}))
}
