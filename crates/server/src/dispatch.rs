//! Turning a request into a task on an agent, and settling it.
//!
//! A task is dispatched by writing two records: `/tasks/{id}` (the task) and
//! `/assign/{agent}/{task}` (the work queue of that agent). Whichever
//! replica holds the agent's WebSocket watches `/assign/` and forwards the
//! task; the assignment is deleted when the result is stored, so the set of
//! `/assign/{agent}/…` keys is exactly the agent's outstanding work — the
//! scheduler's load measure and the controller's list of what to mark
//! `lost` if the agent dies.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use testbed_core::agent::{AgentLiveness, AgentRecord};
use testbed_core::keys;
use testbed_core::protocol::ServerMessage;
use testbed_core::schema::{self, FieldError};
use testbed_core::task::{Task, TaskOutcome, TaskStatus};
use testbed_store::{Compare, DynStore, TxnOp};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::records::{self, RecordError};
use crate::state::AppState;

/// The value of `/assign/{agent}/{task}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub kind: String,
    pub v: u32,
    pub task_id: Uuid,
    /// A cancel was requested; the holder of the agent forwards it.
    pub cancel: bool,
    /// Pause (`true`) or resume (`false`) was requested; forwarded like
    /// `cancel`, so it reaches the agent whichever replica holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Why the task is held back from its agent (its group is reserved by a
    /// run); nobody sends it until the controller clears this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl Assignment {
    pub const KIND: &'static str = "assignment";
}

/// An agent registration with its liveness, if live.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub record: AgentRecord,
    pub alive: Option<AgentLiveness>,
}

/// Every registered agent, with liveness, from one pass over `/agents/`.
pub async fn agents(store: &DynStore) -> Result<Vec<AgentView>, RecordError> {
    let mut records: BTreeMap<Uuid, AgentRecord> = BTreeMap::new();
    let mut alive: BTreeMap<Uuid, AgentLiveness> = BTreeMap::new();
    let all: Vec<(String, Value)> = records::list(store, keys::AGENTS, |_| true).await?;
    for (key, value) in all {
        if let Some(uuid) = keys::parse_agent_alive(&key) {
            if let Ok(l) = serde_json::from_value(value) {
                alive.insert(uuid, l);
            }
        } else if let Some(uuid) = keys::parse_agent(&key) {
            let record = serde_json::from_value(value).map_err(|source| RecordError::Decode {
                key: key.clone(),
                source,
            })?;
            records.insert(uuid, record);
        }
    }
    let mut out: Vec<AgentView> = records
        .into_iter()
        .map(|(uuid, record)| AgentView {
            alive: alive.remove(&uuid),
            record,
        })
        .collect();
    out.sort_by_key(|a| a.record.id);
    Ok(out)
}

/// The uuids of live agents.
pub async fn live_agents(store: &DynStore) -> Result<BTreeSet<Uuid>, RecordError> {
    let mut out = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.range(keys::AGENTS, after.as_deref(), 1000).await?;
        for kv in &page.kvs {
            if let Some(uuid) = keys::parse_agent_alive(&kv.key) {
                out.insert(uuid);
            }
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return Ok(out),
        }
    }
}

/// Seed 002's `POST /v2.1/testcases` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Plugin name, e.g. `linux_system`.
    #[schema(pattern = r"\S")]
    pub plugin: String,
    /// An agent's host, name or uuid.
    #[schema(pattern = r"\S")]
    pub host: String,
    /// Method of the plugin, e.g. `run_shell`.
    #[schema(pattern = r"\S")]
    pub method: String,
    /// The method's parameters, e.g. `{"command":"ls","args":"-alt"}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub parameters: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    let v: BTreeSet<String> = items.into_iter().collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// Validates a request against the live agents, picks the least loaded
/// eligible one and dispatches the task to it.
pub async fn submit(state: &AppState, req: SubmitRequest, created_by: &str) -> ApiResult<Task> {
    let mut problems = Vec::new();
    for (field, value) in [
        ("/plugin", &req.plugin),
        ("/host", &req.host),
        ("/method", &req.method),
    ] {
        if value.trim().is_empty() {
            problems.push(FieldError {
                field: field.into(),
                message: "must not be empty".into(),
            });
        }
    }
    if !req.parameters.is_object() {
        problems.push(FieldError {
            field: "/parameters".into(),
            message: "must be an object".into(),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }

    let all = agents(&state.store).await?;
    // Agents of a group reserved by a run take no other work: a task aimed
    // only at such agents waits, held, until the reservation ends.
    let locks = crate::engine::targets::locks(&state.store).await?;
    let reserved = crate::engine::targets::reservations(&all, &locks, None);
    let live: Vec<&AgentView> = all.iter().filter(|a| a.alive.is_some()).collect();
    let host_is_live = live.iter().any(|a| a.record.matches_host(&req.host));
    if !host_is_live
        && all
            .iter()
            .any(|a| a.alive.is_none() && a.record.matches_host(&req.host))
    {
        return Err(ApiError::conflict(format!(
            "every agent matching host `{}` is offline",
            req.host
        )));
    }
    let carrying: Vec<&AgentView> = live
        .iter()
        .copied()
        .filter(|a| a.record.plugin(&req.plugin).is_some())
        .collect();
    if carrying.is_empty() {
        return Err(ApiError::field(
            "/plugin",
            format!(
                "unknown plugin `{}`; live agents carry: {}",
                req.plugin,
                list(
                    live.iter()
                        .flat_map(|a| a.record.plugins.iter().map(|p| p.name.clone()))
                )
            ),
        ));
    }
    let with_method: Vec<&AgentView> = carrying
        .iter()
        .copied()
        .filter(|a| {
            a.record
                .plugin(&req.plugin)
                .and_then(|p| p.method(&req.method))
                .is_some()
        })
        .collect();
    if with_method.is_empty() {
        return Err(ApiError::field(
            "/method",
            format!(
                "plugin `{}` has no method `{}`; it has: {}",
                req.plugin,
                req.method,
                list(carrying.iter().flat_map(|a| {
                    a.record
                        .plugin(&req.plugin)
                        .map(|p| p.methods.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
                        .unwrap_or_default()
                }))
            ),
        ));
    }
    let matching: Vec<&AgentView> = with_method
        .iter()
        .copied()
        .filter(|a| a.record.matches_host(&req.host))
        .collect();
    if matching.is_empty() {
        let message = if host_is_live {
            format!(
                "no agent matching host `{}` carries {}.{}; agents that do: {}",
                req.host,
                req.plugin,
                req.method,
                list(with_method.iter().map(|a| a.record.host.clone()))
            )
        } else {
            format!(
                "no live agent matches host `{}`; live hosts: {}",
                req.host,
                list(live.iter().map(|a| a.record.host.clone()))
            )
        };
        return Err(ApiError::field("/host", message));
    }
    // Free agents first; only when every match is reserved does the task
    // wait for one of them.
    let free: Vec<&AgentView> = matching
        .iter()
        .copied()
        .filter(|a| !reserved.contains_key(&a.record.uuid))
        .collect();
    let candidates = if free.is_empty() { matching } else { free };

    // Parameters are checked against the schema the chosen agents announced.
    if let Some(method) = candidates[0]
        .record
        .plugin(&req.plugin)
        .and_then(|p| p.method(&req.method))
    {
        schema::validate(&method.schema, &req.parameters, "/parameters")
            .map_err(ApiError::validation)?;
    }

    let mut best: Option<(usize, u32, &AgentView)> = None;
    for a in candidates {
        let outstanding = outstanding(state, &a.record.uuid).await?;
        let running = a.alive.as_ref().map_or(0, |l| l.running);
        if best.is_none_or(|(o, r, _)| (outstanding, running) < (o, r)) {
            best = Some((outstanding, running, a));
        }
    }
    let Some((_, _, agent)) = best else {
        return Err(ApiError::unavailable("no eligible agent"));
    };
    let held = reserved.get(&agent.record.uuid).cloned();

    let task = Task {
        kind: Task::KIND.into(),
        v: 1,
        id: Uuid::new_v4(),
        plugin: req.plugin,
        method: req.method,
        parameters: req.parameters,
        host: req.host,
        agent_uuid: agent.record.uuid,
        agent_name: agent.record.name.clone(),
        status: TaskStatus::Queued,
        exit_code: None,
        result: None,
        error: None,
        created_by: created_by.to_string(),
        created_at: testbed_core::now(),
        started_at: None,
        finished_at: None,
        cancel_requested: false,
        artifacts: Vec::new(),
        log_bytes: 0,
        run: None,
        reason: held.clone(),
    };
    if let Some(why) = &held {
        tracing::info!(task = %task.id, agent = %task.agent_name, "task held: {why}");
    }
    create_held(state, &task, held).await?;
    Ok(task)
}

/// Reservations ([`crate::engine::targets::reservations`]) of every
/// registered agent, read from the store.
pub async fn reservations(store: &DynStore) -> Result<BTreeMap<Uuid, String>, RecordError> {
    let all = agents(store).await?;
    let locks = crate::engine::targets::locks(store).await?;
    Ok(crate::engine::targets::reservations(&all, &locks, None))
}

/// Sends a held task on its way: clears the hold on its assignment and the
/// reason on the task in one write; the replica holding the agent then
/// forwards it like any new assignment. Idempotent.
pub async fn release_held(state: &AppState, agent: Uuid, task_id: Uuid) -> Result<(), RecordError> {
    let task_key = keys::task(&task_id);
    let assign_key = keys::assign(&agent, &task_id);
    for _ in 0..8 {
        let (Some((mut task, task_rev)), Some((mut a, a_rev))) = (
            records::get::<Task>(&state.store, &task_key).await?,
            records::get::<Assignment>(&state.store, &assign_key).await?,
        ) else {
            return Ok(());
        };
        if a.held.is_none() {
            return Ok(());
        }
        a.held = None;
        task.reason = None;
        let ops = vec![
            TxnOp::Put {
                key: task_key.clone(),
                value: encode(&task_key, &task)?,
                lease: None,
            },
            TxnOp::Put {
                key: assign_key.clone(),
                value: encode(&assign_key, &a)?,
                lease: None,
            },
        ];
        let compares = [
            (task_key.clone(), Compare::ModRevision(task_rev)),
            (assign_key.clone(), Compare::ModRevision(a_rev)),
        ];
        if state.store.txn(&compares, ops).await?.is_some() {
            tracing::info!(%task_id, "reservation ended; task sent to its agent");
            state.hub.task_changed(task_id);
            return Ok(());
        }
    }
    Ok(())
}

fn encode<T: Serialize>(key: &str, v: &T) -> Result<Vec<u8>, RecordError> {
    serde_json::to_vec(v).map_err(|source| RecordError::Encode {
        key: key.to_string(),
        source,
    })
}

/// Tasks assigned to `agent` and not yet finished: the scheduler's load
/// measure, the same on every replica.
pub async fn outstanding(state: &AppState, agent: &Uuid) -> Result<usize, RecordError> {
    records::count(&state.store, &keys::assign_prefix(agent)).await
}

/// Marks a queued task running. Idempotent.
pub async fn started(
    state: &AppState,
    task_id: Uuid,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), RecordError> {
    records::update::<Task, _>(&state.store, &keys::task(&task_id), |t| {
        if t.status == TaskStatus::Queued {
            t.status = TaskStatus::Running;
            t.started_at = Some(at);
            true
        } else {
            false
        }
    })
    .await?;
    state.hub.task_changed(task_id);
    Ok(())
}

/// Stores a task's outcome (once: a duplicate result changes nothing) and
/// releases its assignment. A `lost` task is still settled by a late result
/// from an agent that came back.
pub async fn settle(
    state: &AppState,
    task_id: Uuid,
    outcome: TaskOutcome,
) -> Result<(), RecordError> {
    let stored_len = match state.blobs.finish_log(&task_id).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%task_id, "folding log: {e}");
            outcome.log_bytes
        }
    };
    let key = keys::task(&task_id);
    for _ in 0..64 {
        let Some((mut t, rev)) = records::get::<Task>(&state.store, &key).await? else {
            break;
        };
        if t.status.is_terminal() && t.status != TaskStatus::Lost {
            break;
        }
        t.status = outcome.status;
        t.exit_code = outcome.exit_code;
        t.result = outcome.result.clone();
        t.error = outcome.error.clone();
        if t.started_at.is_none() {
            t.started_at = outcome.started_at;
        }
        t.finished_at = Some(outcome.finished_at);
        t.log_bytes = stored_len;
        // The result and the release of the assignment are one write.
        let ops = vec![
            TxnOp::Put {
                key: key.clone(),
                value: encode(&key, &t)?,
                lease: None,
            },
            TxnOp::Delete {
                key: keys::assign(&t.agent_uuid, &task_id),
            },
        ];
        if state
            .store
            .txn(&[(key.clone(), Compare::ModRevision(rev))], ops)
            .await?
            .is_some()
        {
            break;
        }
    }
    state.hub.task_changed(task_id);
    Ok(())
}

/// Ends a task on the server's side without an agent result (cancelled
/// before it started, or lost with its agent).
pub async fn finish_without_agent(
    state: &AppState,
    task_id: Uuid,
    status: TaskStatus,
    reason: &str,
) -> Result<(), RecordError> {
    let updated = records::update::<Task, _>(&state.store, &keys::task(&task_id), |t| {
        if t.status.is_terminal() {
            return false;
        }
        t.status = status;
        t.error = Some(reason.to_string());
        t.reason = None;
        t.finished_at = Some(testbed_core::now());
        true
    })
    .await?;
    if let Some(t) = updated {
        if let Err(e) = state.blobs.finish_log(&task_id).await {
            tracing::warn!(%task_id, "folding log: {e}");
        }
        state
            .store
            .delete(&keys::assign(&t.agent_uuid, &task_id))
            .await?;
    }
    state.hub.task_changed(task_id);
    Ok(())
}

/// Requests cancellation: flags the task and its assignment (the replica
/// holding the agent forwards it); a task whose agent is gone is cancelled
/// at once.
pub async fn cancel(state: &AppState, task_id: Uuid) -> ApiResult<Task> {
    let key = keys::task(&task_id);
    let task = records::update::<Task, _>(&state.store, &key, |t| {
        if t.status.is_terminal() || t.cancel_requested {
            return false;
        }
        t.cancel_requested = true;
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no task {task_id}")))?;
    if task.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "task {task_id} already ended ({})",
            task.status
        )));
    }
    let alive = state
        .store
        .get(&keys::agent_alive(&task.agent_uuid))
        .await?
        .is_some();
    let held = records::get::<Assignment>(&state.store, &keys::assign(&task.agent_uuid, &task_id))
        .await?
        .is_some_and(|(a, _)| a.held.is_some());
    if held {
        // Never sent to its agent: nothing to stop there.
        finish_without_agent(
            state,
            task_id,
            TaskStatus::Cancelled,
            "cancelled while it waited for a reservation to end",
        )
        .await?;
    } else if !alive {
        finish_without_agent(
            state,
            task_id,
            TaskStatus::Cancelled,
            "cancelled (agent offline)",
        )
        .await?;
    } else {
        let assign_key = keys::assign(&task.agent_uuid, &task_id);
        records::update::<Assignment, _>(&state.store, &assign_key, |a| {
            if a.cancel {
                false
            } else {
                a.cancel = true;
                true
            }
        })
        .await?;
        // Fast path when the agent is connected here; the watch on
        // `/assign/` covers the other replicas.
        state
            .hub
            .send(&task.agent_uuid, ServerMessage::Cancel { task_id });
    }
    let (task, _) = records::get::<Task>(&state.store, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {task_id}")))?;
    Ok(task)
}

/// Asks the task's agent to pause or resume it: the flag on the assignment
/// reaches the agent through whichever replica holds it (and again after a
/// reconnect). Returns false when the task has no assignment (it ended).
pub async fn set_paused(
    state: &AppState,
    agent: Uuid,
    task_id: Uuid,
    paused: bool,
) -> Result<bool, RecordError> {
    let key = keys::assign(&agent, &task_id);
    let found = records::update::<Assignment, _>(&state.store, &key, |a| {
        if a.paused == Some(paused) {
            false
        } else {
            a.paused = Some(paused);
            true
        }
    })
    .await?
    .is_some();
    // Fast path when the agent is connected here.
    if found {
        let msg = if paused {
            ServerMessage::Pause { task_id }
        } else {
            ServerMessage::Resume { task_id }
        };
        state.hub.send(&agent, msg);
    }
    Ok(found)
}

/// Creates `task` and its assignment unless the task already exists (a
/// controller that crashed after creating it finds it again). Idempotent.
pub async fn create(state: &AppState, task: &Task) -> Result<(), RecordError> {
    create_held(state, task, None).await
}

/// [`create`], the assignment held back for `held`'s reason when given.
async fn create_held(
    state: &AppState,
    task: &Task,
    held: Option<String>,
) -> Result<(), RecordError> {
    let key = keys::task(&task.id);
    let assign_key = keys::assign(&task.agent_uuid, &task.id);
    let assignment = Assignment {
        kind: Assignment::KIND.into(),
        v: 1,
        task_id: task.id,
        cancel: false,
        paused: None,
        held,
    };
    // Task and assignment in one write: an agent never sees an assignment
    // without its task, and a crash never leaves a task without one.
    let ops = vec![
        TxnOp::Put {
            key: key.clone(),
            value: encode(&key, task)?,
            lease: None,
        },
        TxnOp::Put {
            key: assign_key,
            value: encode(&key, &assignment)?,
            lease: None,
        },
    ];
    state.store.txn(&[(key, Compare::Absent)], ops).await?;
    Ok(())
}
