//! The cookie jar of a run, and Newman's `--cookie-jar` /
//! `--export-cookie-jar` files: tough-cookie's serialised form (the
//! `{"version": "tough-cookie@…", "cookies": [...]}` Newman reads and
//! writes), or a bare list of its cookies.
//!
//! The matching rules (domain, path, `Secure`, expiry) are `cookie_store`'s,
//! the store reqwest's own jar wraps; this one can also list its cookies with
//! their attributes, which an export needs and reqwest's jar cannot do.

use std::sync::RwLock;

use chrono::{DateTime, SecondsFormat, Utc};
use cookie_store::{CookieDomain, CookieExpiration, CookieStore, RawCookie};
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::problem::Problem;

/// One cookie as tough-cookie serialises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JarCookie {
    pub key: String,
    #[serde(default)]
    pub value: String,
    /// An ISO 8601 date, or `"Infinity"` (tough-cookie's "until the session
    /// ends", its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Seconds after `creation`; tough-cookie keeps `Max-Age` this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http_only: bool,
    /// `true` when the cookie had no `Domain` attribute: sent to that host only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_accessed: Option<String>,
}

/// The tough-cookie version Newman 6 serialises with; readers check only that
/// the field is there.
const TOUGH_COOKIE: &str = "tough-cookie@4.1.3";

/// Reads a cookie jar file: tough-cookie's serialised jar (what Newman's
/// `--export-cookie-jar` writes and `--cookie-jar` reads) or a bare list of
/// its cookies.
pub fn load_cookie_jar(text: &str) -> Result<Vec<JarCookie>, Vec<Problem>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| vec![super::syntax_problem(&e)])?;
    let (list, at) = match &doc {
        Value::Array(_) => (doc.clone(), ""),
        Value::Object(o) => match o.get("cookies") {
            Some(c) => (c.clone(), "cookies"),
            None => {
                return Err(vec![Problem::new(
                    "",
                    "not a cookie jar: expected tough-cookie's serialised jar \
                     ({\"cookies\": [...]}) or a list of cookies",
                )])
            }
        },
        _ => {
            return Err(vec![Problem::new(
                "",
                "not a cookie jar: expected an object with \"cookies\" or a list",
            )])
        }
    };
    let Value::Array(items) = list else {
        return Err(vec![Problem::new(at, "expected a list of cookies")]);
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = if at.is_empty() {
            format!("[{i}]")
        } else {
            format!("{at}[{i}]")
        };
        match serde_json::from_value::<JarCookie>(item) {
            Ok(c) if c.domain.as_deref().unwrap_or("").is_empty() => {
                problems.push(Problem::new(path, "a cookie needs a \"domain\""))
            }
            Ok(c) => out.push(c),
            Err(e) => problems.push(Problem::new(path, format!("not a cookie: {e}"))),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `cookies` as tough-cookie serialises a jar, for `--export-cookie-jar`.
pub fn cookie_jar_json(cookies: &[JarCookie]) -> Value {
    json!({
        "version": TOUGH_COOKIE,
        "storeType": "MemoryCookieStore",
        "rejectPublicSuffixes": true,
        "enableLooseMode": false,
        "allowSpecialUseDomain": true,
        "prefixSecurity": "silent",
        "cookies": cookies,
    })
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The run's jar, given to reqwest as its cookie provider.
#[derive(Debug, Default)]
pub(crate) struct RunJar(RwLock<CookieStore>);

impl reqwest::cookie::CookieStore for RunJar {
    fn set_cookies(&self, headers: &mut dyn Iterator<Item = &HeaderValue>, url: &url::Url) {
        let cookies = headers.filter_map(|h| {
            let text = std::str::from_utf8(h.as_bytes()).ok()?;
            RawCookie::parse(text.to_string()).ok()
        });
        if let Ok(mut store) = self.0.write() {
            store.store_response_cookies(cookies, url);
        }
    }

    fn cookies(&self, url: &url::Url) -> Option<HeaderValue> {
        let pairs = self.pairs(url);
        if pairs.is_empty() {
            return None;
        }
        let text = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        HeaderValue::from_str(&text).ok()
    }
}

impl RunJar {
    /// A jar holding `cookies` (those already expired are left out, as
    /// tough-cookie leaves them out of a lookup).
    pub(crate) fn with(cookies: &[JarCookie]) -> RunJar {
        let mut store = CookieStore::default();
        let now = Utc::now();
        for c in cookies {
            let Some(domain) = c.domain.as_deref() else {
                continue;
            };
            let domain = domain.trim_start_matches('.');
            let path = c.path.clone().unwrap_or_else(|| "/".into());
            let scheme = if c.secure { "https" } else { "http" };
            let Ok(url) = url::Url::parse(&format!("{scheme}://{domain}{path}")) else {
                continue;
            };
            let mut line = format!("{}={}; Path={path}", c.key, c.value);
            if c.host_only != Some(true) {
                line.push_str(&format!("; Domain={domain}"));
            }
            if c.secure {
                line.push_str("; Secure");
            }
            if c.http_only {
                line.push_str("; HttpOnly");
            }
            if let Some(at) = expiry(c) {
                let left = (at - now).num_seconds();
                if left <= 0 {
                    continue;
                }
                line.push_str(&format!("; Max-Age={left}"));
            }
            if let Ok(mut store_cookie) = RawCookie::parse(line) {
                // Parsed from text this code wrote, so the value is kept
                // exactly (no percent-decoding surprises).
                store_cookie.set_value(c.value.clone());
                let _ = store.insert_raw(&store_cookie, &url);
            }
        }
        RunJar(RwLock::new(store))
    }

    /// The `name=value` pairs the jar sends to `url`, in a stable order.
    pub(crate) fn pairs(&self, url: &url::Url) -> Vec<(String, String)> {
        let Ok(store) = self.0.read() else {
            return Vec::new();
        };
        store
            .get_request_values(url)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every live cookie, as tough-cookie serialises them.
    pub(crate) fn export(&self) -> Vec<JarCookie> {
        let Ok(store) = self.0.read() else {
            return Vec::new();
        };
        let now = iso(Utc::now());
        let mut out: Vec<JarCookie> = store
            .iter_unexpired()
            .map(|c| {
                let (domain, host_only) = match &c.domain {
                    CookieDomain::HostOnly(d) => (Some(d.clone()), Some(true)),
                    CookieDomain::Suffix(d) => (Some(d.clone()), Some(false)),
                    CookieDomain::NotPresent | CookieDomain::Empty => (None, None),
                };
                let expires = match &c.expires {
                    CookieExpiration::AtUtc(t) => {
                        DateTime::<Utc>::from_timestamp(t.unix_timestamp(), t.nanosecond()).map(iso)
                    }
                    CookieExpiration::SessionEnd => None,
                };
                JarCookie {
                    key: c.name().to_string(),
                    value: c.value().to_string(),
                    expires,
                    max_age: None,
                    domain,
                    path: Some(c.path.to_string()),
                    secure: c.secure().unwrap_or(false),
                    http_only: c.http_only().unwrap_or(false),
                    host_only,
                    creation: Some(now.clone()),
                    last_accessed: Some(now.clone()),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.domain, &a.path, &a.key).cmp(&(&b.domain, &b.path, &b.key)));
        out
    }
}

/// When a serialised cookie expires: `maxAge` seconds after `creation`
/// (tough-cookie's precedence), else `expires`; `None` for a session cookie.
fn expiry(c: &JarCookie) -> Option<DateTime<Utc>> {
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc());
    let max_age = c.max_age.as_ref().and_then(|v| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    if let Some(secs) = max_age.filter(|s| s.is_finite()) {
        let base = c
            .creation
            .as_deref()
            .and_then(parse)
            .unwrap_or_else(Utc::now);
        // Whole seconds, as Max-Age counts them.
        return Some(base + chrono::Duration::seconds(secs as i64));
    }
    c.expires.as_deref().and_then(parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::cookie::CookieStore as _;

    #[test]
    fn a_jar_round_trips_through_tough_cookies_form() {
        let url = url::Url::parse("http://127.0.0.1:8080/cookies/set").unwrap();
        let jar = RunJar::default();
        let set = [
            HeaderValue::from_static("session=abc; Path=/"),
            HeaderValue::from_static("gone=x; Path=/; Max-Age=0"),
            HeaderValue::from_static("later=y; Path=/; Max-Age=3600; HttpOnly"),
        ];
        jar.set_cookies(&mut set.iter(), &url);
        let exported = jar.export();
        let keys: Vec<_> = exported.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["later", "session"]);
        assert!(exported[0].expires.is_some() && exported[0].http_only);
        assert_eq!(exported[1].host_only, Some(true));

        let text = cookie_jar_json(&exported).to_string();
        let loaded = load_cookie_jar(&text).unwrap();
        let again = RunJar::with(&loaded);
        let other = url::Url::parse("http://127.0.0.1:8080/anything").unwrap();
        // The store keeps cookies in a hash map: their order is not fixed.
        let mut pairs = again.pairs(&other);
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                ("later".to_string(), "y".to_string()),
                ("session".to_string(), "abc".to_string())
            ]
        );
        // Host-only: not sent to another host.
        let elsewhere = url::Url::parse("http://127.0.0.2:8080/").unwrap();
        assert!(again.pairs(&elsewhere).is_empty());
    }

    #[test]
    fn expired_and_bad_entries() {
        let text = r#"{"cookies": [
            {"key": "old", "value": "1", "domain": "example.com", "path": "/", "expires": "2001-01-01T00:00:00.000Z"},
            {"key": "aged", "value": "2", "domain": "example.com", "path": "/", "maxAge": 60, "creation": "2001-01-01T00:00:00.000Z"},
            {"key": "ok", "value": "3", "domain": "example.com", "path": "/"}
        ]}"#;
        let jar = RunJar::with(&load_cookie_jar(text).unwrap());
        let url = url::Url::parse("http://www.example.com/").unwrap();
        assert_eq!(jar.pairs(&url), vec![("ok".to_string(), "3".to_string())]);

        let problems = load_cookie_jar(r#"{"cookies": [{"key": "x"}]}"#).unwrap_err();
        assert_eq!(problems[0].path, "cookies[0]");
        assert!(load_cookie_jar(r#"{"values": []}"#).is_err());
    }
}
