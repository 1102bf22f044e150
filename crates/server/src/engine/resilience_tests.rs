//! Crashes and faults, in process: the engine's watches break (compacted
//! history, a watch that cannot be opened, a stream that ends) and runs
//! still move; tasks are `lost` only once their agent's lease is gone, a
//! late result still settles them, and lost steps are retried within
//! `retries` — on the same agent once it is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use testbed_core::keys;
use testbed_core::run::{Run, RunStatus};
use testbed_core::task::{Task, TaskOutcome, TaskStatus};
use testbed_store::{
    Compare, DynStore, KeyValue, LeaseId, Page, RedbOptions, RedbStore, Result, Store, StoreError,
    TxnOp, WatchStream,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::AppState;
use crate::test_fixtures::{put_agent, state_over, TestAgent};

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

/// Registers a live agent; returns its uuid and the lease of its liveness.
async fn add_agent(state: &AppState) -> (Uuid, LeaseId) {
    let lease = long_lease(state).await;
    let agent = TestAgent {
        id: 1,
        name: "sim",
        groups: &[],
        plugin: "linux_system",
        method: "run_shell",
    };
    (put_agent(state, agent, Some(lease)).await, lease)
}

/// Plays the agent: every queued task succeeds at once.
/// A lease that outlives any test.
async fn long_lease(state: &AppState) -> LeaseId {
    state
        .store
        .grant_lease(Duration::from_secs(600))
        .await
        .unwrap()
}

/// The engine driving `state`'s runs on a lease of its own, until stopped.
struct Engine {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Engine {
    async fn start(state: &AppState) -> Engine {
        let lease = long_lease(state).await;
        let stop = CancellationToken::new();
        let handle = tokio::spawn(super::drive(state.clone(), lease, stop.clone()));
        Engine { stop, handle }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.handle.await.unwrap();
    }
}

/// Creates a run of the YAML `plan`.
async fn create_plan_run(state: &AppState, plan: &str) -> Run {
    let spec = testbed_core::plan::parse(plan).unwrap();
    super::create_run(state, spec, None, Default::default(), None, "test")
        .await
        .unwrap()
}

/// The run once it has ended, or `None` after a pause of 50 ms; panics,
/// saying `stuck` and where its steps are, once `deadline` has passed.
async fn ended(state: &AppState, id: Uuid, deadline: Instant, stuck: &str) -> Option<Run> {
    let (r, _) = load_run(state, id).await;
    if r.status.is_terminal() {
        return Some(r);
    }
    assert!(Instant::now() < deadline, "{stuck}: {:?}", r.steps);
    tokio::time::sleep(Duration::from_millis(50)).await;
    None
}

async fn complete_queued(state: &AppState) {
    let page = state.store.range(keys::TASKS, None, 0).await.unwrap();
    for kv in page.kvs {
        // The test's own noise under `/tasks/` is no task.
        let Ok(t) = serde_json::from_slice::<Task>(&kv.value) else {
            continue;
        };
        if t.status == TaskStatus::Queued {
            crate::dispatch::settle(state, t.id, succeeded())
                .await
                .unwrap();
        }
    }
}

/// Settles every queued task as succeeded until run `id` ends; panics,
/// saying `stuck`, after `within`.
async fn settle_until_ended(state: &AppState, id: Uuid, within: Duration, stuck: &str) -> Run {
    let deadline = Instant::now() + within;
    loop {
        complete_queued(state).await;
        if let Some(r) = ended(state, id, deadline, stuck).await {
            return r;
        }
    }
}

/// The task a controller that died between writing a step's task and its
/// step record would have left: attempt 1 of instance 0 of `step`.
fn orphan_task(run: Uuid, step: &str, agent: Uuid) -> Task {
    Task::queued(testbed_core::task::NewTask {
        id: super::task_id(&run, step, 0, 1),
        plugin: "linux_system".into(),
        method: "run_shell".into(),
        parameters: serde_json::json!({"command": "true"}),
        host: "sim".into(),
        agent_uuid: agent,
        agent_name: "sim".into(),
        created_by: "test".into(),
        run: Some(testbed_core::task::RunRef {
            run_id: run,
            step: step.into(),
            instance: 0,
            attempt: 1,
        }),
        reason: None,
    })
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
    let run = create_plan_run(&state, plan).await;

    let engine = Engine::start(&state).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_failing = false;
    let done = loop {
        complete_queued(&state).await;
        if !state.loops.failing().is_empty() {
            seen_failing = true;
        }
        if let Some(r) = ended(&state, run.id, deadline, "the run stopped moving").await {
            break r;
        }
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
    let r = settle_until_ended(
        &state,
        second.id,
        Duration::from_secs(20),
        "second run stuck",
    )
    .await;
    assert_eq!(r.status, RunStatus::Passed, "{:?}", r.steps);
    assert!(state.loops.failing().is_empty());

    engine.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run as the API shows it (steps assembled from their records) and its
/// run-level revision.
async fn load_run(state: &AppState, id: Uuid) -> (Run, i64) {
    let l = super::run_store::load(&state.store, &id)
        .await
        .unwrap()
        .expect("the run exists");
    (l.run, l.run_rev)
}

fn temp_state() -> (AppState, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("testbed-engine-{}", Uuid::new_v4()));
    let store = RedbStore::open(dir.join("s.redb")).unwrap();
    (state_over(Arc::new(store), &dir), dir)
}

async fn task(state: &AppState, id: Uuid) -> Task {
    crate::records::get::<Task>(&state.store, &keys::task(&id))
        .await
        .unwrap()
        .unwrap()
        .0
}

fn succeeded() -> TaskOutcome {
    TaskOutcome {
        status: TaskStatus::Succeeded,
        exit_code: Some(0),
        result: None,
        error: None,
        started_at: Some(testbed_core::now()),
        finished_at: testbed_core::now(),
        log_bytes: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_only_once_the_lease_is_gone_and_a_late_result_still_settles() {
    let (state, dir) = temp_state();
    let (agent, lease) = add_agent(&state).await;
    let id = Uuid::new_v4();
    let t = Task {
        kind: Task::KIND.into(),
        v: 1,
        id,
        plugin: "linux_system".into(),
        method: "run_shell".into(),
        parameters: serde_json::json!({}),
        host: "sim".into(),
        agent_uuid: agent,
        agent_name: "sim".into(),
        status: TaskStatus::Queued,
        exit_code: None,
        result: None,
        error: None,
        created_by: "test".into(),
        created_at: testbed_core::now(),
        started_at: None,
        finished_at: None,
        cancel_requested: false,
        artifacts: Vec::new(),
        log_bytes: 0,
        run: None,
        reason: None,
    };
    crate::dispatch::create(&state, &t).await.unwrap();
    crate::dispatch::started(&state, id, testbed_core::now())
        .await
        .unwrap();

    // Silent, but its lease holds: the agent may still be running it.
    crate::controller::sweep_lost(&state).await.unwrap();
    assert_eq!(task(&state, id).await.status, TaskStatus::Running);

    // The lease is gone: now, and only now, the outcome is unknown.
    state.store.revoke_lease(lease).await.unwrap();
    crate::controller::sweep_lost(&state).await.unwrap();
    let lost = task(&state, id).await;
    assert_eq!(lost.status, TaskStatus::Lost);
    assert!(lost.error.unwrap().contains("outcome is unknown"));
    assert!(state
        .store
        .get(&keys::assign(&agent, &id))
        .await
        .unwrap()
        .is_none());

    // The agent comes back and reports: the result stands.
    crate::dispatch::settle(&state, id, succeeded())
        .await
        .unwrap();
    let settled = task(&state, id).await;
    assert_eq!(settled.status, TaskStatus::Succeeded);
    assert_eq!(settled.exit_code, Some(0));
    // And it is settled once: a second (resent) result changes nothing.
    let mut again = succeeded();
    again.status = TaskStatus::Failed;
    crate::dispatch::settle(&state, id, again).await.unwrap();
    assert_eq!(task(&state, id).await.status, TaskStatus::Succeeded);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a one-step plan on one agent whose first attempt is lost (its
/// agent restarted) and returns the finished run.
async fn lose_first_attempt(retries: u32) -> Run {
    let (state, dir) = temp_state();
    add_agent(&state).await;
    let plan = format!("name: once\nsteps:\n  - id: s\n    plugin: linux_system\n    method: run_shell\n    retries: {retries}\n    params: {{command: \"true\"}}\n");
    let run = create_plan_run(&state, &plan).await;
    let engine = Engine::start(&state).await;
    let first = super::task_id(&run.id, "s", 0, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lost_it = false;
    let done = loop {
        if !lost_it {
            if let Some((t, _)) = crate::records::get::<Task>(&state.store, &keys::task(&first))
                .await
                .unwrap()
            {
                crate::dispatch::started(&state, t.id, testbed_core::now())
                    .await
                    .unwrap();
                crate::dispatch::finish_without_agent(
                    &state,
                    t.id,
                    TaskStatus::Lost,
                    "lost: its agent restarted while the task ran; the outcome is unknown",
                )
                .await
                .unwrap();
                lost_it = true;
            }
        } else {
            complete_queued(&state).await;
        }
        if let Some(r) = ended(&state, run.id, deadline, "run stuck").await {
            break r;
        }
    };
    engine.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_step_is_retried_on_its_agent_once_it_is_back() {
    let run = lose_first_attempt(1).await;
    assert_eq!(run.status, RunStatus::Passed, "{:?}", run.steps);
    let inst = &run.steps["s"].instances[0];
    assert_eq!(inst.attempt, 2);
    assert_eq!(inst.previous.len(), 1);
    assert_eq!(inst.status, testbed_core::run::StepStatus::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_step_without_retries_ends_lost() {
    let run = lose_first_attempt(0).await;
    assert_eq!(run.status, RunStatus::Failed, "{:?}", run.steps);
    let st = &run.steps["s"];
    assert_eq!(st.status, testbed_core::run::StepStatus::Lost);
    assert!(
        st.reason
            .as_deref()
            .unwrap_or_default()
            .contains("restarted"),
        "{st:?}"
    );
}

/// A run stored before step records existed (`v: 1`, every step inline in
/// `/runs/{id}`): the engine moves it to the per-step layout at start and
/// finishes it; a finished old run stays readable as it was and gains the
/// summary the runs list reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_the_single_record_layout_are_migrated_and_finish() {
    use testbed_core::run::{StepState, StepStatus};
    let (state, dir) = temp_state();
    add_agent(&state).await;
    let plan = "name: old\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: b\n    depends_on: [a]\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n";
    let spec = testbed_core::plan::parse(plan).unwrap();
    let old = |status: RunStatus| {
        let mut steps = std::collections::BTreeMap::new();
        let mut a = StepState::new();
        a.status = StepStatus::Passed;
        steps.insert("a".to_string(), a);
        let mut b = StepState::new();
        if status.is_terminal() {
            b.status = StepStatus::Passed;
        }
        steps.insert("b".to_string(), b);
        Run {
            kind: Run::KIND.into(),
            v: 1,
            id: Uuid::new_v4(),
            plan_id: None,
            plan_name: "old".into(),
            spec: spec.clone(),
            params: Default::default(),
            environment: None,
            status,
            reason: None,
            steps,
            cancel_requested: false,
            report_id: None,
            created_by: "test".into(),
            created_at: testbed_core::now(),
            started_at: Some(testbed_core::now()),
            finished_at: None,
        }
    };
    let (active, done) = (old(RunStatus::Running), old(RunStatus::Passed));
    for r in [&active, &done] {
        crate::records::put(&state.store, &keys::run(&r.id), r, None)
            .await
            .unwrap();
    }
    state
        .store
        .put(&keys::active_run(&active.id), b"x".to_vec(), None)
        .await
        .unwrap();

    let engine = Engine::start(&state).await;
    let finished =
        settle_until_ended(&state, active.id, Duration::from_secs(20), "old run stuck").await;
    engine.stop().await;
    assert_eq!(finished.status, RunStatus::Passed, "{:?}", finished.steps);
    assert_eq!(finished.steps["a"].status, StepStatus::Passed);
    assert_eq!(finished.steps["b"].status, StepStatus::Passed);
    // Its steps are records of their own now, and the run-level record
    // holds none.
    let (level, _) = crate::records::get::<Run>(&state.store, &keys::run(&active.id))
        .await
        .unwrap()
        .unwrap();
    assert!(level.steps.is_empty(), "{:?}", level.steps);
    assert_eq!(level.v, super::run_store::RUN_V);
    assert!(state
        .store
        .get(&keys::run_step(&active.id, "b"))
        .await
        .unwrap()
        .is_some());
    // The finished old run reads as before, and both are listed.
    let (d, _) = load_run(&state, done.id).await;
    assert_eq!(d.steps, done.steps);
    let listed: Vec<Uuid> = super::run_store::summaries(&state.store)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(
        listed.contains(&active.id) && listed.contains(&done.id),
        "{listed:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real store that "dies" at the `nth` transaction creating a task
/// (putting an `/assign/` key): that transaction is committed, its caller
/// is told the store failed, and every call after it fails, as if the
/// controller had been killed the moment its commit landed.
struct DiesAtCreate {
    inner: DynStore,
    nth: u32,
    seen: Mutex<u32>,
    dead: std::sync::atomic::AtomicBool,
}

impl DiesAtCreate {
    fn dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn check(&self) -> Result<()> {
        if self.dead() {
            return Err(StoreError::Unavailable("killed".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for DiesAtCreate {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64> {
        self.check()?;
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        self.check()?;
        self.inner.range(prefix, after, limit).await
    }
    async fn txn(&self, compares: &[(String, Compare)], ops: Vec<TxnOp>) -> Result<Option<i64>> {
        self.check()?;
        let creates = ops
            .iter()
            .any(|op| matches!(op, TxnOp::Put { key, .. } if key.starts_with(keys::ASSIGN)));
        let dies = creates && {
            let mut seen = self.seen.lock().unwrap();
            *seen += 1;
            *seen == self.nth
        };
        let out = self.inner.txn(compares, ops).await;
        if dies {
            self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(StoreError::Unavailable("killed after the commit".into()));
        }
        out
    }
    async fn revision(&self) -> Result<i64> {
        self.check()?;
        self.inner.revision().await
    }
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        self.check()?;
        self.inner.watch(prefix, from_revision).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.check()?;
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.check()?;
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.check()?;
        self.inner.revoke_lease(lease).await
    }
    fn describe(&self) -> String {
        "dies at a create".into()
    }
}

const CHAIN3: &str = "name: chain\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: b\n    depends_on: [a]\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: c\n    depends_on: [b]\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n";

/// The run's tasks in the store, by id.
async fn run_tasks(store: &DynStore, run: Uuid) -> HashMap<Uuid, Task> {
    let page = store.range(keys::TASKS, None, 0).await.unwrap();
    page.kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Task>(&kv.value).ok())
        .filter(|t| t.run.as_ref().is_some_and(|r| r.run_id == run))
        .map(|t| (t.id, t))
        .collect()
}

/// A step's task is written in the same transaction as the step record
/// that names it: killed the moment that commit lands, the controller
/// leaves no task its step does not know (nor a step naming a task that
/// does not exist), and a restarted one finishes the run with one task per
/// step. (Written apart, as before, the kill left the task with its step
/// still pending, found again only by its derived id.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_a_step_start_the_step_and_its_task_are_stored_together() {
    let dir = std::env::temp_dir().join(format!("testbed-engine-{}", Uuid::new_v4()));
    let inner: DynStore = Arc::new(RedbStore::open(dir.join("s.redb")).unwrap());
    // The first create is step a's, the second step b's.
    let dying = Arc::new(DiesAtCreate {
        inner: inner.clone(),
        nth: 2,
        seen: Mutex::new(0),
        dead: Default::default(),
    });
    let first = state_over(dying.clone(), &dir);
    add_agent(&first).await;
    let run = create_plan_run(&first, CHAIN3).await;
    let engine = Engine::start(&first).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dying.dead() {
        assert!(Instant::now() < deadline, "step b never started");
        complete_queued(&first).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.stop().await;

    // What the killed controller left: every task named by its step's
    // record, every running instance's task stored.
    let tasks = run_tasks(&inner, run.id).await;
    let l = super::run_store::load(&inner, &run.id)
        .await
        .unwrap()
        .unwrap();
    let named: Vec<Uuid> = l
        .run
        .steps
        .values()
        .flat_map(|s| s.instances.iter())
        .flat_map(|i| i.task_id.into_iter().chain(i.previous.iter().copied()))
        .collect();
    for id in tasks.keys() {
        assert!(
            named.contains(id),
            "task {id} is stored but no step names it: {:?}",
            l.run.steps
        );
    }
    for id in &named {
        assert!(tasks.contains_key(id), "a step names task {id}, not stored");
    }
    assert_eq!(
        l.run.steps["b"].status,
        testbed_core::run::StepStatus::Running,
        "{:?}",
        l.run.steps
    );

    // Restarted over the same store: the run finishes, one task a step.
    let second = state_over(inner.clone(), &dir);
    let engine = Engine::start(&second).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        complete_queued(&second).await;
        if let Some(r) = ended(&second, run.id, deadline, "the restarted run stuck").await {
            break r;
        }
    };
    engine.stop().await;
    assert_eq!(done.status, RunStatus::Passed, "{:?}", done.steps);
    assert_eq!(run_tasks(&inner, run.id).await.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A task already stored under the id of a step's first attempt (left by
/// a controller that wrote tasks and step records apart and died in
/// between) is taken as the step's task, not doubled: the transaction
/// that would write it with the step's record finds it, and the engine
/// then records the step naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stored_before_its_step_record_is_adopted() {
    let (state, dir) = temp_state();
    let (agent, _) = add_agent(&state).await;
    let run = create_plan_run(&state, CHAIN3).await;
    let orphan = orphan_task(run.id, "a", agent);
    let id = orphan.id;
    crate::dispatch::create(&state, &orphan).await.unwrap();

    let engine = Engine::start(&state).await;
    let done = settle_until_ended(&state, run.id, Duration::from_secs(20), "the run stuck").await;
    engine.stop().await;
    assert_eq!(done.status, RunStatus::Passed, "{:?}", done.steps);
    assert_eq!(done.steps["a"].instances[0].task_id, Some(id));
    assert!(done.steps["a"].instances[0].previous.is_empty());
    assert_eq!(run_tasks(&state.store, run.id).await.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real store whose watches of `/groups/` deliver nothing: a fleet view
/// built over it never learns of a reservation made after its listing.
struct DeafToGroups {
    inner: DynStore,
}

#[async_trait]
impl Store for DeafToGroups {
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
        if prefix == keys::GROUPS {
            return Ok(Box::pin(futures_util::stream::pending()));
        }
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
        "deaf to /groups/".into()
    }
}

/// Steps are placed on this replica's fleet view (no store read), which
/// may be behind the store: the task is written only if what the placement
/// relied on still holds. Here the view never hears of a reservation of
/// the only agent's group by another run; the step must wait for it to
/// end all the same, then run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_on_a_view_behind_the_store_a_step_still_respects_a_reservation() {
    use testbed_core::agent::AgentRecord;
    use testbed_core::run::{GroupLock, StepStatus};
    let dir = std::env::temp_dir().join(format!("testbed-engine-{}", Uuid::new_v4()));
    let inner: DynStore = Arc::new(RedbStore::open(dir.join("s.redb")).unwrap());
    let state = state_over(Arc::new(DeafToGroups { inner }), &dir);
    let (agent, _) = add_agent(&state).await;
    let (mut record, _) = crate::records::get::<AgentRecord>(&state.store, &keys::agent(&agent))
        .await
        .unwrap()
        .unwrap();
    record.profile.groups = vec!["lab".into()];
    crate::records::put(&state.store, &keys::agent(&agent), &record, None)
        .await
        .unwrap();
    let view = tokio::spawn(crate::placement::follow(state.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.sessions.fleet.with(|f| f.agents.len()) != Some(1) {
        assert!(Instant::now() < deadline, "the fleet view never followed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reserved by another run, after the view's listing.
    let lock = GroupLock {
        run_id: Uuid::new_v4(),
        since: testbed_core::now(),
    };
    crate::records::put(&state.store, &keys::group_lock("lab"), &lock, None)
        .await
        .unwrap();
    assert_eq!(
        state.sessions.fleet.with(|f| f.locks.len()),
        Some(0),
        "the view saw the reservation: this test shows nothing"
    );

    let run = create_plan_run(&state, CHAIN3).await;
    let engine = Engine::start(&state).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (r, _) = load_run(&state, run.id).await;
        let a = &r.steps["a"];
        assert!(
            a.instances.is_empty() && run_tasks(&state.store, run.id).await.is_empty(),
            "a task was placed on a reserved agent: {a:?}"
        );
        if a.reason.as_deref().is_some_and(|w| w.contains("reserved")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "step a never said why it waits: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The reservation ends (the view still knows nothing of it): the run
    // goes on, on that agent.
    state.store.delete(&keys::group_lock("lab")).await.unwrap();
    let done = settle_until_ended(&state, run.id, Duration::from_secs(20), "the run stuck").await;
    engine.stop().await;
    state.shutdown.cancel();
    let _ = view.await;
    assert_eq!(done.status, RunStatus::Passed, "{:?}", done.steps);
    assert_eq!(done.steps["a"].status, StepStatus::Passed);
    assert_eq!(done.steps["a"].instances[0].agent_uuid, agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A wide plan starts in several transactions sent together; when one is
/// refused (here: a task of one of its steps is already stored) the others
/// still commit, and the redo starts the refused ones' steps on a fresh
/// read, taking the stored task over: every step runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_start_with_one_refused_transaction_runs_every_step_once() {
    let (state, dir) = temp_state();
    let (agent, _) = add_agent(&state).await;
    let mut plan = String::from("name: wide\nsteps:\n");
    for i in 0..100 {
        plan.push_str(&format!(
            "  - id: s{i:03}\n    plugin: linux_system\n    method: run_shell\n    params: {{command: \"true\"}}\n"
        ));
    }
    let run = create_plan_run(&state, &plan).await;
    // A step in the middle of the plan, so in neither the first nor the
    // last transaction of its start.
    let orphan = orphan_task(run.id, "s057", agent);
    let id = orphan.id;
    crate::dispatch::create(&state, &orphan).await.unwrap();

    let engine = Engine::start(&state).await;
    let done = settle_until_ended(
        &state,
        run.id,
        Duration::from_secs(30),
        "the wide run stuck",
    )
    .await;
    engine.stop().await;
    assert_eq!(done.status, RunStatus::Passed, "{:?}", done.steps);
    assert_eq!(done.steps["s057"].instances[0].task_id, Some(id));
    let tasks = run_tasks(&state.store, run.id).await;
    assert_eq!(tasks.len(), 100, "a step ran twice or not at all");
    for (name, st) in &done.steps {
        assert_eq!(st.instances.len(), 1, "{name}: {st:?}");
        assert_eq!(st.instances[0].attempt, 1, "{name}: {st:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
