//! Projects: what performance tests belong to (seed 001's `project_id`).
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of create and update.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectInput {
    #[schema(pattern = r"\S", max_length = 200)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Seed 001's answer to a delete: `{"message": "…"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub message: String,
}
