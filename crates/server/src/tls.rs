//! TLS for the server's listener: a certificate chain and key from PEM
//! files, re-read when either file changes so a renewed certificate takes
//! effect without a restart.
//!
//! A renewal is rarely atomic (the certificate is often written before the
//! key), so a pair that does not load or does not match keeps the previous
//! one in service and is retried once either file changes again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// The PEM files a TLS listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it (expected `-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: unusable private key: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Identifies one version of a file: a rename-into-place changes the inode,
/// an in-place rewrite the mtime or length.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

/// The certificate in service, and the files it came from.
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
    /// Stamps of the last pair tried, loaded or not, so a broken pair is
    /// reported once rather than at every check.
    tried: Mutex<(Stamp, Stamp)>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl CertStore {
    /// Loads the pair; an error here stops the server from starting.
    pub fn load(files: TlsFiles) -> Result<Arc<CertStore>, TlsError> {
        let stamps = (stamp(&files.cert), stamp(&files.key));
        let loaded = load_pair(&files)?;
        Ok(Arc::new(CertStore {
            files,
            current: RwLock::new(Arc::new(loaded)),
            tried: Mutex::new(stamps),
        }))
    }

    /// SHA-256 of the leaf certificate in service, as `AB:CD:…` (the form
    /// `openssl x509 -fingerprint -sha256` prints).
    pub fn fingerprint(&self) -> String {
        self.current().fingerprint.clone()
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files if either changed since the last attempt.
    /// `Ok(true)`: a new certificate is in service.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = (stamp(&self.files.cert), stamp(&self.files.key));
        {
            let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
            if *tried == stamps {
                return Ok(false);
            }
            *tried = stamps;
        }
        let loaded = load_pair(&self.files)?;
        let changed = loaded.fingerprint != self.fingerprint();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(changed)
    }

    /// Checks the files every `every` until `stop`; errors are logged and
    /// the previous certificate stays in service.
    pub fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let store = self.clone();
                match tokio::task::spawn_blocking(move || store.reload_if_changed()).await {
                    Ok(Ok(true)) => tracing::info!(
                        cert = %self.files.cert.display(),
                        fingerprint = %self.fingerprint(),
                        "TLS certificate reloaded"
                    ),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(
                        "TLS certificate not reloaded, the previous one stays in service: {e}"
                    ),
                    Err(e) => tracing::error!("TLS certificate check failed: {e}"),
                }
            }
        });
    }

    /// A rustls configuration that always serves the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(testbed_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        // The API is HTTP/1.1 only (WebSocket upgrades included).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load_pair(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let cert_pem = read(&files.cert)?;
    let chain = testbed_tls::certs_from_pem(&cert_pem).map_err(|e| match e {
        testbed_tls::TlsError::NoCertificate => TlsError::NoCertificate {
            path: files.cert.clone(),
        },
        e => TlsError::Pem {
            path: files.cert.clone(),
            message: e.to_string(),
        },
    })?;
    // Never empty: certs_from_pem refuses PEM without a certificate.
    let fingerprint = fingerprint(&chain[0]);
    let key_pem = read(&files.key)?;
    let key = testbed_tls::key_from_pem(&key_pem).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        message: e.to_string(),
    })?;
    let signer = provider::sign::any_supported_type(&key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        message: e.to_string(),
    })?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(e) => {
            return Err(TlsError::Pem {
                path: files.cert.clone(),
                message: e.to_string(),
            })
        }
    }
    Ok(Loaded {
        key: Arc::new(key),
        fingerprint,
    })
}

/// SHA-256 of a DER certificate as upper-case hex pairs joined by `:`.
pub fn fingerprint(cert: &[u8]) -> String {
    testbed_core::format_fingerprint(ring::digest::digest(&ring::digest::SHA256, cert).as_ref())
}
