//! Agents ("slaves" / compute nodes in seed 002) and what they carry.
//!
//! What seed 002 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-002-compute-nodes-and-test-cases.

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

/// What an agent says about itself in `hello` ([`crate::protocol::Hello`]),
/// kept as-is in its [`AgentRecord`]: one type, so the record cannot drift
/// from what agents send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentProfile {
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
}

impl AgentProfile {
    pub fn plugin(&self, name: &str) -> Option<&PluginSpec> {
        self.plugins.iter().find(|p| p.name == name)
    }
}

/// The durable registration of an agent, kept at `/agents/{uuid}`.
///
/// It survives the agent going away, so its numeric id stays stable across
/// reconnects and restarts; liveness is the separate, lease-bound
/// `/agents/{uuid}/alive` key ([`AgentLiveness`]).
///
/// The profile is flattened, so the stored JSON keeps one flat object with
/// the fields in the same order as before the profile had a type of its own
/// (the record layout is an external contract, see docs/seed-interfaces.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentRecord {
    pub kind: String,
    pub v: u32,
    pub uuid: Uuid,
    /// Small, stable number (seed 002's `id`).
    pub id: u64,
    #[serde(flatten)]
    pub profile: AgentProfile,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl AgentRecord {
    pub const KIND: &'static str = "agent";

    /// `linux_system,build_server`: seed 002's `compute_node_type`.
    pub fn compute_node_type(&self) -> String {
        self.profile
            .plugins
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// plugin → method → description: seed 002's `compute_node_method`.
    pub fn compute_node_method(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.profile
            .plugins
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
        self.profile.plugin(name)
    }

    /// Does `selector` (a host, a name or a uuid) name this agent?
    pub fn matches_host(&self, selector: &str) -> bool {
        self.profile.host == selector
            || self.profile.name == selector
            || self.uuid.to_string() == selector
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

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> AgentProfile {
        AgentProfile {
            name: "n1".into(),
            host: "h1".into(),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            groups: vec!["g".into()],
            plugins: vec![PluginSpec {
                name: "linux_system".into(),
                methods: Vec::new(),
            }],
            capacity: 2,
            version: "0.1.0".into(),
            root: false,
            run_as: None,
        }
    }

    /// The record as stores written before the profile had a type of its
    /// own hold it: one flat object, fields in this order.
    const STORED: &str = concat!(
        r#"{"kind":"agent","v":1,"uuid":"00000000-0000-0000-0000-000000000007","id":7,"#,
        r#""name":"n1","host":"h1","labels":{"zone":"a"},"groups":["g"],"#,
        r#""plugins":[{"name":"linux_system","methods":[]}],"capacity":2,"#,
        r#""version":"0.1.0","root":false,"run_as":null,"#,
        r#""registered_at":"2026-01-01T00:00:00Z","last_seen_at":"2026-01-01T00:00:00Z"}"#
    );

    #[test]
    fn record_json_is_the_flat_stored_layout() {
        let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let record = AgentRecord {
            kind: AgentRecord::KIND.into(),
            v: 1,
            uuid: Uuid::from_u128(7),
            id: 7,
            profile: profile(),
            registered_at: at,
            last_seen_at: at,
        };
        assert_eq!(serde_json::to_string(&record).unwrap(), STORED);
        let back: AgentRecord = serde_json::from_str(STORED).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.compute_node_type(), "linux_system");
        assert!(back.matches_host("h1") && back.matches_host("n1"));
    }

    #[test]
    fn hello_carries_the_profile_flat() {
        use crate::protocol::{AgentMessage, Hello};
        let hello = AgentMessage::Hello(Hello {
            protocol: 1,
            uuid: None,
            profile: profile(),
            running: Vec::new(),
            unacked: Vec::new(),
        });
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"type":"hello","protocol":1,"uuid":null,"#,
                r#""name":"n1","host":"h1","labels":{"zone":"a"},"groups":["g"],"#,
                r#""plugins":[{"name":"linux_system","methods":[]}],"capacity":2,"#,
                r#""version":"0.1.0","root":false,"run_as":null,"running":[],"unacked":[]}"#
            )
        );
        assert_eq!(serde_json::from_str::<AgentMessage>(&text).unwrap(), hello);
    }
}
