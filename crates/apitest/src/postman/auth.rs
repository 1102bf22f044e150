//! Postman's signing auth helpers: digest (RFC 7616 with MD5, as Postman
//! sends it), OAuth 1.0a (RFC 5849: HMAC-SHA1/256/512 and PLAINTEXT) and Hawk
//! (header auth, SHA-256 or SHA-1), AWS Signature V4 (as the aws4 library
//! Postman uses signs) and Akamai EdgeGrid. Parameters use Postman's names;
//! their `{{variables}}` are already resolved.

use base64::Engine as _;
use md5::{Digest as _, Md5};
use ring::hmac;

use super::collection::Auth;

fn p<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    Auth::param(params, key)
}

/// The `timestamp` parameter, or the current Unix time in seconds when it
/// is empty (OAuth 1.0 and Hawk both sign with it).
fn timestamp_or_now(params: &[(String, String)]) -> String {
    match p(params, "timestamp") {
        "" => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string(),
        t => t.to_string(),
    }
}

fn hex_md5(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as
/// OAuth 1.0 requires (`+` for a space would break the signature).
pub(crate) fn rfc3986(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The fields of a `WWW-Authenticate: Digest …` challenge.
pub(crate) fn digest_challenge(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim();
    let rest = rest
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("digest"))
        .map(|_| &rest[6..])?;
    let mut out = Vec::new();
    let mut s = rest.trim_start();
    while !s.is_empty() {
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        s = s[eq + 1..].trim_start();
        let value;
        if let Some(q) = s.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            value = q[..end].to_string();
            s = q.get(end + 1..).unwrap_or("");
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_string();
            s = &s[end..];
        }
        s = s.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    Some(out)
}

/// The `Authorization` value of a digest auth, from its parameters and the
/// server's challenge (realm, nonce, qop, opaque, algorithm), which win over
/// the parameters. `None` without a realm and a nonce: the request then goes
/// out unsigned to get the challenge, as Postman does.
pub(crate) fn digest(
    params: &[(String, String)],
    challenge: Option<&[(String, String)]>,
    method: &str,
    uri: &str,
) -> Option<String> {
    let from_challenge = |k: &str| {
        challenge
            .and_then(|c| c.iter().find(|(ck, _)| ck == k))
            .map(|(_, v)| v.as_str())
    };
    let pick = |k: &str, pk: &str| {
        from_challenge(k)
            .map(str::to_string)
            .unwrap_or_else(|| p(params, pk).to_string())
    };
    let realm = pick("realm", "realm");
    let nonce = pick("nonce", "nonce");
    if nonce.is_empty() {
        return None;
    }
    let opaque = pick("opaque", "opaque");
    let algorithm = {
        let a = pick("algorithm", "algorithm");
        if a.is_empty() {
            "MD5".to_string()
        } else {
            a
        }
    };
    // A challenge may offer "auth,auth-int"; Postman answers with auth.
    let qop = pick("qop", "qop")
        .split(',')
        .map(str::trim)
        .find(|q| q.eq_ignore_ascii_case("auth"))
        .unwrap_or("")
        .to_string();
    let nc = match p(params, "nonceCount") {
        "" => "00000001".to_string(),
        n => n.to_string(),
    };
    let cnonce = match p(params, "clientNonce") {
        "" => uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
        c => c.to_string(),
    };
    let user = p(params, "username");
    let mut ha1 = hex_md5(&format!("{user}:{realm}:{}", p(params, "password")));
    if algorithm.eq_ignore_ascii_case("MD5-sess") {
        ha1 = hex_md5(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = hex_md5(&format!("{method}:{uri}"));
    let response = if qop.is_empty() {
        hex_md5(&format!("{ha1}:{nonce}:{ha2}"))
    } else {
        hex_md5(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
    };
    let mut h = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=\"{algorithm}\""
    );
    if !qop.is_empty() {
        h.push_str(&format!(", qop={qop}, nc={nc}, cnonce=\"{cnonce}\""));
    }
    h.push_str(&format!(", response=\"{response}\""));
    if !opaque.is_empty() {
        h.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some(h)
}

/// What an OAuth 1.0 signing adds to a request.
pub(crate) enum OAuth1 {
    Header(String),
    /// `addParamsToHeader: false`: the oauth_* parameters go in the query.
    Query(Vec<(String, String)>),
}

/// Signs a request with OAuth 1.0a. `url` is the final URL (its query takes
/// part in the signature), `form` the urlencoded body's fields.
pub(crate) fn oauth1(
    params: &[(String, String)],
    method: &str,
    url: &url::Url,
    form: &[(String, String)],
) -> Result<OAuth1, String> {
    let method_name = match p(params, "signatureMethod") {
        "" => "HMAC-SHA1",
        m => m,
    };
    let timestamp = timestamp_or_now(params);
    let nonce = match p(params, "nonce") {
        "" => uuid::Uuid::new_v4().simple().to_string(),
        n => n.to_string(),
    };
    let version = match p(params, "version") {
        "" => "1.0",
        v => v,
    };
    let empty_too = p(params, "addEmptyParamsToSign") == "true";
    let mut oauth: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), p(params, "consumerKey").into()),
        ("oauth_nonce".into(), nonce),
        ("oauth_signature_method".into(), method_name.into()),
        ("oauth_timestamp".into(), timestamp),
        ("oauth_token".into(), p(params, "token").into()),
        ("oauth_version".into(), version.into()),
    ];
    oauth.retain(|(_, v)| empty_too || !v.is_empty());

    let mut all: Vec<(String, String)> = oauth
        .iter()
        .cloned()
        .chain(
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        )
        .chain(form.iter().cloned())
        .map(|(k, v)| (rfc3986(&k), rfc3986(&v)))
        .collect();
    all.sort();
    let param_text = all
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut base_url = format!(
        "{}://{}",
        url.scheme(),
        url.host_str().unwrap_or("").to_ascii_lowercase()
    );
    if let Some(port) = url.port() {
        base_url.push_str(&format!(":{port}"));
    }
    base_url.push_str(url.path());
    let base = format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        rfc3986(&base_url),
        rfc3986(&param_text)
    );
    let key = format!(
        "{}&{}",
        rfc3986(p(params, "consumerSecret")),
        rfc3986(p(params, "tokenSecret"))
    );
    let algorithm = match method_name {
        "HMAC-SHA1" => Some(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
        "HMAC-SHA256" => Some(hmac::HMAC_SHA256),
        "HMAC-SHA512" => Some(hmac::HMAC_SHA512),
        "PLAINTEXT" => None,
        other => return Err(format!("OAuth 1.0 signature method {other}")),
    };
    let signature = match algorithm {
        Some(a) => base64::engine::general_purpose::STANDARD
            .encode(hmac::sign(&hmac::Key::new(a, key.as_bytes()), base.as_bytes()).as_ref()),
        None => key,
    };
    oauth.push(("oauth_signature".into(), signature));
    if p(params, "addParamsToHeader") == "false" {
        return Ok(OAuth1::Query(oauth));
    }
    let mut fields = Vec::new();
    if !p(params, "realm").is_empty() {
        fields.push(format!("realm=\"{}\"", p(params, "realm")));
    }
    fields.extend(oauth.iter().map(|(k, v)| format!("{k}=\"{}\"", rfc3986(v))));
    Ok(OAuth1::Header(format!("OAuth {}", fields.join(","))))
}

/// The `Authorization` value of Hawk header auth (hawk.1.header).
pub(crate) fn hawk(
    params: &[(String, String)],
    method: &str,
    url: &url::Url,
    body: Option<(&[u8], &str)>,
) -> Result<String, String> {
    let (alg, hash_alg, name) = match p(params, "algorithm") {
        "" | "sha256" => (hmac::HMAC_SHA256, &ring::digest::SHA256, "sha256"),
        "sha1" => (
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            "sha1",
        ),
        other => return Err(format!("Hawk algorithm {other}")),
    };
    let ts = timestamp_or_now(params);
    let nonce = match p(params, "nonce") {
        "" => uuid::Uuid::new_v4().simple().to_string()[..6].to_string(),
        n => n.to_string(),
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let hash = if p(params, "includePayloadHash") == "true" {
        let (payload, content_type) = body.unwrap_or((b"", ""));
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mut text = format!("hawk.1.payload\n{ct}\n").into_bytes();
        text.extend_from_slice(payload);
        text.push(b'\n');
        Some(b64(ring::digest::digest(hash_alg, &text).as_ref()))
    } else {
        None
    };
    let _ = name;
    let resource = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let ext = p(params, "extraData");
    let app = p(params, "app");
    let dlg = p(params, "delegation");
    let mut normalized = format!(
        "hawk.1.header\n{ts}\n{nonce}\n{}\n{resource}\n{}\n{port}\n{}\n{}\n",
        method.to_ascii_uppercase(),
        url.host_str().unwrap_or("").to_ascii_lowercase(),
        hash.as_deref().unwrap_or(""),
        ext.replace('\\', "\\\\").replace('\n', "\\n"),
    );
    if !app.is_empty() {
        normalized.push_str(&format!("{app}\n{dlg}\n"));
    }
    let mac = b64(hmac::sign(
        &hmac::Key::new(alg, p(params, "authKey").as_bytes()),
        normalized.as_bytes(),
    )
    .as_ref());
    let mut h = format!(
        "Hawk id=\"{}\", ts=\"{ts}\", nonce=\"{nonce}\"",
        p(params, "authId")
    );
    if let Some(hash) = hash {
        h.push_str(&format!(", hash=\"{hash}\""));
    }
    if !ext.is_empty() {
        h.push_str(&format!(", ext=\"{ext}\""));
    }
    h.push_str(&format!(", mac=\"{mac}\""));
    if !app.is_empty() {
        h.push_str(&format!(", app=\"{app}\""));
        if !dlg.is_empty() {
            h.push_str(&format!(", dlg=\"{dlg}\""));
        }
    }
    Ok(h)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hmac256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

/// Headers aws4 (the library Postman signs with) leaves out of a signature:
/// proxies and clients change them on the way.
const AWS_UNSIGNED: [&str; 7] = [
    "authorization",
    "connection",
    "x-amzn-trace-id",
    "user-agent",
    "expect",
    "presigned-expires",
    "range",
];

/// The query parameters an AWS signing in the query adds; any already in the
/// URL are dropped first, as Postman does (`X-Amz-Expires` is the user's).
const AWS_QUERY_AUTH: [&str; 6] = [
    "X-Amz-Security-Token",
    "X-Amz-Date",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];

/// The headers an AWS signing in the headers sets; any the request has are
/// dropped first, as Postman does.
pub(crate) const AWS_HEADER_AUTH: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// The canonical path of AWS Signature V4 as aws4 writes it. The path comes
/// already percent-encoded; every service but S3 has each segment encoded
/// again (AWS's double encoding) with empty and `.`/`..` segments
/// normalised, S3 has it decoded and encoded once.
fn aws_canonical_path(path: &str, s3: bool) -> String {
    if path == "/" || path.is_empty() {
        return "/".into();
    }
    // aws4 first runs encodeURI over a path with characters outside
    // encodeURI's set (the url crate leaves `|`, `[`, `^`… as they are).
    let path: String = path
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b";,/?:@&=+$-_.!~*'()#%".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let collapsed;
    let path = if s3 {
        path.as_str()
    } else {
        let mut p = path.clone();
        while p.contains("//") {
            p = p.replace("//", "/");
        }
        collapsed = p;
        collapsed.as_str()
    };
    let mut pieces: Vec<String> = Vec::new();
    for piece in path.split('/') {
        if !s3 && piece == ".." {
            pieces.pop();
        } else if s3 || piece != "." {
            let piece = if s3 {
                let spaced = piece.replace('+', " ");
                url::form_urlencoded::parse(format!("x={}", spaced.replace('&', "%26")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            } else {
                piece.to_string()
            };
            pieces.push(rfc3986(&piece));
        }
    }
    let mut out = pieces.join("/");
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    if s3 {
        out = out.replace("%2F", "/");
    }
    out
}

/// The canonical query: names and values decoded, encoded again per RFC 3986,
/// sorted by name; a repeated name keeps all its values, sorted (S3: the
/// first only), as aws4 does.
fn aws_canonical_query(query: Option<&str>, s3: bool) -> String {
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k.is_empty() {
            continue;
        }
        let values = by_key.entry(rfc3986(&k)).or_default();
        if !s3 || values.is_empty() {
            values.push(rfc3986(&v));
        }
    }
    let mut pieces = Vec::new();
    for (k, mut values) in by_key {
        values.sort();
        pieces.extend(values.into_iter().map(|v| format!("{k}={v}")));
    }
    pieces.join("&")
}

/// Signs a request with AWS Signature V4 as Postman's `awsv4` auth does (the
/// aws4 library): in the headers (`Authorization`, `X-Amz-Date`,
/// `X-Amz-Security-Token` with a session token, `X-Amz-Content-Sha256` with
/// the body's SHA-256 when there is a body, or for S3), or with
/// `addAuthDataToQuery` in the query (`X-Amz-*` parameters; the body is then
/// not hashed, as in Postman). `headers` are the request's headers so far:
/// all of them but the few proxies rewrite are signed, and the ones the
/// signing sets are replaced. `body` is the body's bytes (`None` for a
/// multipart form, which Postman does not hash).
pub(crate) fn awsv4(
    params: &[(String, String)],
    method: &str,
    url: &mut url::Url,
    headers: &mut Vec<(String, String)>,
    body: Option<&[u8]>,
    now: chrono::DateTime<chrono::Utc>,
) {
    let service = match p(params, "service") {
        "" => "execute-api",
        s => s,
    };
    let region = match p(params, "region") {
        "" => "us-east-1",
        r => r,
    };
    let s3 = service == "s3";
    let token = p(params, "sessionToken");
    let in_query = p(params, "addAuthDataToQuery") == "true";
    let datetime = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &datetime[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let credential = format!("{}/{scope}", p(params, "accessKey"));

    headers.retain(|(k, _)| !AWS_HEADER_AUTH.iter().any(|n| k.eq_ignore_ascii_case(n)));
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        let mut host = url.host_str().unwrap_or("").to_string();
        if let Some(port) = url.port() {
            host.push_str(&format!(":{port}"));
        }
        headers.push(("Host".into(), host));
    }
    let body_hash = if in_query {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| !AWS_QUERY_AUTH.contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut added: Vec<(&str, String)> = Vec::new();
        if !token.is_empty() {
            added.push(("X-Amz-Security-Token", token.to_string()));
        }
        if s3 && !kept.iter().any(|(k, _)| k == "X-Amz-Expires") {
            added.push(("X-Amz-Expires", "86400".into()));
        }
        added.push(("X-Amz-Date", datetime.clone()));
        added.push(("X-Amz-Algorithm", "AWS4-HMAC-SHA256".into()));
        added.push(("X-Amz-Credential", credential.clone()));
        added.push(("X-Amz-SignedHeaders", aws_signed_names(headers)));
        // The query is rewritten only when it carries a past signing: the
        // rest of the URL goes out as written.
        if url.query_pairs().count() != kept.len() {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            let text = q.finish();
            url.set_query((!kept.is_empty()).then_some(text.as_str()));
        }
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &added {
                q.append_pair(k, v);
            }
        }
        if s3 {
            "UNSIGNED-PAYLOAD".to_string()
        } else {
            sha256_hex(b"")
        }
    } else {
        let hashed = body.filter(|b| !b.is_empty()).map(sha256_hex);
        match hashed {
            Some(h) => headers.push(("X-Amz-Content-Sha256".into(), h)),
            None if s3 => headers.push(("X-Amz-Content-Sha256".into(), sha256_hex(b""))),
            None => {}
        }
        if !token.is_empty() {
            headers.push(("X-Amz-Security-Token".into(), token.to_string()));
        }
        headers.push(("X-Amz-Date".into(), datetime.clone()));
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-content-sha256"))
            .map_or_else(|| sha256_hex(b""), |(_, v)| v.clone())
    };
    let signed_names = aws_signed_names(headers);
    let canonical = format!(
        "{}\n{}\n{}\n{}\n\n{signed_names}\n{body_hash}",
        method.to_ascii_uppercase(),
        aws_canonical_path(url.path(), s3),
        aws_canonical_query(url.query(), s3),
        aws_canonical_headers(headers).join("\n"),
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{datetime}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut key = hmac256(
        format!("AWS4{}", p(params, "secretKey")).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac256(key.as_ref(), part.as_bytes());
    }
    let signature = hex(hmac256(key.as_ref(), to_sign.as_bytes()).as_ref());
    if in_query {
        url.query_pairs_mut()
            .append_pair("X-Amz-Signature", &signature);
    } else {
        headers.push((
            "Authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed_names}, Signature={signature}"
            ),
        ));
    }
}

/// The signed headers, lower-cased, one entry per name (values of a repeated
/// name joined with commas), sorted by name.
fn aws_signed(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in headers {
        let name = k.to_ascii_lowercase();
        if AWS_UNSIGNED.contains(&name.as_str()) {
            continue;
        }
        let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
        by_name.entry(name).or_default().push(value);
    }
    by_name.into_iter().map(|(k, v)| (k, v.join(","))).collect()
}

fn aws_signed_names(headers: &[(String, String)]) -> String {
    aws_signed(headers)
        .into_iter()
        .map(|(k, _)| k)
        .collect::<Vec<_>>()
        .join(";")
}

fn aws_canonical_headers(headers: &[(String, String)]) -> Vec<String> {
    aws_signed(headers)
        .into_iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect()
}

/// The `Authorization` value of Akamai EdgeGrid (EG1-HMAC-SHA256), as
/// Postman's `edgegrid` auth computes it: the listed `headersToSign`, the
/// body's SHA-256 for a POST, the host of `baseURL` when given. `None`
/// without the three tokens: Postman then sends the request unsigned.
pub(crate) fn edgegrid(
    params: &[(String, String)],
    method: &str,
    url: &url::Url,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, String> {
    let (access, client, secret) = (
        p(params, "accessToken"),
        p(params, "clientToken"),
        p(params, "clientSecret"),
    );
    if access.is_empty() || client.is_empty() || secret.is_empty() {
        return Ok(None);
    }
    let authority = |u: &url::Url| {
        let mut h = u.host_str().unwrap_or("").to_string();
        if let Some(port) = u.port() {
            h.push_str(&format!(":{port}"));
        }
        h
    };
    let host = match p(params, "baseURL") {
        "" => authority(url),
        base => {
            let with_scheme = if base.contains("://") {
                base.to_string()
            } else {
                format!("https://{base}")
            };
            let parsed = url::Url::parse(&with_scheme)
                .map_err(|e| format!("EdgeGrid baseURL {base:?} is not a URL: {e}"))?;
            authority(&parsed)
        }
    };
    let nonce = match p(params, "nonce") {
        "" => uuid::Uuid::new_v4().to_string(),
        n => n.to_string(),
    };
    let timestamp = match p(params, "timestamp") {
        "" => now.format("%Y%m%dT%H:%M:%S+0000").to_string(),
        t => t.to_string(),
    };
    let canonical_headers: Vec<String> = p(params, "headersToSign")
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .filter_map(|name| {
            let values: Vec<&str> = headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v.as_str())
                .collect();
            // Postman skips a header that is missing, empty or repeated.
            match values.as_slice() {
                [v] if !v.is_empty() => Some(format!(
                    "{name}:{}",
                    v.split_whitespace().collect::<Vec<_>>().join(" ")
                )),
                _ => None,
            }
        })
        .collect();
    let body_hash = if method.eq_ignore_ascii_case("POST") {
        body.filter(|b| !b.is_empty())
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    let header = format!(
        "EG1-HMAC-SHA256 client_token={client};access_token={access};timestamp={timestamp};nonce={nonce};"
    );
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let data = [
        method.to_ascii_uppercase().as_str(),
        url.scheme(),
        &host,
        if path.is_empty() { "/" } else { &path },
        &canonical_headers.join("\t"),
        &body_hash,
        &header,
    ]
    .join("\t");
    let b64 = |t: hmac::Tag| base64::engine::general_purpose::STANDARD.encode(t.as_ref());
    let signing_key = b64(hmac256(secret.as_bytes(), timestamp.as_bytes()));
    let signature = b64(hmac256(signing_key.as_bytes(), data.as_bytes()));
    Ok(Some(format!("{header}signature={signature}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn oauth1_matches_an_independent_signature() {
        // Expected value computed with Python's hmac/hashlib over the same base string.
        let params = kv(&[
            ("consumerKey", "ck"),
            ("consumerSecret", "cs"),
            ("token", "tk"),
            ("tokenSecret", "ts"),
            ("timestamp", "1700000000"),
            ("nonce", "abc"),
        ]);
        let url = url::Url::parse("http://Example.com:8080/p/a?b=c d&a=1").unwrap();
        let OAuth1::Header(h) = oauth1(&params, "get", &url, &kv(&[("f", "x+y")])).unwrap() else {
            panic!("header expected")
        };
        assert!(
            h.contains("oauth_signature=\"I8iBoMEW81N31PlpR6rBbhnEFiM%3D\""),
            "{h}"
        );
    }

    #[test]
    fn digest_challenge_fields() {
        let c =
            digest_challenge(r#"Digest realm="Users", nonce="n1", qop="auth,auth-int", opaque=op"#)
                .unwrap();
        assert_eq!(
            c,
            kv(&[
                ("realm", "Users"),
                ("nonce", "n1"),
                ("qop", "auth,auth-int"),
                ("opaque", "op")
            ])
        );
        let params = kv(&[("username", "u"), ("password", "p"), ("clientNonce", "cn")]);
        let h = digest(&params, Some(&c), "GET", "/d?x=1").unwrap();
        // MD5 values computed with Python's hashlib.
        assert!(
            h.contains("response=\"823d20652056602e4a2d98ec9d291663\""),
            "{h}"
        );
        assert!(h.contains("qop=auth, nc=00000001, cnonce=\"cn\""), "{h}");
        assert!(digest(&params, None, "GET", "/").is_none());
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone as _;
        chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn awsv4_gives_aws_published_test_suite_signatures() {
        // aws-sig-v4-test-suite: get-vanilla, get-vanilla-query-order-key-case
        // and post-vanilla, with the suite's example credentials.
        let params = kv(&[
            ("accessKey", "AKIDEXAMPLE"),
            ("secretKey", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            ("service", "service"),
        ]);
        for (method, url, signature) in [
            (
                "GET",
                "https://example.amazonaws.com/",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "POST",
                "https://example.amazonaws.com/",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            let mut u = url::Url::parse(url).unwrap();
            let mut headers = kv(&[("X-Amz-Date", "stale"), ("authorization", "old")]);
            awsv4(
                &params,
                method,
                &mut u,
                &mut headers,
                None,
                at(2015, 8, 30, 12, 36, 0),
            );
            assert_eq!(
                headers,
                kv(&[
                    ("Host", "example.amazonaws.com"),
                    ("X-Amz-Date", "20150830T123600Z"),
                    ("Authorization", &format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}")),
                ]),
                "{method} {url}"
            );
        }
    }

    #[test]
    fn awsv4_paths_queries_tokens_and_bodies() {
        // AWS double-encodes every service's path but S3's.
        assert_eq!(aws_canonical_path("/a%20b//./c/../d", false), "/a%2520b/d");
        assert_eq!(aws_canonical_path("/a%20b/c+d", true), "/a%20b/c%20d");
        assert_eq!(
            aws_canonical_query(Some("b=2&a=y&a=x&=z&c"), false),
            "a=x&a=y&b=2&c="
        );
        assert_eq!(aws_canonical_query(Some("a=y&a=x"), true), "a=y");
        let params = kv(&[
            ("accessKey", "AK"),
            ("secretKey", "SK"),
            ("sessionToken", "TOKEN"),
            ("region", "eu-west-1"),
        ]);
        let mut u = url::Url::parse("http://127.0.0.1:8080/x").unwrap();
        let mut headers = kv(&[("X-Custom", "  a   b ")]);
        awsv4(
            &params,
            "POST",
            &mut u,
            &mut headers,
            Some(b"{}"),
            at(2020, 1, 2, 3, 4, 5),
        );
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "X-Custom",
                "Host",
                "X-Amz-Content-Sha256",
                "X-Amz-Security-Token",
                "X-Amz-Date",
                "Authorization"
            ]
        );
        assert_eq!(headers[1].1, "127.0.0.1:8080");
        assert_eq!(headers[2].1, sha256_hex(b"{}"));
        assert!(headers[5].1.starts_with("AWS4-HMAC-SHA256 Credential=AK/20200102/eu-west-1/execute-api/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token;x-custom, Signature="), "{}", headers[5].1);
        // In the query: the X-Amz-* parameters, an old signature replaced.
        let params = kv(&[
            ("accessKey", "AK"),
            ("secretKey", "SK"),
            ("addAuthDataToQuery", "true"),
        ]);
        let mut u = url::Url::parse("http://h/x?a=1&X-Amz-Signature=old").unwrap();
        let mut headers = Vec::new();
        awsv4(
            &params,
            "GET",
            &mut u,
            &mut headers,
            None,
            at(2020, 1, 2, 3, 4, 5),
        );
        let q: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(
            q,
            [
                "a",
                "X-Amz-Date",
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature"
            ]
        );
        assert_eq!(headers, kv(&[("Host", "h")]));
    }

    #[test]
    fn edgegrid_gives_akamais_published_signatures() {
        // The test data of Akamai's EdgeGrid client libraries.
        let params = kv(&[
            ("clientToken", "akab-client-token-xxx-xxxxxxxxxxxxxxxx"),
            ("accessToken", "akab-access-token-xxx-xxxxxxxxxxxxxxxx"),
            (
                "clientSecret",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=",
            ),
            ("nonce", "nonce-xx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"),
            ("timestamp", "20140321T19:34:21+0000"),
        ]);
        let base = "https://akaa-baseurl-xxxxxxxxxxx-xxxxxxxxxxxxx.luna.akamaiapis.net";
        for (method, path, body, signature) in [
            (
                "GET",
                "/",
                "",
                "tL+y4hxyHxgWVD30X3pWnGKHcPzmrIF+LThiAOhMxYU=",
            ),
            (
                "GET",
                "/testapi/v1/t1?p1=1&p2=2",
                "",
                "hKDH1UlnQySSHjvIcZpDMbQHihTQ0XyVAKZaApabdeA=",
            ),
            (
                "POST",
                "/testapi/v1/t3",
                "datadatadatadatadatadatadatadata",
                "hXm4iCxtpN22m4cbZb4lVLW5rhX8Ca82vCFqXzSTPe4=",
            ),
            (
                "POST",
                "/testapi/v1/t6",
                "",
                "1gEDxeQGD5GovIkJJGcBaKnZ+VaPtrc4qBUHixjsPCQ=",
            ),
        ] {
            let u = url::Url::parse(&format!("{base}{path}")).unwrap();
            let h = edgegrid(
                &params,
                method,
                &u,
                &[],
                Some(body.as_bytes()),
                at(2000, 1, 1, 0, 0, 0),
            )
            .unwrap()
            .unwrap();
            assert!(h.starts_with("EG1-HMAC-SHA256 client_token=akab-client-token-xxx-xxxxxxxxxxxxxxxx;access_token=akab-access-token-xxx-xxxxxxxxxxxxxxxx;timestamp=20140321T19:34:21+0000;nonce=nonce-xx-xxxx-xxxx-xxxx-xxxxxxxxxxxx;signature="), "{h}");
            assert!(
                h.ends_with(&format!(";signature={signature}")),
                "{method} {path}: {h}"
            );
        }
        let u = url::Url::parse(base).unwrap();
        assert_eq!(
            edgegrid(
                &kv(&[("clientToken", "c")]),
                "GET",
                &u,
                &[],
                None,
                at(2000, 1, 1, 0, 0, 0)
            ),
            Ok(None)
        );
        let bad = kv(&[
            ("clientToken", "c"),
            ("accessToken", "a"),
            ("clientSecret", "s"),
            ("baseURL", "http://[x"),
        ]);
        assert!(
            edgegrid(&bad, "GET", &u, &[], None, at(2000, 1, 1, 0, 0, 0))
                .unwrap_err()
                .contains("baseURL")
        );
    }
}
