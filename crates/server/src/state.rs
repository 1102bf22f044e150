//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use testbed_store::DynStore;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::blobs::Blobs;
use crate::sessions::AgentSessions;

/// Tunables of a server replica.
#[derive(Debug, Clone)]
pub struct Settings {
    /// TTL of agent leases: an agent silent this long is gone.
    pub lease_ttl: Duration,
    /// Largest JSON request body.
    pub max_body: usize,
    /// Largest artifact upload.
    pub max_artifact: usize,
    /// Connections open at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_connections_per_address: usize,
    /// Time a connection has to send a complete request header (from its
    /// opening or its previous response, so also the keep-alive idle time).
    pub header_read_timeout: Duration,
    /// Serve HTTPS with this certificate and key (re-read when they change).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Who may read `/metrics`, and on which address.
    pub metrics: crate::metrics::MetricsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_ttl: Duration::from_secs(10),
            max_body: 1024 * 1024,
            max_artifact: 512 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 2_000,
            header_read_timeout: Duration::from_secs(10),
            tls: None,
            metrics: Default::default(),
        }
    }
}

pub struct Inner {
    pub store: DynStore,
    pub blobs: Blobs,
    pub auth: Auth,
    pub sessions: AgentSessions,
    pub settings: Settings,
    /// This replica's name, recorded with the agents it holds.
    pub replica: String,
    pub shutdown: CancellationToken,
    /// This replica currently leads the controller.
    pub leading: std::sync::atomic::AtomicBool,
    /// Which execution each load task reporting here belongs to (the live
    /// series themselves are in the store, see `performance`).
    pub perf: crate::performance::Live,
    /// Health of the background loops (watches of the relay and the plan
    /// engine), shown by `/healthz`.
    pub loops: crate::controller::Loops,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Store counters that many callers draw from at once (agent ids).
    pub counters: crate::records::Counters,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
