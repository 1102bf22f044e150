//! The agent protocol: JSON messages over one WebSocket that the agent dials.
//!
//! ```text
//! agent                                   server
//!   │── GET /ws/agent (Bearer join token or agent credential)
//!   │── hello {name, host, labels, plugins, running…} ─▶
//!   │◀─ welcome {agent uuid, id, credential, ttl} ──────│
//!   │── heartbeat {metrics, running} every ttl/3 ──────▶│ keeps the lease
//!   │◀─ assign {task} ──────────────────────────────────│
//!   │── started / log {offset, data} / result ────────▶│
//!   │◀─ ack {task_id} ──────────────────────────────────│ result stored
//!   │◀─ cancel {task_id} ───────────────────────────────│
//! ```
//!
//! Every message is idempotent by task id so that an agent that reconnects can
//! resend what the server may have missed: a duplicate `assign` is ignored by
//! the agent, a duplicate `log` chunk or `result` by the server.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agent::{AgentProfile, SystemMetrics};
use crate::task::{Task, TaskOutcome};

/// Version of this protocol; the server refuses agents of another major.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message either side accepts. An agent keeps what would not
/// fit (a huge task result) out of its messages rather than have it refused.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    Hello(Hello),
    Heartbeat {
        metrics: SystemMetrics,
        running: Vec<Uuid>,
    },
    /// The task's process started.
    Started {
        task_id: Uuid,
        started_at: chrono::DateTime<chrono::Utc>,
    },
    /// A chunk of the task's output starting at byte `offset` of its log.
    Log {
        task_id: Uuid,
        offset: u64,
        data: String,
    },
    Result {
        task_id: Uuid,
        outcome: TaskOutcome,
    },
    /// A measurement a plugin emitted while the task runs (for `load`: one
    /// per-second window of the engine), with the agent's system figures at
    /// that moment. Best effort: not replayed after a reconnect, so anything
    /// that must be exact also goes into the task's result.
    Metrics {
        task_id: Uuid,
        window: serde_json::Value,
        system: SystemMetrics,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The uuid the agent had before (kept in its state directory), so its
    /// registration and numeric id survive restarts.
    pub uuid: Option<Uuid>,
    /// Name, host, plugins, capacity…: stored as the agent's record as-is.
    #[serde(flatten)]
    pub profile: AgentProfile,
    /// Tasks still running on the agent (after a reconnect).
    pub running: Vec<Uuid>,
    /// Tasks that finished but whose result the server has not acknowledged;
    /// the agent resends their logs and results right after `welcome`.
    pub unacked: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        uuid: Uuid,
        id: u64,
        /// A credential of the agent's own to reconnect with.
        credential: String,
        lease_ttl_secs: u64,
        heartbeat_secs: u64,
    },
    Assign {
        task: Box<Task>,
        /// W3C trace context of the server's span of the task, when the
        /// server exports traces: the agent's span of the run is its child.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    Cancel {
        task_id: Uuid,
    },
    /// Hold the task (no new work; what is in flight finishes).
    Pause {
        task_id: Uuid,
    },
    /// Continue a paused task.
    Resume {
        task_id: Uuid,
    },
    /// The server holds the task's result; the agent may forget it.
    Ack {
        task_id: Uuid,
    },
    /// The server refuses the session (bad protocol, duplicate, …).
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_type() {
        let m = AgentMessage::Log {
            task_id: Uuid::nil(),
            offset: 3,
            data: "hi".into(),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "log");
        assert_eq!(v["offset"], 3);
        let back: AgentMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
