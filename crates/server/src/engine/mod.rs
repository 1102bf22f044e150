//! The plan engine: reconcile loops over runs stored in `/runs/`.
//!
//! A run is a run-level record (`/runs/{id}`: plan, parameters, status)
//! and one record per step (`/runs/{id}/steps/{step}`), see [`run_store`];
//! every change is a compare-and-swap on the records it touches, so a step
//! transition writes one small record whatever the plan's size. The
//! controller leader keeps each active run in memory between reconciles
//! ([`Cache`]) and, on a task's event, looks only at that task's step and
//! the steps that wait on it; a periodic sweep looks at every step (timeouts,
//! agents appearing) and, every few seconds, reads everything again from
//! the store. Task ids are derived from (run, step, instance, attempt), so a
//! controller that dies between creating a task and recording it finds the
//! same task again instead of starting a second one: no step is lost and
//! none runs twice.

pub mod report;
#[cfg(test)]
mod resilience_tests;
pub mod run_store;
pub mod targets;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use testbed_core::keys;
use testbed_core::plan::{PlanSpec, StepSpec, TargetSpec};
use testbed_core::run::{
    Environment, GroupLock, Instance, Run, RunStatus, StepState, StepStatus, TestCase,
};
use testbed_core::task::{RunRef, Task, TaskStatus};
use testbed_core::template;
use testbed_store::{Compare, EventKind, LeaseId};
use uuid::Uuid;

use crate::dispatch::{self, AgentView};
use crate::records::{self, RecordError};
use crate::state::AppState;
use run_store::Loaded;

/// Namespace of task ids derived from runs.
const TASK_NS: Uuid = Uuid::from_u128(0x7e57_bed0_0000_4000_8000_0000_0000_0001);

pub fn task_id(run: &Uuid, step: &str, instance: usize, attempt: u32) -> Uuid {
    let mut name = run.as_bytes().to_vec();
    name.extend_from_slice(format!("/{step}/{instance}/{attempt}").as_bytes());
    Uuid::new_v5(&TASK_NS, &name)
}

/// What a step executes once test-case references are resolved.
struct Resolved {
    plugin: String,
    method: String,
    params: Value,
    selector: TargetSpec,
    each: bool,
    timeout: Option<Duration>,
    retries: u32,
    testcase: Option<(String, String)>,
}

/// What the engine keeps of an active run between reconciles: the run as
/// last read or written (with the revisions to compare on), the plan's
/// order and dependents, and the environments and test cases its steps
/// use, read once per run.
pub struct Cached {
    l: Loaded,
    order: Vec<String>,
    /// Steps that depend on each step.
    dependents: HashMap<String, Vec<String>>,
    envs: HashMap<String, Option<Environment>>,
    testcases: HashMap<String, Option<TestCase>>,
}

impl Cached {
    fn new(l: Loaded) -> Cached {
        let order = l
            .run
            .spec
            .topological()
            .into_iter()
            .map(String::from)
            .collect();
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for s in &l.run.spec.steps {
            for d in &s.depends_on {
                dependents.entry(d.clone()).or_default().push(s.id.clone());
            }
        }
        Cached {
            l,
            order,
            dependents,
            envs: HashMap::new(),
            testcases: HashMap::new(),
        }
    }
}

/// Active runs the engine holds in memory, by id.
pub type Cache = HashMap<Uuid, Cached>;

/// What one reconcile changed, to be written.
#[derive(Default)]
struct Changes {
    steps: BTreeSet<String>,
    run: bool,
    /// Tasks the changed steps start (their first attempts and retries),
    /// written with the step records that name them, each with what its
    /// placement relied on ([`Fleet::guard`]).
    tasks: Vec<(Task, Vec<(String, Compare)>)>,
}

/// Where steps are placed from: this replica's fleet view
/// ([`crate::placement::FleetView`], kept by a watch: no store read, and
/// nothing copied but the agents chosen), or, when `fresh` (a redo after a
/// write the store refused) or while the view does not follow the store,
/// the store, read at most once per reconcile.
#[derive(Default)]
struct Fleet {
    fresh: bool,
    read: Option<crate::placement::Fleet>,
}

/// What one placement decision sees: every agent and the reservations,
/// from the view or from the store.
struct Seen<'a> {
    agents: &'a [AgentView],
    locks: &'a BTreeMap<String, Uuid>,
    run: Uuid,
    from_view: bool,
}

impl Fleet {
    fn new(fresh: bool) -> Fleet {
        Fleet { fresh, read: None }
    }

    /// Runs the decision `decide` on the view (under its lock: `decide`
    /// only chooses and copies what it chose), or on the store's agents.
    async fn decide<R>(
        &mut self,
        state: &AppState,
        run: Uuid,
        decide: impl Fn(&Seen) -> R,
    ) -> Result<R, RecordError> {
        if !self.fresh && self.read.is_none() {
            let on_view = state.sessions.fleet.with(|f| {
                decide(&Seen {
                    agents: &f.agents,
                    locks: &f.locks,
                    run,
                    from_view: true,
                })
            });
            if let Some(out) = on_view {
                return Ok(out);
            }
        }
        let read = match self.read.take() {
            Some(read) => read,
            None => crate::placement::Fleet::read(&state.store).await?,
        };
        let out = decide(&Seen {
            agents: &read.agents,
            locks: &read.locks,
            run,
            from_view: false,
        });
        self.read = Some(read);
        Ok(out)
    }
}

impl Seen<'_> {
    /// Live agents that match the step's selector and carry its method;
    /// without those reserved by another run unless `with_reserved`.
    fn eligible(&self, r: &Resolved, with_reserved: bool) -> Vec<&AgentView> {
        targets::eligible(
            self.agents,
            &r.selector,
            &r.plugin,
            &r.method,
            &BTreeSet::new(),
        )
        .into_iter()
        .filter(|a| with_reserved || !self.reserved(a))
        .collect()
    }

    /// In a group another run reserved.
    fn reserved(&self, a: &AgentView) -> bool {
        a.record
            .profile
            .groups
            .iter()
            .any(|g| self.locks.get(g).is_some_and(|holder| *holder != self.run))
    }

    /// What placing work on `agent` relied on, when decided on the view
    /// (which may be behind the store by the watch's delay): the agent is
    /// live and registered as seen, and each of its groups is unreserved —
    /// or reserved by this run, which only this engine releases. The
    /// transaction writing the task checks these; if one fails nothing is
    /// written and the reconcile is done again on a fresh read of the store.
    /// Nothing to guard when read from the store, as before the view.
    fn guard(&self, agent: &AgentView) -> Vec<(String, Compare)> {
        if !self.from_view {
            return Vec::new();
        }
        let mut out = vec![(keys::agent_alive(&agent.record.uuid), Compare::Present)];
        if agent.revision > 0 {
            out.push((
                keys::agent(&agent.record.uuid),
                Compare::ModRevision(agent.revision),
            ));
        }
        for g in &agent.record.profile.groups {
            if self.locks.get(g) != Some(&self.run) {
                out.push((keys::group_lock(g), Compare::Absent));
            }
        }
        out
    }
}

/// Where a step goes, as decided on the fleet.
enum Choice {
    /// No agent may take it now; `reserved`: some would, but are reserved.
    Wait { reserved: bool },
    /// These agents (one, or every candidate for `each`), with the guards
    /// of the tasks placed on them.
    On(Vec<(AgentView, Vec<(String, Compare)>)>),
}

/// Reconciles every active run once, every step of each. `deep` reads each
/// run and its running tasks from the store again instead of trusting what
/// the engine holds.
pub async fn reconcile_all(
    state: &AppState,
    lease: Option<LeaseId>,
    cache: &mut Cache,
    known: &WatchedTasks,
    deep: bool,
) -> Result<(), RecordError> {
    let page = state.store.range(keys::ACTIVE_RUNS, None, 0).await?;
    let active: BTreeSet<Uuid> = page
        .kvs
        .iter()
        .filter_map(|kv| {
            kv.key
                .strip_prefix(keys::ACTIVE_RUNS)
                .and_then(|s| s.parse::<Uuid>().ok())
        })
        .collect();
    // Runs that ended or were deleted elsewhere.
    cache.retain(|id, _| active.contains(id));
    let everything = WatchedTasks::default();
    for id in active {
        if deep {
            cache.remove(&id);
        } else if let Some(c) = cache.get(&id) {
            // The run-level record changes rarely (cancel, end): re-read
            // the run when it did.
            let rev = state
                .store
                .get(&keys::run(&id))
                .await?
                .map(|kv| kv.mod_revision);
            if rev != Some(c.l.run_rev) {
                cache.remove(&id);
            }
        }
        let k = if deep { &everything } else { known };
        if let Err(e) = reconcile(state, id, lease, k, cache, None).await {
            tracing::warn!(run = %id, "reconcile: {e}");
        }
    }
    Ok(())
}

/// Task states the engine already holds from its watch. When reconciling
/// on events, only these are consulted (plus the store for steps with a
/// timeout to enforce); the deep sweep reads everything from the store,
/// so nothing is missed for longer than a sweep.
#[derive(Default)]
pub struct WatchedTasks {
    pub tasks: std::collections::HashMap<Uuid, Task>,
    /// Event-driven: trust `tasks` for tasks that ended.
    pub from_events: bool,
}

/// Reads a run for the engine, in the per-step layout (a run still in the
/// old single-record layout is split first).
async fn load(state: &AppState, id: Uuid) -> Result<Option<Cached>, RecordError> {
    for _ in 0..8 {
        let Some(l) = run_store::load(&state.store, &id).await? else {
            return Ok(None);
        };
        if !l.inline || l.run.status.is_terminal() {
            return Ok(Some(Cached::new(l)));
        }
        run_store::split(&state.store, &l).await?;
    }
    Err(RecordError::Contended {
        key: keys::run(&id),
    })
}

/// Brings one run forward as far as its state allows. Safe to call at any
/// time, from any replica, any number of times. `only`: the steps whose
/// tasks just ended — then only they and the steps waiting on them are
/// looked at; `None` looks at every step. Timed and counted in
/// `testbed_reconcile_duration_seconds{pass="run"}`.
pub async fn reconcile(
    state: &AppState,
    id: Uuid,
    lease: Option<LeaseId>,
    known: &WatchedTasks,
    cache: &mut Cache,
    only: Option<&BTreeSet<String>>,
) -> Result<(), RecordError> {
    let pass = reconcile_run(state, id, lease, known, cache, only);
    state
        .metrics
        .reconcile(crate::metrics::Pass::Run, pass)
        .await
}

async fn reconcile_run(
    state: &AppState,
    id: Uuid,
    lease: Option<LeaseId>,
    known: &WatchedTasks,
    cache: &mut Cache,
    only: Option<&BTreeSet<String>>,
) -> Result<(), RecordError> {
    for attempt in 0..8 {
        let c = match cache.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match load(state, id).await? {
                Some(c) => v.insert(c),
                None => {
                    state.store.delete(&keys::active_run(&id)).await?;
                    return Ok(());
                }
            },
        };
        if c.l.run.status.is_terminal() {
            let run = c.l.run.clone();
            cache.remove(&id);
            finish(state, &run).await?;
            return Ok(());
        }
        let mut ch = Changes::default();
        // What is held in memory is changed in place; on any failure it is
        // dropped, so the next attempt starts again from the store.
        let outcome = async {
            // A redo places on a fresh read of the store, not on the view.
            step_forward(state, c, lease, known, only, &mut ch, attempt > 0).await?;
            if ch.steps.is_empty() && !ch.run {
                return Ok(true);
            }
            // A first attempt writes each new task in the transaction of
            // the step record that names it; a redo (something changed, or
            // a task of that id exists already: a controller that died
            // between the two writes of an older version) creates the
            // tasks first, finding existing ones, then writes the records.
            write_changes(state, c, &ch, attempt == 0).await
        }
        .await;
        match outcome {
            Ok(true) => {
                trace::after_write(&c.l.run, &ch.steps, ch.run);
                if c.l.run.status.is_terminal() {
                    let run = c.l.run.clone();
                    cache.remove(&id);
                    finish(state, &run).await?;
                }
                return Ok(());
            }
            // Someone else changed the run meanwhile: read it again.
            Ok(false) => {
                forget_load(state, &ch.tasks);
                cache.remove(&id);
            }
            Err(e) => {
                forget_load(state, &ch.tasks);
                cache.remove(&id);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The placement load of tasks that were counted when queued but may not
/// have been written. Should some have been (an earlier transaction of a
/// write that then failed), the assignment watch counts them again, or
/// the next re-list of `/assign/` does.
fn forget_load(state: &AppState, tasks: &[(Task, Vec<(String, Compare)>)]) {
    for (t, _) in tasks {
        state.sessions.load.released(t.agent_uuid, t.id);
    }
}

/// Writes what a reconcile changed: the step records, the run-level record
/// when it changed, and the tasks the steps start. `merge`: each task goes
/// in the transaction of its step's record (one commit for a chain's step
/// instead of two; the start of a wide plan in a few transactions instead
/// of one per task), so a crash leaves either both or neither. Otherwise,
/// and for a step with too many tasks for one transaction, the tasks are
/// created first (an existing one is found, not doubled) and the records
/// after, so a crash in between leaves tasks whose step is still pending,
/// which the next reconcile finds again under the same ids.
async fn write_changes(
    state: &AppState,
    c: &mut Cached,
    ch: &Changes,
    merge: bool,
) -> Result<bool, RecordError> {
    // Each step's tasks with their guards, as one unit of the step's
    // transaction.
    let mut along: HashMap<String, run_store::Along> = HashMap::new();
    let mut apart: Vec<&Task> = Vec::new();
    for (t, guard) in &ch.tasks {
        match t.run.as_ref().map(|r| r.step.as_str()) {
            Some(s) if merge && ch.steps.contains(s) => {
                let (key, ops) = create_ops(t)?;
                let a = along.entry(s.to_string()).or_default();
                a.compares.push((key, Compare::Absent));
                for g in guard {
                    if !a.compares.contains(g) {
                        a.compares.push(g.clone());
                    }
                }
                a.ops.extend(ops);
            }
            _ => apart.push(t),
        }
    }
    // A step with more than one transaction holds (a fan-out to many
    // agents) has its tasks created apart, first.
    let too_big: Vec<String> = along
        .iter()
        .filter(|(_, a)| {
            a.ops.len() >= run_store::TXN_OPS || a.compares.len() >= run_store::TXN_OPS
        })
        .map(|(s, _)| s.clone())
        .collect();
    for s in too_big {
        along.remove(&s);
        apart.extend(
            ch.tasks
                .iter()
                .map(|(t, _)| t)
                .filter(|t| t.run.as_ref().is_some_and(|r| r.step == s)),
        );
    }
    for t in &apart {
        dispatch::create(state, t).await?;
    }
    let steps: Vec<String> = ch.steps.iter().cloned().collect();
    let written = run_store::write(&state.store, &mut c.l, &steps, ch.run, along).await?;
    if written {
        for (t, _) in &ch.tasks {
            if !apart.iter().any(|a| a.id == t.id) {
                trace::dispatched(t);
            }
        }
    }
    Ok(written)
}

/// The puts that create `task` and its assignment (as [`dispatch::create`]
/// writes them: the assignment carries the task, so the relay sends it
/// without reading it), and the task's key, to compare absent.
fn create_ops(task: &Task) -> Result<(String, Vec<testbed_store::TxnOp>), RecordError> {
    let key = keys::task(&task.id);
    let assignment = dispatch::Assignment {
        kind: dispatch::Assignment::KIND.into(),
        v: 1,
        task_id: task.id,
        cancel: false,
        paused: None,
        held: None,
        task: Some(Box::new(task.clone())),
    };
    let ops = vec![
        records::put_op(key.clone(), task)?,
        records::put_op(keys::assign(&task.agent_uuid, &task.id), &assignment)?,
    ];
    Ok((key, ops))
}

fn now() -> chrono::DateTime<chrono::Utc> {
    testbed_core::now()
}

async fn step_forward(
    state: &AppState,
    c: &mut Cached,
    lease: Option<LeaseId>,
    known: &WatchedTasks,
    only: Option<&BTreeSet<String>>,
    ch: &mut Changes,
    fresh: bool,
) -> Result<(), RecordError> {
    let mut fleet = Fleet::new(fresh);
    {
        let run = &mut c.l.run;
        if run.status == RunStatus::Pending {
            run.status = RunStatus::Running;
            run.started_at = Some(now());
            ch.run = true;
        }
    }
    // A reservation or a cancellation concerns every step.
    let only = only.filter(|_| !c.l.run.cancel_requested && c.l.run.spec.reserve.is_none());
    if only.is_none() {
        let run = &mut c.l.run;
        // An exclusive reservation comes first: nothing starts until it is held.
        if let Some(group) = run.spec.reserve.clone() {
            if !run.cancel_requested {
                let locks = targets::locks(&state.store).await?;
                match locks.get(&group) {
                    Some(holder) if *holder == run.id => {}
                    Some(holder) => {
                        let reason = targets::reserved_reason(&group, holder);
                        for (id, st) in run.steps.iter_mut() {
                            if st.status == StepStatus::Pending
                                && st.reason.as_deref() != Some(reason.as_str())
                            {
                                st.reason = Some(reason.clone());
                                ch.steps.insert(id.clone());
                            }
                        }
                        if run.reason.as_deref() != Some(reason.as_str()) {
                            run.reason = Some(reason);
                            ch.run = true;
                        }
                        return Ok(());
                    }
                    None => {
                        let lock = GroupLock {
                            run_id: run.id,
                            since: now(),
                        };
                        let bytes =
                            serde_json::to_vec(&lock).map_err(|source| RecordError::Encode {
                                key: keys::group_lock(&group),
                                source,
                            })?;
                        // Bound to the controller's lease: if the controller dies,
                        // the reservation does not outlive it.
                        state
                            .store
                            .txn_put(&keys::group_lock(&group), Compare::Absent, bytes, lease)
                            .await?;
                        return Ok(());
                    }
                }
                if run.reason.is_some() {
                    run.reason = None;
                    ch.run = true;
                }
            }
        }

        if run.cancel_requested {
            for st in run.steps.values_mut() {
                for inst in st.instances.iter_mut().filter(|i| !i.status.is_terminal()) {
                    if let Some(t) = inst.task_id {
                        match dispatch::cancel(state, t).await {
                            Ok(_) => {}
                            Err(e) if e.status.as_u16() == 409 || e.status.as_u16() == 404 => {}
                            Err(e) => tracing::warn!(task = %t, "cancel: {}", e.message),
                        }
                    }
                }
            }
        }

        for i in 0..c.order.len() {
            let id = c.order[i].clone();
            visit(state, c, &id, known, &mut fleet, ch).await?;
        }
    } else if let Some(only) = only {
        // The steps whose tasks ended, then whatever waits on a step that
        // ended: a worklist, so a chain of skips is followed to its end.
        let mut work: Vec<String> = only.iter().cloned().collect();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        while let Some(id) = work.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            visit(state, c, &id, known, &mut fleet, ch).await?;
            let ended =
                c.l.run
                    .steps
                    .get(&id)
                    .is_some_and(|s| s.status.is_terminal());
            if ended {
                if let Some(ds) = c.dependents.get(&id) {
                    work.extend(ds.iter().filter(|d| !seen.contains(*d)).cloned());
                }
            }
        }
    }

    let run = &mut c.l.run;
    if run.steps.len() == run.spec.steps.len() && run.steps.values().all(|s| s.status.is_terminal())
    {
        // A known-broken step's failure is expected and does not fail the run.
        let any_failed = run.steps.iter().any(|(id, s)| {
            let expected = run.spec.step(id).is_some_and(|sp| sp.xfail.is_some());
            matches!(s.status, StepStatus::Error | StepStatus::Lost)
                || (s.status == StepStatus::Failed && !expected)
        });
        run.status = if run.cancel_requested {
            RunStatus::Cancelled
        } else if any_failed {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        };
        run.finished_at = Some(now());
        ch.run = true;
    }
    Ok(())
}

/// Moves one step on: starts it when it is pending and its dependencies
/// ended, follows its tasks when it runs. Marks it changed when it did.
async fn visit(
    state: &AppState,
    c: &mut Cached,
    id: &str,
    known: &WatchedTasks,
    fleet: &mut Fleet,
    ch: &mut Changes,
) -> Result<(), RecordError> {
    let status =
        c.l.run
            .steps
            .get(id)
            .map_or(StepStatus::Pending, |s| s.status);
    let before = match status {
        StepStatus::Pending => {
            let run = &c.l.run;
            let Some(spec) = run.spec.step(id) else {
                return Ok(());
            };
            let deps_ended = spec
                .depends_on
                .iter()
                .all(|d| run.steps.get(d).is_some_and(|ds| ds.status.is_terminal()));
            if !deps_ended && !run.cancel_requested {
                return Ok(());
            }
            run.steps.get(id).cloned()
        }
        StepStatus::Running => c.l.run.steps.get(id).cloned(),
        _ => return Ok(()),
    };
    let Some(spec) = c.l.run.spec.step(id).cloned() else {
        return Ok(());
    };
    match status {
        StepStatus::Pending if c.l.run.cancel_requested => {
            let st = c.l.run.steps.entry(id.to_string()).or_default();
            st.status = StepStatus::Cancelled;
            st.reason = Some("run cancelled".into());
            st.finished_at = Some(now());
        }
        StepStatus::Pending => start_step(state, c, &spec, fleet, &mut ch.tasks).await?,
        _ => advance_step(state, c, &spec, fleet, known, &mut ch.tasks).await?,
    }
    if c.l.run.steps.get(id) != before.as_ref() {
        ch.steps.insert(id.to_string());
    }
    Ok(())
}

/// The values templates see.
fn scope(run: &Run, env: &BTreeMap<String, Value>) -> Value {
    let mut steps = serde_json::Map::new();
    for (id, st) in &run.steps {
        let exit_code = st.instances.first().and_then(|i| i.exit_code);
        steps.insert(
            id.clone(),
            json!({"status": st.status.as_str(), "outputs": st.outputs, "exit_code": exit_code}),
        );
    }
    json!({"params": run.params, "env": env, "steps": steps})
}

/// A step's environment and test case, read once per run and kept with it.
async fn resolve(
    state: &AppState,
    c: &mut Cached,
    spec: &StepSpec,
) -> Result<Result<(Resolved, BTreeMap<String, Value>), String>, RecordError> {
    let run = &c.l.run;
    let env_name = spec
        .environment
        .clone()
        .or_else(|| run.environment.clone())
        .or_else(|| run.spec.environment.clone());
    let env = match &env_name {
        Some(n) => {
            if !c.envs.contains_key(n) {
                let e = records::get::<Environment>(&state.store, &keys::environment(n))
                    .await?
                    .map(|(e, _)| e);
                c.envs.insert(n.clone(), e);
            }
            match c.envs.get(n).cloned().flatten() {
                Some(e) => Some(e),
                None => return Ok(Err(format!("environment `{n}` does not exist"))),
            }
        }
        None => None,
    };
    let vars = env
        .as_ref()
        .map(|e| e.variables.clone())
        .unwrap_or_default();
    let (target_sel, each) = match &spec.target {
        Some(t) => t.selector(),
        None => (
            env.as_ref()
                .and_then(|e| e.selector.clone())
                .unwrap_or_default(),
            false,
        ),
    };
    let resolved = if let Some(tc_name) = &spec.testcase {
        if !c.testcases.contains_key(tc_name) {
            let tc = records::get::<TestCase>(&state.store, &keys::testcase(tc_name))
                .await?
                .map(|(t, _)| t);
            c.testcases.insert(tc_name.clone(), tc);
        }
        let Some(tc) = c.testcases.get(tc_name).cloned().flatten() else {
            return Ok(Err(format!("test case `{tc_name}` does not exist")));
        };
        Resolved {
            plugin: tc.plugin.clone(),
            method: tc.method.clone(),
            params: tc.parameters.clone(),
            selector: target_sel,
            each,
            timeout: spec.timeout().or_else(|| {
                tc.timeout
                    .as_deref()
                    .and_then(|t| humantime::parse_duration(t).ok())
            }),
            retries: spec.retries.max(tc.retries),
            testcase: Some((
                tc_name.clone(),
                env_name.clone().unwrap_or_else(|| "default".into()),
            )),
        }
    } else {
        Resolved {
            plugin: spec.plugin.clone().unwrap_or_default(),
            method: spec.method.clone().unwrap_or_default(),
            params: spec.params.clone(),
            selector: target_sel,
            each,
            timeout: spec.timeout(),
            retries: spec.retries,
            testcase: None,
        }
    };
    Ok(Ok((resolved, vars)))
}

fn finish_step(st: &mut StepState, status: StepStatus, reason: Option<String>) {
    st.status = status;
    st.reason = reason;
    st.finished_at = Some(now());
}

/// Does rendering `params` (or the step's condition) need the run's scope?
/// Building it covers every step of the run, so a plan without templates
/// skips it.
fn templated(params: &Value, spec: &StepSpec) -> bool {
    spec.when.is_some()
        || template::references_in(params)
            .map(|r| !r.is_empty())
            .unwrap_or(true)
}

async fn start_step(
    state: &AppState,
    c: &mut Cached,
    spec: &StepSpec,
    fleet: &mut Fleet,
    tasks: &mut Vec<(Task, Vec<(String, Compare)>)>,
) -> Result<(), RecordError> {
    {
        let run = &c.l.run;
        // Dependencies first.
        for d in &spec.depends_on {
            let Some(ds) = run.steps.get(d) else {
                return Ok(());
            };
            if !ds.status.is_terminal() {
                return Ok(());
            }
        }
    }
    let mut skip: Option<String> = None;
    {
        let run = &c.l.run;
        for d in &spec.depends_on {
            let ds = &run.steps[d];
            let dep_continues = run.spec.step(d).is_some_and(|s| s.continue_on_failure);
            match ds.status {
                StepStatus::Failed | StepStatus::Error | StepStatus::Lost if !dep_continues => {
                    skip = Some(format!("dependency `{d}` {}", ds.status.as_str()));
                }
                StepStatus::Skipped | StepStatus::Cancelled => {
                    skip = Some(format!("dependency `{d}` was {}", ds.status.as_str()));
                }
                _ => {}
            }
            if skip.is_some() {
                break;
            }
        }
    }
    let resolved = resolve(state, c, spec).await?;
    let run = &mut c.l.run;
    let mut st = run.steps.get(&spec.id).cloned().unwrap_or_default();
    if let Some(reason) = skip {
        finish_step(&mut st, StepStatus::Skipped, Some(reason));
        run.steps.insert(spec.id.clone(), st);
        return Ok(());
    }
    let (r, env) = match resolved {
        Ok(ok) => ok,
        Err(reason) => {
            finish_step(&mut st, StepStatus::Error, Some(reason));
            run.steps.insert(spec.id.clone(), st);
            return Ok(());
        }
    };
    let sc = if templated(&r.params, spec) {
        scope(run, &env)
    } else {
        json!({})
    };
    if let Some(cond) = &spec.when {
        match template::truthy(cond, &sc) {
            Ok(true) => {}
            Ok(false) => {
                finish_step(
                    &mut st,
                    StepStatus::Skipped,
                    Some(format!("condition `{cond}` is false")),
                );
                run.steps.insert(spec.id.clone(), st);
                return Ok(());
            }
            Err(e) => {
                finish_step(&mut st, StepStatus::Error, Some(format!("when: {e}")));
                run.steps.insert(spec.id.clone(), st);
                return Ok(());
            }
        }
    }
    let load = &state.sessions.load;
    let choice = fleet
        .decide(state, run.id, |seen| {
            let candidates = seen.eligible(&r, false);
            if candidates.is_empty() {
                // Say so when it is a reservation that keeps the step waiting.
                return Choice::Wait {
                    reserved: !seen.eligible(&r, true).is_empty(),
                };
            }
            let chosen = if r.each {
                candidates
            } else {
                // `candidates` is not empty here.
                vec![load.least_loaded(&candidates).unwrap_or(candidates[0])]
            };
            Choice::On(
                chosen
                    .into_iter()
                    .map(|a| (a.clone(), seen.guard(a)))
                    .collect(),
            )
        })
        .await?;
    if let Choice::Wait { reserved } = choice {
        let ready = *st.ready_at.get_or_insert_with(now);
        let waited = (now() - ready).to_std().unwrap_or_default();
        let limit = run.spec.pending_timeout();
        let wanted = targets::wanted(&r.selector, &r.plugin, &r.method, reserved);
        if waited >= limit {
            finish_step(
                &mut st,
                StepStatus::Error,
                Some(format!(
                    "gave up after {} waiting for {wanted} (pending_timeout)",
                    targets::seconds(limit)
                )),
            );
        } else {
            st.reason = Some(format!(
                "waiting for {wanted} ({} of {})",
                targets::seconds(waited),
                targets::seconds(limit)
            ));
        }
        run.steps.insert(spec.id.clone(), st);
        return Ok(());
    }
    let Choice::On(chosen) = choice else {
        return Ok(());
    };
    st.instances = Vec::new();
    for (i, (agent, guard)) in chosen.iter().enumerate() {
        let mut isc = sc.clone();
        isc["agent"] = json!({"name": agent.record.profile.name, "host": agent.record.profile.host, "uuid": agent.record.uuid, "labels": agent.record.profile.labels});
        let params = match template::render(&r.params, &isc) {
            Ok(p) => p,
            Err(e) => {
                finish_step(&mut st, StepStatus::Error, Some(format!("params: {e}")));
                run.steps.insert(spec.id.clone(), st);
                return Ok(());
            }
        };
        // The rendered parameters must still meet the method's schema.
        if let Some(m) = agent
            .record
            .plugin(&r.plugin)
            .and_then(|p| p.method(&r.method))
        {
            if let Err(errs) = testbed_core::schema::validate(&m.schema, &params, "params") {
                let msg = errs
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                finish_step(&mut st, StepStatus::Error, Some(msg));
                run.steps.insert(spec.id.clone(), st);
                return Ok(());
            }
        }
        let tid = task_id(&run.id, &spec.id, i, 1);
        let task = queue_task(
            state, run, &spec.id, i, 1, agent, &r.plugin, &r.method, params,
        );
        tasks.push((task, guard.clone()));
        st.instances.push(Instance {
            agent_uuid: agent.record.uuid,
            agent_name: agent.record.profile.name.clone(),
            status: StepStatus::Running,
            attempt: 1,
            task_id: Some(tid),
            previous: Vec::new(),
            exit_code: None,
            result: None,
            reason: None,
            started_at: Some(now()),
            finished_at: None,
        });
    }
    st.status = StepStatus::Running;
    st.reason = None;
    st.started_at = Some(now());
    let _ = r.timeout;
    let _ = r.retries;
    let _ = r.testcase;
    run.steps.insert(spec.id.clone(), st);
    Ok(())
}

/// The task of attempt `attempt` of a step's instance on `agent`, to be
/// written with the step's record ([`write_changes`]). It counts in the
/// agent's load from now, so the next placement of this reconcile (a wide
/// plan places many at once) sees it.
#[allow(clippy::too_many_arguments)]
fn queue_task(
    state: &AppState,
    run: &Run,
    step: &str,
    instance: usize,
    attempt: u32,
    agent: &AgentView,
    plugin: &str,
    method: &str,
    params: Value,
) -> Task {
    let id = task_id(&run.id, step, instance, attempt);
    let task = Task::queued(testbed_core::task::NewTask {
        id,
        plugin: plugin.to_string(),
        method: method.to_string(),
        parameters: params,
        host: agent.record.profile.host.clone(),
        agent_uuid: agent.record.uuid,
        agent_name: agent.record.profile.name.clone(),
        created_by: run.created_by.clone(),
        run: Some(RunRef {
            run_id: run.id,
            step: step.to_string(),
            instance,
            attempt,
        }),
        reason: None,
    });
    state.sessions.load.assigned(task.agent_uuid, task.id);
    task
}

async fn advance_step(
    state: &AppState,
    c: &mut Cached,
    spec: &StepSpec,
    fleet: &mut Fleet,
    known: &WatchedTasks,
    tasks: &mut Vec<(Task, Vec<(String, Compare)>)>,
) -> Result<(), RecordError> {
    let Some(mut st) = c.l.run.steps.get(&spec.id).cloned() else {
        return Ok(());
    };
    let resolved = resolve(state, c, spec).await?;
    let run = &mut c.l.run;
    let (r, _env) = match resolved {
        Ok(ok) => ok,
        Err(reason) => {
            finish_step(&mut st, StepStatus::Error, Some(reason));
            run.steps.insert(spec.id.clone(), st);
            return Ok(());
        }
    };
    for idx in 0..st.instances.len() {
        let inst = st.instances[idx].clone();
        if inst.status.is_terminal() {
            continue;
        }
        let Some(tid) = inst.task_id else { continue };
        let task = match known.tasks.get(&tid) {
            Some(t) => t.clone(),
            // On events, a task we heard nothing about is still running;
            // only a timeout needs its start time.
            None if known.from_events && r.timeout.is_none() => continue,
            None => match records::get::<Task>(&state.store, &keys::task(&tid)).await? {
                Some((t, _)) => t,
                None => continue,
            },
        };
        let mut inst = inst;
        match task.status {
            TaskStatus::Queued | TaskStatus::Running => {
                if let (Some(limit), Some(started)) =
                    (r.timeout, task.started_at.or(inst.started_at))
                {
                    let ran = (now() - started).to_std().unwrap_or_default();
                    if ran > limit && inst.reason.is_none() {
                        inst.reason = Some(format!("timed out after {}s", limit.as_secs()));
                        let _ = dispatch::cancel(state, tid).await;
                    }
                }
                st.instances[idx] = inst;
                continue;
            }
            TaskStatus::Succeeded => {
                inst.status = StepStatus::Passed;
            }
            status => {
                let timed_out = inst
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("timed out"));
                let failed = if timed_out {
                    StepStatus::Failed
                } else {
                    match status {
                        TaskStatus::Failed => StepStatus::Failed,
                        TaskStatus::Cancelled if run.cancel_requested => StepStatus::Cancelled,
                        TaskStatus::Lost => StepStatus::Lost,
                        _ => StepStatus::Error,
                    }
                };
                let reason = if timed_out {
                    inst.reason.clone()
                } else {
                    task.error
                        .clone()
                        .or_else(|| task.exit_code.map(|c| format!("exit code {c}")))
                };
                if inst.attempt <= r.retries && !run.cancel_requested {
                    let lost = status == TaskStatus::Lost;
                    let (load, previous) = (&state.sessions.load, inst.agent_uuid);
                    // A failed attempt on the same agent while it lives, a
                    // lost one on the least loaded other eligible agent
                    // ([`crate::placement::Load::retry`]).
                    let agent = fleet
                        .decide(state, run.id, |seen| {
                            let eligible = seen.eligible(&r, false);
                            load.retry(seen.agents, &eligible, previous, lost)
                                .map(|a| (a.clone(), seen.guard(a)))
                        })
                        .await?;
                    if let Some((agent, guard)) = &agent {
                        let attempt = inst.attempt + 1;
                        let retry = queue_task(
                            state,
                            run,
                            &spec.id,
                            idx,
                            attempt,
                            agent,
                            &r.plugin,
                            &r.method,
                            task.parameters.clone(),
                        );
                        tasks.push((retry, guard.clone()));
                        inst.previous.push(tid);
                        inst.task_id = Some(task_id(&run.id, &spec.id, idx, attempt));
                        inst.attempt = attempt;
                        inst.agent_uuid = agent.record.uuid;
                        inst.agent_name = agent.record.profile.name.clone();
                        inst.reason = Some(format!(
                            "retry {} after: {}",
                            attempt - 1,
                            reason.clone().unwrap_or_default()
                        ));
                        inst.started_at = Some(now());
                        st.instances[idx] = inst;
                        continue;
                    }
                    // No agent to retry on yet (a restarted agent has not
                    // reconnected, or every other one is busy elsewhere):
                    // wait for one as a pending step would, up to the
                    // pending timeout.
                    let since = task.finished_at.unwrap_or_else(now);
                    let waited = (now() - since).to_std().unwrap_or_default();
                    let limit = run.spec.pending_timeout();
                    if waited < limit {
                        inst.reason = Some(format!(
                            "retry {} after: {}; waiting for {} ({} of {})",
                            inst.attempt,
                            reason.clone().unwrap_or_default(),
                            targets::wanted(&r.selector, &r.plugin, &r.method, false),
                            targets::seconds(waited),
                            targets::seconds(limit)
                        ));
                        st.instances[idx] = inst;
                        continue;
                    }
                }
                inst.status = failed;
                inst.reason = reason;
            }
        }
        inst.exit_code = task.exit_code;
        inst.result = task.result.clone();
        inst.started_at = task.started_at.or(inst.started_at);
        inst.finished_at = task.finished_at.or(Some(now()));
        st.instances[idx] = inst;
    }
    if st.instances.iter().all(|i| i.status.is_terminal()) {
        let worst = st
            .instances
            .iter()
            .map(|i| i.status)
            .max_by_key(|s| match s {
                StepStatus::Error => 5,
                StepStatus::Lost => 4,
                StepStatus::Failed => 3,
                StepStatus::Cancelled => 2,
                _ => 0,
            })
            .unwrap_or(StepStatus::Passed);
        // Outputs: from the one instance, or a list across a fan-out.
        for (name, tpl) in &spec.outputs {
            let values: Vec<Value> = st
                .instances
                .iter()
                .map(|i| {
                    let sc = json!({"result": output_result(i.result.as_ref()), "agent": {"name": i.agent_name}});
                    template::render_str(tpl, &sc).unwrap_or(Value::Null)
                })
                .collect();
            let v = if r.each {
                Value::Array(values)
            } else {
                values.into_iter().next().unwrap_or(Value::Null)
            };
            st.outputs.insert(name.clone(), v);
        }
        let reason = st
            .instances
            .iter()
            .find(|i| i.status == worst)
            .and_then(|i| i.reason.clone());
        finish_step(
            &mut st,
            worst,
            if worst == StepStatus::Passed {
                None
            } else {
                reason
            },
        );
        if let Some((tc, env)) = &r.testcase {
            report::record_result(state, run, tc, env, &st).await?;
        }
    }
    run.steps.insert(spec.id.clone(), st);
    Ok(())
}

/// A task's result as output templates see it: captured stdout loses one
/// trailing newline, as shell `$(…)` does, so `{{ result.stdout_tail }}`
/// of `echo token-abc` is `token-abc`, ready for an argv element.
fn output_result(result: Option<&Value>) -> Value {
    let mut r = result.cloned().unwrap_or(Value::Null);
    if let Some(obj) = r.as_object_mut() {
        for (k, v) in obj.iter_mut() {
            if !k.starts_with("stdout") {
                continue;
            }
            if let Value::String(s) = v {
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
            }
        }
    }
    r
}

/// After a run ends: its report, its reservation, its index entry.
async fn finish(state: &AppState, run: &Run) -> Result<(), RecordError> {
    if run.report_id.is_none() {
        let report_id = report::store_report(state, run).await?;
        run_store::update(&state.store, &run.id, |r| {
            if r.report_id.is_none() {
                r.report_id = Some(report_id);
                true
            } else {
                false
            }
        })
        .await?;
    }
    if let Some(group) = &run.spec.reserve {
        if let Some(kv) = state.store.get(&keys::group_lock(group)).await? {
            let held_by_us =
                serde_json::from_slice::<GroupLock>(&kv.value).is_ok_and(|l| l.run_id == run.id);
            if held_by_us {
                state
                    .store
                    .txn_delete(
                        &keys::group_lock(group),
                        Compare::ModRevision(kv.mod_revision),
                    )
                    .await?;
            }
        }
    }
    state.store.delete(&keys::active_run(&run.id)).await?;
    Ok(())
}

/// Creates a run of `spec` and puts it on the controller's list.
pub async fn create_run(
    state: &AppState,
    spec: PlanSpec,
    plan_id: Option<Uuid>,
    params: BTreeMap<String, Value>,
    environment: Option<String>,
    created_by: &str,
) -> Result<Run, RecordError> {
    let id = Uuid::new_v4();
    let run = Run {
        kind: Run::KIND.into(),
        v: run_store::RUN_V,
        id,
        plan_id,
        plan_name: spec.name.clone(),
        steps: spec
            .steps
            .iter()
            .map(|s| (s.id.clone(), StepState::new()))
            .collect(),
        spec,
        params,
        environment,
        status: RunStatus::Pending,
        reason: None,
        cancel_requested: false,
        report_id: None,
        created_by: created_by.to_string(),
        created_at: now(),
        started_at: None,
        finished_at: None,
    };
    run_store::create(&state.store, &run).await?;
    state
        .store
        .put(&keys::active_run(&id), id.to_string().into_bytes(), None)
        .await?;
    Ok(run)
}

/// One supervised watch of the engine: where it resumes and how it fares.
struct Follow {
    name: &'static str,
    prefix: &'static str,
    /// The next revision to deliver: one past the last one seen.
    from: i64,
    stream: Option<testbed_store::WatchStream>,
    /// No attempt to open the watch before this.
    retry_at: tokio::time::Instant,
}

/// What a broken watch needs before it is opened again.
enum Broken {
    /// Its history is gone: re-list everything, then follow from now.
    Compacted,
    /// An error or an ended stream: resume from the last revision seen.
    Failed(String),
}

impl Follow {
    fn new(name: &'static str, prefix: &'static str, from: i64) -> Self {
        Follow {
            name,
            prefix,
            from,
            stream: None,
            retry_at: tokio::time::Instant::now(),
        }
    }

    /// Opens the watch when it is down and due.
    async fn ensure(&mut self, state: &AppState) {
        if self.stream.is_some() || tokio::time::Instant::now() < self.retry_at {
            return;
        }
        match state.store.watch(self.prefix, self.from).await {
            Ok(stream) => {
                self.stream = Some(stream);
                state.loops.ok(self.name);
            }
            Err(e) => self.fail(state, Broken::Failed(format!("opening the watch: {e}"))),
        }
    }

    fn fail(&mut self, state: &AppState, why: Broken) {
        self.stream = None;
        let wait = match why {
            // Not a fault: the caller re-lists and this resumes at once.
            Broken::Compacted => Duration::ZERO,
            Broken::Failed(e) => state.loops.failed(self.name, e),
        };
        self.retry_at = tokio::time::Instant::now() + wait;
    }

    /// The next event, or pending forever while the watch is down.
    async fn next(&mut self) -> Option<testbed_store::Result<testbed_store::Event>> {
        use futures_util::StreamExt;
        match self.stream.as_mut() {
            Some(s) => s.next().await,
            None => std::future::pending().await,
        }
    }

    /// An item from the stream: the event, or why the watch broke.
    fn take(
        &mut self,
        item: Option<testbed_store::Result<testbed_store::Event>>,
    ) -> Result<testbed_store::Event, Broken> {
        match item {
            Some(Ok(ev)) => {
                self.from = ev.revision() + 1;
                Ok(ev)
            }
            Some(Err(testbed_store::StoreError::Compacted { .. })) => Err(Broken::Compacted),
            Some(Err(e)) => Err(Broken::Failed(format!("watch: {e}"))),
            None => Err(Broken::Failed("watch ended".into())),
        }
    }
}

/// Names of the engine's watches, as `/healthz` reports them when failing.
pub const TASKS_WATCH: &str = "plan engine: task watch";
pub const RUNS_WATCH: &str = "plan engine: run watch";
pub const EXECUTIONS_WATCH: &str = "plan engine: performance execution watch";

/// Reconciles runs as their tasks change (event-driven) and sweeps every
/// active run each second (timeouts, agents appearing); performance
/// executions ride on the same task watch and sweep, with a watch of their
/// own index (`performance::reconcile`). Runs while this replica leads the
/// controller.
///
/// Supervised: a watch that fails is opened again from the revision after
/// the last event it delivered, with back-off, and reported failing (log,
/// `/healthz`) until it works; a watch whose history was compacted re-lists
/// every active run and follows changes from then on. The sweep goes on
/// whatever the watches do, so runs move (if more slowly) even while a
/// watch is down.
pub async fn drive(state: AppState, lease: LeaseId, stop: tokio_util::sync::CancellationToken) {
    let from = loop {
        match state.store.revision().await {
            Ok(r) => break r + 1,
            Err(e) => {
                let wait = state
                    .loops
                    .failed(TASKS_WATCH, format!("reading the revision: {e}"));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };
    let mut tasks = Follow::new(TASKS_WATCH, keys::TASKS, from);
    let mut runs = Follow::new(RUNS_WATCH, keys::ACTIVE_RUNS, from);
    // Performance executions are reconciled here too, from the same task
    // watch and sweep (see `performance::reconcile`).
    let mut executions = Follow::new(EXECUTIONS_WATCH, keys::PERF_ACTIVE, from);
    let mut perf = crate::performance::reconcile::Executions::default();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    // A down watch is retried at least this often (its back-off permitting).
    let mut retry = tokio::time::interval(crate::controller::BACKOFF_MIN);
    let mut known = WatchedTasks {
        tasks: Default::default(),
        from_events: true,
    };
    let mut cache = Cache::new();
    // Every DEEP_EVERY-th sweep reads every run and running task from the
    // store again; the others trust what the watches delivered.
    const DEEP_EVERY: u32 = 10;
    let mut since_deep: u32 = 0;
    if let Err(e) = run_store::migrate(&state.store).await {
        tracing::warn!("run records: moving to the per-step layout: {e}");
    }
    loop {
        tasks.ensure(&state).await;
        runs.ensure(&state).await;
        executions.ensure(&state).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = state.shutdown.cancelled() => break,
            _ = retry.tick() => {}
            _ = sweep.tick() => {
                since_deep += 1;
                let deep = since_deep >= DEEP_EVERY;
                if deep {
                    since_deep = 0;
                }
                let pass = reconcile_all(&state, Some(lease), &mut cache, &known, deep);
                if let Err(e) = state.metrics.reconcile(crate::metrics::Pass::EngineSweep, pass).await {
                    tracing::warn!("engine sweep: {e}");
                }
                perf.sweep(&state).await;
            }
            item = tasks.next() => {
                // Coalesce: every task event already queued is folded in, so
                // a burst of completions costs one reconcile per run.
                let mut due: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
                let mut next = item;
                let mut broken = None;
                loop {
                    match tasks.take(next) {
                        Ok(ev) => {
                            if let Ok(task) = serde_json::from_slice::<Task>(&ev.kv.value) {
                                perf.on_task(&task);
                                if let Some(r) = &task.run {
                                    if task.status.is_terminal() {
                                        due.entry(r.run_id).or_default().insert(r.step.clone());
                                        known.tasks.insert(task.id, task);
                                    }
                                }
                            }
                        }
                        Err(why) => {
                            broken = Some(why);
                            break;
                        }
                    }
                    let Some(stream) = tasks.stream.as_mut() else { break };
                    match futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(stream)) {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                for (run_id, steps) in due {
                    if let Err(e) = reconcile(&state, run_id, Some(lease), &known, &mut cache, Some(&steps)).await {
                        tracing::warn!(run = %run_id, "reconcile: {e}");
                    }
                }
                perf.flush(&state).await;
                if let Some(why) = broken {
                    let compacted = matches!(why, Broken::Compacted);
                    resume_after(&state, &mut tasks, why, lease, &mut cache).await;
                    if compacted {
                        perf.sweep(&state).await;
                    }
                }
                // Bounded: the sweep reads the store anyway.
                if known.tasks.len() > 100_000 {
                    known.tasks.clear();
                }
            },
            item = runs.next() => match runs.take(item) {
                Ok(ev) => {
                    if let Some(id) = ev.kv.key.strip_prefix(keys::ACTIVE_RUNS).and_then(|s| s.parse::<Uuid>().ok()) {
                        // A new run, a cancel (which touches the index), or
                        // the run's end: what is held of it may be stale.
                        cache.remove(&id);
                        if ev.kind != EventKind::Delete {
                            if let Err(e) = reconcile(&state, id, Some(lease), &known, &mut cache, None).await {
                                tracing::warn!(run = %id, "reconcile: {e}");
                            }
                        }
                    }
                }
                Err(why) => resume_after(&state, &mut runs, why, lease, &mut cache).await,
            },
            item = executions.next() => match executions.take(item) {
                Ok(ev) => {
                    perf.on_active(&ev.kv.key, ev.kind == EventKind::Delete);
                    perf.flush(&state).await;
                }
                Err(why) => {
                    let compacted = matches!(why, Broken::Compacted);
                    resume_after(&state, &mut executions, why, lease, &mut cache).await;
                    if compacted {
                        perf.sweep(&state).await;
                    }
                }
            },
        }
    }
    state.loops.forget(TASKS_WATCH);
    state.loops.forget(RUNS_WATCH);
    state.loops.forget(EXECUTIONS_WATCH);
}

/// After a watch broke: on compaction, takes the current revision first and
/// then re-lists every active run, so that what changed during the re-list
/// is delivered by the new watch and nothing falls in between.
async fn resume_after(
    state: &AppState,
    watch: &mut Follow,
    why: Broken,
    lease: LeaseId,
    cache: &mut Cache,
) {
    match why {
        Broken::Compacted => match state.store.revision().await {
            Ok(rev) => {
                tracing::warn!(
                    "{}: history compacted past revision {}; re-listing every active run",
                    watch.name,
                    watch.from
                );
                watch.from = rev + 1;
                watch.fail(state, Broken::Compacted);
                let everything = WatchedTasks::default();
                if let Err(e) = reconcile_all(state, Some(lease), cache, &everything, true).await {
                    tracing::warn!("engine re-list: {e}");
                }
            }
            Err(e) => watch.fail(
                state,
                Broken::Failed(format!("compacted, and reading the revision failed: {e}")),
            ),
        },
        failed => watch.fail(state, failed),
    }
}

/// Requests cancellation of a run. Returns the run with its steps.
pub async fn cancel_run(state: &AppState, id: Uuid) -> Result<Option<Cancelled>, RecordError> {
    // Whether the run had ended is decided inside the compare-and-swap, on
    // the record this cancel changes: read afterwards, a run the reconciler
    // cancelled at once (no task running yet) would look "already ended".
    let mut already_ended = false;
    let run = run_store::update(&state.store, &id, |r| {
        already_ended = r.status.is_terminal();
        if already_ended || r.cancel_requested {
            false
        } else {
            r.cancel_requested = true;
            true
        }
    })
    .await?;
    if run.is_some() {
        // Touch the index so the leader reconciles at once.
        state
            .store
            .put(&keys::active_run(&id), id.to_string().into_bytes(), None)
            .await?;
    }
    Ok(match run {
        Some(_) => run_store::load(&state.store, &id)
            .await?
            .map(|l| Cancelled {
                run: l.run,
                already_ended,
            }),
        None => None,
    })
}

/// What [`cancel_run`] found and left.
pub struct Cancelled {
    /// The run after the cancel request (it may have ended since).
    pub run: Run,
    /// It had ended before this request: nothing was cancelled.
    pub already_ended: bool,
}

/// Checks that what a plan calls exists on some registered agent.
pub fn check_against_agents(
    spec: &PlanSpec,
    agents: &[AgentView],
) -> Vec<testbed_core::plan::Problem> {
    let mut out = Vec::new();
    if !spec.wait_for_agents {
        out.extend(unmatchable_targets(spec, agents));
    }
    for (i, s) in spec.steps.iter().enumerate() {
        let (Some(plugin), Some(method)) = (&s.plugin, &s.method) else {
            continue;
        };
        let carrying: Vec<&AgentView> = agents
            .iter()
            .filter(|a| a.record.plugin(plugin).is_some())
            .collect();
        if carrying.is_empty() {
            let known: BTreeSet<String> = agents
                .iter()
                .flat_map(|a| a.record.profile.plugins.iter().map(|p| p.name.clone()))
                .collect();
            out.push(testbed_core::plan::Problem::at(
                format!("steps[{i}].plugin"),
                format!(
                    "unknown plugin `{plugin}` (agents carry: {})",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
            continue;
        }
        let method_spec = carrying
            .iter()
            .find_map(|a| a.record.plugin(plugin).and_then(|p| p.method(method)));
        match method_spec {
            None => {
                let known: BTreeSet<String> = carrying
                    .iter()
                    .flat_map(|a| {
                        a.record
                            .plugin(plugin)
                            .map(|p| p.methods.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
                            .unwrap_or_default()
                    })
                    .collect();
                out.push(testbed_core::plan::Problem::at(
                    format!("steps[{i}].method"),
                    format!(
                        "plugin `{plugin}` has no method `{method}` (it has: {})",
                        known.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Some(m) => {
                // Parameters without templates can be checked now.
                let templated = template::references_in(&s.params)
                    .map(|r| !r.is_empty())
                    .unwrap_or(true);
                if !templated {
                    if let Err(errs) = testbed_core::schema::validate(&m.schema, &s.params, "") {
                        for e in errs {
                            let field = e.field.trim_start_matches('/').replace('/', ".");
                            let path = if field.is_empty() {
                                format!("steps[{i}].params")
                            } else {
                                format!("steps[{i}].params.{field}")
                            };
                            out.push(testbed_core::plan::Problem::at(path, e.message));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Targets no registered agent (live or not) can ever satisfy: waiting for
/// them would only end in a timeout, so the plan is refused at once, as
/// `exec --host` is, unless it says `wait_for_agents: true`.
fn unmatchable_targets(spec: &PlanSpec, agents: &[AgentView]) -> Vec<testbed_core::plan::Problem> {
    let mut out = Vec::new();
    let hint = "start an agent that matches, or add `wait_for_agents: true` to the plan to wait \
                for one";
    for (i, s) in spec.steps.iter().enumerate() {
        let Some(target) = &s.target else { continue };
        // A templated name is known only when the step starts.
        if matches!(target, testbed_core::plan::Target::Name(n) if n.contains("{{")) {
            continue;
        }
        let (sel, _) = target.selector();
        let matching: Vec<&AgentView> = agents
            .iter()
            .filter(|a| targets::matches(a, &sel))
            .collect();
        let path = format!("steps[{i}].target");
        if matching.is_empty() {
            let known = if agents.is_empty() {
                "no agent is registered".to_string()
            } else {
                format!(
                    "registered agents have {}",
                    targets::known_for(&sel, agents)
                )
            };
            out.push(testbed_core::plan::Problem::at(
                path,
                format!(
                    "step `{}`: no registered agent matches {} ({known}); {hint}",
                    s.id,
                    if sel.selectors() == 0 {
                        "any agent".to_string()
                    } else {
                        sel.describe()
                    }
                ),
            ));
            continue;
        }
        let (Some(plugin), Some(method)) = (&s.plugin, &s.method) else {
            continue;
        };
        // An unknown plugin or method is reported on its own field.
        let anywhere = agents.iter().any(|a| {
            a.record
                .plugin(plugin)
                .and_then(|p| p.method(method))
                .is_some()
        });
        let carried = matching.iter().any(|a| {
            a.record
                .plugin(plugin)
                .and_then(|p| p.method(method))
                .is_some()
        });
        if anywhere && !carried {
            out.push(testbed_core::plan::Problem::at(
                path,
                format!(
                    "step `{}`: the agents matching {} ({}) do not carry {plugin}.{method}; {hint}",
                    s.id,
                    sel.describe(),
                    matching
                        .iter()
                        .map(|a| a.record.profile.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_stdout_loses_one_trailing_newline() {
        let r = json!({"stdout_tail": "token-abc\n\n", "exit_code": 0});
        assert_eq!(output_result(Some(&r))["stdout_tail"], "token-abc\n");
        let r = json!({"stdout_tail": "x\r\n", "stderr_tail": "e\n"});
        let o = output_result(Some(&r));
        assert_eq!(o["stdout_tail"], "x");
        assert_eq!(o["stderr_tail"], "e\n");
        assert_eq!(output_result(None), Value::Null);
    }

    #[test]
    fn task_ids_are_stable_and_distinct() {
        let run = Uuid::new_v4();
        assert_eq!(task_id(&run, "a", 0, 1), task_id(&run, "a", 0, 1));
        assert_ne!(task_id(&run, "a", 0, 1), task_id(&run, "a", 0, 2));
        assert_ne!(task_id(&run, "a", 0, 1), task_id(&run, "a", 1, 1));
        assert_ne!(
            task_id(&run, "a", 0, 1),
            task_id(&Uuid::new_v4(), "a", 0, 1)
        );
    }
}
