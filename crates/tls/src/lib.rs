//! rustls configurations, built in one place so every component speaks TLS
//! the same way: rustls with the ring provider, named explicitly so nothing
//! depends on which process-wide default another crate (reqwest) installed,
//! and the one certificate verifier that skips chain validation (for
//! `insecure` and for pinned certificates) written once.
//!
//! * [`client_config`]: trust the public web roots (webpki-roots), a CA
//!   bundle, any certificate, or one that passes the caller's own check
//!   (a pinned fingerprint) ([`Trust`]), optionally presenting a client
//!   certificate ([`Identity`]), offering the given ALPN protocols.
//! * [`server_config`]: a certificate chain and key, e.g. from PEM with
//!   [`certs_from_pem`] and [`key_from_pem`].
//!
//! Files are the caller's business (each names its own settings in its
//! errors); this crate takes bytes.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Why a configuration could not be built. Messages name the problem, not
/// the file: callers prefix the setting or path it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no PEM certificate in it")]
    NoCertificate,
    #[error("{0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// A CA certificate rustls cannot use as a trust anchor.
    #[error("{0}")]
    Root(rustls::Error),
    /// A certificate chain and key that do not work together.
    #[error("{0}")]
    Identity(rustls::Error),
    /// The provider offers no usable protocol version.
    #[error("{0}")]
    Config(rustls::Error),
}

/// A check of the server's own (leaf) certificate, e.g. against a pinned
/// fingerprint; an error rejects the handshake with it.
pub type LeafCheck = Arc<dyn Fn(&CertificateDer<'_>) -> Result<(), rustls::Error> + Send + Sync>;

/// Whose certificates a client accepts.
#[derive(Clone)]
pub enum Trust {
    /// The Mozilla roots shipped in webpki-roots.
    WebRoots,
    /// Exactly these CA certificates (a private CA).
    Roots(Vec<CertificateDer<'static>>),
    /// Any certificate chain and name (`insecure`), for the self-signed
    /// certificates of fresh installations. The handshake signatures are
    /// still checked, so the peer must hold the key of the certificate it
    /// presents.
    AcceptAny,
    /// Whatever certificate passes the check, whatever its issuer and
    /// names; handshake signatures are checked as with `AcceptAny`.
    Check(LeafCheck),
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::WebRoots => f.write_str("WebRoots"),
            Trust::Roots(certs) => write!(f, "Roots({} certificates)", certs.len()),
            Trust::AcceptAny => f.write_str("AcceptAny"),
            Trust::Check(_) => f.write_str("Check(..)"),
        }
    }
}

/// A certificate chain and its private key: a client certificate for
/// mutual TLS, or a server's certificate.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The chain and key from PEM text.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: certs_from_pem(chain)?,
            key: key_from_pem(key)?,
        })
    }
}

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Every certificate in PEM text; none at all is an error.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key (PKCS#1, PKCS#8 or SEC1) in PEM text.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    Ok(PrivateKeyDer::from_pem_slice(pem)?)
}

/// A client configuration: `trust` decides which servers are accepted,
/// `identity` is presented when the server asks for a certificate, `alpn`
/// is offered in order of preference.
pub fn client_config(
    trust: Trust,
    identity: Option<Identity>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match trust {
        Trust::AcceptAny => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LeafVerifier {
                check: None,
                provider,
            })),
        Trust::Check(check) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LeafVerifier {
                check: Some(check),
                provider,
            })),
        Trust::WebRoots => builder.with_root_certificates(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        Trust::Roots(certs) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots.add(cert).map_err(TlsError::Root)?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(TlsError::Identity)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server configuration serving `identity` to every client, asking none
/// for a certificate, offering `alpn`.
pub fn server_config(identity: Identity, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(TlsError::Identity)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The verifier of [`Trust::AcceptAny`] (no check) and [`Trust::Check`]:
/// the chain and names are not validated, the handshake signatures are.
struct LeafVerifier {
    check: Option<LeafCheck>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for LeafVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeafVerifier")
    }
}

impl ServerCertVerifier for LeafVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(check) = &self.check {
            check(end_entity)?;
        }
        Ok(ServerCertVerified::assertion())
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
    use rustls::{ClientConnection, Connection, ServerConnection};

    // Made with `openssl req -x509` (the CA, whose key was thrown away) and
    // `openssl x509 -req` (the server, for localhost and 127.0.0.1), valid
    // until 2126.
    const CA: &[u8] = include_bytes!("../testdata/ca.pem");
    const CERT: &[u8] = include_bytes!("../testdata/localhost.pem");
    const KEY: &[u8] = include_bytes!("../testdata/localhost.key");

    fn server(alpn: &[&[u8]]) -> ServerConfig {
        server_config(Identity::from_pem(CERT, KEY).unwrap(), alpn).unwrap()
    }

    /// A complete handshake between the two configurations, in memory: the
    /// negotiated ALPN protocol, or the error either side raised.
    fn handshake(
        client: ClientConfig,
        server: ServerConfig,
        name: &str,
    ) -> Result<Option<Vec<u8>>, rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut c = Connection::Client(ClientConnection::new(Arc::new(client), name)?);
        let mut s = Connection::Server(ServerConnection::new(Arc::new(server))?);
        for _ in 0..10 {
            transfer(&mut c, &mut s)?;
            transfer(&mut s, &mut c)?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(c.alpn_protocol().map(<[u8]>::to_vec));
            }
        }
        panic!("the handshake did not finish");
    }

    /// Everything `from` has to send, received and processed by `to`.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    /// The client refuses the server's certificate when dialling `name`.
    fn assert_refused(trust: Trust, name: &str) {
        let client = client_config(trust, None, &[]).unwrap();
        let err = handshake(client, server(&[]), name).unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn a_private_ca_is_trusted_and_names_are_checked() {
        let trust = || Trust::Roots(certs_from_pem(CA).unwrap());
        let alpn = handshake(
            client_config(trust(), None, &[b"h2", b"http/1.1"]).unwrap(),
            server(&[b"http/1.1"]),
            "localhost",
        )
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_refused(trust(), "elsewhere.example");
    }

    #[test]
    fn web_roots_refuse_a_self_signed_certificate() {
        assert_refused(Trust::WebRoots, "localhost");
    }

    #[test]
    fn accept_any_takes_any_name_and_issuer() {
        let alpn = handshake(
            client_config(Trust::AcceptAny, None, &[b"h2"]).unwrap(),
            server(&[b"h2"]),
            "elsewhere.example",
        )
        .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    }

    #[test]
    fn a_leaf_check_decides_alone() {
        let leaf = certs_from_pem(CERT).unwrap().remove(0);
        let pinned = move |want: CertificateDer<'static>| {
            Trust::Check(Arc::new(move |got: &CertificateDer<'_>| {
                if got.as_ref() == want.as_ref() {
                    Ok(())
                } else {
                    Err(rustls::Error::General("not the pinned certificate".into()))
                }
            }))
        };
        let ok = client_config(pinned(leaf), None, &[]).unwrap();
        assert!(handshake(ok, server(&[]), "elsewhere.example").is_ok());
        let ca = certs_from_pem(CA).unwrap().remove(0);
        let refused = client_config(pinned(ca), None, &[]).unwrap();
        let err = handshake(refused, server(&[]), "localhost").unwrap_err();
        assert_eq!(
            err,
            rustls::Error::General("not the pinned certificate".into())
        );
    }

    #[test]
    fn pem_problems_are_named() {
        let err = certs_from_pem(b"not a certificate").unwrap_err();
        assert_eq!(err.to_string(), "no PEM certificate in it");
        assert!(matches!(key_from_pem(CERT), Err(TlsError::Pem(_))));
    }
}
