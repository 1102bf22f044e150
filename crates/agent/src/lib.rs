//! The Testbed agent: a test device that dials a server, announces its
//! plugins and runs the tasks it is assigned.
//!
//! * [`plugin`] — the trait every capability implements;
//! * [`plugins`] — the built-in plugins and the exec-plugin loader;
//! * [`process`] — child processes in their own process group, killable as one;
//! * [`config`] — the agent's configuration (flags or `agent.toml`);
//! * [`runtime`] — the connection loop, task runner and result outbox;
//! * [`tls`] — whom the agent trusts on an `https://` server;
//! * [`metrics`] — system metrics sent with heartbeats;
//! * [`prometheus`] — the agent's own `/metrics` (`--metrics-listen`).

pub mod config;
pub mod metrics;
pub mod plugin;
pub mod plugins;
pub mod process;
pub mod prometheus;
pub mod runtime;
pub mod tls;

pub use config::AgentConfig;
pub use runtime::Agent;
