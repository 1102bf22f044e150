//! Postman's signing auth helpers: digest (RFC 7616 with MD5, as Postman
//! sends it), OAuth 1.0a (RFC 5849: HMAC-SHA1/256/512 and PLAINTEXT) and Hawk
//! (header auth, SHA-256 or SHA-1). Parameters use Postman's names; their
//! `{{variables}}` are already resolved.

use base64::Engine as _;
use md5::{Digest as _, Md5};
use ring::hmac;

use super::collection::Auth;

fn p<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    Auth::param(params, key)
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
    let timestamp = match p(params, "timestamp") {
        "" => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string(),
        t => t.to_string(),
    };
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
    let ts = match p(params, "timestamp") {
        "" => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string(),
        t => t.to_string(),
    };
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
}
