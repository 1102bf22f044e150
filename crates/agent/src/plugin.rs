//! The plugin trait: what every capability of an agent looks like.
//!
//! A plugin has a name and methods, each with a JSON schema for its
//! parameters (announced to the server in `hello`, checked there before
//! dispatch). `invoke` gets a [`TaskContext`]: a log sink, a cancellation
//! token, a work directory, an artifact sink and the agent's execution
//! settings. Built-in plugins and exec plugins (external executables) sit
//! behind the same trait, the way Vector's sources and sinks do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use testbed_core::agent::PluginSpec;
use testbed_core::task::{Artifact, TaskStatus};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[async_trait]
pub trait Plugin: Send + Sync {
    /// Name and methods, as announced to the server.
    fn spec(&self) -> PluginSpec;

    /// Runs `method` with `params` (already validated against the method's
    /// schema by the server). Output goes to `ctx.log`; the returned value is
    /// the task's result. Must return promptly once `ctx.cancel` fires.
    async fn invoke(
        &self,
        method: &str,
        params: Value,
        ctx: &TaskContext,
    ) -> Result<PluginOutput, PluginError>;
}

pub type DynPlugin = Arc<dyn Plugin>;

/// What a finished invocation reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginOutput {
    /// `Succeeded` or `Failed` (e.g. a non-zero exit code).
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub result: Value,
}

impl PluginOutput {
    pub fn success(result: Value) -> Self {
        PluginOutput {
            status: TaskStatus::Succeeded,
            exit_code: None,
            result,
        }
    }

    /// The output of a plugin whose work ends in a test report (`tap`,
    /// `api`): the summary goes to the log, the report into the result (where
    /// the plan's report picks it up), and the task fails when a test did.
    pub fn from_report(
        report: &testbed_report::Report,
        log: &LogSink,
    ) -> Result<Self, PluginError> {
        for line in testbed_report::to_summary(report).lines() {
            log.line(line);
        }
        let ok = report.summary().ok;
        let value = serde_json::to_value(report).map_err(|e| PluginError::Failed(e.to_string()))?;
        Ok(PluginOutput {
            status: if ok {
                TaskStatus::Succeeded
            } else {
                TaskStatus::Failed
            },
            exit_code: Some(if ok { 0 } else { 1 }),
            result: serde_json::json!({ "report": value }),
        })
    }
}

#[derive(Debug, Error)]
pub enum PluginError {
    #[error("unknown method `{method}` (this plugin has: {available})")]
    UnknownMethod { method: String, available: String },
    #[error("invalid parameter `{field}`: {message}")]
    InvalidParams { field: String, message: String },
    #[error("{0}")]
    Refused(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl PluginError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PluginError::Io {
            context: context.into(),
            source,
        }
    }
}

/// How this agent lets tasks execute; from its configuration.
#[derive(Debug, Clone, Default)]
pub struct ExecSettings {
    /// Allow `run_shell` to run its command through `/bin/sh -c` when asked
    /// (`"shell": true`). Off by default: commands run as an argv.
    pub allow_shell: bool,
    /// Drop tasks' privileges to this user (only meaningful when the agent
    /// runs as root).
    pub run_as: Option<RunAs>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Where a task's output goes. Cheap to clone; writes never block.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl LogSink {
    /// A sink and the receiving end the runtime (or a test) drains.
    pub fn channel() -> (LogSink, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LogSink { tx }, rx)
    }

    pub fn write(&self, bytes: &[u8]) {
        if !bytes.is_empty() {
            // The receiver only goes away when the task is being torn down;
            // output after that has nowhere to go.
            let _ = self.tx.send(bytes.to_vec());
        }
    }

    /// Writes `line` followed by a newline.
    pub fn line(&self, line: &str) {
        let mut v = Vec::with_capacity(line.len() + 1);
        v.extend_from_slice(line.as_bytes());
        v.push(b'\n');
        let _ = self.tx.send(v);
    }
}

/// Where a plugin sends live measurements (the runtime forwards each one
/// to the server as a `metrics` message). Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct MetricSink {
    tx: mpsc::UnboundedSender<Value>,
}

impl MetricSink {
    pub fn channel() -> (MetricSink, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (MetricSink { tx }, rx)
    }

    pub fn send(&self, value: Value) {
        // Nobody listening means the task is being torn down.
        let _ = self.tx.send(value);
    }
}

/// What the server asks of a running task besides cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    #[default]
    Run,
    Pause,
}

/// A control channel that never changes, for plugins invoked outside the
/// runtime (tests, tools).
pub fn fixed_control() -> watch::Receiver<Control> {
    watch::channel(Control::Run).1
}

/// Uploads a file as a named artifact of the running task.
#[async_trait]
pub trait ArtifactSink: Send + Sync {
    async fn upload(&self, task: Uuid, name: &str, path: &Path) -> Result<Artifact, PluginError>;
}

/// Everything a plugin invocation may use.
#[derive(Clone)]
pub struct TaskContext {
    pub task_id: Uuid,
    pub log: LogSink,
    pub cancel: CancellationToken,
    /// A fresh directory for this task, removed after it ends.
    pub work_dir: PathBuf,
    pub settings: Arc<ExecSettings>,
    pub artifacts: Arc<dyn ArtifactSink>,
    /// Live measurements; plugins without any ignore it.
    pub metrics: MetricSink,
    /// Pause/resume requests; plugins that cannot pause ignore it.
    pub control: watch::Receiver<Control>,
}
