//! Turning a request into a task on an agent, and settling it.
//!
//! A task is dispatched by writing two records: `/tasks/{id}` (the task) and
//! `/assign/{agent}/{task}` (the work queue of that agent), in one
//! transaction. The assignment carries a copy of the task as created, so
//! whichever replica holds the agent's WebSocket forwards it straight from
//! its watch on `/assign/` without reading the task; the assignment is
//! deleted when the result is stored (again one transaction with the task's
//! update), so the set of `/assign/{agent}/…` keys is exactly the agent's
//! outstanding work — the load [`crate::placement`] balances and the
//! controller's list of what to mark `lost` if the agent dies.
//!
//! Which agent gets a task is [`crate::placement`]'s decision; this module
//! only writes and settles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use testbed_core::keys;
use testbed_core::protocol::ServerMessage;
use testbed_core::schema::{self, FieldError};
use testbed_core::task::{NewTask, Task, TaskOutcome, TaskStatus};
use testbed_store::{Compare, DynStore, TxnOp};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::placement::{self, Fleet, Refusal};
use crate::records::{self, put_op, RecordError};
use crate::state::AppState;

pub use crate::placement::{agents, live_agents, AgentView};
pub use testbed_api::tasks::SubmitRequest;

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
    /// The task as created (or as released from its hold), so the replica
    /// holding the agent can send it without reading `/tasks/{id}`; its
    /// `mod_revision` is the assignment's own (both are written in one
    /// transaction). Absent in assignments written by older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Box<Task>>,
}

impl Assignment {
    pub const KIND: &'static str = "assignment";
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

    // On this replica's view of the fleet first: no store read. Only an
    // unheld placement is written from it, guarded (see `placement::guard`);
    // a refusal, a held task or a guard the store refuses is decided again
    // on a fresh read, so what the caller is told never rests on a view
    // that was behind.
    let load = &state.sessions.load;
    if let Some(Ok(placed)) = state.sessions.fleet.with(|f| place(f, load, &req)) {
        if placed.held.is_none() {
            let task = placed.task(&req, created_by);
            if create_guarded(state, &task, None, &placed.guard).await? {
                return Ok(task);
            }
        }
    }
    for _ in 0..PLACE_ATTEMPTS {
        let fleet = Fleet::read(&state.store).await?;
        let placed = place(&fleet, load, &req)?;
        let task = placed.task(&req, created_by);
        if create_guarded(state, &task, placed.held.clone(), &placed.guard).await? {
            if let Some(why) = &placed.held {
                tracing::info!(task = %task.id, agent = %task.agent_name, "task held: {why}");
            }
            return Ok(task);
        }
    }
    Err(ApiError::conflict(
        "the agents matching this request kept changing (going offline, or being reserved) \
         while the task was placed; try again",
    ))
}

/// Placements of one task made again on a fresh read when the store refuses
/// the guard: each refusal means the fleet changed in between.
const PLACE_ATTEMPTS: usize = 4;

/// Where a one-off task goes, decided on one picture of the fleet.
struct Placed {
    agent_uuid: Uuid,
    agent_name: String,
    /// Why it waits (every matching agent is reserved).
    held: Option<String>,
    /// What the decision relied on, for the create transaction to check
    /// (empty for a held task: the controller releases it when the
    /// reservation it waits for ends, whenever that is).
    guard: Vec<(String, Compare)>,
}

impl Placed {
    fn task(&self, req: &SubmitRequest, created_by: &str) -> Task {
        Task::queued(NewTask {
            id: Uuid::new_v4(),
            plugin: req.plugin.clone(),
            method: req.method.clone(),
            parameters: req.parameters.clone(),
            host: req.host.clone(),
            agent_uuid: self.agent_uuid,
            agent_name: self.agent_name.clone(),
            created_by: created_by.to_string(),
            run: None,
            reason: self.held.clone(),
        })
    }
}

/// Chooses the agent of a one-off task: eligibility, the parameters checked
/// against the method's schema, the least loaded candidate.
fn place(fleet: &Fleet, load: &placement::Load, req: &SubmitRequest) -> ApiResult<Placed> {
    let candidates = placement::for_request(fleet, &req.plugin, &req.method, &req.host).map_err(
        |r| match r {
            Refusal::Offline { host } => {
                ApiError::conflict(format!("every agent matching host `{host}` is offline"))
            }
            Refusal::Field { field, message } => ApiError::field(field, message),
        },
    )?;

    // Parameters are checked against the schema the chosen agents announced.
    if let Some(method) = candidates
        .agents
        .first()
        .and_then(|a| a.record.plugin(&req.plugin))
        .and_then(|p| p.method(&req.method))
    {
        schema::validate(&method.schema, &req.parameters, "/parameters")
            .map_err(ApiError::validation)?;
    }

    let Some(agent) = load.least_loaded(&candidates.agents) else {
        return Err(ApiError::unavailable("no eligible agent"));
    };
    // Agents of a group reserved by a run take no other work: a task aimed
    // only at such agents waits, held, until the reservation ends.
    let held = if candidates.held {
        fleet.reservations(None).remove(&agent.record.uuid)
    } else {
        None
    };
    Ok(Placed {
        agent_uuid: agent.record.uuid,
        agent_name: agent.record.profile.name.clone(),
        guard: if held.is_none() {
            placement::guard(agent)
        } else {
            Vec::new()
        },
        held,
    })
}

/// Reservations ([`placement::reservations`]) of every registered agent,
/// read from the store.
pub async fn reservations(store: &DynStore) -> Result<BTreeMap<Uuid, String>, RecordError> {
    Ok(Fleet::read(store).await?.reservations(None))
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
        a.task = Some(Box::new(task.clone()));
        let ops = vec![
            put_op(task_key.clone(), &task)?,
            put_op(assign_key.clone(), &a)?,
        ];
        let compares = [
            (task_key.clone(), Compare::ModRevision(task_rev)),
            (assign_key.clone(), Compare::ModRevision(a_rev)),
        ];
        if state.store.txn(&compares, ops).await?.is_some() {
            tracing::info!(%task_id, "reservation ended; task sent to its agent");
            state.sessions.task_changed(task_id);
            return Ok(());
        }
    }
    Ok(())
}

/// Tasks assigned to `agent` and not yet finished, counted in the store (the
/// same on every replica at once; placement uses its in-memory
/// [`placement::Load`] instead).
pub async fn outstanding(state: &AppState, agent: &Uuid) -> Result<usize, RecordError> {
    records::count(&state.store, &keys::assign_prefix(agent)).await
}

/// Marks a queued task running. Idempotent.
pub async fn started(
    state: &AppState,
    task_id: Uuid,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), RecordError> {
    let written = records::update_rev::<Task, _>(&state.store, &keys::task(&task_id), |t| {
        if t.status == TaskStatus::Queued {
            t.status = TaskStatus::Running;
            t.started_at = Some(at);
            true
        } else {
            false
        }
    })
    .await?;
    if let Some((task, rev)) = written {
        // The session's copy follows, so the result still settles in one
        // write.
        state.sessions.refresh(task, rev);
    }
    state.sessions.task_changed(task_id);
    Ok(())
}

/// Folds a finished task's log chunks into one object; its stored length.
async fn fold_log(state: &AppState, task_id: Uuid, outcome: &TaskOutcome) -> u64 {
    // A task that printed nothing sent no chunks: nothing to fold, and no
    // object to look for.
    if outcome.log_bytes == 0 {
        return 0;
    }
    match state.blobs.finish_log(&task_id).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%task_id, "folding log: {e}");
            outcome.log_bytes
        }
    }
}

fn apply_outcome(t: &mut Task, outcome: &TaskOutcome, stored_len: u64) {
    t.status = outcome.status;
    t.exit_code = outcome.exit_code;
    t.result = outcome.result.clone();
    t.error = outcome.error.clone();
    if t.started_at.is_none() {
        t.started_at = outcome.started_at;
    }
    t.finished_at = Some(outcome.finished_at);
    t.log_bytes = stored_len;
}

/// The most tasks settled in one transaction: two ops each, within etcd's
/// default cap of 128 ops per transaction.
pub const SETTLE_BATCH: usize = 64;

/// Stores the outcomes `agent` reported (once each: a duplicate result
/// changes nothing) and releases their assignments. Results whose task this
/// replica still holds as sent (unchanged since) are settled together in
/// one transaction, without reading anything; the others (the task changed
/// meanwhile, or was sent by another replica) one by one, read first. A
/// result for a task that is not `agent`'s is ignored.
pub async fn settle_from(
    state: &AppState,
    agent: Uuid,
    results: Vec<(Uuid, TaskOutcome)>,
) -> Result<(), RecordError> {
    let mut slow = Vec::new();
    let mut fast: Vec<(Uuid, TaskOutcome, u64, Task, i64)> = Vec::new();
    for (task_id, outcome) in results {
        let stored_len = fold_log(state, task_id, &outcome).await;
        match state.sessions.in_flight(&agent, &task_id) {
            Some((task, rev)) => fast.push((task_id, outcome, stored_len, task, rev)),
            None => slow.push((task_id, outcome, stored_len)),
        }
    }
    while !fast.is_empty() {
        let chunk: Vec<_> = fast.drain(..fast.len().min(SETTLE_BATCH)).collect();
        let mut compares = Vec::with_capacity(chunk.len());
        let mut ops = Vec::with_capacity(chunk.len() * 2);
        for (task_id, outcome, stored_len, task, rev) in &chunk {
            let key = keys::task(task_id);
            let mut t = task.clone();
            apply_outcome(&mut t, outcome, *stored_len);
            ops.push(put_op(key.clone(), &t)?);
            ops.push(TxnOp::Delete {
                key: keys::assign(&agent, task_id),
            });
            compares.push((key, Compare::ModRevision(*rev)));
        }
        if state.store.txn(&compares, ops).await?.is_some() {
            for (task_id, outcome, stored_len, task, _) in &chunk {
                if crate::engine::trace::enabled() {
                    let mut t = task.clone();
                    apply_outcome(&mut t, outcome, *stored_len);
                    crate::engine::trace::task_ended(&t);
                }
                state.sessions.forget(&agent, task_id);
                state.sessions.load.released(agent, *task_id);
                state.sessions.task_changed(*task_id);
            }
        } else {
            // One of them changed (a cancel request, say): each on its own.
            slow.extend(
                chunk
                    .into_iter()
                    .map(|(id, outcome, len, ..)| (id, outcome, len)),
            );
        }
    }
    for (task_id, outcome, stored_len) in slow {
        state.sessions.forget(&agent, &task_id);
        settle_read(state, Some(agent), task_id, &outcome, stored_len).await?;
    }
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
    let stored_len = fold_log(state, task_id, &outcome).await;
    settle_read(state, None, task_id, &outcome, stored_len).await
}

async fn settle_read(
    state: &AppState,
    agent: Option<Uuid>,
    task_id: Uuid,
    outcome: &TaskOutcome,
    stored_len: u64,
) -> Result<(), RecordError> {
    let key = keys::task(&task_id);
    for _ in 0..64 {
        let Some((mut t, rev)) = records::get::<Task>(&state.store, &key).await? else {
            break;
        };
        if agent.is_some_and(|a| a != t.agent_uuid) {
            return Ok(());
        }
        if t.status.is_terminal() && t.status != TaskStatus::Lost {
            break;
        }
        apply_outcome(&mut t, outcome, stored_len);
        // The result and the release of the assignment are one write.
        let ops = vec![
            put_op(key.clone(), &t)?,
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
            state.sessions.load.released(t.agent_uuid, task_id);
            crate::engine::trace::task_ended(&t);
            break;
        }
    }
    state.sessions.task_changed(task_id);
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
        crate::engine::trace::task_ended(&t);
        if let Err(e) = state.blobs.finish_log(&task_id).await {
            tracing::warn!(%task_id, "folding log: {e}");
        }
        state
            .store
            .delete(&keys::assign(&t.agent_uuid, &task_id))
            .await?;
        state.sessions.load.released(t.agent_uuid, task_id);
    }
    state.sessions.task_changed(task_id);
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
            .sessions
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
        state.sessions.send(&agent, msg);
    }
    Ok(found)
}

/// Creates `task` and its assignment unless the task already exists (a
/// controller that crashed after creating it finds it again). Idempotent.
pub async fn create(state: &AppState, task: &Task) -> Result<(), RecordError> {
    create_guarded(state, task, None, &[]).await.map(|_| ())
}

/// [`create`], the assignment held back for `held`'s reason when given, and
/// only if every compare of `guard` holds too. Whether it was written: false
/// when the task existed or the guard failed (then nothing was written).
async fn create_guarded(
    state: &AppState,
    task: &Task,
    held: Option<String>,
    guard: &[(String, Compare)],
) -> Result<bool, RecordError> {
    let key = keys::task(&task.id);
    let assign_key = keys::assign(&task.agent_uuid, &task.id);
    let assignment = Assignment {
        kind: Assignment::KIND.into(),
        v: 1,
        task_id: task.id,
        cancel: false,
        paused: None,
        held,
        task: Some(Box::new(task.clone())),
    };
    // Task and assignment in one write: an agent never sees an assignment
    // without its task, and a crash never leaves a task without one.
    let ops = vec![put_op(key.clone(), task)?, put_op(assign_key, &assignment)?];
    // Counted before the write, so the next placement on this replica sees
    // it even if the task is done before this call returns; the watch
    // confirms (or, should the write fail, the next re-list corrects) it.
    state.sessions.load.assigned(task.agent_uuid, task.id);
    let mut compares = Vec::with_capacity(1 + guard.len());
    compares.push((key, Compare::Absent));
    compares.extend_from_slice(guard);
    match state.store.txn(&compares, ops).await {
        Ok(Some(_)) => {
            crate::engine::trace::dispatched(task);
            Ok(true)
        }
        Ok(None) => {
            // Without a guard the task already exists, assigned (keep it
            // counted); a failed guard wrote nothing.
            if !guard.is_empty() {
                state.sessions.load.released(task.agent_uuid, task.id);
            }
            Ok(false)
        }
        Err(e) => {
            state.sessions.load.released(task.agent_uuid, task.id);
            Err(e.into())
        }
    }
}
