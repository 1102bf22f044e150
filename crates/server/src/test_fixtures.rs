//! Set-ups shared by the server's unit tests: a replica's state over a
//! given store, and agents registered as the agent session would.

use std::sync::Arc;
use std::time::Duration;

use testbed_core::agent::{AgentLiveness, AgentProfile, AgentRecord, MethodSpec, PluginSpec};
use testbed_core::keys;
use testbed_store::{DynStore, LeaseId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::{AppState, Inner, Settings};

/// A replica's state over `store` (several may share one store), its blobs
/// under `dir`.
pub fn state_over(store: DynStore, dir: &std::path::Path) -> AppState {
    state_with(store, dir, Settings::default())
}

/// [`state_over`] with `settings`.
pub fn state_with(store: DynStore, dir: &std::path::Path, settings: Settings) -> AppState {
    AppState(Arc::new(Inner {
        store,
        blobs: crate::blobs::Blobs::local(&dir.join("blobs")).unwrap(),
        auth: crate::auth::Auth::new(b"test-secret", "join".into(), Duration::from_secs(60)),
        sessions: Default::default(),
        settings,
        replica: "test".into(),
        shutdown: CancellationToken::new(),
        leading: Default::default(),
        perf: Default::default(),
        loops: Default::default(),
        metrics: Default::default(),
        counters: Default::default(),
    }))
}

/// An agent to register: its id, its name (its host too), its groups and
/// its one plugin method.
pub struct TestAgent<'a> {
    pub id: u64,
    pub name: &'a str,
    pub groups: &'a [&'a str],
    pub plugin: &'a str,
    pub method: &'a str,
}

/// Registers `agent` as live (its liveness on `lease`, or none); its uuid.
pub async fn put_agent(state: &AppState, agent: TestAgent<'_>, lease: Option<LeaseId>) -> Uuid {
    let uuid = Uuid::new_v4();
    let record = AgentRecord {
        kind: AgentRecord::KIND.into(),
        v: 1,
        uuid,
        id: agent.id,
        profile: AgentProfile {
            name: agent.name.into(),
            host: agent.name.into(),
            labels: Default::default(),
            groups: agent.groups.iter().map(|g| g.to_string()).collect(),
            plugins: vec![PluginSpec {
                name: agent.plugin.into(),
                methods: vec![MethodSpec {
                    name: agent.method.into(),
                    description: String::new(),
                    schema: serde_json::json!({"type": "object"}),
                }],
            }],
            capacity: 4,
            version: "test".into(),
            root: false,
            run_as: None,
        },
        registered_at: testbed_core::now(),
        last_seen_at: testbed_core::now(),
    };
    crate::records::put(&state.store, &keys::agent(&uuid), &record, None)
        .await
        .unwrap();
    let alive = AgentLiveness {
        kind: AgentLiveness::KIND.into(),
        v: 1,
        replica: "test".into(),
        connected_at: testbed_core::now(),
        heartbeat_at: testbed_core::now(),
        running: 0,
        metrics: Default::default(),
    };
    crate::records::put(&state.store, &keys::agent_alive(&uuid), &alive, lease)
        .await
        .unwrap();
    uuid
}
