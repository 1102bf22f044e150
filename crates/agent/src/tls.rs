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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
pub use rustls::ClientConfig;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
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
    let builder = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = if let Some(fp) = fingerprint {
        let pin = parse_fingerprint(fp)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier::new(move || Some(pin))))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::Pem {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

/// A configuration accepting exactly the certificate whose SHA-256 `pin`
/// returns at handshake time (`testbed up`'s local agents follow the
/// server's reloaded certificate this way).
pub fn pinned_config(
    pin: impl Fn() -> Option<[u8; 32]> + Send + Sync + 'static,
) -> Result<ClientTls, TlsError> {
    let config = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pin)))
        .with_no_client_auth();
    Ok(ClientTls(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

type Pin = dyn Fn() -> Option<[u8; 32]> + Send + Sync;

struct PinVerifier {
    pin: Box<Pin>,
    provider: CryptoProvider,
}

impl PinVerifier {
    fn new(pin: impl Fn() -> Option<[u8; 32]> + Send + Sync + 'static) -> Self {
        PinVerifier {
            pin: Box::new(pin),
            provider: provider::default_provider(),
        }
    }
}

impl fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinVerifier")
    }
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

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = sha256(end_entity);
        match (self.pin)() {
            Some(want) if want == got => Ok(ServerCertVerified::assertion()),
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
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
