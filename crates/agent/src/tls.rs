//! Whom the agent trusts when it dials an `https://` server.
//!
//! * `ca_file`: the CA certificates (PEM) that signed the server's
//!   certificate, e.g. a private CA; the server name is checked as usual.
//! * `server_fingerprint`: the SHA-256 of the server's own certificate, as
//!   `testbed server` prints it; exactly that certificate is accepted
//!   (whatever its issuer and names), the handshake signature still proves
//!   the server holds its key.
//! * neither: the public web roots (webpki-roots).
//!
//! The WebSocket session and the artifact uploads share one configuration.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
pub use rustls::ClientConfig;
use testbed_tls::Trust;
use thiserror::Error;

use crate::config::AgentConfig;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("ca_file: reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ca_file: {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("ca_file: {path} holds no PEM certificate (expected `-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { path: PathBuf },
    #[error(
        "server_fingerprint: `{0}` is not a SHA-256 fingerprint (64 hex digits, `:` between pairs allowed)"
    )]
    Fingerprint(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A client TLS configuration set by the program embedding the agent (the
/// local agents of `testbed up`); it wins over `ca_file` and
/// `server_fingerprint`.
#[derive(Clone)]
pub struct ClientTls(pub Arc<ClientConfig>);

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls(..)")
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Parses `AB:CD:…`, `abcd…` or openssl's `sha256 Fingerprint=AB:CD:…`.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::Fingerprint(text.to_string());
    let value = text.rsplit('=').next().unwrap_or(text).trim();
    let value = value
        .strip_prefix("sha256:")
        .or_else(|| value.strip_prefix("SHA256:"))
        .unwrap_or(value);
    let hex: String = value.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// SHA-256 of a DER certificate as upper-case hex pairs joined by `:`.
pub fn fingerprint(cert: &[u8]) -> String {
    testbed_core::format_fingerprint(&sha256(cert))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Checks the trust settings without reading files: `validate` uses it.
pub fn check(config: &AgentConfig) -> Result<(), String> {
    let https = config.server.starts_with("https://");
    if config.ca_file.is_some() && config.server_fingerprint.is_some() {
        return Err("ca_file and server_fingerprint: give one or the other".into());
    }
    if !https && (config.ca_file.is_some() || config.server_fingerprint.is_some()) {
        let what = if config.ca_file.is_some() {
            "ca_file"
        } else {
            "server_fingerprint"
        };
        return Err(format!(
            "{what}: only used with an https:// server, and server is `{}`",
            config.server
        ));
    }
    if let Some(fp) = &config.server_fingerprint {
        parse_fingerprint(fp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The configuration an `https://` server is dialled with; `None` for
/// `http://`.
pub fn client_config(config: &AgentConfig) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if let Some(tls) = &config.tls {
        return Ok(Some(tls.0.clone()));
    }
    trust(
        &config.server,
        config.ca_file.as_deref(),
        config.server_fingerprint.as_deref(),
    )
}

/// The configuration for `server` given a CA file or a pinned fingerprint
/// (the fingerprint wins), else the public roots; `None` for `http://`.
/// The command-line client uses it too.
pub fn trust(
    server: &str,
    ca_file: Option<&Path>,
    fingerprint: Option<&str>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if !server.starts_with("https://") {
        return Ok(None);
    }
    let trust = match (fingerprint, ca_file) {
        (Some(fp), _) => {
            let pin = parse_fingerprint(fp)?;
            pin_trust(move || Some(pin))
        }
        (None, Some(path)) => Trust::Roots(read_certs(path)?),
        (None, None) => Trust::WebRoots,
    };
    let config = testbed_tls::client_config(trust, None, &[]).map_err(|e| match (e, ca_file) {
        (testbed_tls::TlsError::Root(e), Some(path)) => TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
        (e, _) => TlsError::Config(e.to_string()),
    })?;
    Ok(Some(Arc::new(config)))
}

/// A configuration accepting exactly the certificate whose SHA-256 `pin`
/// returns at handshake time (`testbed up`'s local agents follow the
/// server's reloaded certificate this way).
pub fn pinned_config(
    pin: impl Fn() -> Option<[u8; 32]> + Send + Sync + 'static,
) -> Result<ClientTls, TlsError> {
    let config = testbed_tls::client_config(pin_trust(pin), None, &[])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(ClientTls(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    testbed_tls::certs_from_pem(&pem).map_err(|e| match e {
        testbed_tls::TlsError::NoCertificate => TlsError::NoCertificate {
            path: path.to_path_buf(),
        },
        e => TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// Trusts exactly the certificate whose SHA-256 `pin` returns, whatever
/// its issuer and names; the handshake signature still proves the server
/// holds its key.
fn pin_trust(pin: impl Fn() -> Option<[u8; 32]> + Send + Sync + 'static) -> Trust {
    Trust::Check(Arc::new(move |end_entity: &CertificateDer<'_>| {
        let got = sha256(end_entity);
        match pin() {
            Some(want) if want == got => Ok(()),
            want => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    got: fingerprint(end_entity),
                    want: want.map_or_else(
                        || "(none)".to_string(),
                        |w| {
                            w.iter()
                                .map(|b| format!("{b:02X}"))
                                .collect::<Vec<_>>()
                                .join(":")
                        },
                    ),
                }))),
            )),
        }
    }))
}

#[derive(Error)]
#[error("the server's certificate has fingerprint {got}, not the pinned server_fingerprint {want}")]
struct PinMismatch {
    got: String,
    want: String,
}

// rustls shows a certificate error with `Debug`: make that the sentence.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_every_printed_form() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        let want = [0xabu8; 32];
        assert_eq!(parse_fingerprint(&hex).unwrap(), want);
        assert_eq!(parse_fingerprint(&colons).unwrap(), want);
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={colons}")).unwrap(),
            want
        );
        assert!(parse_fingerprint(&hex[..62]).is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
