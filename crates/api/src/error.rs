//! The body of every error answer: `{"error": "…"}` (seed 001), with
//! `details` naming each offending field on a 422.

use serde::{Deserialize, Serialize};
use testbed_core::schema::FieldError;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// Per-field problems (422 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}
