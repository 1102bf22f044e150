//! `/healthz`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub store: String,
    pub revision: i64,
    pub replica: String,
    /// Agents connected to this replica.
    pub agents_connected: usize,
    /// This replica runs the controller (plan engine, lost-task sweeps).
    pub controller_leader: bool,
    /// Every background loop of this replica works: its watches are open
    /// (a broken one is re-opened with back-off; details are in the log).
    pub controller_loops_ok: bool,
    /// The loops that are failing right now, by name.
    pub controller_loops_failing: Vec<String>,
}
