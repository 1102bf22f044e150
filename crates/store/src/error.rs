use thiserror::Error;

/// Everything a [`crate::Store`] call can fail with.
///
/// The variants are what a caller can act on: `LeaseNotFound` means "register
/// again", `Compacted` means "re-list and watch from the new revision",
/// `Unavailable` means "retry later"; the rest are configuration or backend
/// faults to report.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid store spec {0}")]
    InvalidSpec(String),
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(i64),
    #[error("revision {requested} was compacted (oldest available is {oldest})")]
    Compacted { requested: i64, oldest: i64 },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("etcd: {0}")]
    Etcd(String),
    /// The caller passed something no backend accepts (an empty key, a zero
    /// TTL); checked up front so both backends fail the same way.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
}
