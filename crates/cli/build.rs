//! Stamps the git revision into `testbed --version`.
//!
//! `TESTBED_GIT_REVISION` (set by a build without a checkout, such as the
//! container image's) wins; else `git rev-parse --short HEAD`; else
//! "unknown". Never fails the build: a source tarball has no git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Watches a git file, if it exists: Cargo reruns a build script on every
/// build while a watched path is missing (`packed-refs` often is).
fn watch(dir: &Path, git_path: Option<String>) {
    if let Some(path) = git_path.map(|p| dir.join(p)) {
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TESTBED_GIT_REVISION");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let revision = match std::env::var("TESTBED_GIT_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            // A new commit or checkout changes HEAD or the branch it names:
            // rebuild the stamp then, and only then.
            for file in ["HEAD", "packed-refs"] {
                watch(&dir, git(&dir, &["rev-parse", "--git-path", file]));
            }
            if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                watch(&dir, git(&dir, &["rev-parse", "--git-path", &branch]));
            }
            git(&dir, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=TESTBED_GIT_REVISION={revision}");
}
