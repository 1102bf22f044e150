//! Agents: `/api/agents` and seed 002's `/v2.1/slaves` (the seed's name for
//! the same machines, kept at that edge).
//!
//! What seed 002 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-002-compute-nodes-and-test-cases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use testbed_core::agent::{AgentStatus, PluginSpec, SystemMetrics};
use utoipa::ToSchema;
use uuid::Uuid;

/// An agent as `/api/agents` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentInfo {
    pub uuid: Uuid,
    pub id: u64,
    pub name: String,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub groups: Vec<String>,
    pub status: AgentStatus,
    pub plugins: Vec<PluginSpec>,
    pub capacity: u32,
    /// Tasks assigned and not finished.
    pub outstanding: usize,
    /// Tasks running, as of the last heartbeat.
    pub running: u32,
    pub metrics: Option<SystemMetrics>,
    pub heartbeat_at: Option<chrono::DateTime<chrono::Utc>>,
    pub replica: Option<String>,
    pub version: String,
    pub root: bool,
    pub run_as: Option<String>,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
}

/// A compute node ("slave") as seed 002 shows it, plus name, labels, groups
/// and status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Slave {
    /// plugin → method → description.
    pub compute_node_method: BTreeMap<String, BTreeMap<String, String>>,
    /// Comma-separated plugin names.
    pub compute_node_type: String,
    pub host: String,
    pub id: u64,
    /// Present on `GET /v2.1/slaves/{id}`; the key of the map in `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub groups: Vec<String>,
    pub status: AgentStatus,
}
