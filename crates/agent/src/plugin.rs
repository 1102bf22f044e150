//! Everything a plugin author needs, in one place (`docs/plugins.md` is the
//! guide).
//!
//! A plugin has a name and methods, each with a JSON schema for its
//! parameters (announced to the server in `hello`, checked there before
//! dispatch). A method's parameters are a struct deriving `Deserialize` and
//! `JsonSchema`: [`method`] derives the schema from it and [`parse_params`]
//! parses into it, so the two agree. `invoke` gets a [`TaskContext`]: a log
//! sink, a cancellation token, a work directory, an artifact sink, the
//! agent's execution settings, a metric sink and pause/resume requests.
//! Child processes go through [`run_process`] (own process group, killed as
//! one on cancellation). Built-in plugins and exec plugins (external
//! executables) sit behind the same trait, the way Vector's sources and
//! sinks do.

mod args;
mod params;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{mpsc, watch};

pub use self::args::{checked_env, seconds, shell_command, Args};
pub use self::params::{method, parse_only, parse_params, schema_of, type_name};
/// Child processes in their own process group (the module, for what a
/// plugin rarely needs, such as running outside a task).
pub use crate::process;
pub use crate::process::{run as run_process, run_lines, CommandSpec, ProcessOutcome};
pub use async_trait::async_trait;
pub use schemars::JsonSchema;
pub use serde::Deserialize;
pub use serde_json::{json, Map, Value};
pub use testbed_core::agent::{MethodSpec, PluginSpec};
pub use testbed_core::task::{Artifact, TaskStatus};
pub use testbed_report::View;
pub use tokio_util::sync::CancellationToken;
pub use uuid::Uuid;

#[async_trait]
pub trait Plugin: Send + Sync {
    /// Name and methods, as announced to the server.
    fn spec(&self) -> PluginSpec;

    /// Runs `method` with `params` (already validated against the method's
    /// schema by the server). Output goes to `ctx.log`; the returned value is
    /// the task's result. Must return promptly once `ctx.cancel` fires.
    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult;
}

pub type DynPlugin = Arc<dyn Plugin>;

/// What an invocation ends in: the trait's and every method handler's
/// return type.
pub type PluginResult = Result<PluginOutput, PluginError>;

/// A string of shell words split into an argv (quotes and backslashes; no
/// variables, globs or operators); an unsplittable one is an error on `field`.
pub fn split_words(field: &str, words: &str) -> Result<Vec<String>, PluginError> {
    shell_words::split(words)
        .map_err(|e| PluginError::invalid(field, format!("cannot split `{words}` into words: {e}")))
}

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
    ///
    /// A report whose JSON form is at most [`INLINE_REPORT_BYTES`] travels
    /// inside the result as `report`. A larger one (a kit of a million test
    /// points) is written, gzip-compressed as the server stores reports, to
    /// [`REPORT_FILE`] in the work directory as it renders, and the result
    /// says `report_blob: {bytes, summary}`: the agent uploads the file
    /// before it sends the result, and the server reads the report from the
    /// blob store. Either way memory does not grow with the rendered report.
    pub fn from_report<V: View>(report: &V, ctx: &TaskContext) -> Result<Self, PluginError> {
        let mut text = Vec::new();
        testbed_report::write_summary(report, &mut text)
            .map_err(|e| PluginError::Failed(format!("summarising the report: {e}")))?;
        for line in String::from_utf8_lossy(&text).lines() {
            ctx.log.line(line);
        }
        drop(text);
        let summary = testbed_report::view::summary(report);
        let mut inline = Capped {
            buf: Vec::new(),
            cap: INLINE_REPORT_BYTES,
        };
        let result = if testbed_report::write_json(report, &mut inline).is_ok() {
            let value: Value = serde_json::from_slice(&inline.buf)
                .map_err(|e| PluginError::Failed(format!("reading the report back: {e}")))?;
            serde_json::json!({ "report": value })
        } else {
            drop(inline);
            let path = ctx.work_dir.join(REPORT_FILE);
            // Seconds of compression at a million cases: off the runtime's
            // worker (its heartbeats and log pumps go on) where it can be.
            let write = || write_report_file(report, &path);
            let written = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(write)
                }
                _ => write(),
            };
            let bytes = written.map_err(|e| {
                PluginError::io(format!("writing the report to {}", path.display()), e)
            })?;
            serde_json::json!({ "report_blob": { "bytes": bytes, "summary": summary } })
        };
        Ok(PluginOutput {
            status: if summary.ok {
                TaskStatus::Succeeded
            } else {
                TaskStatus::Failed
            },
            exit_code: Some(if summary.ok { 0 } else { 1 }),
            result,
        })
    }
}

/// The largest report (its JSON form) that travels inside a task's result.
/// Well under the protocol's 4 MiB message, and small enough for the store:
/// an inline result is kept in the task's record and in its run step's, and
/// etcd refuses requests over 1.5 MiB. Above it a report goes up as a blob
/// ([`PluginOutput::from_report`]), which costs one HTTP request more.
pub const INLINE_REPORT_BYTES: usize = 256 * 1024;

/// Where in a task's work directory [`PluginOutput::from_report`] writes a
/// report too large to go inline; the agent uploads it from there, and
/// nothing else, when the result says `report_blob`.
pub const REPORT_FILE: &str = ".testbed-report.json.gz";

/// A writer that refuses to grow past `cap`: rendering a report inline stops
/// as soon as it is too large, without rendering the rest.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            return Err(std::io::Error::other("over the inline report size"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `report` to `path` in the stored form (gzip-compressed JSON, one
/// case a line) as it renders; returns the file's size.
fn write_report_file<V: View>(report: &V, path: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::create(path)?;
    let file = testbed_report::write_stored(report, std::io::BufWriter::new(file))?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

#[derive(Debug, Error)]
pub enum PluginError {
    #[error("unknown method `{method}` (this plugin has: {available})")]
    UnknownMethod { method: String, available: String },
    /// `field` is the parameter's path below the parameters (`env/A`), or
    /// `parameters` for the whole; `message` is a sentence naming it (see
    /// [`PluginError::invalid`]).
    #[error("{message}")]
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
    /// Parameter `field` is wrong: "parameter `field`: {problem}".
    pub fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        let field = field.into();
        PluginError::InvalidParams {
            message: format!("parameter `{field}`: {problem}"),
            field,
        }
    }

    /// "unknown parameter `field` (this method takes: …)".
    pub fn unknown_param(field: impl Into<String>, known: &str) -> Self {
        let field = field.into();
        let known = if known.is_empty() {
            "this method takes no parameters".to_string()
        } else {
            format!("this method takes: {known}")
        };
        PluginError::InvalidParams {
            message: format!("unknown parameter `{field}` ({known})"),
            field,
        }
    }

    /// "missing parameter `field`".
    pub fn missing_param(field: impl Into<String>) -> Self {
        let field = field.into();
        PluginError::InvalidParams {
            message: format!("missing parameter `{field}`"),
            field,
        }
    }

    /// The answer to a method `spec` does not have.
    pub fn unknown_method(method: &str, spec: &PluginSpec) -> Self {
        PluginError::UnknownMethod {
            method: method.to_string(),
            available: spec
                .methods
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

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
