//! One-off placement on the replica's fleet view ([`super::FleetView`]),
//! against a real (redb) store: a view that is behind the store never puts
//! work on an agent that is gone or in a group a run reserved (the create
//! transaction's guard refuses it and the decision is made again on a fresh
//! read), never refuses work the store would place, and a view in step with
//! the store places without reading it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use testbed_core::agent::AgentRecord;
use testbed_core::keys;
use testbed_core::run::GroupLock;
use testbed_core::task::Task;
use testbed_store::{
    Compare, DynStore, KeyValue, LeaseId, Page, RedbStore, Result, Store, TxnOp, WatchStream,
};
use uuid::Uuid;

use crate::dispatch::{self, Assignment, SubmitRequest};
use crate::records;
use crate::state::AppState;
use crate::test_fixtures::{put_agent, state_over, TestAgent};

/// The real store, counting the range reads made through it.
struct Counting {
    inner: DynStore,
    ranges: AtomicUsize,
}

#[async_trait]
impl Store for Counting {
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
        self.ranges.fetch_add(1, Ordering::SeqCst);
        self.inner.range(prefix, after, limit).await
    }
    async fn txn(&self, compares: &[(String, Compare)], ops: Vec<TxnOp>) -> Result<Option<i64>> {
        self.inner.txn(compares, ops).await
    }
    async fn revision(&self) -> Result<i64> {
        self.inner.revision().await
    }
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        self.inner.watch(prefix, from_revision).await
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
        "counting".into()
    }
}

/// A directory of its own, removed with the fixture.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("testbed-placement-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fixture {
    state: AppState,
    counting: Arc<Counting>,
    dir: TempDir,
}

fn fixture() -> Fixture {
    let dir = TempDir::new();
    let counting = Arc::new(Counting {
        inner: Arc::new(RedbStore::open(dir.path().join("store.redb")).unwrap()),
        ranges: AtomicUsize::new(0),
    });
    let state = state_over(counting.clone(), dir.path());
    Fixture {
        state,
        counting,
        dir,
    }
}

/// Registers a live agent `name` (its host too) in `groups`; its uuid.
async fn add_agent(state: &AppState, id: u64, name: &str, groups: &[&str]) -> Uuid {
    let agent = TestAgent {
        id,
        name,
        groups,
        plugin: "noop",
        method: "noop",
    };
    put_agent(state, agent, None).await
}

/// Builds the view from the store as it is now; nothing follows the store
/// afterwards, so the view stays as it is while the tests change the store.
async fn snapshot_view(state: &AppState) {
    let agents = state.store.range(keys::AGENTS, None, 0).await.unwrap().kvs;
    let locks = state.store.range(keys::GROUPS, None, 0).await.unwrap().kvs;
    state.sessions.fleet.reset(agents, locks);
}

async fn reserve(state: &AppState, group: &str) -> Uuid {
    let run_id = Uuid::new_v4();
    let lock = GroupLock {
        run_id,
        since: testbed_core::now(),
    };
    records::put(&state.store, &keys::group_lock(group), &lock, None)
        .await
        .unwrap();
    run_id
}

fn request(host: &str) -> SubmitRequest {
    serde_json::from_value(serde_json::json!({
        "plugin": "noop", "method": "noop", "host": host, "parameters": {}
    }))
    .unwrap()
}

/// Waits until `state`'s view satisfies `ok`.
async fn until(state: &AppState, what: &str, ok: impl Fn(&super::Fleet) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.sessions.fleet.with(|fl| ok(fl)) != Some(true) {
        assert!(Instant::now() < deadline, "the view never saw: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assignment(state: &AppState, task: &Task) -> Assignment {
    records::get::<Assignment>(&state.store, &keys::assign(&task.agent_uuid, &task.id))
        .await
        .unwrap()
        .expect("the task has its assignment")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_in_step_with_the_store_places_without_reading_it() {
    let f = fixture();
    let a = add_agent(&f.state, 1, "a", &[]).await;
    snapshot_view(&f.state).await;
    let before = f.counting.ranges.load(Ordering::SeqCst);
    let task = dispatch::submit(&f.state, request("a"), "test")
        .await
        .unwrap();
    assert_eq!(task.agent_uuid, a);
    assert_eq!(
        f.counting.ranges.load(Ordering::SeqCst),
        before,
        "placed on the view: no listing of agents or locks"
    );
    assert!(assignment(&f.state, &task).await.held.is_none());
}

/// `task` is held for run's reservation of `lab`, not sent to the reserved
/// agent.
fn assert_held_for_lab(task: &Task, run: Uuid) {
    let reason = task.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("group `lab` is reserved by run") && reason.contains(&run.to_string()),
        "held for the reservation, not sent to the reserved agent: {task:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_the_view_has_not_seen_holds_the_task() {
    let f = fixture();
    add_agent(&f.state, 1, "a", &["lab"]).await;
    snapshot_view(&f.state).await;
    // Taken after the view was built, as by a run on another replica whose
    // watch event has not arrived here yet.
    let run = reserve(&f.state, "lab").await;
    assert_eq!(
        f.state.sessions.fleet.with(|fl| fl.locks.len()),
        Some(0),
        "the view is behind the store"
    );
    let task = dispatch::submit(&f.state, request("a"), "test")
        .await
        .unwrap();
    assert_held_for_lab(&task, run);
    let a = assignment(&f.state, &task).await;
    assert!(a.held.is_some(), "{a:?}");
    assert_eq!(
        f.state.sessions.load.outstanding(&task.agent_uuid),
        1,
        "the refused attempt left no phantom load"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_the_view_does_not_know_the_agent_joined_is_respected() {
    let f = fixture();
    let a = add_agent(&f.state, 1, "a", &[]).await;
    snapshot_view(&f.state).await;
    // The agent joins `lab` and a run reserves it, both after the view was
    // built: the view has neither the group nor its lock.
    records::update::<AgentRecord, _>(&f.state.store, &keys::agent(&a), |r| {
        r.profile.groups.push("lab".into());
        true
    })
    .await
    .unwrap();
    let run = reserve(&f.state, "lab").await;
    let task = dispatch::submit(&f.state, request("a"), "test")
        .await
        .unwrap();
    assert_held_for_lab(&task, run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_the_view_thinks_live_but_gone_is_not_given_work() {
    let f = fixture();
    let a = add_agent(&f.state, 1, "a", &[]).await;
    let b = add_agent(&f.state, 2, "b", &[]).await;
    snapshot_view(&f.state).await;
    f.state.store.delete(&keys::agent_alive(&a)).await.unwrap();
    // Aimed at the dead agent alone: refused as offline, as a store read says.
    let err = dispatch::submit(&f.state, request("a"), "test")
        .await
        .unwrap_err();
    assert_eq!(err.status.as_u16(), 409, "{}", err.message);
    assert!(err.message.contains("offline"), "{}", err.message);
    let tasks = f.state.store.range(keys::TASKS, None, 0).await.unwrap();
    assert!(tasks.kvs.is_empty(), "nothing written for the dead agent");
    // The live agent still takes work.
    let task = dispatch::submit(&f.state, request("b"), "test")
        .await
        .unwrap();
    assert_eq!(task.agent_uuid, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_the_view_has_not_seen_yet_is_found() {
    let f = fixture();
    add_agent(&f.state, 1, "a", &[]).await;
    snapshot_view(&f.state).await;
    let late = add_agent(&f.state, 2, "late", &[]).await;
    let task = dispatch::submit(&f.state, request("late"), "test")
        .await
        .unwrap();
    assert_eq!(
        task.agent_uuid, late,
        "a refusal on the view is checked on the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replicas_view_follows_the_store() {
    let f = fixture();
    // A second replica over the same store, as two servers over one etcd.
    let other = state_over(f.state.store.clone(), f.dir.path());
    let a = add_agent(&f.state, 1, "a", &["lab"]).await;
    let followers = [
        tokio::spawn(super::follow(f.state.clone())),
        tokio::spawn(super::follow(other.clone())),
    ];
    let live = |fl: &super::Fleet| {
        fl.agents
            .iter()
            .any(|v| v.record.uuid == a && v.alive.is_some())
    };
    until(&f.state, "agent a live", live).await;
    until(&other, "agent a live", live).await;
    // Reserved through the other replica: this one's view sees it, and a
    // one-off task placed here waits.
    let run = reserve(&other, "lab").await;
    until(&f.state, "the reservation", |fl| {
        fl.locks.get("lab") == Some(&run)
    })
    .await;
    let before = f.counting.ranges.load(Ordering::SeqCst);
    let task = dispatch::submit(&f.state, request("a"), "test")
        .await
        .unwrap();
    assert!(task.reason.is_some(), "{task:?}");
    assert!(
        f.counting.ranges.load(Ordering::SeqCst) > before,
        "a held task is decided on a fresh read"
    );
    other.store.delete(&keys::group_lock("lab")).await.unwrap();
    other.store.delete(&keys::agent_alive(&a)).await.unwrap();
    until(
        &f.state,
        "the reservation's end and the agent's death",
        |fl| fl.locks.is_empty() && !fl.agents.iter().any(|v| v.alive.is_some()),
    )
    .await;
    f.state.shutdown.cancel();
    other.shutdown.cancel();
    for h in followers {
        h.await.unwrap();
    }
}
