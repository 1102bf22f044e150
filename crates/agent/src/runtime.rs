//! The agent's life: dial the server, announce plugins, run assigned tasks,
//! reconnect with back-off, and never lose a log line or a result.
//!
//! Everything a task produces goes first to local state (its log file under
//! `state_dir/tasks`, its outcome in the outbox) and only then to whatever
//! session is current. After a reconnect the agent replays that state: logs
//! from offset 0 (the server merges overlapping chunks) and results until the
//! server acknowledges them. So a server restart or a network cut between
//! agent and server costs nothing but time, if it is shorter than half the
//! lease TTL. After that the agent kills its running tasks (the fence): the
//! server will soon call them lost and may run them elsewhere, and two
//! attempts of one task must never overlap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use testbed_core::agent::{AgentProfile, PluginSpec};
use testbed_core::protocol::{AgentMessage, Hello, ServerMessage, PROTOCOL_VERSION};
use testbed_core::task::{Artifact, Task, TaskOutcome, TaskStatus};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::config::AgentConfig;
use crate::metrics::{hostname, Sampler};
use crate::plugin::{
    ArtifactSink, Control, DynPlugin, ExecSettings, LogSink, MetricSink, PluginError, TaskContext,
    REPORT_FILE,
};
use crate::plugins;
use crate::prometheus::AgentMetrics;

/// Largest log message sent at once; bigger output is split.
const LOG_CHUNK: usize = 32 * 1024;
/// How long output is batched before it is sent.
const LOG_FLUSH: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a task runs before the agent reports it started.
const STARTED_AFTER: Duration = Duration::from_millis(5);
/// How often the fence looks at the time since the server was last heard,
/// before the lease is known; then a twentieth of the lease, at least
/// [`FENCE_CHECK_MIN`]. Cheap, but a thousand simulated agents share a host.
const FENCE_CHECK: Duration = Duration::from_millis(500);
const FENCE_CHECK_MIN: Duration = Duration::from_millis(100);
/// The error of a task the fence killed.
const FENCED: &str = "killed by its agent: the server was out of reach for over half \
     the agent's lease, so the task could be declared lost and run elsewhere";

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("unknown plugin `{name}` (built in: {builtin}; exec plugins found: {exec})")]
    UnknownPlugin {
        name: String,
        builtin: String,
        exec: String,
    },
    #[error("exec plugins: {0}")]
    ExecPlugins(String),
    #[error("run_as: {0}")]
    RunAs(String),
    #[error("state directory {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("server refused the session: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("metrics_listen {addr}: {source}")]
    MetricsBind {
        addr: String,
        source: std::io::Error,
    },
}

/// What the agent remembers about itself between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Identity {
    uuid: Option<Uuid>,
}

/// When the server was last heard from, and the lease it gave: what the
/// fence measures.
#[derive(Default)]
struct Contact {
    at: Option<Instant>,
    lease_ttl: Option<Duration>,
}

enum Entry {
    Running {
        cancel: CancellationToken,
        control: watch::Sender<Control>,
    },
    Finished {
        outcome: TaskOutcome,
    },
}

struct Shared {
    config: AgentConfig,
    plugins: BTreeMap<String, DynPlugin>,
    settings: Arc<ExecSettings>,
    http: reqwest::Client,
    /// Trust for an `https://` server, shared by the WebSocket and `http`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Tasks this process has accepted (running or awaiting an ack).
    tasks: Mutex<HashMap<Uuid, Entry>>,
    /// Every task id this process has accepted, so a duplicate `assign`
    /// (after a reconnect) never runs a task twice.
    seen: Mutex<HashSet<Uuid>>,
    /// The current session's outgoing queue, if connected.
    outgoing: Mutex<Option<mpsc::UnboundedSender<AgentMessage>>>,
    identity: Mutex<Identity>,
    credential: Mutex<Option<String>>,
    slots: Arc<Semaphore>,
    contact: Mutex<Contact>,
    /// Tasks the fence killed, so their outcome says why.
    fenced: Mutex<HashSet<Uuid>>,
    metrics: AgentMetrics,
    /// Bound in `build` (so a bad address stops the start), served by `run`.
    metrics_listener: Mutex<Option<tokio::net::TcpListener>>,
}

/// A configured agent, ready to [`Agent::run`].
#[derive(Clone)]
pub struct Agent {
    shared: Arc<Shared>,
}

enum SessionEnd {
    Shutdown,
    Disconnected(String),
}

impl Agent {
    /// Loads plugins and identity. Fails on an unknown plugin name, a broken
    /// exec plugin or an unusable state directory.
    pub async fn build(config: AgentConfig) -> Result<Agent, AgentError> {
        Self::build_with(config, plugins::BUILTIN).await
    }

    /// [`Agent::build`] with `builtin` as the table of built-in plugins (a
    /// program embedding the agent declares its own with
    /// [`crate::builtin_plugins!`]).
    pub async fn build_with(
        config: AgentConfig,
        builtin: &[fn() -> DynPlugin],
    ) -> Result<Agent, AgentError> {
        // Task groups that outlived an earlier run of this agent (their
        // watchers died with it) are killed before anything new starts.
        let groups = config.state_dir.join("groups");
        let reaped = testbed_lifeline::reap(&groups).map_err(|source| AgentError::State {
            path: groups.clone(),
            source,
        })?;
        for r in reaped {
            tracing::warn!(agent = %config.name, pgid = r.pgid, "killed a task process group left over from an earlier run");
        }
        testbed_lifeline::record_in(&groups).map_err(|source| AgentError::State {
            path: groups.clone(),
            source,
        })?;
        let mut loaded: BTreeMap<String, DynPlugin> = BTreeMap::new();
        let exec = match &config.plugin_dir {
            Some(dir) => plugins::load_exec_plugins(dir)
                .await
                .map_err(|e| AgentError::ExecPlugins(e.to_string()))?,
            None => Vec::new(),
        };
        let exec_names: Vec<String> = exec.iter().map(|p| p.spec().name).collect();
        for name in &config.plugins {
            let plugin = plugins::find(builtin, name)
                .or_else(|| exec.iter().find(|p| &p.spec().name == name).cloned())
                .ok_or_else(|| AgentError::UnknownPlugin {
                    name: name.clone(),
                    builtin: plugins::names(builtin).join(", "),
                    exec: if exec_names.is_empty() {
                        "none".into()
                    } else {
                        exec_names.join(", ")
                    },
                })?;
            loaded.insert(name.clone(), plugin);
        }
        // Every exec plugin in the directory is carried: dropping a file
        // there is how an operator adds a capability.
        for p in exec {
            let name = p.spec().name;
            if plugins::find(builtin, &name).is_some() {
                return Err(AgentError::ExecPlugins(format!(
                    "exec plugin `{name}` has the name of a built-in plugin; rename it"
                )));
            }
            loaded.entry(name).or_insert(p);
        }

        let root = nix::unistd::geteuid().is_root();
        let run_as = match &config.run_as {
            Some(user) => Some(crate::process::resolve_run_as(user).map_err(AgentError::RunAs)?),
            None => None,
        };
        if root && run_as.is_none() {
            tracing::warn!(
                "agent `{}` runs as ROOT and so will every task it is given: \
                 pass --run-as USER (`testbed agent`, `testbed up`) or set run_as in \
                 the agent config to drop tasks' privileges",
                config.name
            );
        }
        let settings = Arc::new(ExecSettings {
            allow_shell: config.allow_shell,
            run_as,
        });

        for sub in ["tasks", "work"] {
            let dir = config.state_dir.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| AgentError::State {
                path: dir.clone(),
                source,
            })?;
        }
        let tls = crate::tls::client_config(&config)?;
        let http = match &tls {
            Some(tls) => reqwest::Client::builder()
                .use_preconfigured_tls((**tls).clone())
                .build()
                .map_err(|e| crate::tls::TlsError::Config(e.to_string()))?,
            None => reqwest::Client::new(),
        };
        let identity = read_identity(&config.state_dir);
        let slots = Arc::new(Semaphore::new(config.capacity as usize));
        let metrics = AgentMetrics::new(loaded.keys().cloned().collect(), config.capacity);
        let metrics_listener =
            match &config.metrics_listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| AgentError::MetricsBind {
                        addr: addr.clone(),
                        source,
                    },
                )?),
                None => None,
            };
        Ok(Agent {
            shared: Arc::new(Shared {
                config,
                plugins: loaded,
                settings,
                http,
                tls,
                tasks: Mutex::new(HashMap::new()),
                seen: Mutex::new(HashSet::new()),
                outgoing: Mutex::new(None),
                identity: Mutex::new(identity),
                credential: Mutex::new(None),
                slots,
                contact: Mutex::new(Contact::default()),
                fenced: Mutex::new(HashSet::new()),
                metrics,
                metrics_listener: Mutex::new(metrics_listener),
            }),
        })
    }

    /// Where `/metrics` is served, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        lock(&self.shared.metrics_listener)
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn plugin_specs(&self) -> Vec<PluginSpec> {
        self.shared.plugins.values().map(|p| p.spec()).collect()
    }

    /// The uuid the server gave this agent, once known.
    pub fn uuid(&self) -> Option<Uuid> {
        lock(&self.shared.identity).uuid
    }

    /// Serves the server until `shutdown` fires, reconnecting with
    /// exponential back-off (with jitter) whenever the connection drops.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let fence = tokio::spawn(self.clone().fence());
        let exposition = lock(&self.shared.metrics_listener).take().map(|listener| {
            let metrics = self.shared.metrics.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = metrics.serve(listener, stop).await {
                    tracing::error!("metrics listener stopped: {e}");
                }
            })
        });
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let ended = self.session(&shutdown).await;
            if lock(&self.shared.outgoing).is_some() {
                self.shared
                    .metrics
                    .session_ended(matches!(ended, Ok(SessionEnd::Shutdown)));
            }
            match ended {
                Ok(SessionEnd::Shutdown) => break,
                Ok(SessionEnd::Disconnected(why)) => {
                    tracing::warn!(agent = %self.shared.config.name, "disconnected: {why}");
                }
                Err(AgentError::Refused(msg)) => return Err(AgentError::Refused(msg)),
                Err(e) => {
                    tracing::warn!(agent = %self.shared.config.name, "session failed: {e}");
                }
            }
            *lock(&self.shared.outgoing) = None;
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        fence.abort();
        if let Some(exposition) = exposition {
            exposition.abort();
        }
        // Running tasks do not outlive the agent: kill their process groups.
        for entry in lock(&self.shared.tasks).values() {
            if let Entry::Running { cancel, .. } = entry {
                cancel.cancel();
            }
        }
        Ok(())
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<SessionEnd, AgentError> {
        let cfg = &self.shared.config;
        let url = ws_url(&cfg.server);
        let credential = lock(&self.shared.credential).clone();
        let token = credential.clone().unwrap_or_else(|| cfg.token.clone());
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| AgentError::Connect {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let auth =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| AgentError::Connect {
                url: url.clone(),
                message: format!("token is not a valid header value: {e}"),
            })?;
        request.headers_mut().insert("authorization", auth);
        let connector = self
            .shared
            .tls
            .clone()
            .map(tokio_tungstenite::Connector::Rustls);
        let dialled =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await;
        let (ws, _) = match dialled {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp))
                if resp.status().as_u16() == 401 =>
            {
                if credential.is_some() {
                    // Our own credential expired or the server's secret changed:
                    // fall back to the join token on the next attempt.
                    *lock(&self.shared.credential) = None;
                    return Ok(SessionEnd::Disconnected("credential refused".into()));
                }
                return Err(AgentError::Refused("join token refused (401)".into()));
            }
            Err(e) => {
                let mut message = e.to_string();
                if message.contains("certificate") {
                    message.push_str(
                        " (the server's certificate is not trusted: give the CA that signed it \
                         with --ca-file, or pin it with --server-fingerprint)",
                    );
                }
                return Err(AgentError::Connect { url, message });
            }
        };
        let (mut sink, mut stream) = ws.split();

        let (running, unacked) = {
            let tasks = lock(&self.shared.tasks);
            let mut running = Vec::new();
            let mut unacked = Vec::new();
            for (id, e) in tasks.iter() {
                match e {
                    Entry::Running { .. } => running.push(*id),
                    Entry::Finished { .. } => unacked.push(*id),
                }
            }
            (running, unacked)
        };
        let hello = AgentMessage::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            uuid: lock(&self.shared.identity).uuid,
            profile: AgentProfile {
                name: cfg.name.clone(),
                host: cfg.host.clone().unwrap_or_else(hostname),
                labels: cfg.labels.clone(),
                groups: cfg.groups.clone(),
                plugins: self.plugin_specs(),
                capacity: cfg.capacity,
                version: env!("CARGO_PKG_VERSION").to_string(),
                root: nix::unistd::geteuid().is_root(),
                run_as: self.shared.settings.run_as.as_ref().map(|r| r.user.clone()),
            },
            running,
            unacked,
        });
        send(&mut sink, &hello).await?;

        let welcome = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| AgentError::Protocol("no welcome within 10 s".into()))?;
        let heartbeat = match welcome {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Welcome {
                    uuid,
                    credential,
                    heartbeat_secs,
                    lease_ttl_secs,
                    id,
                    ..
                }) => {
                    tracing::info!(agent = %cfg.name, %uuid, id, "connected to {}", cfg.server);
                    self.heard_from_server(Some(Duration::from_secs(lease_ttl_secs.max(1))));
                    *lock(&self.shared.credential) = Some(credential);
                    let changed = {
                        let mut ident = lock(&self.shared.identity);
                        let changed = ident.uuid != Some(uuid);
                        ident.uuid = Some(uuid);
                        changed
                    };
                    if changed {
                        write_identity(&cfg.state_dir, uuid)?;
                    }
                    Duration::from_secs(heartbeat_secs.max(1))
                }
                Ok(ServerMessage::Error { message }) => return Err(AgentError::Refused(message)),
                Ok(other) => {
                    return Err(AgentError::Protocol(format!(
                        "expected welcome, got {other:?}"
                    )))
                }
                Err(e) => return Err(AgentError::Protocol(format!("bad welcome: {e}"))),
            },
            Some(Ok(other)) => {
                return Err(AgentError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )))
            }
            Some(Err(e)) => return Ok(SessionEnd::Disconnected(e.to_string())),
            None => return Ok(SessionEnd::Disconnected("closed before welcome".into())),
        };

        let (tx, mut rx) = mpsc::unbounded_channel();
        *lock(&self.shared.outgoing) = Some(tx.clone());
        self.shared.metrics.session_started();
        self.replay(&tx).await;

        let mut sampler = (!cfg.simulated).then(Sampler::new);
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Pings between heartbeats: the pongs show the server still answers,
        // so only a real silence trips the fence.
        let mut ping = tokio::time::interval((heartbeat / 2).max(Duration::from_millis(100)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok(SessionEnd::Shutdown);
                }
                _ = tick.tick() => {
                    let running = self.running_ids();
                    let metrics = sampler.as_mut().map(Sampler::sample).unwrap_or_default();
                    let msg = AgentMessage::Heartbeat { metrics, running };
                    if let Err(e) = send(&mut sink, &msg).await {
                        return Ok(SessionEnd::Disconnected(e.to_string()));
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                        return Ok(SessionEnd::Disconnected(e.to_string()));
                    }
                }
                out = rx.recv() => {
                    let Some(msg) = out else { continue };
                    if let Err(e) = send(&mut sink, &msg).await {
                        return Ok(SessionEnd::Disconnected(e.to_string()));
                    }
                }
                incoming = stream.next() => match self.heard(incoming) {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(msg) => self.handle(msg, &tx),
                        Err(e) => tracing::warn!("ignoring unreadable server message: {e}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return Ok(SessionEnd::Disconnected(format!("server closed: {frame:?}")));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ok(SessionEnd::Disconnected(e.to_string())),
                    None => return Ok(SessionEnd::Disconnected("connection closed".into())),
                },
            }
        }
    }

    fn heard_from_server(&self, lease_ttl: Option<Duration>) {
        let mut contact = lock(&self.shared.contact);
        contact.at = Some(Instant::now());
        if lease_ttl.is_some() {
            contact.lease_ttl = lease_ttl;
        }
    }

    /// Notes that the server spoke (any frame, pongs included).
    fn heard<T, E>(&self, incoming: Option<Result<T, E>>) -> Option<Result<T, E>> {
        if matches!(incoming, Some(Ok(_))) {
            self.heard_from_server(None);
        }
        incoming
    }

    /// Kills the running tasks once the server has been silent for half the
    /// lease it gave. By the time the lease runs out the server calls them
    /// lost and may run them again elsewhere: the two attempts must never
    /// overlap, and an outcome that cannot be reported in time is no use.
    async fn fence(self) {
        loop {
            let (silent, check) = {
                let contact = lock(&self.shared.contact);
                let check = contact
                    .lease_ttl
                    .map_or(FENCE_CHECK, |ttl| (ttl / 20).max(FENCE_CHECK_MIN));
                match (contact.at, contact.lease_ttl) {
                    (Some(at), Some(ttl)) if at.elapsed() > ttl / 2 => (Some(at.elapsed()), check),
                    _ => (None, check),
                }
            };
            let Some(silent) = silent else {
                tokio::time::sleep(check).await;
                continue;
            };
            {
                let tasks = lock(&self.shared.tasks);
                let mut fenced = lock(&self.shared.fenced);
                for (id, entry) in tasks.iter() {
                    if let Entry::Running { cancel, .. } = entry {
                        if fenced.insert(*id) {
                            tracing::warn!(
                                agent = %self.shared.config.name,
                                task_id = %id,
                                "no word from the server for {} ms, over half the lease: killing the task",
                                silent.as_millis()
                            );
                            cancel.cancel();
                        }
                    }
                }
            }
            tokio::time::sleep(FENCE_CHECK_MIN).await;
        }
    }

    fn running_ids(&self) -> Vec<Uuid> {
        lock(&self.shared.tasks)
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Running { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Resends what the server may have missed while we were apart.
    async fn replay(&self, tx: &mpsc::UnboundedSender<AgentMessage>) {
        let snapshot: Vec<(Uuid, Option<TaskOutcome>)> = lock(&self.shared.tasks)
            .iter()
            .map(|(id, e)| match e {
                Entry::Running { .. } => (*id, None),
                Entry::Finished { outcome } => (*id, Some(outcome.clone())),
            })
            .collect();
        for (id, outcome) in snapshot {
            let path = self.log_path(&id);
            if let Ok(bytes) = tokio::fs::read(&path).await {
                let text = String::from_utf8_lossy(&bytes);
                let mut offset = 0usize;
                for piece in split_utf8(&text, LOG_CHUNK) {
                    let _ = tx.send(AgentMessage::Log {
                        task_id: id,
                        offset: offset as u64,
                        data: piece.to_string(),
                    });
                    offset += piece.len();
                }
            }
            if let Some(outcome) = outcome {
                let _ = tx.send(AgentMessage::Result {
                    task_id: id,
                    outcome,
                });
            }
        }
    }

    fn handle(&self, msg: ServerMessage, tx: &mpsc::UnboundedSender<AgentMessage>) {
        match msg {
            ServerMessage::Assign { task, traceparent } => {
                let fresh = lock(&self.shared.seen).insert(task.id);
                if !fresh {
                    // Already running or done here; if done and unacked, the
                    // result is resent so the server can settle it.
                    if let Some(Entry::Finished { outcome }) =
                        lock(&self.shared.tasks).get(&task.id)
                    {
                        let _ = tx.send(AgentMessage::Result {
                            task_id: task.id,
                            outcome: outcome.clone(),
                        });
                    }
                    return;
                }
                let cancel = CancellationToken::new();
                let (control, control_rx) = watch::channel(Control::Run);
                lock(&self.shared.tasks).insert(
                    task.id,
                    Entry::Running {
                        cancel: cancel.clone(),
                        control,
                    },
                );
                let agent = self.clone();
                let span = execute_span(&task, traceparent.as_deref());
                tokio::spawn(
                    async move { agent.run_task(*task, cancel, control_rx).await }.instrument(span),
                );
            }
            ServerMessage::Cancel { task_id } => {
                if let Some(Entry::Running { cancel, .. }) = lock(&self.shared.tasks).get(&task_id)
                {
                    tracing::info!(%task_id, "cancel requested");
                    cancel.cancel();
                }
            }
            ServerMessage::Pause { task_id } | ServerMessage::Resume { task_id } => {
                let want = if matches!(msg, ServerMessage::Pause { .. }) {
                    Control::Pause
                } else {
                    Control::Run
                };
                if let Some(Entry::Running { control, .. }) = lock(&self.shared.tasks).get(&task_id)
                {
                    tracing::info!(%task_id, "{want:?} requested");
                    control.send_replace(want);
                }
            }
            ServerMessage::Ack { task_id } => {
                let removed = lock(&self.shared.tasks).remove(&task_id);
                // A task that printed nothing has no log file (see `pump_log`).
                let silent = matches!(
                    &removed,
                    Some(Entry::Finished { outcome }) if outcome.log_bytes == 0
                );
                if removed.is_some() && !silent {
                    let path = self.log_path(&task_id);
                    tokio::spawn(async move {
                        let _ = tokio::fs::remove_file(path).await;
                    });
                }
            }
            ServerMessage::Welcome { .. } => {}
            ServerMessage::Error { message } => tracing::warn!("server: {message}"),
        }
    }

    /// Creates the task's work directory, owned by the `run_as` user when
    /// tasks drop privileges, so they can write in it.
    async fn make_work_dir(&self, dir: &Path) -> Result<(), PluginError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| PluginError::io(format!("creating {}", dir.display()), e))?;
        if let Some(run_as) = &self.shared.settings.run_as {
            std::os::unix::fs::chown(dir, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
                PluginError::io(format!("handing {} to {}", dir.display(), run_as.user), e)
            })?;
        }
        Ok(())
    }

    fn log_path(&self, task: &Uuid) -> PathBuf {
        self.shared
            .config
            .state_dir
            .join("tasks")
            .join(format!("{task}.log"))
    }

    fn emit(&self, msg: AgentMessage) {
        if let Some(tx) = lock(&self.shared.outgoing).as_ref() {
            let _ = tx.send(msg);
        }
    }

    async fn run_task(
        &self,
        task: Task,
        cancel: CancellationToken,
        control: watch::Receiver<Control>,
    ) {
        let id = task.id;
        let accepted = Instant::now();
        self.shared.metrics.task_accepted();
        let permit = tokio::select! {
            p = self.shared.slots.clone().acquire_owned() => p.ok(),
            _ = cancel.cancelled() => None,
        };
        let ran = permit.is_some();
        self.shared
            .metrics
            .task_slot(ran.then(|| accepted.elapsed()));
        let started_at = testbed_core::now();
        let (log, rx) = LogSink::channel();
        let pump = tokio::spawn(pump_log(self.clone(), id, self.log_path(&id), rx));
        let (metrics, metrics_rx) = MetricSink::channel();
        let metrics_pump = tokio::spawn(pump_metrics(
            self.clone(),
            id,
            metrics_rx,
            !self.shared.config.simulated,
        ));
        let work_dir = self
            .shared
            .config
            .state_dir
            .join("work")
            .join(id.to_string());

        let result = if permit.is_none() {
            Err(PluginError::Cancelled)
        } else if let Err(e) = self.make_work_dir(&work_dir).await {
            Err(e)
        } else {
            match self.shared.plugins.get(&task.plugin) {
                None => Err(PluginError::Refused(format!(
                    "this agent does not carry plugin `{}`",
                    task.plugin
                ))),
                Some(plugin) => {
                    let ctx = TaskContext {
                        task_id: id,
                        log: log.clone(),
                        cancel: cancel.clone(),
                        work_dir: work_dir.clone(),
                        settings: self.shared.settings.clone(),
                        artifacts: Arc::new(HttpArtifacts {
                            agent: self.clone(),
                        }),
                        metrics: metrics.clone(),
                        control: control.clone(),
                    };
                    let run = plugin.invoke(&task.method, task.parameters.clone(), &ctx);
                    tokio::pin!(run);
                    // A task that ends within a few milliseconds needs no
                    // separate `started` (its result carries the start time):
                    // one durable write less on the server for short tasks.
                    tokio::select! {
                        r = &mut run => r,
                        _ = tokio::time::sleep(STARTED_AFTER) => {
                            self.emit(AgentMessage::Started {
                                task_id: id,
                                started_at,
                            });
                            run.await
                        }
                    }
                }
            }
        };
        // A fenced task's own ending (cancelled, killed by a signal) would
        // hide why it stopped; one that got to succeed keeps its result.
        let fenced = lock(&self.shared.fenced).remove(&id);
        let result = match result {
            Ok(out) if fenced && out.status != TaskStatus::Succeeded => {
                Err(PluginError::Failed(FENCED.into()))
            }
            Err(_) if fenced => Err(PluginError::Failed(FENCED.into())),
            other => other,
        };
        let (status, exit_code, value, error) = match result {
            Ok(out) => (out.status, out.exit_code, Some(out.result), None),
            Err(PluginError::Cancelled) => {
                log.line("[testbed] task cancelled");
                (
                    TaskStatus::Cancelled,
                    None,
                    None,
                    Some("cancelled".to_string()),
                )
            }
            Err(e) => {
                log.line(&format!("[testbed] error: {e}"));
                (TaskStatus::Error, None, None, Some(e.to_string()))
            }
        };
        let (status, value, error) = self
            .bound_result(id, &work_dir, &log, status, value, error)
            .await;
        drop(log);
        drop(metrics);
        let span = tracing::Span::current();
        span.record("status", status.as_str());
        if status != TaskStatus::Succeeded {
            span.record("otel.status_code", "error");
        }
        tracing::debug!(task = %id, %status, "task finished");
        // Live metrics go out before the result, so the server's series is
        // complete when it learns the task ended.
        let _ = metrics_pump.await;
        let log_bytes = pump.await.unwrap_or(0);
        self.shared
            .metrics
            .task_finished(&task.plugin, status, accepted.elapsed(), ran);
        let outcome = TaskOutcome {
            status,
            exit_code,
            result: value,
            error,
            started_at: Some(started_at),
            finished_at: testbed_core::now(),
            log_bytes,
        };
        lock(&self.shared.tasks).insert(
            id,
            Entry::Finished {
                outcome: outcome.clone(),
            },
        );
        self.emit(AgentMessage::Result {
            task_id: id,
            outcome,
        });
        // The work directory goes after the result (its removal is a
        // blocking-pool trip that no longer delays the round trip; nothing
        // reads the directory after the plugin ended), and the slot with it,
        // so the agent never holds more directories than its capacity.
        let _ = tokio::fs::remove_dir_all(&work_dir).await;
        drop(permit);
    }
}

/// The span of running `task` here, a child of the server's span of it
/// when the server sent its `traceparent`; none when traces are off.
fn execute_span(task: &Task, traceparent: Option<&str>) -> tracing::Span {
    let parent = traceparent.and_then(testbed_telemetry::otel::SpanRef::parse);
    testbed_telemetry::otel::child_of(parent, || {
        tracing::info_span!(
            "task.execute",
            task = %task.id,
            plugin = %task.plugin,
            method = %task.method,
            status = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    })
}

/// Moves a task's output to its log file and, batched, to the server.
/// Returns the log's total length in bytes.
async fn pump_log(
    agent: Agent,
    task: Uuid,
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) -> u64 {
    // The file is made with the first output: most short tasks print
    // nothing, and creating (then, on the ack, deleting) an empty file was
    // two blocking-pool trips per task. Replay finds no file and sends no
    // log, which is what an empty log is.
    let mut file: Option<tokio::fs::File> = None;
    let mut tried = false;
    let mut offset: u64 = 0;
    let mut pending = String::new();
    let mut open = true;
    while open {
        let deadline = tokio::time::sleep(LOG_FLUSH);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(bytes) => {
                        pending.push_str(&String::from_utf8_lossy(&bytes));
                        if pending.len() >= LOG_CHUNK { break; }
                    }
                    None => { open = false; break; }
                },
                _ = &mut deadline, if !pending.is_empty() => break,
            }
        }
        if pending.is_empty() {
            continue;
        }
        if !tried {
            tried = true;
            file = match tokio::fs::File::create(&path).await {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!("cannot keep log of {task} at {}: {e}", path.display());
                    None
                }
            };
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(pending.as_bytes()).await {
                tracing::warn!("writing log of {task}: {e}");
            }
        }
        for piece in split_utf8(&pending, LOG_CHUNK) {
            agent.emit(AgentMessage::Log {
                task_id: task,
                offset,
                data: piece.to_string(),
            });
            offset += piece.len() as u64;
        }
        pending.clear();
    }
    if let Some(mut f) = file {
        let _ = f.flush().await;
    }
    offset
}

/// How long a task runs before its system sampler is made (see
/// [`pump_metrics`]).
const SAMPLER_AFTER: Duration = Duration::from_millis(100);

/// Forwards a task's live measurements to the server, each with the
/// agent's system figures at that moment.
async fn pump_metrics(
    agent: Agent,
    task: Uuid,
    mut rx: mpsc::UnboundedReceiver<serde_json::Value>,
    sample: bool,
) {
    // A sampler reads several /proc files and lists the network interfaces:
    // made for every task, though only load tests send windows, it took a
    // quarter of the CPU of a stream of short tasks (the dispatch benchmark).
    // It is made once the task has run SAMPLER_AFTER, so the first window's
    // rates still cover most of its interval, or at the first window if that
    // comes sooner; a task that ends before either never makes one.
    let mut sampler: Option<Sampler> = None;
    let mut wanted = sample;
    let grace = tokio::time::sleep(SAMPLER_AFTER);
    tokio::pin!(grace);
    loop {
        let window = tokio::select! {
            w = rx.recv() => match w {
                Some(w) => w,
                None => return,
            },
            _ = &mut grace, if wanted => {
                wanted = false;
                sampler = Some(Sampler::new());
                continue;
            }
        };
        if wanted {
            wanted = false;
            sampler = Some(Sampler::new());
        }
        let system = sampler.as_mut().map(Sampler::sample).unwrap_or_default();
        agent.emit(AgentMessage::Metrics {
            task_id: task,
            window,
            system,
        });
    }
}

/// Splits `s` into pieces of at most `max` bytes on char boundaries.
fn split_utf8(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (a, b) = rest.split_at(end);
        out.push(a);
        rest = b;
    }
    out
}

/// The most a task's result may weigh in its message: the server refuses
/// larger messages, and a refused result would be resent at every reconnect
/// while the task never settles. The rest of the message (ids, times, the
/// error) fits in the margin.
const MAX_RESULT_BYTES: usize = testbed_core::protocol::MAX_MESSAGE_BYTES - 128 * 1024;
/// The most of a task's error message that is sent (a plugin's error may
/// quote a process's whole output).
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Where a result too large for its message is kept.
const RESULT_ARTIFACT: &str = "result.json";

impl Agent {
    /// A result too large for its message goes up as the task's artifact
    /// `result.json` instead, and the task ends in error saying so: the
    /// server cannot judge what it was not sent.
    async fn bound_result(
        &self,
        id: Uuid,
        work_dir: &Path,
        log: &LogSink,
        status: TaskStatus,
        value: Option<serde_json::Value>,
        error: Option<String>,
    ) -> (TaskStatus, Option<serde_json::Value>, Option<String>) {
        let error = error.map(|mut e| {
            if e.len() > MAX_ERROR_BYTES {
                let mut end = MAX_ERROR_BYTES;
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                e.truncate(end);
                e.push_str(" […]");
            }
            e
        });
        let Some(value) = value else {
            return (status, None, error);
        };
        if value.get("report_blob").is_some() {
            // The report went to a file (too large for the result): it
            // goes up before the result that refers to it, so the server
            // never holds a result whose report it cannot read.
            if let Err(e) = self.upload_report(id, &work_dir.join(REPORT_FILE)).await {
                let msg = format!("the task's report could not be kept: {e}");
                log.line(&format!("[testbed] error: {msg}"));
                return (TaskStatus::Error, None, Some(msg));
            }
        }
        let bytes = match serde_json::to_vec(&value) {
            Ok(b) if b.len() <= MAX_RESULT_BYTES => return (status, Some(value), error),
            Ok(b) => b,
            Err(e) => {
                return (
                    TaskStatus::Error,
                    None,
                    Some(format!("encoding the task's result: {e}")),
                )
            }
        };
        drop(value);
        let size = bytes.len();
        let path = work_dir.join(".testbed-result.json");
        let kept = match tokio::fs::write(&path, &bytes).await {
            Ok(()) => {
                drop(bytes);
                HttpArtifacts {
                    agent: self.clone(),
                }
                .upload(id, RESULT_ARTIFACT, &path)
                .await
                .map(|_| ())
            }
            Err(e) => Err(PluginError::io("writing the task's result", e)),
        };
        let mut msg = format!(
            "the task's result is {size} bytes, over the {MAX_RESULT_BYTES} a result may carry \
             to the server (run a kit this large with `testbed tck run`, or split it)"
        );
        match kept {
            Ok(()) => msg.push_str(&format!(
                "; it is kept whole as the task's artifact `{RESULT_ARTIFACT}`"
            )),
            Err(e) => msg.push_str(&format!("; keeping it as an artifact failed: {e}")),
        }
        log.line(&format!("[testbed] error: {msg}"));
        (TaskStatus::Error, None, Some(msg))
    }
}

/// How often an upload is tried when the server cannot be reached or
/// answers 5xx (a restart, a failover), with a pause growing by a second.
const UPLOAD_TRIES: u32 = 3;
/// Bytes read from a file and sent at a time while it uploads.
const UPLOAD_CHUNK: usize = 64 * 1024;

impl Agent {
    /// Uploads a task's report file to `PUT /api/agent/tasks/{id}/report`,
    /// streamed in [`UPLOAD_CHUNK`]s with its length declared, so a
    /// connection cut short is an incomplete request the server discards
    /// (it keeps a report only once all of it arrived).
    async fn upload_report(&self, task: Uuid, path: &Path) -> Result<(), PluginError> {
        let url = format!(
            "{}/api/agent/tasks/{task}/report",
            self.shared.config.server.trim_end_matches('/')
        );
        let mut tries = 0;
        loop {
            tries += 1;
            match self.put_file(&url, path).await {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) if resp.status().is_server_error() && tries < UPLOAD_TRIES => {}
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    return Err(PluginError::Failed(format!(
                        "uploading the report: {status}: {text}"
                    )));
                }
                Err(e) if tries < UPLOAD_TRIES => {
                    tracing::warn!(%task, "uploading the report (try {tries}): {e}");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_secs(u64::from(tries))).await;
        }
    }

    /// `PUT url` with the file at `path` as the body, streamed.
    async fn put_file(&self, url: &str, path: &Path) -> Result<reqwest::Response, PluginError> {
        let shared = &self.shared;
        let credential = lock(&shared.credential)
            .clone()
            .ok_or_else(|| PluginError::Failed("not connected to a server".into()))?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| PluginError::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            UPLOAD_CHUNK,
        ));
        shared
            .http
            .put(url)
            .bearer_auth(credential)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| PluginError::Failed(format!("uploading {}: {e}", path.display())))
    }
}

struct HttpArtifacts {
    agent: Agent,
}

#[async_trait]
impl ArtifactSink for HttpArtifacts {
    async fn upload(&self, task: Uuid, name: &str, path: &Path) -> Result<Artifact, PluginError> {
        let shared = &self.agent.shared;
        let credential = lock(&shared.credential)
            .clone()
            .ok_or_else(|| PluginError::Failed("not connected to a server".into()))?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| PluginError::io(format!("opening artifact {}", path.display()), e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let url = format!(
            "{}/api/agent/tasks/{task}/artifacts/{}",
            shared.config.server.trim_end_matches('/'),
            url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
        );
        let resp = shared
            .http
            .put(&url)
            .bearer_auth(credential)
            .body(body)
            .send()
            .await
            .map_err(|e| PluginError::Failed(format!("uploading artifact `{name}`: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(PluginError::Failed(format!(
                "uploading artifact `{name}`: {status}: {text}"
            )));
        }
        resp.json::<Artifact>()
            .await
            .map_err(|e| PluginError::Failed(format!("uploading artifact `{name}`: {e}")))
    }
}

async fn send<S>(sink: &mut S, msg: &AgentMessage) -> Result<(), AgentError>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(msg).map_err(|e| AgentError::Protocol(e.to_string()))?;
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|e| AgentError::Protocol(e.to_string()))
}

fn ws_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/ws/agent")
}

fn read_identity(state_dir: &Path) -> Identity {
    std::fs::read(state_dir.join("identity.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_identity(state_dir: &Path, uuid: Uuid) -> Result<(), AgentError> {
    let path = state_dir.join("identity.json");
    let tmp = state_dir.join("identity.json.tmp");
    let body = serde_json::to_vec(&Identity { uuid: Some(uuid) })
        .map_err(|e| AgentError::Protocol(e.to_string()))?;
    // Write-then-rename so a kill mid-write never leaves a torn identity.
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| AgentError::State { path, source })
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it:
/// the maps here stay consistent because every update is a single insert or
/// remove.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_char_boundaries() {
        let s = "aé".repeat(10);
        let parts = split_utf8(&s, 4);
        assert_eq!(parts.concat(), s);
        assert!(parts.iter().all(|p| p.len() <= 4));
    }

    #[test]
    fn ws_url_from_http() {
        assert_eq!(ws_url("http://h:1/"), "ws://h:1/ws/agent");
        assert_eq!(ws_url("https://h"), "wss://h/ws/agent");
    }
}
