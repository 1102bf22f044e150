//! The server's end of the agent protocol (see `testbed_core::protocol`).
//!
//! One task per connected agent. Liveness is the agent's store lease: it is
//! refreshed by each heartbeat the agent sends, so an agent that hangs or
//! vanishes loses `/agents/{uuid}/alive` one TTL after its last heartbeat,
//! whatever happens to the TCP connection. A dropped connection does not
//! revoke the lease, which gives the agent one TTL to reconnect (to any
//! replica) without its tasks being declared lost.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use testbed_core::agent::{AgentLiveness, AgentProfile, AgentRecord};
use testbed_core::keys;
use testbed_core::protocol::{AgentMessage, Hello, ServerMessage, PROTOCOL_VERSION};
use testbed_core::task::{Task, TaskStatus};
use testbed_store::{LeaseId, StoreError};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::{bearer, Subject};
use crate::dispatch::{self, Assignment};
use crate::error::ApiError;
use crate::records::{self, RecordError};
use crate::state::AppState;

/// The longest a live agent's record (`/agents/{uuid}/alive`: heartbeat
/// time, system metrics) goes without being rewritten while nothing in it
/// but the figures changes. Liveness itself is the lease, refreshed by every
/// heartbeat; this only bounds how stale the shown metrics get.
const LIVENESS_REFRESH: Duration = Duration::from_secs(15);

/// How long an agent credential is valid; renewed on every connection.
const CREDENTIAL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Who opened the socket.
enum Joiner {
    Token,
    Agent(Uuid),
}

/// `GET /ws/agent`: authenticate, then upgrade.
pub async fn upgrade(
    State(state): State<AppState>,
    parts: Parts,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = bearer(&parts).ok_or_else(|| ApiError::unauthorized("missing join token"))?;
    let joiner = if state.auth.is_join_token(&token) {
        Joiner::Token
    } else {
        let claims = state.auth.verify(&token)?;
        if claims.typ != Subject::Agent {
            return Err(ApiError::unauthorized(
                "not a join token or agent credential",
            ));
        }
        Joiner::Agent(
            claims
                .sub
                .parse()
                .map_err(|_| ApiError::unauthorized("invalid agent credential"))?,
        )
    };
    Ok(ws
        .max_message_size(testbed_core::protocol::MAX_MESSAGE_BYTES)
        // tungstenite's defaults (128 KiB each way) would cost a quarter of
        // a megabyte per agent; agent messages are small and sent at once.
        // The read buffer is what an idle session keeps (a larger message
        // grows it for its own length), so it is sized for a heartbeat: at
        // 8 KiB it was a fifth of what the server held per agent.
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            if let Err(e) = serve(state, socket, joiner).await {
                tracing::warn!("agent session ended: {e}");
            }
        }))
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Api(String),
}

impl From<ApiError> for SessionError {
    fn from(e: ApiError) -> Self {
        SessionError::Api(e.message)
    }
}

/// What a session keeps once the agent is registered. The hello and the
/// agent record are not kept: with a fleet of thousands of agents, every
/// byte a session holds is multiplied by the fleet.
struct Opened {
    uuid: Uuid,
    name: String,
    lease: LeaseId,
    alive_key: String,
    liveness: AgentLiveness,
    session: u64,
}

async fn serve(state: AppState, socket: WebSocket, joiner: Joiner) -> Result<(), SessionError> {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMessage>();
    // Boxed, like every store call below: the session's task holds its
    // future for as long as the agent stays, and an inline future is as
    // large as the largest one it awaits.
    let Some(opened) = Box::pin(open(&state, &mut sink, &mut stream, joiner, &tx)).await? else {
        return Ok(());
    };
    let Opened {
        uuid,
        name,
        mut lease,
        alive_key,
        mut liveness,
        session,
    } = opened;
    let ttl = state.settings.lease_ttl.as_secs().max(1);

    // The socket is read by a task of its own, so the agent's pings are
    // answered while this loop waits on the store: a slow commit (a busy
    // disk's fsync) must not look like a silent server, or the agent's fence
    // kills its tasks after half the lease. The inbox is bounded, so an agent
    // that outruns the store is held back by TCP, not by our memory.
    let inbox = Arc::new(Inbox::new());
    let reader = tokio::spawn(read_socket(stream, inbox.clone()));
    let _reader = AbortOnDrop(reader);

    // A message read ahead while gathering results (see below), handled
    // next.
    let mut carried: Option<Incoming> = None;
    // When the liveness record was last written with heartbeat figures
    // (never yet: the first heartbeat brings the first metrics).
    let mut written_at: Option<std::time::Instant> = None;
    let end = loop {
        let incoming = match carried.take() {
            Some(incoming) => incoming,
            None => tokio::select! {
                _ = state.shutdown.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    break End::Shutdown;
                }
                out = rx.recv() => {
                    let Some(msg) = out else { break End::Replaced };
                    if send(&mut sink, &msg).await.is_err() {
                        break End::Dropped;
                    }
                    continue;
                }
                incoming = inbox.recv() => incoming,
            },
        };
        match incoming {
            Some(Ok(Message::Text(text))) => {
                // Messages that arrived together are handled together, so
                // the results among them settle in one store write.
                let mut results = Vec::new();
                let mut next = Some(text);
                while let Some(text) = next.take() {
                    match serde_json::from_str::<AgentMessage>(&text) {
                        Ok(AgentMessage::Heartbeat { metrics, running }) => {
                            let running = running.len() as u32;
                            let now = std::time::Instant::now();
                            // A heartbeat is a lease keep-alive; the record
                            // is rewritten only when what it says changed
                            // (the running count, the first metrics) or has
                            // aged, so a fleet costs few durable writes.
                            let write = running != liveness.running
                                || written_at.is_none_or(|t| now - t >= LIVENESS_REFRESH);
                            liveness.heartbeat_at = testbed_core::now();
                            liveness.running = running;
                            liveness.metrics = metrics;
                            let (kept, wrote) =
                                Box::pin(keep_alive(&state, lease, &alive_key, &liveness, write))
                                    .await?;
                            lease = kept;
                            if wrote {
                                written_at = Some(now);
                            }
                        }
                        Ok(AgentMessage::Result { task_id, outcome }) => {
                            results.push((task_id, outcome));
                        }
                        Ok(other) => {
                            // In order: what came before it is settled first.
                            Box::pin(settle(&state, uuid, &mut results, &tx)).await?;
                            Box::pin(handle(&state, uuid, other, &tx)).await?;
                        }
                        Err(e) => tracing::warn!(%uuid, "unreadable agent message: {e}"),
                    }
                    if results.len() < dispatch::SETTLE_BATCH {
                        match inbox.try_recv() {
                            Some(Some(Ok(Message::Text(text)))) => next = Some(text),
                            Some(other) => carried = Some(other),
                            None => {}
                        }
                    }
                }
                Box::pin(settle(&state, uuid, &mut results, &tx)).await?;
            }
            Some(Ok(Message::Close(_))) => break End::Closed,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break End::Dropped,
        }
    };
    state.sessions.detach(uuid, session);
    match end {
        // The agent said goodbye. With nothing outstanding it is gone now,
        // not one TTL from now. With tasks outstanding the lease is kept: the
        // agent stops them as it exits, and a task is declared lost (and a
        // step may retry it elsewhere) only once the lease has run out, so a
        // retry never overlaps a task still being stopped.
        End::Closed => match Box::pin(dispatch::outstanding(&state, &uuid)).await {
            Ok(0) => {
                let _ = Box::pin(state.store.revoke_lease(lease)).await;
                tracing::info!(agent = %name, "agent disconnected");
            }
            Ok(n) => tracing::info!(
                agent = %name,
                "agent disconnected with {n} task(s) outstanding; they are lost in {ttl} s unless it reconnects"
            ),
            Err(e) => {
                tracing::warn!(agent = %name, "agent disconnected; counting its tasks: {e}")
            }
        },
        End::Dropped | End::Shutdown | End::Replaced => {
            tracing::info!(agent = %name, "agent connection lost; lease runs out in {ttl} s unless it reconnects");
        }
    }
    Ok(())
}

/// The opening of a session: the agent's hello, its registration, its
/// lease and liveness record, the welcome, and the resending of what it
/// should be running. `None` when the agent was refused (and told why).
async fn open<S>(
    state: &AppState,
    sink: &mut S,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    joiner: Joiner,
    tx: &mpsc::UnboundedSender<ServerMessage>,
) -> Result<Option<Opened>, SessionError>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let hello = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<AgentMessage>(&text) {
            Ok(AgentMessage::Hello(h)) => h,
            Ok(_) => return refuse(sink, "the first message must be hello").await,
            Err(e) => return refuse(sink, &format!("unreadable hello: {e}")).await,
        },
        _ => return Err(SessionError::Protocol("no hello within 10 s".into())),
    };
    if hello.protocol != PROTOCOL_VERSION {
        return refuse(
            sink,
            &format!(
                "protocol {} not supported (server speaks {PROTOCOL_VERSION})",
                hello.protocol
            ),
        )
        .await;
    }
    for p in &hello.profile.plugins {
        for m in &p.methods {
            if let Err(e) = check_schema(&m.schema) {
                return refuse(sink, &format!("{}.{}: invalid schema: {e}", p.name, m.name)).await;
            }
        }
    }
    let uuid = match (&joiner, hello.uuid) {
        (Joiner::Agent(id), _) => *id,
        (Joiner::Token, Some(id)) => id,
        (Joiner::Token, None) => Uuid::new_v4(),
    };

    let record = register(state, uuid, &hello).await?;
    let lease = state.store.grant_lease(state.settings.lease_ttl).await?;
    let alive_key = keys::agent_alive(&uuid);
    let liveness = AgentLiveness {
        kind: AgentLiveness::KIND.into(),
        v: 1,
        replica: state.replica.clone(),
        connected_at: testbed_core::now(),
        heartbeat_at: testbed_core::now(),
        running: hello.running.len() as u32,
        metrics: Default::default(),
    };
    records::put(&state.store, &alive_key, &liveness, Some(lease)).await?;

    let session = state.sessions.attach(uuid, tx.clone());
    let credential = state.auth.issue_agent(&uuid, CREDENTIAL_TTL)?;
    let ttl = state.settings.lease_ttl.as_secs().max(1);
    let welcome = ServerMessage::Welcome {
        uuid,
        id: record.id,
        credential,
        lease_ttl_secs: ttl,
        heartbeat_secs: (ttl / 3).max(1),
    };
    if let Err(e) = send(sink, &welcome).await {
        state.sessions.detach(uuid, session);
        return Err(e);
    }
    tracing::info!(agent = %record.profile.name, %uuid, id = record.id, "agent connected");

    if let Err(e) = reconcile(state, uuid, &hello, tx).await {
        state.sessions.detach(uuid, session);
        return Err(e);
    }
    Ok(Some(Opened {
        uuid,
        name: record.profile.name,
        lease,
        alive_key,
        liveness,
        session,
    }))
}

/// Schemas already found valid, by their JSON text: a fleet announces the
/// same few schemas thousands of times, and compiling one (what checking it
/// takes) was 4 % of the server's CPU while 5,000 agents registered.
/// Validity is a function of the text alone, so a hit needs no check.
static VALID_SCHEMAS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Schemas remembered at most; past that the set starts again (an agent
/// could announce any number of distinct schemas).
const VALID_SCHEMAS_MAX: usize = 1024;

fn check_schema(schema: &serde_json::Value) -> Result<(), String> {
    let text = schema.to_string();
    let known = |set: &std::collections::HashSet<String>| set.contains(&text);
    let lock = || VALID_SCHEMAS.lock().unwrap_or_else(|p| p.into_inner());
    if known(&lock()) {
        return Ok(());
    }
    testbed_core::schema::check_schema(schema)?;
    let mut set = lock();
    if set.len() >= VALID_SCHEMAS_MAX {
        set.clear();
    }
    set.insert(text);
    Ok(())
}

/// Reads the socket into the inbox until it ends; the end (`None` or an
/// error) is the last thing queued.
async fn read_socket(mut stream: futures_util::stream::SplitStream<WebSocket>, inbox: Arc<Inbox>) {
    // However this task ends (aborted with its session, or a panic), the
    // session sees the end of the socket rather than waiting forever.
    struct Ended(Arc<Inbox>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.push(None);
        }
    }
    let ended = Ended(inbox);
    loop {
        let incoming = stream.next().await;
        let last = !matches!(incoming, Some(Ok(_)));
        match ended.0.room.acquire().await {
            Ok(permit) => permit.forget(),
            // Never closed; ends the reading if it were.
            Err(_) => break,
        }
        ended.0.push(incoming);
        if last {
            break;
        }
    }
}

/// Messages read from an agent's socket and not yet handled, at most
/// [`INBOX`]. A queue that costs nothing while empty: a tokio channel
/// allocates a block of 32 slots up front, which a fleet of idle agents
/// pays once per agent.
struct Inbox {
    queue: std::sync::Mutex<std::collections::VecDeque<Incoming>>,
    /// Wakes the session when something was queued.
    ready: tokio::sync::Notify,
    /// Free places: the reader waits for one before queueing.
    room: tokio::sync::Semaphore,
}

impl Inbox {
    fn new() -> Self {
        Inbox {
            queue: Default::default(),
            ready: tokio::sync::Notify::new(),
            room: tokio::sync::Semaphore::new(INBOX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Incoming>> {
        // A single push or pop per critical section: nothing half-done.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, incoming: Incoming) {
        self.lock().push_back(incoming);
        // One waiter at most (the session); a wake-up with nobody waiting
        // is kept for its next `recv`.
        self.ready.notify_one();
    }

    /// The next message if one is queued.
    fn try_recv(&self) -> Option<Incoming> {
        let mut queue = self.lock();
        let incoming = queue.pop_front()?;
        if queue.is_empty() && queue.capacity() > 16 {
            // A burst is over: give its room back.
            queue.shrink_to_fit();
        }
        drop(queue);
        self.room.add_permits(1);
        Some(incoming)
    }

    /// The next message, waiting for one. Cancel-safe: nothing is taken
    /// from the queue until it returns.
    async fn recv(&self) -> Incoming {
        loop {
            if let Some(incoming) = self.try_recv() {
                return incoming;
            }
            self.ready.notified().await;
        }
    }
}

/// Settles the results gathered so far and acks them (even unknown ones,
/// so the agent stops resending them).
async fn settle(
    state: &AppState,
    agent: Uuid,
    results: &mut Vec<(Uuid, testbed_core::task::TaskOutcome)>,
    tx: &mpsc::UnboundedSender<ServerMessage>,
) -> Result<(), SessionError> {
    if results.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = results.iter().map(|(id, _)| *id).collect();
    dispatch::settle_from(state, agent, std::mem::take(results)).await?;
    for task_id in ids {
        // A load task's live figures stop counting with its result.
        state.metrics.task_ended(&task_id);
        let _ = tx.send(ServerMessage::Ack { task_id });
    }
    Ok(())
}

/// What the socket gave: a message, an error, or its end (`None`).
type Incoming = Option<Result<Message, axum::Error>>;

/// Messages read from an agent's socket and not yet handled.
const INBOX: usize = 256;

/// Stops the socket's reader when the session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum End {
    Closed,
    Dropped,
    Shutdown,
    Replaced,
}

async fn refuse<S, T>(sink: &mut S, message: &str) -> Result<T, SessionError>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let msg = ServerMessage::Error {
        message: message.to_string(),
    };
    if let Ok(text) = serde_json::to_string(&msg) {
        let _ = sink.send(Message::Text(text.into())).await;
    }
    let _ = sink.send(Message::Close(None)).await;
    Err(SessionError::Protocol(message.to_string()))
}

async fn send<S>(sink: &mut S, msg: &ServerMessage) -> Result<(), SessionError>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(msg).map_err(|e| SessionError::Protocol(e.to_string()))?;
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|_| SessionError::Protocol("send failed".into()))
}

/// Refreshes the lease and, when `write`, the liveness record; if the lease
/// already expired (the agent was silent too long, or the store lost it),
/// takes a new one and re-announces liveness. Returns the lease and whether
/// the record was written.
async fn keep_alive(
    state: &AppState,
    lease: LeaseId,
    alive_key: &str,
    liveness: &AgentLiveness,
    write: bool,
) -> Result<(LeaseId, bool), SessionError> {
    let (lease, write) = match state.store.keep_alive(lease).await {
        Ok(()) => (lease, write),
        Err(StoreError::LeaseNotFound(_)) => (
            state.store.grant_lease(state.settings.lease_ttl).await?,
            true,
        ),
        Err(e) => return Err(e.into()),
    };
    if write {
        records::put(&state.store, alive_key, liveness, Some(lease)).await?;
    }
    Ok((lease, write))
}

/// Creates or refreshes `/agents/{uuid}`, keeping its numeric id.
async fn register(
    state: &AppState,
    uuid: Uuid,
    hello: &Hello,
) -> Result<AgentRecord, SessionError> {
    let key = keys::agent(&uuid);
    let now = testbed_core::now();
    let apply = |r: &mut AgentRecord| {
        // Groups set through the API are the server's; the agent's
        // configured groups are merged in.
        let mut groups = std::mem::take(&mut r.profile.groups);
        for g in &hello.profile.groups {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        r.profile = AgentProfile {
            groups,
            ..hello.profile.clone()
        };
        r.last_seen_at = now;
    };
    loop {
        if let Some(r) = records::update::<AgentRecord, _>(&state.store, &key, |r| {
            apply(r);
            true
        })
        .await?
        {
            return Ok(r);
        }
        // Through the replica's coalescing counter: a fleet registering at
        // once would otherwise contend on this one key.
        let id = state
            .counters
            .next(&state.store, &keys::counter("agent_id"))
            .await?;
        let mut record = AgentRecord {
            kind: AgentRecord::KIND.into(),
            v: 1,
            uuid,
            id,
            profile: AgentProfile {
                groups: Vec::new(),
                ..hello.profile.clone()
            },
            registered_at: now,
            last_seen_at: now,
        };
        apply(&mut record);
        if records::create(&state.store, &key, &record, None).await? {
            return Ok(record);
        }
    }
}

/// After (re)connecting: resend what the agent should be running and settle
/// what it can no longer report.
async fn reconcile(
    state: &AppState,
    uuid: Uuid,
    hello: &Hello,
    tx: &mpsc::UnboundedSender<ServerMessage>,
) -> Result<(), SessionError> {
    let assigned: Vec<(String, Assignment)> =
        records::list(&state.store, &keys::assign_prefix(&uuid), |_| true).await?;
    for (_, a) in assigned {
        let Some((task, rev)) = records::get::<Task>(&state.store, &keys::task(&a.task_id)).await?
        else {
            // An assignment without a task: its dispatch was interrupted.
            state.store.delete(&keys::assign(&uuid, &a.task_id)).await?;
            continue;
        };
        let known = hello.running.contains(&task.id) || hello.unacked.contains(&task.id);
        match task.status {
            _ if known => {
                if a.cancel || task.cancel_requested {
                    let _ = tx.send(ServerMessage::Cancel { task_id: task.id });
                } else if a.paused == Some(true) {
                    let _ = tx.send(ServerMessage::Pause { task_id: task.id });
                }
            }
            // Waits for its agent's reservation to end; the controller
            // sends it then.
            TaskStatus::Queued if a.held.is_some() => {}
            TaskStatus::Queued if a.cancel || task.cancel_requested => {
                dispatch::finish_without_agent(
                    state,
                    task.id,
                    TaskStatus::Cancelled,
                    "cancelled before it started",
                )
                .await?;
            }
            TaskStatus::Queued => {
                state.sessions.assign(task, rev);
            }
            TaskStatus::Running => {
                // The agent process that ran it is gone (a new one says
                // hello without it), and its tasks died with it: the agent
                // kills its process groups when it dies and reaps leftovers
                // when it starts. So nothing of it still runs, nothing will
                // report, and what it did before it died is unknown: lost,
                // and a plan step may retry it at once.
                dispatch::finish_without_agent(
                    state,
                    task.id,
                    TaskStatus::Lost,
                    "lost: its agent restarted while the task ran; the outcome is unknown",
                )
                .await?;
            }
            _ => {
                state.store.delete(&keys::assign(&uuid, &task.id)).await?;
            }
        }
    }
    Ok(())
}

async fn handle(
    state: &AppState,
    agent: Uuid,
    msg: AgentMessage,
    tx: &mpsc::UnboundedSender<ServerMessage>,
) -> Result<(), SessionError> {
    match msg {
        AgentMessage::Started {
            task_id,
            started_at,
        } => {
            dispatch::started(state, task_id, started_at).await?;
        }
        AgentMessage::Log {
            task_id,
            offset,
            data,
        } => {
            if let Err(e) = state.blobs.put_log_chunk(&task_id, offset, &data).await {
                tracing::warn!(%task_id, "storing log chunk: {e}");
            }
            state.sessions.task_changed(task_id);
        }
        AgentMessage::Result { task_id, outcome } => {
            let mut one = vec![(task_id, outcome)];
            settle(state, agent, &mut one, tx).await?;
        }
        AgentMessage::Metrics {
            task_id,
            window,
            system,
        } => {
            crate::performance::on_metrics(state, task_id, window, system).await;
        }
        AgentMessage::Hello(_) => {
            return Err(SessionError::Protocol("hello sent twice".into()));
        }
        AgentMessage::Heartbeat { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_found_invalid_stays_invalid_and_a_valid_one_is_remembered() {
        let bad = serde_json::json!({"type": "no-such-type"});
        assert!(check_schema(&bad).is_err());
        assert!(
            check_schema(&bad).is_err(),
            "an invalid schema is never cached"
        );
        let good = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        assert!(check_schema(&good).is_ok());
        assert!(VALID_SCHEMAS.lock().unwrap().contains(&good.to_string()));
        assert!(check_schema(&good).is_ok());
    }
}
