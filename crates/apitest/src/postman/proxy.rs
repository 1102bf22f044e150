//! Proxies for collection runs, taken from the environment as Newman takes
//! them (postman-request's `getProxyFromURI`), so that a CI job behind a
//! proxy behaves the same after switching from `newman run`:
//!
//! - `http:` URLs use `HTTP_PROXY`, else `http_proxy`;
//! - `https:` URLs use `HTTPS_PROXY`, else `https_proxy`, else the HTTP ones
//!   (through a `CONNECT` tunnel);
//! - `NO_PROXY`, else `no_proxy`: `*` turns proxies off; otherwise a comma
//!   list of host names, each matching itself and its subdomains (a leading
//!   dot changes nothing), optionally with `:port` to match that port only.
//!
//! An empty variable counts as unset, as in Node. reqwest's own reading of
//! the environment is turned off for these clients: it also reads
//! `ALL_PROXY`, does not fall back to `HTTP_PROXY` for `https:`, and takes
//! CIDR ranges but not ports in `NO_PROXY` — none of which Newman does.

use url::Url;

use crate::TransportError;

/// The proxies of one run, read once when its client is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvProxies {
    http: Option<Url>,
    https: Option<Url>,
    /// `None` when every host goes through the proxy (no `NO_PROXY`).
    no_proxy: NoProxy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum NoProxy {
    #[default]
    None,
    All,
    Zones(Vec<Zone>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Zone {
    /// Lower case, with one leading dot, so `example.com` matches
    /// `a.example.com` but not `badexample.com`.
    suffix: String,
    port: Option<u16>,
}

impl EnvProxies {
    pub(crate) fn from_env() -> Result<Self, TransportError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `get` reads one variable; split out so the rules are testable
    /// without touching the process's environment.
    pub(crate) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TransportError> {
        let first = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|&n| get(n).filter(|v| !v.is_empty()).map(|v| (n, v)))
        };
        let http = first(&["HTTP_PROXY", "http_proxy"])
            .map(|(n, v)| proxy_url(n, &v))
            .transpose()?;
        let https = match first(&["HTTPS_PROXY", "https_proxy"]) {
            Some((n, v)) => Some(proxy_url(n, &v)?),
            None => http.clone(),
        };
        let no_proxy = match first(&["NO_PROXY", "no_proxy"]) {
            None => NoProxy::None,
            Some((_, v)) if v.trim() == "*" => NoProxy::All,
            Some((n, v)) => NoProxy::Zones(
                v.split(',')
                    .map(str::trim)
                    .filter(|z| !z.is_empty())
                    .map(|z| zone(n, z))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(EnvProxies {
            http,
            https,
            no_proxy,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy a request to `url` goes through, if any.
    pub(crate) fn for_url(&self, url: &Url) -> Option<&Url> {
        let proxy = match url.scheme() {
            "http" => self.http.as_ref()?,
            "https" => self.https.as_ref()?,
            _ => return None,
        };
        match &self.no_proxy {
            NoProxy::None => Some(proxy),
            NoProxy::All => None,
            NoProxy::Zones(zones) => {
                let host = url
                    .host_str()?
                    .trim_matches(['[', ']'])
                    .to_ascii_lowercase();
                let host = format!(".{}", host.trim_start_matches('.'));
                let port = url.port_or_known_default();
                let bypass = zones
                    .iter()
                    .any(|z| host.ends_with(&z.suffix) && z.port.is_none_or(|p| Some(p) == port));
                (!bypass).then_some(proxy)
            }
        }
    }
}

/// A proxy address as Newman takes it; without a scheme it is `http://`.
fn proxy_url(var: &str, value: &str) -> Result<Url, TransportError> {
    let text = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let bad = |why: String| TransportError::Invalid(format!("{var}={value}: {why}"));
    let url = Url::parse(&text).map_err(|e| bad(format!("not a proxy URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the proxy scheme must be http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the proxy URL has no host".into()));
    }
    Ok(url)
}

fn zone(var: &str, entry: &str) -> Result<Zone, TransportError> {
    let (host, port) = match entry.rsplit_once(':') {
        // An IPv6 address without a port has colons too.
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            let port = p.parse::<u16>().map_err(|_| {
                TransportError::Invalid(format!("{var}: '{entry}': the port is not a number"))
            })?;
            (h, Some(port))
        }
        _ => (entry, None),
    };
    let host = host.trim_matches(['[', ']']).trim_start_matches('.');
    Ok(Zone {
        suffix: format!(".{}", host.to_ascii_lowercase()),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(vars: &[(&str, &str)]) -> EnvProxies {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvProxies::from_lookup(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
            .unwrap()
    }

    fn via(p: &EnvProxies, url: &str) -> Option<String> {
        p.for_url(&Url::parse(url).unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn upper_case_wins_and_https_falls_back_to_http_proxy() {
        let p = proxies(&[
            ("HTTP_PROXY", "http://up:1"),
            ("http_proxy", "http://low:2"),
        ]);
        assert_eq!(via(&p, "http://a.test/").as_deref(), Some("http://up:1/"));
        assert_eq!(via(&p, "https://a.test/").as_deref(), Some("http://up:1/"));
        let p = proxies(&[("http_proxy", "low:2"), ("https_proxy", "http://s:3")]);
        assert_eq!(via(&p, "http://a.test/").as_deref(), Some("http://low:2/"));
        assert_eq!(via(&p, "https://a.test/").as_deref(), Some("http://s:3/"));
        // Empty is unset, as in Node; ALL_PROXY is not Newman's.
        let p = proxies(&[("HTTP_PROXY", ""), ("ALL_PROXY", "http://all:4")]);
        assert!(p.is_empty());
    }

    #[test]
    fn no_proxy_matches_domains_suffixes_and_ports() {
        let p = proxies(&[
            ("HTTP_PROXY", "http://p:1"),
            (
                "NO_PROXY",
                "example.com, .Internal.test,localhost:8080,[::1]",
            ),
        ]);
        for direct in [
            "http://example.com/",
            "http://a.b.example.com/x",
            "http://x.internal.test/",
            "http://localhost:8080/",
            "http://[::1]:9/",
        ] {
            assert_eq!(via(&p, direct), None, "{direct}");
        }
        for proxied in [
            "http://badexample.com/",
            "http://localhost:8081/",
            "http://localhost/",
        ] {
            assert!(via(&p, proxied).is_some(), "{proxied}");
        }
        let p = proxies(&[("HTTP_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(via(&p, "http://a.test/"), None);
    }

    #[test]
    fn a_bad_proxy_is_an_error_naming_the_variable() {
        let err = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            EnvProxies::from_lookup(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("HTTPS_PROXY", "socks5://h:1")]).contains("HTTPS_PROXY=socks5://h:1"));
        assert!(err(&[("http_proxy", "http://")]).contains("http_proxy"));
        assert!(err(&[("NO_PROXY", "a.test:port")]).contains("NO_PROXY"));
    }
}
