//! The engine's watches break — compacted history, a watch that cannot be
//! opened, a stream that ends — and runs still move to the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use testbed_core::agent::{AgentLiveness, AgentRecord, MethodSpec, PluginSpec};
use testbed_core::keys;
use testbed_core::run::{Run, RunStatus};
use testbed_core::task::{Task, TaskOutcome, TaskStatus};
use testbed_store::{
    Compare, DynStore, KeyValue, LeaseId, Page, RedbOptions, RedbStore, Result, Store, StoreError,
    TxnOp, WatchStream,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::{AppState, Inner, Settings};

/// A real (redb) store whose watches misbehave, in turn, the first times
/// each prefix is watched: the first asks the store for revision 1, which
/// its tiny history has compacted (the store itself answers `Compacted`);
/// the next three cannot be opened; the fifth ends after one event; from
/// then on watches are what the store gives.
struct Flaky {
    inner: DynStore,
    opened: Mutex<HashMap<String, u32>>,
}

impl Flaky {
    fn opened(&self, prefix: &str) -> u32 {
        self.opened
            .lock()
            .unwrap()
            .get(prefix)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Store for Flaky {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64> {
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        self.inner.range(prefix, after, limit).await
    }
    async fn txn(&self, compares: &[(String, Compare)], ops: Vec<TxnOp>) -> Result<Option<i64>> {
        self.inner.txn(compares, ops).await
    }
    async fn revision(&self) -> Result<i64> {
        self.inner.revision().await
    }
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let n = {
            let mut opened = self.opened.lock().unwrap();
            let n = opened.entry(prefix.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        match n {
            1 => self.inner.watch(prefix, 1).await,
            2..=4 => Err(StoreError::Unavailable(format!("injected failure {n}"))),
            5 => Ok(Box::pin(
                self.inner.watch(prefix, from_revision).await?.take(1),
            )),
            _ => self.inner.watch(prefix, from_revision).await,
        }
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

fn state_over(store: DynStore, dir: &std::path::Path) -> AppState {
    AppState(Arc::new(Inner {
        store,
        blobs: crate::blobs::Blobs::local(&dir.join("blobs")).unwrap(),
        auth: crate::auth::Auth::new(b"test-secret", "join".into(), Duration::from_secs(60)),
        hub: Default::default(),
        settings: Settings::default(),
        replica: "test".into(),
        shutdown: CancellationToken::new(),
        leading: Default::default(),
        perf: Default::default(),
        loops: Default::default(),
    }))
}

async fn add_agent(state: &AppState) {
    let uuid = Uuid::new_v4();
    let record = AgentRecord {
        kind: AgentRecord::KIND.into(),
        v: 1,
        uuid,
        id: 1,
        name: "sim".into(),
        host: "sim".into(),
        labels: Default::default(),
        groups: Vec::new(),
        plugins: vec![PluginSpec {
            name: "linux_system".into(),
            methods: vec![MethodSpec {
                name: "run_shell".into(),
                description: String::new(),
                schema: serde_json::json!({"type": "object"}),
            }],
        }],
        capacity: 4,
        version: "test".into(),
        root: false,
        run_as: None,
        registered_at: testbed_core::now(),
        last_seen_at: testbed_core::now(),
    };
    crate::records::put(&state.store, &keys::agent(&uuid), &record, None)
        .await
        .unwrap();
    let lease = state
        .store
        .grant_lease(Duration::from_secs(600))
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
    crate::records::put(&state.store, &keys::agent_alive(&uuid), &alive, Some(lease))
        .await
        .unwrap();
}

/// Plays the agent: every queued task succeeds at once.
async fn complete_queued(state: &AppState) {
    let page = state.store.range(keys::TASKS, None, 0).await.unwrap();
    for kv in page.kvs {
        // The test's own noise under `/tasks/` is no task.
        let Ok(t) = serde_json::from_slice::<Task>(&kv.value) else {
            continue;
        };
        if t.status == TaskStatus::Queued {
            let outcome = TaskOutcome {
                status: TaskStatus::Succeeded,
                exit_code: Some(0),
                result: None,
                error: None,
                started_at: Some(testbed_core::now()),
                finished_at: testbed_core::now(),
                log_bytes: 0,
            };
            crate::dispatch::settle(state, t.id, outcome).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_move_while_the_engine_watches_break() {
    let dir = std::env::temp_dir().join(format!("testbed-engine-{}", Uuid::new_v4()));
    // A history of two revisions: a watcher from revision 1 is told the
    // history is compacted, by the store itself.
    let redb = RedbStore::open_with(
        dir.join("s.redb"),
        RedbOptions {
            history_revisions: 2,
            ..RedbOptions::default()
        },
    )
    .unwrap();
    let flaky = Arc::new(Flaky {
        inner: Arc::new(redb),
        opened: Mutex::new(HashMap::new()),
    });
    let state = state_over(flaky.clone(), &dir);
    add_agent(&state).await;

    let plan = "name: chain\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: b\n    depends_on: [a]\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: c\n    depends_on: [b]\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n";
    let spec = testbed_core::plan::parse(plan).unwrap();
    let run = super::create_run(&state, spec, None, Default::default(), None, "test")
        .await
        .unwrap();

    let lease = state
        .store
        .grant_lease(Duration::from_secs(600))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let engine = tokio::spawn(super::drive(state.clone(), lease, stop.clone()));

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_failing = false;
    let done = loop {
        complete_queued(&state).await;
        if !state.loops.failing().is_empty() {
            seen_failing = true;
        }
        let (r, _) = crate::records::get::<Run>(&state.store, &keys::run(&run.id))
            .await
            .unwrap()
            .unwrap();
        if r.status.is_terminal() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the run stopped moving: {:?}",
            r.steps
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.status, RunStatus::Passed, "{:?}", done.steps);
    assert!(seen_failing, "the failing watches were never reported");

    // Every misbehaving watch was opened again, and ends up healthy.
    let deadline = Instant::now() + Duration::from_secs(15);
    while flaky.opened(keys::TASKS) < 6
        || flaky.opened(keys::ACTIVE_RUNS) < 6
        || !state.loops.failing().is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "watches not re-opened: tasks {}, runs {}, failing {:?}",
            flaky.opened(keys::TASKS),
            flaky.opened(keys::ACTIVE_RUNS),
            state.loops.failing()
        );
        // Events keep the watches busy so the one that ends after one
        // event does end.
        state
            .store
            .put(&keys::task(&Uuid::new_v4()), b"{}".to_vec(), None)
            .await
            .unwrap();
        state
            .store
            .put(&keys::active_run(&Uuid::new_v4()), b"x".to_vec(), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // And the engine, its watches back, carries on with the next run.
    let spec = testbed_core::plan::parse(plan).unwrap();
    let second = super::create_run(&state, spec, None, Default::default(), None, "test")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        complete_queued(&state).await;
        let (r, _) = crate::records::get::<Run>(&state.store, &keys::run(&second.id))
            .await
            .unwrap()
            .unwrap();
        if r.status.is_terminal() {
            assert_eq!(r.status, RunStatus::Passed, "{:?}", r.steps);
            break;
        }
        assert!(Instant::now() < deadline, "second run stuck: {:?}", r.steps);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(state.loops.failing().is_empty());

    stop.cancel();
    engine.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
