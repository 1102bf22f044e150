//! Background loops of a server replica.
//!
//! * [`assignment_relay`] runs on every replica: it watches `/assign/`,
//!   forwards new assignments (and cancel flags) to the agents connected to
//!   this replica, and keeps the replica's per-agent load
//!   ([`crate::placement::Load`]) in step with the store.
//! * [`run_controller`] runs only on the elected leader (a lease-bound
//!   `/leader/controller` key): it reconciles store state, marking the tasks
//!   of agents whose lease expired `lost`, and drives the plan engine (which
//!   reconciles performance executions too).
//!
//! Every loop is supervised: a broken watch is opened again from the last
//! revision it delivered (after a re-list when that history was compacted),
//! with back-off, and a loop that is failing shows in [`Loops`] (and so in
//! `/healthz`) and in the log until it works again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use testbed_core::keys;
use testbed_core::protocol::ServerMessage;
use testbed_core::task::{Task, TaskStatus};
use testbed_store::{Compare, EventKind};

use crate::dispatch::{self, Assignment};
use crate::metrics::Pass;
use crate::records;
use crate::state::AppState;

/// The first back-off after a loop fails, doubled on each failure in a row.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest back-off between attempts of a failing loop.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Failures in a row after which a loop's trouble is logged as an error.
const LOUD_AFTER: u32 = 5;
/// A loop that has worked this long since its last failure starts counting
/// failures afresh; one that breaks again sooner keeps backing off, so a
/// watch that opens and breaks at once escalates like one that cannot open.
const STEADY_AFTER: Duration = Duration::from_secs(30);

/// The state of this replica's background loops, as `/healthz` shows it.
#[derive(Debug, Default)]
pub struct Loops {
    troubled: Mutex<BTreeMap<&'static str, Trouble>>,
}

#[derive(Debug, Clone)]
struct Trouble {
    error: String,
    in_a_row: u32,
    last: std::time::Instant,
    /// Failing now (not yet working again).
    down: bool,
}

impl Loops {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Trouble>> {
        // The map is always whole: a panic elsewhere cannot leave it torn.
        self.troubled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop works (again).
    pub fn ok(&self, name: &'static str) {
        if let Some(t) = self.lock().get_mut(name).filter(|t| t.down) {
            t.down = false;
            tracing::info!(
                "{name}: working again after {} failure(s) ({})",
                t.in_a_row,
                t.error
            );
        }
    }

    /// The loop failed; logged at warn, then at error once it keeps failing.
    /// Returns the back-off before its next attempt.
    pub fn failed(&self, name: &'static str, error: impl std::fmt::Display) -> Duration {
        let error = error.to_string();
        let now = std::time::Instant::now();
        let in_a_row = {
            let mut map = self.lock();
            let t = map.entry(name).or_insert(Trouble {
                error: String::new(),
                in_a_row: 0,
                last: now,
                down: true,
            });
            if !t.down && now.duration_since(t.last) > STEADY_AFTER {
                t.in_a_row = 0;
            }
            t.in_a_row += 1;
            t.error = error.clone();
            t.last = now;
            t.down = true;
            t.in_a_row
        };
        if in_a_row >= LOUD_AFTER {
            tracing::error!("{name} keeps failing ({in_a_row} in a row): {error}");
        } else {
            tracing::warn!("{name}: {error}; retrying");
        }
        backoff(in_a_row)
    }

    /// A loop that is not running any more (it stops with leadership).
    pub fn forget(&self, name: &'static str) {
        self.lock().remove(name);
    }

    /// The loops failing right now, by name (their errors are in the log).
    pub fn failing(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, t)| t.down)
            .map(|(k, _)| k.to_string())
            .collect()
    }
}

/// Exponential back-off for the `n`th failure in a row (n ≥ 1).
pub fn backoff(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(8);
    (BACKOFF_MIN * factor).min(BACKOFF_MAX)
}

/// How often the relay re-lists `/assign/` to correct the in-memory load
/// (its watch keeps it right; this bounds the effect of a missed update).
const RELIST_EVERY: Duration = Duration::from_secs(60);

/// Forwards assignments to locally connected agents and follows every
/// agent's load. Restarts its watch from the last revision it saw if the
/// stream breaks, so nothing is missed.
pub async fn assignment_relay(state: AppState) {
    let mut from = 0;
    let mut relist = true;
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        if relist {
            // The listing may be newer than `from`; replaying the events in
            // between converges, as `assigned`/`released` are idempotent.
            match relist_load(&state).await {
                Ok(rev) => {
                    if from == 0 {
                        from = rev + 1;
                    }
                    relist = false;
                }
                Err(e) => {
                    relay_failed(&state, format!("listing assignments: {e}")).await;
                    continue;
                }
            }
        }
        let mut stream = match state.store.watch(keys::ASSIGN, from).await {
            Ok(s) => s,
            Err(e) => {
                relay_failed(&state, format!("watching assignments: {e}")).await;
                continue;
            }
        };
        state.loops.ok(RELAY);
        let mut wait = BACKOFF_MIN;
        let mut relist_tick = tokio::time::interval(RELIST_EVERY);
        relist_tick.tick().await;
        loop {
            let next = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = relist_tick.tick() => {
                    if let Err(e) = relist_load(&state).await {
                        tracing::warn!("re-listing assignments: {e}");
                    }
                    continue;
                }
                n = stream.next() => n,
            };
            match next {
                Some(Ok(ev)) => {
                    from = ev.revision() + 1;
                    let Some((agent, task_id)) = keys::parse_assign(&ev.kv.key) else {
                        continue;
                    };
                    if ev.kind != EventKind::Put {
                        state.sessions.load.released(agent, task_id);
                        continue;
                    }
                    state.sessions.load.assigned(agent, task_id);
                    if !state.sessions.is_local(&agent) {
                        continue;
                    }
                    let Ok(a) = serde_json::from_slice::<Assignment>(&ev.kv.value) else {
                        continue;
                    };
                    // A held task waits for its agent's reservation to end.
                    if a.held.is_some() {
                        continue;
                    }
                    // Dispatch latency counts an assignment's first write
                    // only: one released from a hold waited by design.
                    let created = a.task.as_ref().map(|t| t.created_at);
                    let first = ev.kv.version == 1;
                    forward(&state, agent, task_id, a, ev.kv.mod_revision).await;
                    if let (true, Some(created)) = (first, created) {
                        state.metrics.dispatched(created);
                    }
                }
                Some(Err(testbed_store::StoreError::Compacted { .. })) => {
                    // History is gone: re-list what is outstanding for the
                    // agents held here, then follow changes from now on.
                    match state.store.revision().await {
                        Ok(r) => {
                            tracing::warn!("assignment watch compacted; re-listing");
                            from = r + 1;
                            relist = true;
                            resend_local(&state).await;
                        }
                        Err(e) => {
                            wait = state.loops.failed(RELAY, format!("after compaction: {e}"))
                        }
                    }
                    break;
                }
                Some(Err(e)) => {
                    wait = state.loops.failed(RELAY, format!("assignment watch: {e}"));
                    break;
                }
                None => {
                    wait = state.loops.failed(RELAY, "assignment watch ended");
                    break;
                }
            }
        }
        sleep_or_shutdown(&state, wait).await;
    }
}

/// Rebuilds the per-agent load from `/assign/`; the store revision read
/// before the listing.
async fn relist_load(state: &AppState) -> Result<i64, testbed_store::StoreError> {
    let rev = state.store.revision().await?;
    let mut all = Vec::new();
    let mut pages = records::Pages::new(&state.store, keys::ASSIGN, 1000);
    while let Some(kvs) = pages.next().await? {
        all.extend(kvs.iter().filter_map(|kv| keys::parse_assign(&kv.key)));
    }
    state.sessions.load.reset(all);
    Ok(rev)
}

const RELAY: &str = "assignment relay";
const ENGINE: &str = "plan engine";

/// After a compacted watch: sends the agents connected here every queued,
/// unheld assignment they may have missed (an agent ignores a task it
/// already has) and the cancel and pause flags.
async fn resend_local(state: &AppState) {
    let all: Vec<(String, Assignment)> =
        match records::list(&state.store, keys::ASSIGN, |_| true).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("re-listing assignments: {e}");
                return;
            }
        };
    for (key, a) in all {
        let Some((agent, task_id)) = keys::parse_assign(&key) else {
            continue;
        };
        if !state.sessions.is_local(&agent) || a.held.is_some() {
            continue;
        }
        // The revision only matters for a settle without a read; an
        // unknown one (0) just sends that settle down the reading path.
        forward(state, agent, task_id, a, 0).await;
    }
}

/// Sends one assignment's news to its (locally connected) agent. `rev` is
/// the assignment's `mod_revision`, which is also its task's when the
/// assignment carries it (both are written in one transaction).
async fn forward(
    state: &AppState,
    agent: uuid::Uuid,
    task_id: uuid::Uuid,
    a: Assignment,
    rev: i64,
) {
    if a.cancel {
        state
            .sessions
            .send(&agent, ServerMessage::Cancel { task_id });
    } else if let Some(paused) = a.paused {
        let msg = if paused {
            ServerMessage::Pause { task_id }
        } else {
            ServerMessage::Resume { task_id }
        };
        state.sessions.send(&agent, msg);
    } else if let Some(task) = a.task {
        state.sessions.assign(*task, rev);
    } else if let Ok(Some((task, rev))) =
        records::get::<Task>(&state.store, &keys::task(&task_id)).await
    {
        if task.status == TaskStatus::Queued {
            state.sessions.assign(task, rev);
        }
    }
}

/// Records a failure of the relay loop and waits out its back-off before
/// the loop starts over.
async fn relay_failed(state: &AppState, error: String) {
    let wait = state.loops.failed(RELAY, error);
    sleep_or_shutdown(state, wait).await;
}

async fn sleep_or_shutdown(state: &AppState, d: Duration) {
    tokio::select! {
        _ = state.shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Campaigns for leadership and, while leader, runs the reconcile loops.
pub async fn run_controller(state: AppState) {
    let ttl = state.settings.lease_ttl;
    while !state.shutdown.is_cancelled() {
        if let Some(lease) = take_over(&state).await {
            tracing::info!(replica = %state.replica, lease, "this replica leads the controller (took over the lease of the previous process)");
            lead(&state, lease).await;
            let _ = state.store.revoke_lease(lease).await;
            continue;
        }
        let lease = match state.store.grant_lease(ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("controller election: {e}");
                sleep_or_shutdown(&state, Duration::from_secs(1)).await;
                continue;
            }
        };
        let won = state
            .store
            .txn_put(
                keys::LEADER_CONTROLLER,
                Compare::Absent,
                state.replica.clone().into_bytes(),
                Some(lease),
            )
            .await;
        match won {
            Ok(Some(_)) => {
                tracing::info!(replica = %state.replica, "this replica leads the controller");
                lead(&state, lease).await;
                let _ = state.store.revoke_lease(lease).await;
            }
            Ok(None) => {
                let _ = state.store.revoke_lease(lease).await;
                sleep_or_shutdown(&state, ttl / 4).await;
            }
            Err(e) => {
                tracing::warn!("controller election: {e}");
                sleep_or_shutdown(&state, Duration::from_secs(1)).await;
            }
        }
    }
}

/// On a store only this process can open (the embedded one), a leader key
/// that this process did not write was left by a process that died: it
/// cannot be someone alive. Its lease is taken over rather than waited out,
/// so a restarted `testbed up` continues at once instead of standing still
/// for a lease TTL — and what is bound to that lease (group reservations of
/// running runs) stays held without a gap. Shared stores (etcd) never take
/// this path: there another replica may be alive behind the key.
async fn take_over(state: &AppState) -> Option<testbed_store::LeaseId> {
    if !state.store.exclusive() {
        return None;
    }
    let kv = state.store.get(keys::LEADER_CONTROLLER).await.ok()??;
    if kv.lease == 0 || state.store.keep_alive(kv.lease).await.is_err() {
        return None;
    }
    // Our name on the key, still bound to the same lease; if it changed
    // meanwhile, campaign the ordinary way.
    state
        .store
        .txn_put(
            keys::LEADER_CONTROLLER,
            Compare::ModRevision(kv.mod_revision),
            state.replica.clone().into_bytes(),
            Some(kv.lease),
        )
        .await
        .ok()??;
    Some(kv.lease)
}

/// Runs the reconcile sweep until leadership is lost or shutdown.
async fn lead(state: &AppState, lease: testbed_store::LeaseId) {
    use std::sync::atomic::Ordering;
    state.leading.store(true, Ordering::Relaxed);
    let stop = tokio_util::sync::CancellationToken::new();
    lead_loops(state, lease, &stop).await;
    stop.cancel();
    state.loops.forget(ENGINE);
    state.leading.store(false, Ordering::Relaxed);
}

async fn lead_loops(
    state: &AppState,
    lease: testbed_store::LeaseId,
    stop: &tokio_util::sync::CancellationToken,
) {
    let keep = state.settings.lease_ttl / 3;
    let mut keep_tick = tokio::time::interval(keep.max(Duration::from_millis(100)));
    let mut sweep_tick = tokio::time::interval(Duration::from_millis(500));
    // The plan engine is supervised here: should it ever stop while this
    // replica leads (a panic), it is started again after a back-off, and is
    // reported failing meanwhile.
    let mut engine = tokio::spawn(crate::engine::drive(
        state.clone(),
        lease,
        stop.child_token(),
    ));
    let mut restart_at: Option<tokio::time::Instant> = None;
    loop {
        let restart_due = async {
            match restart_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = keep_tick.tick() => {
                if state.store.keep_alive(lease).await.is_err() {
                    tracing::warn!("controller leadership lost");
                    break;
                }
            }
            _ = restart_due => {
                restart_at = None;
                engine = tokio::spawn(crate::engine::drive(state.clone(), lease, stop.child_token()));
            }
            ended = &mut engine, if restart_at.is_none() => {
                let why = match ended {
                    Err(e) if e.is_panic() => "panicked".to_string(),
                    Err(e) => e.to_string(),
                    Ok(()) => "returned".to_string(),
                };
                let wait = state.loops.failed(ENGINE, format!("stopped ({why}); restarting"));
                restart_at = Some(tokio::time::Instant::now() + wait);
            }
            _ = sweep_tick.tick() => {
                if let Err(e) = state.metrics.reconcile(Pass::LostSweep, sweep_lost(state)).await {
                    tracing::warn!("controller sweep: {e}");
                }
            }
        }
    }
    stop.cancel();
    if restart_at.is_none() {
        let _ = engine.await;
    }
}

/// Marks `lost` every outstanding task of an agent that is no longer alive,
/// and sends held tasks (waiting for a group reservation to end) on their
/// way once their agent is free.
///
/// An agent's liveness is its lease: its tasks are declared lost only after
/// that lease has expired (one TTL after its last heartbeat), by which time
/// the agent has killed whatever it ran for us (it does so once cut off for
/// half a TTL), so a retry never overlaps the attempt it replaces.
pub async fn sweep_lost(state: &AppState) -> Result<(), records::RecordError> {
    let live = crate::placement::live_agents(&state.store).await?;
    // Only read when some task is held.
    let mut reserved: Option<BTreeMap<uuid::Uuid, String>> = None;
    let mut pages = records::Pages::new(&state.store, keys::ASSIGN, 1000);
    while let Some(kvs) = pages.next().await? {
        for kv in &kvs {
            let Some((agent, task_id)) = keys::parse_assign(&kv.key) else {
                continue;
            };
            let assignment = serde_json::from_slice::<Assignment>(&kv.value).ok();
            let held = assignment.as_ref().is_some_and(|a| a.held.is_some());
            if live.contains(&agent) {
                if held {
                    if reserved.is_none() {
                        reserved = Some(dispatch::reservations(&state.store).await?);
                    }
                    let still = reserved.as_ref().is_some_and(|r| r.contains_key(&agent));
                    if !still {
                        dispatch::release_held(state, agent, task_id).await?;
                    }
                }
                continue;
            }
            let cancelled = assignment.as_ref().is_some_and(|a| a.cancel);
            let (status, reason) = if cancelled {
                (TaskStatus::Cancelled, "cancelled; its agent went away")
            } else if held {
                // Never sent: the outcome is known, nothing ran.
                (
                    TaskStatus::Error,
                    "its agent stopped heartbeating before the task was sent to it",
                )
            } else {
                (
                    TaskStatus::Lost,
                    "lost: its agent stopped heartbeating; the outcome is unknown",
                )
            };
            tracing::warn!(%task_id, %agent, "task {status}: {reason}");
            dispatch::finish_without_agent(state, task_id, status, reason).await?;
            // An assignment whose task is gone or settled is garbage.
            state.store.delete(&kv.key).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_breaks_as_soon_as_it_opens_keeps_backing_off() {
        let loops = Loops::default();
        assert_eq!(loops.failed("w", "broken"), BACKOFF_MIN);
        assert_eq!(loops.failing(), vec!["w".to_string()]);
        loops.ok("w");
        assert!(loops.failing().is_empty());
        assert_eq!(loops.failed("w", "broken"), BACKOFF_MIN * 2);
        loops.ok("w");
        assert_eq!(loops.failed("w", "broken"), BACKOFF_MIN * 4);
        for _ in 0..10 {
            loops.failed("w", "broken");
        }
        assert_eq!(loops.failed("w", "broken"), BACKOFF_MAX);
        loops.forget("w");
        assert!(loops.failing().is_empty());
        assert_eq!(loops.failed("w", "broken"), BACKOFF_MIN);
    }
}
