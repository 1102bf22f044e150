//! Transports: how a step reaches the system under test. Each one turns a
//! typed call into a [`Reply`](crate::Reply) or a [`TransportError`] whose
//! kind says why the system could not be reached.

use std::time::Duration;

use thiserror::Error;

pub mod exec;
pub mod grpc;
pub mod http;
pub mod qmp;
pub mod xml;

/// Why a call got no reply. Tests hit by one of these end as `error`, not
/// `fail`: the system under test was not judged.
#[derive(Debug, Clone, Error)]
pub enum TransportError {
    #[error("connection refused: {0}")]
    Refused(String),
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("timed out after {0}")]
    Timeout(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(String),
    #[error("invalid call: {0}")]
    Invalid(String),
}

/// A `30s`-style duration of a call or target field; `what` names the field.
pub(crate) fn parse_duration(
    value: Option<&str>,
    what: &str,
) -> Result<Option<Duration>, TransportError> {
    value
        .map(|v| {
            humantime::parse_duration(v.trim())
                .map_err(|e| TransportError::Invalid(format!("{what} `{v}`: {e}")))
        })
        .transpose()
}
