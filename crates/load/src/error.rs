//! Error types of the load engine: configuration errors that name the bad
//! field (so an API can answer 422 listing each one) and run-time start errors.
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

use std::fmt;

/// One invalid field of a plan or of a seed-001 config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `concurrent_users` or `scenario.requests[0].url`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A plan (or seed config) that cannot run; every bad field is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid load configuration: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    pub(crate) fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            errors: vec![FieldError::new(field, message)],
        }
    }

    /// Whether some error names `field` exactly.
    pub fn names(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }
}

/// A threshold expression that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad threshold {expr:?}: {reason}")]
pub struct ThresholdError {
    /// The expression as given.
    pub expr: String,
    pub reason: String,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading data file {path}: {source}")]
    DataFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing data file {path}: {reason}")]
    DataFormat { path: String, reason: String },
    #[error("the run ended without a report (an engine thread failed)")]
    Aborted,
    #[error("starting the load workers: {0}")]
    Spawn(#[source] std::io::Error),
}
