//! Test cases, environments and groups of agents: `/api/testcases`,
//! `/api/environments`, `/api/groups`. Test cases and environments are
//! served as stored ([`TestCase`], [`Environment`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use testbed_core::run::{Environment, Group, TestCase};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    // Spelled out rather than `#[serde(flatten)]`ed: `Group` denies unknown
    // fields, and a flattened `allOf` with it would make the spec reject
    // every real response (`testbed api check` caught this).
    pub name: String,
    pub description: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Member agents: uuid → name.
    pub agents: Vec<GroupMember>,
    /// The run holding the group exclusively, if any.
    pub reserved_by: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupMember {
    pub uuid: Uuid,
    pub id: u64,
    pub name: String,
    pub online: bool,
}
