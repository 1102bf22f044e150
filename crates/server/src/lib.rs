//! The Testbed server: API, agent sessions and controller, over one store.
//!
//! [`start`] binds the listener, then bootstraps shared secrets and the admin
//! user, and spawns the background loops; the returned [`Server`] is shut
//! down with [`Server::shutdown`].
//!
//! * [`api`] — HTTP routes and the OpenAPI document;
//! * [`agent_session`] — the agent protocol's server end;
//! * [`dispatch`] — choosing an agent, creating and settling tasks;
//! * [`controller`] — the assignment relay and the leader's reconcile loop;
//! * [`listen`], [`tls`] — the accept loop, its limits and HTTPS;
//! * [`metrics`] — Prometheus `/metrics`;
//! * [`auth`], [`blobs`], [`records`], [`sessions`], [`error`], [`state`].

pub mod agent_session;
pub mod api;
pub mod auth;
pub mod blobs;
pub mod controller;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod listen;
pub mod metrics;
pub mod performance;
pub mod placement;
pub mod records;
pub mod sessions;
pub mod state;
#[cfg(test)]
mod test_fixtures;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use testbed_store::DynStore;
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use state::Settings;

use crate::auth::Auth;
use crate::blobs::Blobs;
use crate::sessions::AgentSessions;
use crate::state::{AppState, Inner};

#[derive(Debug, Error)]
pub enum ServerError {
    /// The message says what to do and names the OS error once (the error
    /// is kept as a field, not as a `source`, which printing the chain
    /// would repeat).
    #[error("{}", bind_message(addr, cause))]
    Bind { addr: String, cause: std::io::Error },
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("--metrics-listen {addr}: {cause}")]
    MetricsBind { addr: String, cause: std::io::Error },
}

/// What a failed bind tells the user: `testbed up` and `testbed server`
/// both take `--listen HOST:PORT`.
fn bind_message(addr: &str, cause: &std::io::Error) -> String {
    match cause.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{addr} is already in use — another Testbed? stop it or pass --listen HOST:PORT"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("{addr} is not an address of this machine ({cause}); pass --listen HOST:PORT")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "not allowed to listen on {addr} ({cause}; ports below 1024 need privileges); \
             pass --listen HOST:PORT"
        ),
        _ => format!("cannot listen on {addr}: {cause}; pass --listen HOST:PORT"),
    }
}

pub struct ServerConfig {
    pub listen: String,
    pub store: DynStore,
    pub blobs: Blobs,
    pub settings: Settings,
    /// `TESTBED_ADMIN_PASSWORD`: the admin's password on first start.
    pub admin_password: Option<String>,
    /// `TESTBED_JOIN_TOKEN`: the agents' join token (else generated once).
    pub join_token: Option<String>,
    pub token_ttl: Duration,
    pub replica: String,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub join_token: String,
    /// Set when this start created the admin with a generated password.
    pub generated_admin_password: Option<String>,
    pub admin_created: bool,
    /// The certificate in service when serving HTTPS.
    pub tls: Option<Arc<tls::CertStore>>,
    pub listen_stats: Arc<listen::ListenStats>,
    /// Where `/metrics` is served without auth (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// SHA-256 fingerprint of the certificate in service, when serving HTTPS.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls.as_ref().map(|t| t.fingerprint())
    }

    /// Stops accepting, closes agent sessions and waits for the loops.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// How often the certificate files are checked for a renewal.
const TLS_RELOAD_EVERY: Duration = Duration::from_secs(2);

pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
    // A bad certificate must stop the start before anything is bound.
    let cert_store = match &config.settings.tls {
        Some(files) => Some(tls::CertStore::load(files.clone())?),
        None => None,
    };
    let acceptor = match &cert_store {
        Some(store) => Some(tokio_rustls::TlsAcceptor::from(store.server_config()?)),
        None => None,
    };
    // Bind before the bootstrap: a start that cannot listen must not create
    // an admin whose generated password nobody would ever see.
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|cause| ServerError::Bind {
            addr: config.listen.clone(),
            cause,
        })?;
    let addr = listener.local_addr().map_err(|cause| ServerError::Bind {
        addr: config.listen.clone(),
        cause,
    })?;
    // Likewise the metrics listener: a typo in its address stops the start.
    let metrics_listener = match &config.settings.metrics.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|cause| {
            ServerError::MetricsBind {
                addr: addr.clone(),
                cause,
            }
        })?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|cause| ServerError::MetricsBind {
            addr: config.settings.metrics.listen.clone().unwrap_or_default(),
            cause,
        })?),
        None => None,
    };
    let boot = auth::bootstrap(&config.store, config.admin_password, config.join_token)
        .await
        .map_err(|e| ServerError::Bootstrap(e.message))?;
    let shutdown = CancellationToken::new();
    let limits = listen::Limits {
        max_connections: listen::effective_max_connections(config.settings.max_connections),
        max_connections_per_address: config.settings.max_connections_per_address.max(1),
        header_read_timeout: config.settings.header_read_timeout,
    };
    if limits.max_connections < config.settings.max_connections {
        tracing::warn!(
            "connection limit lowered from {} to {} to fit the open-file limit (ulimit -n)",
            config.settings.max_connections,
            limits.max_connections
        );
    }
    let auth = Auth::new(&boot.secret, boot.join_token.clone(), config.token_ttl);
    let metrics = Arc::new(metrics::Metrics::new(auth.limiter().failures()));
    let state = AppState(Arc::new(Inner {
        // Wrapped here, once, so every store call of this replica is timed.
        store: metrics::InstrumentedStore::wrap(config.store, metrics.store()),
        blobs: config.blobs,
        auth,
        sessions: AgentSessions::default(),
        settings: config.settings,
        replica: config.replica,
        shutdown: shutdown.clone(),
        leading: Default::default(),
        perf: Default::default(),
        loops: Default::default(),
        metrics,
        counters: Default::default(),
    }));

    let app = api::router(state.clone());
    let listen_stats = Arc::new(listen::ListenStats::default());
    let http = tokio::spawn(listen::serve(
        listener,
        app,
        acceptor,
        limits,
        listen_stats.clone(),
        shutdown.clone(),
    ));
    if let Some(store) = &cert_store {
        store.clone().watch(TLS_RELOAD_EVERY, shutdown.clone());
    }
    let mut tasks = vec![http];
    if let Some(listener) = metrics_listener {
        let app = metrics::open_router(state.clone());
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("metrics listener stopped: {e}");
            }
        }));
    }
    let relay = tokio::spawn(controller::assignment_relay(state.clone()));
    let fleet = tokio::spawn(placement::follow(state.clone()));
    let ctrl = tokio::spawn(controller::run_controller(state.clone()));
    tracing::info!(%addr, store = %state.store.describe(), blobs = %state.blobs.describe(), "server listening");
    Ok(Server {
        addr,
        join_token: boot.join_token,
        generated_admin_password: boot.generated_admin_password,
        admin_created: boot.admin_created,
        tls: cert_store,
        listen_stats,
        metrics_addr,
        shutdown,
        tasks: {
            tasks.extend([relay, fleet, ctrl]);
            tasks
        },
    })
}
