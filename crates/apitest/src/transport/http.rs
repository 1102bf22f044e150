//! HTTP(S) over TCP or a Unix socket, HTTP/1.1 or HTTP/2, with the TLS knobs
//! infrastructure endpoints need: a private CA, a client certificate, and
//! `insecure` for the self-signed certificates of a fresh vCenter or kubeadm.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::TransportError;
use crate::Reply;

/// The suite-wide `http:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget {
    /// Prefix of relative request URLs, e.g. `https://vcenter.lab/api`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Send every request over this Unix socket (Docker, Podman); URLs then
    /// name only the path, e.g. `http://localhost/v1.43/containers/json`.
    #[serde(default)]
    pub unix_socket: Option<String>,
    /// HTTP/2 with prior knowledge (h2c on plain TCP); over TLS, HTTP/2 is
    /// negotiated by ALPN anyway.
    #[serde(default)]
    pub http2: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per request; default 30s.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub tls: TlsOptions,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file of extra trusted CA certificates.
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM client certificate (chain) for mutual TLS; needs `key`.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// Accept any server certificate.
    #[serde(default)]
    pub insecure: bool,
}

/// One `request:` of a step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    #[serde(default = "get")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub query: BTreeMap<String, Value>,
    /// A JSON body (sets `content-type: application/json`).
    #[serde(default)]
    pub json: Option<Value>,
    /// A text body, sent as is.
    #[serde(default)]
    pub body: Option<String>,
    /// A form body (`application/x-www-form-urlencoded`).
    #[serde(default)]
    pub form: Option<BTreeMap<String, Value>>,
    /// A body read from a file, relative to the suite.
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

fn get() -> String {
    "GET".into()
}

impl HttpRequest {
    /// Which body fields are set; at most one may be.
    pub fn bodies(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.json.is_some() {
            v.push("json");
        }
        if self.body.is_some() {
            v.push("body");
        }
        if self.form.is_some() {
            v.push("form");
        }
        if self.file.is_some() {
            v.push("file");
        }
        v
    }
}

/// A client for one suite: one connection pool, one TLS configuration.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base_url: Option<String>,
    headers: BTreeMap<String, String>,
    timeout: Duration,
}

fn duration(s: Option<&str>, default: Duration) -> Result<Duration, TransportError> {
    Ok(super::parse_duration(s, "timeout")?.unwrap_or(default))
}

fn read(base: &Path, file: &str, what: &str) -> Result<Vec<u8>, TransportError> {
    let p = base.join(file);
    std::fs::read(&p).map_err(|e| TransportError::Invalid(format!("{what} {}: {e}", p.display())))
}

impl HttpClient {
    pub fn new(target: &HttpTarget, base: &Path) -> Result<HttpClient, TransportError> {
        let tls_err = |e: reqwest::Error| TransportError::Tls(e.to_string());
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(target.tls.insecure);
        if let Some(ca) = &target.tls.ca {
            for cert in reqwest::Certificate::from_pem_bundle(&read(base, ca, "tls.ca")?)
                .map_err(tls_err)?
            {
                b = b.add_root_certificate(cert);
            }
        }
        match (&target.tls.cert, &target.tls.key) {
            (Some(c), Some(k)) => {
                let mut pem = read(base, c, "tls.cert")?;
                pem.push(b'\n');
                pem.extend(read(base, k, "tls.key")?);
                b = b.identity(reqwest::Identity::from_pem(&pem).map_err(tls_err)?);
            }
            (None, None) => {}
            _ => {
                return Err(TransportError::Invalid(
                    "tls.cert and tls.key go together".into(),
                ))
            }
        }
        if target.http2 {
            b = b.http2_prior_knowledge();
        }
        if let Some(sock) = &target.unix_socket {
            b = b.unix_socket(base.join(sock));
        }
        let client = b.build().map_err(tls_err)?;
        Ok(HttpClient {
            client,
            base_url: target.base_url.clone(),
            headers: target.headers.clone(),
            timeout: duration(target.timeout.as_deref(), Duration::from_secs(30))?,
        })
    }

    fn url(&self, url: &str) -> String {
        if url.contains("://") {
            return url.to_string();
        }
        match &self.base_url {
            Some(b) => format!(
                "{}/{}",
                b.trim_end_matches('/'),
                url.trim_start_matches('/')
            ),
            None => format!("http://localhost/{}", url.trim_start_matches('/')),
        }
    }

    /// Sends a request whose templates are already rendered.
    pub async fn send(&self, req: &HttpRequest, base: &Path) -> Result<Reply, TransportError> {
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| TransportError::Invalid(format!("bad method {:?}", req.method)))?;
        let url = self.url(&req.url);
        let timeout = duration(req.timeout.as_deref(), self.timeout)?;
        let mut rb = self.client.request(method, &url).timeout(timeout);
        for (k, v) in self.headers.iter().chain(req.headers.iter()) {
            rb = rb.header(k, v);
        }
        if !req.query.is_empty() {
            let q: Vec<(String, String)> = req
                .query
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect();
            rb = rb.query(&q);
        }
        if let Some(j) = &req.json {
            rb = rb.json(j);
        } else if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        } else if let Some(f) = &req.form {
            let q: Vec<(String, String)> = f.iter().map(|(k, v)| (k.clone(), text(v))).collect();
            rb = rb.form(&q);
        } else if let Some(file) = &req.file {
            rb = rb.body(read(base, file, "file")?);
        }
        let started = Instant::now();
        let resp = rb.send().await.map_err(|e| classify(&e, timeout))?;
        let status = resp.status().as_u16();
        let headers = header_pairs(resp.headers());
        let body = resp.bytes().await.map_err(|e| classify(&e, timeout))?;
        let mut reply = Reply {
            status: Some(i64::from(status)),
            headers,
            body: body.to_vec(),
            duration: started.elapsed(),
            ..Reply::default()
        };
        reply.parse_json();
        // SOAP and other XML replies: readable by the same jsonpath asserts.
        let xml = reply
            .header("content-type")
            .is_some_and(|t| t.contains("xml"));
        if reply.json.is_none() && xml {
            reply.json = super::xml::to_json(&reply.body);
        }
        Ok(reply)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A reply's headers as (name, value) pairs in their order, a value that is
/// not UTF-8 read lossily: the shape YAML suites and Postman scripts see.
pub(crate) fn header_pairs(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Says why a request got no answer, in the transport layer's terms and
/// briefly: the innermost cause, not reqwest's whole chain.
pub(crate) fn classify(e: &reqwest::Error, timeout: Duration) -> TransportError {
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let all = chain.join(": ").to_ascii_lowercase();
    let root = chain.last().cloned().unwrap_or_default();
    let target = e
        .url()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or_default(),
                u.port_or_known_default().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    if e.is_timeout() {
        TransportError::Timeout(humantime::format_duration(timeout).to_string())
    } else if all.contains("connection refused") {
        TransportError::Refused(target)
    } else if all.contains("dns error") || all.contains("failed to lookup") {
        TransportError::Dns(format!("{target}: {root}"))
    } else if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
        TransportError::Tls(format!("{target}: {root}"))
    } else if e.is_connect() {
        TransportError::Connect(format!("{target}: {root}"))
    } else if e.is_builder() {
        TransportError::Invalid(root)
    } else {
        TransportError::Io(format!("{target}: {root}"))
    }
}

/// A rustls client configuration for `tls`, for transports that drive
/// rustls themselves (gRPC); reqwest builds its own from the same options.
/// Trusts the `ca` file when given, else the Mozilla roots, and offers
/// `alpn` protocols. Files are read relative to `base`.
pub(crate) fn rustls_config(
    tls: &TlsOptions,
    base: &Path,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TransportError> {
    use testbed_tls::{certs_from_pem, key_from_pem, Identity, TlsError, Trust};

    let tls_err =
        |what: &str, file: &str, e: TlsError| TransportError::Tls(format!("{what} {file}: {e}"));
    let certs = |what: &str, file: &str| {
        certs_from_pem(&read(base, file, what)?).map_err(|e| tls_err(what, file, e))
    };
    // Checked before any file is read so the mistake is named first.
    let identity = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(TransportError::Invalid(
                "tls.cert and tls.key go together".into(),
            ))
        }
    };
    let trust = match (&tls.ca, tls.insecure) {
        (_, true) => Trust::AcceptAny,
        (Some(ca), false) => Trust::Roots(certs("tls.ca", ca)?),
        (None, false) => Trust::WebRoots,
    };
    let identity = match identity {
        Some((cert, key)) => Some(Identity {
            chain: certs("tls.cert", cert)?,
            key: key_from_pem(&read(base, key, "tls.key")?)
                .map_err(|e| tls_err("tls.key", key, e))?,
        }),
        None => None,
    };
    let name = |file: &Option<String>| file.clone().unwrap_or_default();
    testbed_tls::client_config(trust, identity, alpn).map_err(|e| match e {
        TlsError::Root(_) => tls_err("tls.ca", &name(&tls.ca), e),
        TlsError::Identity(_) => {
            let pair = format!("{} / tls.key {}", name(&tls.cert), name(&tls.key));
            tls_err("tls.cert", &pair, e)
        }
        e => TransportError::Tls(e.to_string()),
    })
}
