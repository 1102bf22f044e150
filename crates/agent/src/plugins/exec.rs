//! Exec plugins: executables in the agent's plugin directory that speak
//! JSON lines on stdin/stdout, so a plugin can be written in any language.
//!
//! The protocol is specified in `docs/plugins.md`. In short: each operation
//! is a fresh process that gets one request line on stdin (then EOF).
//! `{"op":"describe"}` is answered with one line naming the plugin and its
//! methods; `{"op":"invoke",…}` with any number of `{"log": …}` lines and one
//! final `{"result": …, "ok": …}` or `{"error": …}` line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testbed_core::schema::check_schema;
use thiserror::Error;

use crate::plugin::{
    async_trait, json, process, CancellationToken, CommandSpec, Deserialize, DynPlugin, LogSink,
    MethodSpec, Plugin, PluginError, PluginOutput, PluginResult, PluginSpec, TaskContext,
    TaskStatus, Value,
};
use process::{RunEnv, StdoutMode};

/// How long an executable may take to describe itself.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Characters of a bad answer quoted back in an error.
const QUOTE_LIMIT: usize = 200;

#[derive(Debug, Error)]
pub enum ExecPluginError {
    #[error("cannot read the plugin directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exec plugin {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("exec plugins {} and {} are both named `{name}`", first.display(), second.display())]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl ExecPluginError {
    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        ExecPluginError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// One executable, described.
#[derive(Debug, Clone)]
pub struct ExecPlugin {
    path: PathBuf,
    spec: PluginSpec,
}

/// Every exec plugin in `dir`: executable regular files (or links to them)
/// whose names do not start with a dot. A missing directory has none.
pub async fn load_dir(dir: &Path) -> Result<Vec<DynPlugin>, ExecPluginError> {
    let read_dir_error = |source| ExecPluginError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let dir = match tokio::fs::canonicalize(dir).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_dir_error(e)),
    };
    let mut entries = tokio::fs::read_dir(&dir).await.map_err(read_dir_error)?;
    let mut candidates = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(read_dir_error)? {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows links, so a link to an executable counts as one.
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            candidates.push(path);
        }
    }
    // Sorted, so which of two same-named plugins is reported is stable.
    candidates.sort();

    let described =
        futures_util::future::join_all(candidates.iter().map(|p| ExecPlugin::load(p))).await;
    let mut plugins: Vec<ExecPlugin> = Vec::new();
    for plugin in described {
        let plugin = plugin?;
        if let Some(other) = plugins.iter().find(|p| p.spec.name == plugin.spec.name) {
            return Err(ExecPluginError::DuplicateName {
                name: plugin.spec.name,
                first: other.path.clone(),
                second: plugin.path,
            });
        }
        plugins.push(plugin);
    }
    Ok(plugins
        .into_iter()
        .map(|p| Arc::new(p) as DynPlugin)
        .collect())
}

// Unknown fields are ignored, so a plugin written for a later version of
// the protocol still loads.
#[derive(Deserialize)]
struct Description {
    name: String,
    methods: Vec<MethodDescription>,
}

#[derive(Deserialize)]
struct MethodDescription {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "any_object")]
    schema: Value,
}

fn any_object() -> Value {
    json!({"type": "object"})
}

impl ExecPlugin {
    /// Asks the executable at `path` to describe itself.
    pub async fn load(path: &Path) -> Result<Self, ExecPluginError> {
        // Relative program paths are ambiguous once the cwd changes.
        let path = &std::path::absolute(path)
            .map_err(|e| ExecPluginError::invalid(path, format!("cannot resolve the path: {e}")))?;
        let program = path
            .to_str()
            .ok_or_else(|| ExecPluginError::invalid(path, "the file name is not UTF-8"))?;
        let cwd = path.parent().unwrap_or(Path::new("/"));
        let first_line: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let on_line = {
            let first_line = first_line.clone();
            move |line: &[u8]| {
                let mut first = lock(&first_line);
                if first.is_none() && !line.iter().all(u8::is_ascii_whitespace) {
                    *first = Some(line.to_vec());
                }
            }
        };
        // Stderr is kept to explain a failure.
        let (log, mut stderr) = LogSink::channel();
        let cancel = CancellationToken::new();
        let env = RunEnv {
            log: &log,
            cancel: &cancel,
            run_as: None,
            work_dir: cwd,
        };
        let cmd = CommandSpec::new(program)
            .cwd(cwd)
            .stdin(&b"{\"op\":\"describe\"}\n"[..])
            .timeout(Some(DESCRIBE_TIMEOUT));
        let outcome = process::run_in(cmd, env, StdoutMode::Lines(Box::new(on_line)))
            .await
            .map_err(|e| ExecPluginError::invalid(path, format!("cannot run it: {e}")))?;
        let mut err_text = Vec::new();
        while let Ok(chunk) = stderr.try_recv() {
            err_text.extend_from_slice(&chunk);
        }
        let err_text = String::from_utf8_lossy(&err_text);
        let stderr_note = match err_text.trim() {
            "" => String::new(),
            text => format!("; its stderr: {}", quote(text)),
        };
        if outcome.timed_out {
            return Err(ExecPluginError::invalid(
                path,
                format!(
                    "did not describe itself within {} s{stderr_note}",
                    DESCRIBE_TIMEOUT.as_secs()
                ),
            ));
        }
        let Some(line) = lock(&first_line).take() else {
            return Err(ExecPluginError::invalid(
                path,
                format!(
                    "printed nothing in answer to {{\"op\":\"describe\"}} ({}){stderr_note}",
                    outcome.describe()
                ),
            ));
        };
        let description: Description = serde_json::from_slice(&line).map_err(|e| {
            ExecPluginError::invalid(
                path,
                format!(
                    "its answer to describe is not a valid description ({e}): {}",
                    quote(&String::from_utf8_lossy(&line))
                ),
            )
        })?;
        let spec = validate(description).map_err(|m| ExecPluginError::invalid(path, m))?;
        Ok(ExecPlugin {
            path: path.to_path_buf(),
            spec,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn validate(d: Description) -> Result<PluginSpec, String> {
    if !valid_name(&d.name) {
        return Err(format!("plugin name `{}` must match [a-z0-9_-]+", d.name));
    }
    if d.methods.is_empty() {
        return Err(format!("plugin `{}` has no methods", d.name));
    }
    let mut methods: Vec<MethodSpec> = Vec::new();
    for m in d.methods {
        if !valid_name(&m.name) {
            return Err(format!("method name `{}` must match [a-z0-9_-]+", m.name));
        }
        if methods.iter().any(|other| other.name == m.name) {
            return Err(format!("method `{}` is described twice", m.name));
        }
        check_schema(&m.schema)
            .map_err(|e| format!("the schema of method `{}` is invalid: {e}", m.name))?;
        methods.push(MethodSpec {
            name: m.name,
            description: m.description,
            schema: m.schema,
        });
    }
    Ok(PluginSpec {
        name: d.name,
        methods,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data is a plain value; a panic elsewhere cannot leave it broken.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The final line of an invocation.
#[derive(Debug)]
enum Final {
    Result {
        result: Value,
        ok: bool,
        exit_code: Option<i32>,
    },
    Error(String),
}

/// Interprets one stdout line of an invocation.
fn handle_line(line: &[u8], log: &LogSink, last: &Mutex<Option<Final>>) {
    let parsed = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let final_line = match &parsed {
        Some(map) if map.contains_key("result") => Some(Final::Result {
            result: map.get("result").cloned().unwrap_or(Value::Null),
            ok: map.get("ok").and_then(Value::as_bool).unwrap_or(true),
            exit_code: map
                .get("exit_code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok()),
        }),
        Some(map) => match map.get("error") {
            Some(Value::String(msg)) => Some(Final::Error(msg.clone())),
            _ => None,
        },
        None => None,
    };
    if let Some(f) = final_line {
        let mut last = lock(last);
        if last.is_none() {
            *last = Some(f);
            return;
        }
        // A second final line breaks the protocol; keep the first and let
        // the user see the rest.
        drop(last);
    } else if let Some(Value::String(text)) = parsed.as_ref().and_then(|m| m.get("log")) {
        if text.ends_with('\n') {
            log.write(text.as_bytes());
        } else {
            log.line(text);
        }
        return;
    }
    // Anything else (stray prints, debugging output) is kept, not lost.
    let mut raw = line.to_vec();
    raw.push(b'\n');
    log.write(&raw);
}

#[async_trait]
impl Plugin for ExecPlugin {
    fn spec(&self) -> PluginSpec {
        self.spec.clone()
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        if self.spec.method(method).is_none() {
            return Err(PluginError::unknown_method(method, &self.spec));
        }
        // The plugin runs in the work directory, so a relative path would
        // mean something else to it.
        let work_dir = std::path::absolute(&ctx.work_dir)
            .map_err(|e| PluginError::io(format!("resolving {}", ctx.work_dir.display()), e))?;
        let request = json!({
            "op": "invoke",
            "method": method,
            "params": params,
            "task_id": ctx.task_id,
            "work_dir": work_dir,
        });
        let mut line = serde_json::to_vec(&request)
            .map_err(|e| PluginError::Failed(format!("cannot encode the request: {e}")))?;
        line.push(b'\n');

        let last: Arc<Mutex<Option<Final>>> = Arc::default();
        let on_line = {
            let last = last.clone();
            let log = ctx.log.clone();
            move |l: &[u8]| handle_line(l, &log, &last)
        };
        let program = self.path.to_string_lossy().into_owned();
        let cmd = CommandSpec::new(program).cwd(&ctx.work_dir).stdin(line);
        let outcome = process::run_lines(cmd, ctx, on_line).await?;
        if outcome.cancelled {
            return Err(PluginError::Cancelled);
        }
        let last = lock(&last).take();
        match last {
            Some(Final::Result {
                result,
                ok,
                exit_code,
            }) => Ok(PluginOutput {
                status: if ok {
                    TaskStatus::Succeeded
                } else {
                    TaskStatus::Failed
                },
                exit_code,
                result,
            }),
            Some(Final::Error(message)) => Err(PluginError::Failed(message)),
            None => Err(PluginError::Failed(
                match (outcome.exit_code, outcome.signal) {
                    (Some(code), _) => format!("plugin exited with status {code} without a result"),
                    (None, Some(sig)) => {
                        format!("plugin was killed by signal {sig} without a result")
                    }
                    (None, None) => "plugin exited without a result".to_string(),
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("echo"));
        assert!(valid_name("my_plugin-2"));
        assert!(!valid_name("Echo"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn lines_are_classified() {
        let (log, mut rx) = LogSink::channel();
        let last = Mutex::new(None);
        handle_line(br#"{"log": "hello"}"#, &log, &last);
        handle_line(b"not json", &log, &last);
        handle_line(
            br#"{"result": {"a": 1}, "ok": false, "exit_code": 3}"#,
            &log,
            &last,
        );
        handle_line(br#"{"result": 2}"#, &log, &last);
        let mut text = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            text.extend(chunk);
        }
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "hello\nnot json\n{\"result\": 2}\n"
        );
        match last.into_inner().unwrap() {
            Some(Final::Result {
                result,
                ok,
                exit_code,
            }) => {
                assert_eq!(result, json!({"a": 1}));
                assert!(!ok);
                assert_eq!(exit_code, Some(3));
            }
            other => panic!("{other:?}"),
        }
    }
}
