//! Agents ("slaves" / compute nodes in seed 002) and what they carry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// One method a plugin offers, with the JSON schema its parameters must meet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MethodSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema (draft 2020-12) of the `parameters` object.
    #[schema(value_type = Object)]
    pub schema: Value,
}

/// A plugin as an agent announces it in `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PluginSpec {
    pub name: String,
    pub methods: Vec<MethodSpec>,
}

impl PluginSpec {
    pub fn method(&self, name: &str) -> Option<&MethodSpec> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// A sample of the agent machine's load, sent with every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SystemMetrics {
    /// Global CPU usage in percent (0–100).
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Bytes received on all interfaces since the previous sample.
    pub network_rx_bytes: u64,
    /// Bytes sent on all interfaces since the previous sample.
    pub network_tx_bytes: u64,
    pub load_average_1m: f64,
}

/// The durable registration of an agent, kept at `/agents/{uuid}`.
///
/// It survives the agent going away, so its numeric id stays stable across
/// reconnects and restarts; liveness is the separate, lease-bound
/// `/agents/{uuid}/alive` key ([`AgentLiveness`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentRecord {
    pub kind: String,
    pub v: u32,
    pub uuid: Uuid,
    /// Small, stable number (seed 002's `id`).
    pub id: u64,
    pub name: String,
    pub host: String,
    pub labels: BTreeMap<String, String>,
    pub groups: Vec<String>,
    pub plugins: Vec<PluginSpec>,
    /// How many tasks the agent runs at once.
    pub capacity: u32,
    pub version: String,
    /// The agent process runs as root (tasks may have been dropped to `run_as`).
    pub root: bool,
    pub run_as: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl AgentRecord {
    pub const KIND: &'static str = "agent";

    /// `linux_system,build_server`: seed 002's `compute_node_type`.
    pub fn compute_node_type(&self) -> String {
        self.plugins
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// plugin → method → description: seed 002's `compute_node_method`.
    pub fn compute_node_method(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.plugins
            .iter()
            .map(|p| {
                let methods = p
                    .methods
                    .iter()
                    .map(|m| (m.name.clone(), m.description.clone()))
                    .collect();
                (p.name.clone(), methods)
            })
            .collect()
    }

    pub fn plugin(&self, name: &str) -> Option<&PluginSpec> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// Does `selector` (a host, a name or a uuid) name this agent?
    pub fn matches_host(&self, selector: &str) -> bool {
        self.host == selector || self.name == selector || self.uuid.to_string() == selector
    }
}

/// The lease-bound value at `/agents/{uuid}/alive`: present exactly while the
/// agent holds a live session with some server replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentLiveness {
    pub kind: String,
    pub v: u32,
    /// Which server replica holds the agent's WebSocket.
    pub replica: String,
    pub connected_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Tasks the agent is running now; the scheduler's load measure.
    pub running: u32,
    pub metrics: SystemMetrics,
}

impl AgentLiveness {
    pub const KIND: &'static str = "agent_alive";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Online,
    Offline,
}
