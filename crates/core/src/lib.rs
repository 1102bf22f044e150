//! The vocabulary every other Testbed crate speaks: agents and their plugins,
//! tasks, users, the agent wire protocol and the store key layout.
//!
//! Nothing here does I/O, so the model can be used by the server, the agent,
//! the CLI and tests alike without pulling in a runtime.

pub mod agent;
pub mod keys;
pub mod plan;
pub mod protocol;
pub mod run;
pub mod schema;
pub mod task;
pub mod template;
pub mod user;
pub mod yaml;

/// Current time as an RFC 3339 timestamp in UTC, the format of every time
/// field Testbed stores or returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A certificate's SHA-256 digest as printed by the server beside the join
/// token (upper-case hex pairs joined by `:`, as openssl prints it) and
/// accepted by agents as `--server-fingerprint`.
pub fn format_fingerprint(sha256: &[u8]) -> String {
    sha256
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
