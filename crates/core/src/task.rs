//! Tasks: one invocation of one plugin method on one agent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Assigned to an agent, not yet started there.
    Queued,
    Running,
    /// Finished and the plugin reported success (exit code 0 for commands).
    Succeeded,
    /// Finished and the plugin reported failure (non-zero exit code).
    Failed,
    /// The plugin could not run the task at all (bad parameters on the agent,
    /// command not found, …).
    Error,
    Cancelled,
    /// Its agent's lease expired while the task was outstanding.
    Lost,
}

impl TaskStatus {
    /// A terminal task never changes again — except `lost`, which a late
    /// result from a reconnecting agent may still settle.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Error => "error",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Lost => "lost",
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored task at `/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub kind: String,
    pub v: u32,
    pub id: Uuid,
    pub plugin: String,
    pub method: String,
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// The `host` the caller asked for (a host, a name or a uuid).
    pub host: String,
    /// The agent chosen to run it.
    pub agent_uuid: Uuid,
    pub agent_name: String,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    /// What the plugin returned (for run_shell: exit code, signal, stdout tail).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
    /// Who submitted it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set once a cancel was requested; the agent kills the process group.
    pub cancel_requested: bool,
    /// Artifacts the task uploaded, by name.
    pub artifacts: Vec<Artifact>,
    /// Bytes of log stored so far.
    pub log_bytes: u64,
    /// The run and step this task executes, when it belongs to a plan run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunRef>,
    /// Why a queued task has not been sent to its agent yet (e.g. `pending:
    /// group `lab` is reserved by run …`); absent once it is on its way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which run and step a task belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunRef {
    pub run_id: Uuid,
    pub step: String,
    pub instance: usize,
    pub attempt: u32,
}

/// What a new task is: the work and where it goes. [`Task::queued`] fills
/// in the rest, so every place that creates tasks builds the same record.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: Uuid,
    pub plugin: String,
    pub method: String,
    pub parameters: Value,
    /// The `host` the caller asked for; for tasks the server places by
    /// selector it is the chosen agent's host.
    pub host: String,
    pub agent_uuid: Uuid,
    pub agent_name: String,
    pub created_by: String,
    pub run: Option<RunRef>,
    /// Why it is held back from its agent, if it is.
    pub reason: Option<String>,
}

impl Task {
    pub const KIND: &'static str = "task";

    /// A task just dispatched: queued, nothing run, nothing stored yet.
    pub fn queued(new: NewTask) -> Task {
        Task {
            kind: Task::KIND.into(),
            v: 1,
            id: new.id,
            plugin: new.plugin,
            method: new.method,
            parameters: new.parameters,
            host: new.host,
            agent_uuid: new.agent_uuid,
            agent_name: new.agent_name,
            status: TaskStatus::Queued,
            exit_code: None,
            result: None,
            error: None,
            created_by: new.created_by,
            created_at: crate::now(),
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            artifacts: Vec::new(),
            log_bytes: 0,
            run: new.run,
            reason: new.reason,
        }
    }

    pub fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
    /// Where to download it from.
    pub url: String,
}

/// What the agent sends when a task ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskOutcome {
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// Total bytes of log the task produced; the server checks it holds them all.
    pub log_bytes: u64,
}
