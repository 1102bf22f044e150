//! What the API asks of performance plans and their executions: the plans'
//! records, and starting, stopping, pausing and resuming an execution —
//! from which status each may start, what it changes, and the 409 when
//! another request moved first. The API's handlers check the caller's role,
//! parse input and shape responses; they call these.
//!
//! Control is intent: each operation is a compare-and-swap on the
//! execution's record plus a touch of its `/performance/active/` entry, and
//! the controller leader's reconciler ([`super::reconcile`]) carries it to
//! the load tasks (creates them, cancels them, pauses and resumes them) —
//! the one path, whichever replica took the request and whether or not it
//! still lives.

use chrono::{DateTime, Utc};
use serde_json::json;
use testbed_core::task::{NewTask, Task};
use testbed_store::Compare;
use uuid::Uuid;

use super::config::AgentSel;
use super::reconcile::Active;
use super::{
    active_key, execution_key, plan_key, plan_shows, report_key, windows_blob, ExecTask, Execution,
    LoadTest, PerfReport, PerfStatus, PLANS, REPORTS,
};
use crate::error::{ApiError, ApiResult};
use crate::records;
use crate::state::AppState;
use testbed_api::performance::{LoadTestItem, ReportItem};

/// Lead time given to agents so they all begin load at the same instant.
const START_LEAD_MS: u64 = 1500;

pub async fn load_execution(state: &AppState, id: &str) -> ApiResult<Execution> {
    records::get::<Execution>(&state.store, &execution_key(id))
        .await?
        .map(|(e, _)| e)
        .ok_or_else(|| ApiError::not_found(format!("no execution {id}")))
}

pub async fn load_plan(state: &AppState, id: u64) -> ApiResult<LoadTest> {
    records::get::<LoadTest>(&state.store, &plan_key(id))
        .await?
        .map(|(p, _)| p)
        .ok_or_else(|| ApiError::not_found(format!("no plan {id}")))
}

/// A plan's checked fields (create and update).
pub struct PlanFields {
    pub name: String,
    pub description: String,
    /// Required on create; on update, absent keeps the current project.
    pub project_id: Option<u64>,
    pub config: serde_json::Value,
}

pub async fn create_plan(state: &AppState, caller: &str, f: PlanFields) -> ApiResult<LoadTest> {
    let id = records::next_counter(
        &state.store,
        &testbed_core::keys::counter("performance_plan_id"),
    )
    .await?;
    let now = testbed_core::now();
    let plan = LoadTest {
        id,
        name: f.name,
        description: f.description,
        project_id: f.project_id.unwrap_or_default(),
        config: f.config,
        status: PerfStatus::Created,
        created_at: now,
        updated_at: now,
        last_execution: None,
        created_by: caller.to_string(),
    };
    if !records::create(&state.store, &plan_key(id), &plan, None).await? {
        return Err(ApiError::conflict(format!("plan {id} exists")));
    }
    Ok(plan)
}

pub async fn update_plan(state: &AppState, id: u64, f: PlanFields) -> ApiResult<LoadTest> {
    let now = testbed_core::now();
    records::update::<LoadTest, _>(&state.store, &plan_key(id), |p| {
        p.name = f.name.clone();
        p.description = f.description.clone();
        if let Some(project) = f.project_id {
            p.project_id = project;
        }
        p.config = f.config.clone();
        p.updated_at = now;
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no plan {id}")))
}

/// Deletes a plan that is not running.
pub async fn delete_plan(state: &AppState, plan: &LoadTest) -> ApiResult<()> {
    if plan.status.is_active() {
        return Err(ApiError::conflict(format!(
            "plan {} is {}; stop it first",
            plan.id, plan.status
        )));
    }
    if !state.store.delete(&plan_key(plan.id)).await? {
        return Err(ApiError::not_found(format!("no plan {}", plan.id)));
    }
    Ok(())
}

/// The records under `prefix` that `keep` keeps.
async fn every<T: serde::de::DeserializeOwned>(
    state: &AppState,
    prefix: &str,
    keep: impl Fn(&T) -> bool,
) -> ApiResult<Vec<T>> {
    let all: Vec<(String, T)> = records::list(&state.store, prefix, |_| true).await?;
    Ok(all
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| keep(v))
        .collect())
}

/// The plans of a project, by id.
pub async fn plans_of(state: &AppState, project: u64) -> ApiResult<Vec<LoadTestItem>> {
    let mut plans = every(state, PLANS, |p: &LoadTest| p.project_id == project).await?;
    plans.sort_by_key(|p| p.id);
    Ok(plans
        .into_iter()
        .map(|p| LoadTestItem {
            id: p.id,
            name: p.name,
            description: p.description,
            project_id: p.project_id,
            status: p.status,
            created_at: p.created_at,
        })
        .collect())
}

/// The reports of a plan, newest first.
pub async fn reports_of(state: &AppState, plan: u64) -> ApiResult<Vec<ReportItem>> {
    let mut reports = every(state, REPORTS, |r: &PerfReport| r.plan_id == plan).await?;
    reports.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(reports
        .into_iter()
        .map(|r| ReportItem {
            id: r.id,
            plan_id: r.plan_id,
            execution_id: r.execution_id,
            start_time: r.start_time,
            end_time: r.end_time,
            status: r.status,
            summary: r.summary,
        })
        .collect())
}

pub async fn load_report(state: &AppState, id: u64) -> ApiResult<PerfReport> {
    records::get::<PerfReport>(&state.store, &report_key(id))
        .await?
        .map(|(r, _)| r)
        .ok_or_else(|| ApiError::not_found(format!("no report {id}")))
}

/// Deletes a report and its stored windows; `may` is asked whether the
/// caller may, given who ran its execution.
pub async fn delete_report(
    state: &AppState,
    id: u64,
    may: impl Fn(&str) -> ApiResult<()>,
) -> ApiResult<()> {
    let report = load_report(state, id).await?;
    // A report belongs to whoever ran its execution.
    let owner = load_execution(state, &report.execution_id)
        .await
        .map(|e| e.created_by)
        .unwrap_or_default();
    may(&owner)?;
    state.store.delete(&report_key(id)).await?;
    if let Err(e) = state
        .blobs
        .delete(&windows_blob(&report.execution_id))
        .await
    {
        tracing::debug!("deleting windows of report {id}: {e}");
    }
    Ok(())
}

/// An execution just started.
pub struct Started {
    pub execution_id: String,
    pub start_time: DateTime<Utc>,
}

/// Starts `plan` (already checked: `profile` is its load profile) on the
/// agents `sel` asks for, as `caller`: places one part of the profile on
/// each agent ([`crate::placement::load_agents`]), claims the plan (a
/// second start is a 409), and records the execution with its load tasks
/// for the controller to create — with a shared start time, so the agents
/// begin together.
pub async fn start(
    state: &AppState,
    caller: &str,
    plan: &LoadTest,
    profile: testbed_load::LoadProfile,
    sel: &AgentSel,
) -> ApiResult<Started> {
    if plan.status.is_active() {
        return Err(ApiError::conflict(format!(
            "plan {} is already {}",
            plan.id, plan.status
        )));
    }
    let parts = profile.split(sel.count);
    let agents = crate::placement::load_agents(
        &state.store,
        &state.sessions.load,
        &sel.target(),
        parts.len(),
    )
    .await?;
    if agents.len() < parts.len() {
        return Err(ApiError::unavailable(format!(
            "the plan needs {} agent(s) carrying the `load` plugin{}; {} available",
            parts.len(),
            sel.describe(),
            agents.len()
        )));
    }

    // Claiming the plan is the compare-and-swap that makes a second start 409.
    let execution_id = Uuid::new_v4().to_string();
    let mut busy = None;
    records::update::<LoadTest, _>(&state.store, &plan_key(plan.id), |p| {
        if p.status.is_active() {
            busy = Some(p.status);
            return false;
        }
        busy = None;
        p.status = PerfStatus::Running;
        p.last_execution = Some(execution_id.clone());
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no plan {}", plan.id)))?;
    if let Some(status) = busy {
        return Err(ApiError::conflict(format!(
            "plan {} is already {status}",
            plan.id
        )));
    }

    let now = testbed_core::now();
    let load_start_ms = now.timestamp_millis().max(0) as u64 + START_LEAD_MS;
    let tasks: Vec<Task> = parts
        .iter()
        .zip(&agents)
        .map(|(part, agent)| {
            Task::queued(NewTask {
                id: Uuid::new_v4(),
                plugin: "load".into(),
                method: "run".into(),
                parameters: json!({
                    "plan": part,
                    "start_at_ms": load_start_ms,
                    "execution_id": execution_id,
                }),
                host: agent.profile.host.clone(),
                agent_uuid: agent.uuid,
                agent_name: agent.profile.name.clone(),
                created_by: caller.to_string(),
                run: None,
                reason: None,
            })
        })
        .collect();
    let execution = Execution {
        execution_id: execution_id.clone(),
        plan_id: plan.id,
        status: PerfStatus::Running,
        start_time: now,
        load_start_ms,
        stop_time: None,
        pause_time: None,
        resume_time: None,
        end_time: None,
        tasks: tasks
            .iter()
            .map(|t| ExecTask {
                task_id: t.id,
                agent_uuid: t.agent_uuid,
                agent_name: t.agent_name.clone(),
            })
            .collect(),
        lost_agents: Vec::new(),
        report_id: None,
        created_by: caller.to_string(),
    };
    let active = Active {
        plan_id: plan.id,
        tasks,
        reported_at: None,
    };
    if let Err(e) = record(state, &execution, &active).await {
        // Without an execution record nothing could ever end this run:
        // give the plan back so it can be started again.
        let _ = records::update::<LoadTest, _>(&state.store, &plan_key(plan.id), |p| {
            p.status = PerfStatus::Failed;
            true
        })
        .await;
        return Err(e);
    }
    Ok(Started {
        execution_id,
        start_time: now,
    })
}

/// The execution and its entry in the controller's index, in one write:
/// the leader never sees one without the other.
async fn record(state: &AppState, exec: &Execution, active: &Active) -> ApiResult<()> {
    let key = execution_key(&exec.execution_id);
    let ops = vec![
        crate::records::put_op(key.clone(), exec)?,
        crate::records::put_op(active_key(&exec.execution_id), active)?,
    ];
    match state
        .store
        .txn(&[(key.clone(), Compare::Absent)], ops)
        .await?
    {
        Some(_) => Ok(()),
        None => Err(ApiError::conflict(format!("execution {key} exists"))),
    }
}

/// The plan's current execution, which must be in one of `states`.
pub async fn current_execution(
    state: &AppState,
    plan: &LoadTest,
    states: &[PerfStatus],
) -> ApiResult<Execution> {
    let Some(id) = &plan.last_execution else {
        return Err(ApiError::conflict(format!(
            "plan {} has not been started",
            plan.id
        )));
    };
    let exec = load_execution(state, id).await?;
    if !states.contains(&exec.status) {
        let wanted: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::conflict(format!(
            "execution {id} is {}, not {}",
            exec.status,
            wanted.join(" or ")
        )));
    }
    Ok(exec)
}

/// What may be asked of a running execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// End it; its report is still produced.
    Stop,
    /// No new requests until resumed.
    Pause,
    /// The remaining schedule continues.
    Resume,
}

impl Action {
    /// The statuses it may start from.
    fn from(self) -> &'static [PerfStatus] {
        match self {
            Action::Stop => &[PerfStatus::Running, PerfStatus::Paused],
            Action::Pause => &[PerfStatus::Running],
            Action::Resume => &[PerfStatus::Paused],
        }
    }

    /// The status it leads to.
    pub fn to(self) -> PerfStatus {
        match self {
            Action::Stop => PerfStatus::Stopped,
            Action::Pause => PerfStatus::Paused,
            Action::Resume => PerfStatus::Running,
        }
    }

    fn stamp(self, e: &mut Execution, at: DateTime<Utc>) {
        let field = match self {
            Action::Stop => &mut e.stop_time,
            Action::Pause => &mut e.pause_time,
            Action::Resume => &mut e.resume_time,
        };
        *field = Some(at);
    }
}

/// Applies `action` to the current execution of `plan` (`may` is asked
/// whether the caller may act on it): moves its status with a
/// compare-and-swap — 409 when another request moved it first — mirrors
/// the status on the plan, and wakes the controller's reconciler, which
/// carries it to the tasks. Returns the execution and when it moved.
pub async fn act(
    state: &AppState,
    plan: &LoadTest,
    action: Action,
    may: impl Fn(&Execution) -> ApiResult<()>,
) -> ApiResult<(Execution, DateTime<Utc>)> {
    let exec = current_execution(state, plan, action.from()).await?;
    may(&exec)?;
    let now = testbed_core::now();
    let to = action.to();
    let mut moved = false;
    let updated =
        records::update::<Execution, _>(&state.store, &execution_key(&exec.execution_id), |e| {
            moved = action.from().contains(&e.status) && e.report_id.is_none();
            if moved {
                e.status = to;
                action.stamp(e, now);
            }
            moved
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no execution {}", exec.execution_id)))?;
    if !moved {
        return Err(ApiError::conflict(format!(
            "execution {} is {}",
            exec.execution_id, updated.status
        )));
    }
    let execution_id = exec.execution_id.clone();
    plan_shows(state, exec.plan_id, &execution_id, to).await?;
    // Rewritten unchanged: the leader's watch on the index sees it at once.
    records::update::<Active, _>(&state.store, &active_key(&execution_id), |_| true).await?;
    Ok((updated, now))
}
