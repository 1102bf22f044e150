//! Background loops of a server replica.
//!
//! * [`assignment_relay`] runs on every replica: it watches `/assign/` and
//!   forwards new assignments (and cancel flags) to the agents connected to
//!   this replica.
//! * [`run_controller`] runs only on the elected leader (a lease-bound
//!   `/leader/controller` key): it reconciles store state, marking the tasks
//!   of agents whose lease expired `lost`.

use std::time::Duration;

use futures_util::StreamExt;
use testbed_core::keys;
use testbed_core::protocol::ServerMessage;
use testbed_core::task::{Task, TaskStatus};
use testbed_store::{Compare, EventKind};

use crate::dispatch::{self, Assignment};
use crate::records;
use crate::state::AppState;

/// Forwards assignments to locally connected agents. Restarts its watch
/// from the last revision it saw if the stream breaks, so nothing is missed.
pub async fn assignment_relay(state: AppState) {
    let mut from = match state.store.revision().await {
        Ok(r) => r + 1,
        Err(_) => 1,
    };
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        let mut stream = match state.store.watch(keys::ASSIGN, from).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("watching assignments: {e}");
                sleep_or_shutdown(&state, Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(ev)) => {
                    from = ev.revision() + 1;
                    if ev.kind != EventKind::Put {
                        continue;
                    }
                    let Some((agent, task_id)) = keys::parse_assign(&ev.kv.key) else {
                        continue;
                    };
                    if !state.hub.is_local(&agent) {
                        continue;
                    }
                    let Ok(a) = serde_json::from_slice::<Assignment>(&ev.kv.value) else {
                        continue;
                    };
                    if a.cancel {
                        state.hub.send(&agent, ServerMessage::Cancel { task_id });
                    } else if let Some(paused) = a.paused {
                        let msg = if paused {
                            ServerMessage::Pause { task_id }
                        } else {
                            ServerMessage::Resume { task_id }
                        };
                        state.hub.send(&agent, msg);
                    } else if let Ok(Some((task, _))) =
                        records::get::<Task>(&state.store, &keys::task(&task_id)).await
                    {
                        if task.status == TaskStatus::Queued {
                            state.hub.send(
                                &agent,
                                ServerMessage::Assign {
                                    task: Box::new(task),
                                },
                            );
                        }
                    }
                }
                Some(Err(testbed_store::StoreError::Compacted { .. })) => {
                    // History is gone; agents resynchronise on reconnect and
                    // new assignments arrive from now on.
                    from = state.store.revision().await.map(|r| r + 1).unwrap_or(from);
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!("assignment watch: {e}");
                    break;
                }
                None => break,
            }
        }
        sleep_or_shutdown(&state, Duration::from_millis(200)).await;
    }
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

/// Runs the reconcile sweep until leadership is lost or shutdown.
async fn lead(state: &AppState, lease: testbed_store::LeaseId) {
    use std::sync::atomic::Ordering;
    state.leading.store(true, Ordering::Relaxed);
    let stop = tokio_util::sync::CancellationToken::new();
    let engine = tokio::spawn(crate::engine::drive(state.clone(), lease, stop.clone()));
    lead_loops(state, lease).await;
    stop.cancel();
    let _ = engine.await;
    state.leading.store(false, Ordering::Relaxed);
}

async fn lead_loops(state: &AppState, lease: testbed_store::LeaseId) {
    let keep = state.settings.lease_ttl / 3;
    let mut keep_tick = tokio::time::interval(keep.max(Duration::from_millis(100)));
    let mut sweep_tick = tokio::time::interval(Duration::from_millis(500));
    let mut perf_tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = keep_tick.tick() => {
                if state.store.keep_alive(lease).await.is_err() {
                    tracing::warn!("controller leadership lost");
                    return;
                }
            }
            _ = sweep_tick.tick() => {
                if let Err(e) = sweep_lost(state).await {
                    tracing::warn!("controller sweep: {e}");
                }
            }
            _ = perf_tick.tick() => {
                // Executions whose starting replica died end here.
                if let Err(e) = crate::performance::sweep(state).await {
                    tracing::warn!("performance sweep: {}", e.message);
                }
            }
        }
    }
}

/// Marks `lost` every outstanding task of an agent that is no longer alive.
pub async fn sweep_lost(state: &AppState) -> Result<(), records::RecordError> {
    let live = dispatch::live_agents(&state.store).await?;
    let mut after: Option<String> = None;
    loop {
        let page = state
            .store
            .range(keys::ASSIGN, after.as_deref(), 1000)
            .await?;
        for kv in &page.kvs {
            let Some((agent, task_id)) = keys::parse_assign(&kv.key) else {
                continue;
            };
            if live.contains(&agent) {
                continue;
            }
            let cancelled = serde_json::from_slice::<Assignment>(&kv.value).is_ok_and(|a| a.cancel);
            let (status, reason) = if cancelled {
                (TaskStatus::Cancelled, "cancelled; its agent went away")
            } else {
                (TaskStatus::Lost, "its agent stopped heartbeating")
            };
            tracing::warn!(%task_id, %agent, "task {status}: {reason}");
            dispatch::finish_without_agent(state, task_id, status, reason).await?;
            // An assignment whose task is gone or settled is garbage.
            state.store.delete(&kv.key).await?;
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return Ok(()),
        }
    }
}
