//! HTTPS options of suites against a real TLS server on 127.0.0.1 that
//! requires a client certificate: a private CA, mutual TLS, `insecure`, and
//! what happens without them. Certificates come from the `openssl` command.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use testbed_apitest::runner::{self, RunOptions};
use testbed_apitest::suite;
use testbed_report::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `200 ok` over TLS to clients holding a certificate from the CA.
async fn tls_server(dir: &Path) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca.pem") {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = br#"{"secure":true}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://127.0.0.1:{}", addr.port())
}

async fn run(dir: &Path, tls: serde_json::Value, base: &str) -> testbed_report::Case {
    let text = format!(
        "http:\n  base_url: {base}\n  tls: {tls}\ntests:\n  - name: t\n    steps:\n      - request: {{url: /}}\n        assert:\n          - jsonpath: $.secure\n            equals: true\n"
    );
    let file = dir.join(format!("suite-{}.yaml", uuid_like()));
    std::fs::write(&file, text).expect("write");
    let s = suite::load(&file).unwrap_or_else(|p| panic!("{p:?}"));
    let out = runner::run_suite(&s, &RunOptions::default()).await;
    out.cases.into_iter().next().expect("one case")
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[tokio::test]
async fn private_ca_client_certificates_and_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    testbed_testsupport::certificates(dir.path());
    let base = tls_server(dir.path()).await;

    for (tls, expected, what) in [
        (
            json!({"ca": "ca.pem", "cert": "client.pem", "key": "client.key"}),
            Outcome::Pass,
            "CA + client certificate",
        ),
        (
            json!({"insecure": true, "cert": "client.pem", "key": "client.key"}),
            Outcome::Pass,
            "insecure + client certificate",
        ),
        (
            json!({"ca": "ca.pem"}),
            Outcome::Error,
            "no client certificate",
        ),
    ] {
        let c = run(dir.path(), tls, &base).await;
        assert_eq!(c.outcome, expected, "{what}: {:?}", c.message);
    }

    let c = run(
        dir.path(),
        json!({"cert": "client.pem", "key": "client.key"}),
        &base,
    )
    .await;
    assert_eq!(c.outcome, Outcome::Error, "unknown CA: {:?}", c.message);
    let m = c.message.unwrap_or_default();
    assert!(
        m.contains("TLS") && m.to_lowercase().contains("certificate"),
        "names the cause: {m}"
    );

    let c = run(
        dir.path(),
        json!({"ca": "ca.pem", "cert": "client.pem"}),
        &base,
    )
    .await;
    assert_eq!(c.outcome, Outcome::Error);
    assert!(c
        .message
        .unwrap_or_default()
        .contains("tls.cert and tls.key go together"));
}
