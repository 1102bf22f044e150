//! Helpers shared by the tests of several Testbed crates, so that a test
//! server or a fixture helper is written once: a dev-dependency only, never
//! published.
//!
//! - [`echo`]: the postman-echo.com stand-in (apitest's Newman parity tests,
//!   the CLI's `testbed api run` tests).
//! - [`newman`]: the Newman fixtures with postman-echo.com pointed at it.
//! - [`certificates`]: a test CA with server and client certificates, made
//!   with [`openssl`].

pub mod echo;
pub mod newman;

use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; panics with its stderr when it fails, and
/// says that the test needs the command when it is missing.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the TLS test needs the `openssl` command: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`, `ca.key`), a server certificate for 127.0.0.1 and
/// localhost (`server.pem`, `server.key`; also good for client auth, as
/// etcd wants of its own) and a client certificate (`client.pem`,
/// `client.key`), all P-256 and valid for two days, written into `dir`.
pub fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=testbed test CA",
    ]);
    openssl(dir, &ca);
    for (name, usage) in [
        ("server", "serverAuth,clientAuth"),
        ("client", "clientAuth"),
    ] {
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n\
                 basicConstraints=CA:FALSE\n"
            ),
        )
        .expect("ext");
        let mut req = vec!["req"];
        req.extend(ec);
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let subj = format!("/CN={name}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}
