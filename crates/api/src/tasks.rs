//! Tasks: seed 002's `POST /v2.1/testcases` and `/api/tasks`.
//!
//! What seed 002 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-002-compute-nodes-and-test-cases.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use testbed_core::task::{Task, TaskStatus};
use utoipa::ToSchema;
use uuid::Uuid;

/// Seed 002's `POST /v2.1/testcases` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Plugin name, e.g. `linux_system`.
    #[schema(pattern = r"\S")]
    pub plugin: String,
    /// An agent's host, name or uuid.
    #[schema(pattern = r"\S")]
    pub host: String,
    /// Method of the plugin, e.g. `run_shell`.
    #[schema(pattern = r"\S")]
    pub method: String,
    /// The method's parameters, e.g. `{"command":"ls","args":"-alt"}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub parameters: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The answer to a submission: where to follow the task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub task_id: Uuid,
    pub status: TaskStatus,
    pub agent_uuid: Uuid,
    pub agent_name: String,
    /// `GET` it for status, exit code, timings and result.
    pub url: String,
    /// The log so far, as text.
    pub log_url: String,
    /// The log live, over a WebSocket.
    pub log_ws: String,
}

/// A task as `/api/tasks` shows it: the record plus what is derived from it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: Task,
    pub duration_ms: Option<i64>,
    pub log_url: String,
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        TaskView {
            duration_ms: task.duration_ms(),
            log_url: format!("/api/tasks/{}/log", task.id),
            task,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub total: usize,
    pub page: usize,
    pub page_size: usize,
    pub results: Vec<TaskView>,
}
