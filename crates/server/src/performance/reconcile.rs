//! The controller's reconciler of performance executions, run by the
//! controller leader beside the plan engine's runs, from the same watches
//! (see [`crate::engine::drive`]): the engine's task watch hands it every
//! load task that ended ([`Executions::on_task`]), a watch on
//! `/performance/active/` every start, stop, pause and resume
//! ([`Executions::on_active`]), and the engine's sweep each second every
//! active execution ([`Executions::sweep`]) for what only time changes.
//!
//! One reconcile reads the execution, its index entry and its tasks, and
//! brings them together: creates the load tasks the start placed (task ids
//! are chosen and stored before any task exists, so a leader that dies
//! half-way finds the same ones again and creates only what is missing),
//! carries a stop (cancel) or a pause or resume to the tasks that still
//! run, records agents lost on the way, and once every task has ended,
//! builds the report. A minute after the report the live seconds and the
//! index entry go. Every step is idempotent, so a new leader simply
//! reconciles again from the store.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use testbed_core::keys;
use testbed_core::task::{Task, TaskStatus};

use super::{active_key, execution_key, Execution, PerfStatus, ACTIVE};
use crate::dispatch;
use crate::error::ApiResult;
use crate::records;
use crate::state::AppState;

/// How long the live seconds outlive the report, for late readers.
const LIVE_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// A load task the start placed but no reconcile could create (an index
/// entry written by an older server holds none) stops being waited for
/// this long after the start.
const MISSING_AFTER: chrono::Duration = chrono::Duration::seconds(30);

/// The value of `/performance/active/{execution}`: what the controller
/// needs to drive the execution beyond its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Active {
    pub plan_id: u64,
    /// The load tasks as the start placed them, created by the reconciler.
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// When the report was stored; the entry and the live seconds go
    /// [`LIVE_GRACE`] later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<DateTime<Utc>>,
}

/// The reconciler's memory between passes (the leader's only): nothing in
/// it is needed for correctness, it spares repeated signals.
#[derive(Default)]
pub struct Executions {
    /// The status whose pause or resume was last carried to each
    /// execution's tasks.
    applied: HashMap<String, PerfStatus>,
    /// Executions with news from a watch, reconciled at the next flush.
    due: BTreeSet<String>,
}

impl Executions {
    /// A task changed (from the engine's task watch): an execution's load
    /// task that ended makes the execution due.
    pub fn on_task(&mut self, task: &Task) {
        if task.status.is_terminal() {
            if let Some(e) = super::execution_of(task) {
                self.due.insert(e.to_string());
            }
        }
    }

    /// A change under `/performance/active/`: a start, a stop, a pause or
    /// a resume (each rewrites the entry), or the entry's removal.
    pub fn on_active(&mut self, key: &str, deleted: bool) {
        let Some(id) = key.strip_prefix(ACTIVE) else {
            return;
        };
        if deleted {
            self.applied.remove(id);
        } else {
            self.due.insert(id.to_string());
        }
    }

    /// Reconciles the executions the watches made due.
    pub async fn flush(&mut self, state: &AppState) {
        for id in std::mem::take(&mut self.due) {
            if let Err(e) = self.reconcile(state, &id).await {
                tracing::warn!(execution = %id, "performance execution: {}", e.message);
            }
        }
    }

    /// Reconciles every active execution: what a watch missed, and what
    /// only time changes (a missing task given up on, the live seconds'
    /// removal). Timed as the performance sweep.
    pub async fn sweep(&mut self, state: &AppState) {
        let pass = self.sweep_all(state);
        if let Err(e) = state
            .metrics
            .reconcile(crate::metrics::Pass::PerformanceSweep, pass)
            .await
        {
            tracing::warn!("performance sweep: {}", e.message);
        }
    }

    async fn sweep_all(&mut self, state: &AppState) -> ApiResult<()> {
        let mut ids = Vec::new();
        let mut pages = crate::records::Pages::new(&state.store, ACTIVE, 500);
        while let Some(kvs) = pages.next().await? {
            ids.extend(
                kvs.iter()
                    .filter_map(|kv| kv.key.strip_prefix(ACTIVE).map(str::to_string)),
            );
        }
        self.applied.retain(|id, _| ids.contains(id));
        for id in ids {
            if let Err(e) = self.reconcile(state, &id).await {
                tracing::warn!(execution = %id, "performance execution: {}", e.message);
            }
        }
        Ok(())
    }

    /// Brings one execution forward as far as its state allows.
    async fn reconcile(&mut self, state: &AppState, id: &str) -> ApiResult<()> {
        let key = active_key(id);
        let Some((active, _)) = records::get::<Active>(&state.store, &key).await? else {
            self.applied.remove(id);
            return Ok(());
        };
        let Some((exec, _)) = records::get::<Execution>(&state.store, &execution_key(id)).await?
        else {
            state.store.delete(&key).await?;
            self.applied.remove(id);
            return Ok(());
        };
        if exec.report_id.is_some() {
            return self.after_report(state, id, &active).await;
        }

        // The tasks as they stand; those not created yet are created while
        // the execution runs.
        let mut tasks = Vec::with_capacity(exec.tasks.len());
        let mut missing = 0;
        for t in &exec.tasks {
            if let Some((task, _)) =
                records::get::<Task>(&state.store, &keys::task(&t.task_id)).await?
            {
                tasks.push(task);
                continue;
            }
            match active.tasks.iter().find(|q| q.id == t.task_id) {
                Some(queued) if exec.is_active() => {
                    dispatch::create(state, queued).await?;
                    tasks.push(queued.clone());
                }
                _ => missing += 1,
            }
        }

        self.carry_status(state, &exec, &tasks).await?;
        record_lost(state, &exec, &tasks).await?;

        let given_up = testbed_core::now() - exec.start_time > MISSING_AFTER;
        let waiting = missing > 0 && exec.is_active() && !given_up;
        if waiting || !tasks.iter().all(|t| t.status.is_terminal()) {
            return Ok(());
        }
        super::finalize(state, id, &tasks).await?;
        records::update::<Active, _>(&state.store, &key, |a| {
            if a.reported_at.is_some() {
                return false;
            }
            a.reported_at = Some(testbed_core::now());
            true
        })
        .await?;
        Ok(())
    }

    /// Carries the execution's status to its tasks that still run: a stop
    /// cancels them (each yields its windows so far), a pause or a resume
    /// flags their assignments, which reach the agents through whichever
    /// replica holds them.
    async fn carry_status(
        &mut self,
        state: &AppState,
        exec: &Execution,
        tasks: &[Task],
    ) -> ApiResult<()> {
        let running = tasks.iter().filter(|t| !t.status.is_terminal());
        match exec.status {
            PerfStatus::Stopped => {
                for t in running.filter(|t| !t.cancel_requested) {
                    // One that ended meanwhile cannot be cancelled: fine.
                    if let Err(e) = dispatch::cancel(state, t.id).await {
                        tracing::debug!(task = %t.id, "cancel: {}", e.message);
                    }
                }
            }
            status @ (PerfStatus::Paused | PerfStatus::Running) => {
                let pause = status == PerfStatus::Paused;
                // A run never paused has nothing to resume.
                let due = self.applied.get(&exec.execution_id) != Some(&status)
                    && (pause || exec.resume_time.is_some());
                if due {
                    for t in running {
                        if !dispatch::set_paused(state, t.agent_uuid, t.id, pause).await? {
                            tracing::debug!(task = %t.id, "pause/resume: task already ended");
                        }
                    }
                }
                self.applied.insert(exec.execution_id.clone(), status);
            }
            _ => {}
        }
        Ok(())
    }

    /// After the report: the live seconds stay for late readers, then go
    /// with the index entry.
    async fn after_report(&mut self, state: &AppState, id: &str, active: &Active) -> ApiResult<()> {
        let key = active_key(id);
        let Some(at) = active.reported_at else {
            // Reported before the entry said so (a leader died in between).
            records::update::<Active, _>(&state.store, &key, |a| {
                a.reported_at.get_or_insert_with(testbed_core::now);
                true
            })
            .await?;
            return Ok(());
        };
        if testbed_core::now() - at < LIVE_GRACE {
            return Ok(());
        }
        super::forget_live(state, id).await?;
        state.store.delete(&key).await?;
        self.applied.remove(id);
        Ok(())
    }
}

/// Notes the agents whose load task was lost (their windows so far count
/// from the live seconds); the rest carry on.
async fn record_lost(state: &AppState, exec: &Execution, tasks: &[Task]) -> ApiResult<()> {
    let lost: Vec<String> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Lost && !exec.lost_agents.contains(&t.agent_name))
        .map(|t| t.agent_name.clone())
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    tracing::warn!(execution = %exec.execution_id, "load agents lost: {}", lost.join(", "));
    records::update::<Execution, _>(&state.store, &execution_key(&exec.execution_id), |e| {
        let mut changed = false;
        for a in &lost {
            if !e.lost_agents.contains(a) {
                e.lost_agents.push(a.clone());
                changed = true;
            }
        }
        changed
    })
    .await?;
    Ok(())
}
