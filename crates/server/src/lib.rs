//! The Testbed server: API, agent hub and controller, over one store.
//!
//! [`start`] binds the listener, bootstraps shared secrets and the admin
//! user, and spawns the background loops; the returned [`Server`] is shut
//! down with [`Server::shutdown`].
//!
//! * [`api`] — HTTP routes and the OpenAPI document;
//! * [`agent_session`] — the agent protocol's server end;
//! * [`dispatch`] — choosing an agent, creating and settling tasks;
//! * [`controller`] — the assignment relay and the leader's reconcile loop;
//! * [`auth`], [`blobs`], [`records`], [`hub`], [`error`], [`state`].

pub mod agent_session;
pub mod api;
pub mod auth;
pub mod blobs;
pub mod controller;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod hub;
pub mod performance;
pub mod records;
pub mod state;

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
use crate::hub::Hub;
use crate::state::{AppState, Inner};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("bootstrap: {0}")]
    Bootstrap(String),
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
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
    let boot = auth::bootstrap(&config.store, config.admin_password, config.join_token)
        .await
        .map_err(|e| ServerError::Bootstrap(e.message))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    let shutdown = CancellationToken::new();
    let state = AppState(Arc::new(Inner {
        store: config.store,
        blobs: config.blobs,
        auth: Auth::new(&boot.secret, boot.join_token.clone(), config.token_ttl),
        hub: Hub::default(),
        settings: config.settings,
        replica: config.replica,
        shutdown: shutdown.clone(),
        leading: Default::default(),
        perf: Default::default(),
        loops: Default::default(),
    }));

    // Small, latency-bound messages (agent protocol, API calls) must not
    // wait for Nagle's algorithm and the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = api::router(state.clone());
    let stop = shutdown.clone();
    let http = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(e) = served {
            tracing::error!("HTTP server: {e}");
        }
    });
    let relay = tokio::spawn(controller::assignment_relay(state.clone()));
    let ctrl = tokio::spawn(controller::run_controller(state.clone()));
    tracing::info!(%addr, store = %state.store.describe(), blobs = %state.blobs.describe(), "server listening");
    Ok(Server {
        addr,
        join_token: boot.join_token,
        generated_admin_password: boot.generated_admin_password,
        admin_created: boot.admin_created,
        shutdown,
        tasks: vec![http, relay, ctrl],
    })
}
