//! Starting, stopping, pausing and resuming a performance plan's
//! execution: which status each may start from, what it changes (the
//! execution, the plan's status, the agents' tasks), and the 409s when
//! another request moved first. The API's handlers check the caller's role,
//! parse and validate input, and call these.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use testbed_core::task::{Task, TaskStatus};
use uuid::Uuid;

use super::{self as perf, execution_key, plan_key, ExecTask, Execution, LoadTest, PerfStatus};
use crate::dispatch;
use crate::error::{ApiError, ApiResult};
use crate::records;
use crate::state::AppState;

/// Lead time given to agents so they all begin load at the same instant.
const START_LEAD_MS: u64 = 1500;

/// Which agents carry an execution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSel {
    pub count: usize,
    pub group: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// An execution just started.
pub struct Started {
    pub execution_id: String,
    pub start_time: DateTime<Utc>,
}

pub async fn load_execution(state: &AppState, id: &str) -> ApiResult<Execution> {
    records::get::<Execution>(&state.store, &execution_key(id))
        .await?
        .map(|(e, _)| e)
        .ok_or_else(|| ApiError::not_found(format!("no execution {id}")))
}

/// Starts `plan` (already checked: `engine_plan` is its load plan) on the
/// agents `sel` asks for, as `caller`: claims the plan (a second start is a
/// 409), records the execution, and creates one `load` task per agent with
/// a shared start time.
pub async fn start(
    state: &AppState,
    caller: &str,
    plan: &LoadTest,
    engine_plan: testbed_load::LoadProfile,
    sel: &AgentSel,
) -> ApiResult<Started> {
    if plan.status.is_active() {
        return Err(ApiError::conflict(format!(
            "plan {} is already {}",
            plan.id, plan.status
        )));
    }
    let parts = engine_plan.split(sel.count);

    // The same eligibility as every other task: live, carrying load.run,
    // matching the selector, and not in a group another run reserved.
    let agents = dispatch::agents(&state.store).await?;
    let locks = crate::engine::targets::locks(&state.store).await?;
    let reserved = crate::engine::targets::reserved_elsewhere(&agents, &locks, None);
    let spec = testbed_core::plan::TargetSpec {
        group: sel.group.clone(),
        labels: (!sel.labels.is_empty()).then(|| sel.labels.clone()),
        ..Default::default()
    };
    let mut candidates = Vec::new();
    for a in crate::engine::targets::eligible(&agents, &spec, "load", "run", &reserved) {
        let busy = dispatch::outstanding(state, &a.record.uuid).await?;
        candidates.push((busy, a.record.id, a.record.clone()));
    }
    candidates.sort_by_key(|(busy, id, _)| (*busy, *id));
    if candidates.len() < parts.len() {
        return Err(ApiError::unavailable(format!(
            "the plan needs {} agent(s) carrying the `load` plugin{}; {} available",
            parts.len(),
            match (&sel.group, sel.labels.is_empty()) {
                (Some(g), _) => format!(" in group `{g}`"),
                (None, false) => " with the requested labels".to_string(),
                _ => String::new(),
            },
            candidates.len()
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
    let mut tasks = Vec::new();
    for (part, (_, _, agent)) in parts.iter().zip(&candidates) {
        let parameters = json!({
            "plan": part,
            "start_at_ms": load_start_ms,
            "execution_id": execution_id,
        });
        tasks.push(Task {
            kind: Task::KIND.into(),
            v: 1,
            id: Uuid::new_v4(),
            plugin: "load".into(),
            method: "run".into(),
            parameters,
            host: agent.profile.host.clone(),
            agent_uuid: agent.uuid,
            agent_name: agent.profile.name.clone(),
            status: TaskStatus::Queued,
            exit_code: None,
            result: None,
            error: None,
            created_by: caller.to_string(),
            created_at: now,
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            artifacts: Vec::new(),
            log_bytes: 0,
            run: None,
            reason: None,
        });
    }
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
    let recorded = async {
        records::put(
            &state.store,
            &execution_key(&execution_id),
            &execution,
            None,
        )
        .await?;
        records::put(
            &state.store,
            &perf::active_key(&execution_id),
            &json!({"plan_id": plan.id}),
            None,
        )
        .await
    }
    .await;
    if let Err(e) = recorded {
        // Without an execution record nothing could ever end this run:
        // give the plan back so it can be started again.
        let _ = records::update::<LoadTest, _>(&state.store, &plan_key(plan.id), |p| {
            p.status = PerfStatus::Failed;
            true
        })
        .await;
        return Err(e.into());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    state.perf.register(&execution_id, &ids);
    // From here on the watcher (and the leader's sweep) own the execution:
    // a task that could not be created counts as missing once it is stale.
    tokio::spawn(perf::watch_execution(state.clone(), execution_id.clone()));
    for t in &tasks {
        dispatch::create(state, t).await?;
    }

    Ok(Started {
        execution_id,
        start_time: now,
    })
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

/// Moves the execution from one of `from` to `to`, stamping the time;
/// 409 when someone else moved it first.
async fn transition(
    state: &AppState,
    exec: &Execution,
    from: &[PerfStatus],
    to: PerfStatus,
    stamp: impl Fn(&mut Execution, DateTime<Utc>),
) -> ApiResult<(Execution, DateTime<Utc>)> {
    let now = testbed_core::now();
    let mut moved = false;
    let updated =
        records::update::<Execution, _>(&state.store, &execution_key(&exec.execution_id), |e| {
            moved = from.contains(&e.status) && e.report_id.is_none();
            if moved {
                e.status = to;
                stamp(e, now);
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
    let status = to;
    let execution_id = exec.execution_id.clone();
    records::update::<LoadTest, _>(&state.store, &plan_key(exec.plan_id), |p| {
        if p.last_execution.as_deref() == Some(execution_id.as_str()) && p.status != status {
            p.status = status;
            true
        } else {
            false
        }
    })
    .await?;
    Ok((updated, now))
}

/// Stops the running (or paused) execution of `plan`; its report is still
/// produced. `may` is asked whether the caller may act on the execution.
pub async fn stop(
    state: &AppState,
    plan: &LoadTest,
    may: impl Fn(&Execution) -> ApiResult<()>,
) -> ApiResult<(Execution, DateTime<Utc>)> {
    let exec = current_execution(state, plan, &[PerfStatus::Running, PerfStatus::Paused]).await?;
    may(&exec)?;
    let (exec, now) = transition(
        state,
        &exec,
        &[PerfStatus::Running, PerfStatus::Paused],
        PerfStatus::Stopped,
        |e, t| e.stop_time = Some(t),
    )
    .await?;
    for t in &exec.tasks {
        // A task that already ended cannot be cancelled; that is fine here.
        if let Err(e) = dispatch::cancel(state, t.task_id).await {
            tracing::debug!(task = %t.task_id, "cancel: {}", e.message);
        }
    }
    Ok((exec, now))
}

/// Pauses the running execution of `plan`: no new requests until resumed.
pub async fn pause(
    state: &AppState,
    plan: &LoadTest,
    may: impl Fn(&Execution) -> ApiResult<()>,
) -> ApiResult<(Execution, DateTime<Utc>)> {
    let exec = current_execution(state, plan, &[PerfStatus::Running]).await?;
    may(&exec)?;
    let (exec, now) = transition(
        state,
        &exec,
        &[PerfStatus::Running],
        PerfStatus::Paused,
        |e, t| e.pause_time = Some(t),
    )
    .await?;
    signal(state, &exec, true).await?;
    Ok((exec, now))
}

/// Resumes the paused execution of `plan`; the remaining schedule continues.
pub async fn resume(
    state: &AppState,
    plan: &LoadTest,
    may: impl Fn(&Execution) -> ApiResult<()>,
) -> ApiResult<(Execution, DateTime<Utc>)> {
    let exec = current_execution(state, plan, &[PerfStatus::Paused]).await?;
    may(&exec)?;
    let (exec, now) = transition(
        state,
        &exec,
        &[PerfStatus::Paused],
        PerfStatus::Running,
        |e, t| e.resume_time = Some(t),
    )
    .await?;
    signal(state, &exec, false).await?;
    Ok((exec, now))
}

/// Asks the execution's agents to pause or resume, through their
/// assignments so that every replica's agents are reached.
async fn signal(state: &AppState, exec: &Execution, pause: bool) -> ApiResult<()> {
    for t in &exec.tasks {
        if !dispatch::set_paused(state, t.agent_uuid, t.task_id, pause).await? {
            tracing::debug!(task = %t.task_id, "pause/resume: task already ended");
        }
    }
    Ok(())
}
