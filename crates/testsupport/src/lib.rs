//! Helpers shared by the tests of several Testbed crates, so that a test
//! server or a fixture helper is written once: a dev-dependency only, never
//! published.
//!
//! - [`echo`]: the postman-echo.com stand-in (apitest's Newman parity tests,
//!   the CLI's `testbed api run` tests).
//! - [`newman`]: the Newman fixtures with postman-echo.com pointed at it.
//! - [`openssl`]: the `openssl` command, for test certificates.

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
