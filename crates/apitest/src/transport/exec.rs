//! Runs a program as a step: its exit code is the status, its stdout the
//! body. The program gets a process group of its own, so a timeout (or a
//! cancelled step) kills everything it started, not just the direct child.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use testbed_process::SpawnError;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::TransportError;
use crate::Reply;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Per stream: a runaway program must not exhaust the runner's memory.
const MAX_OUTPUT: usize = 16 << 20;

/// The program and its arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// Split like a POSIX shell would split words (quotes, backslashes),
    /// but with no expansion, pipes or redirections: for those, run
    /// `sh -c '...'`.
    Line(String),
    /// Used as is.
    Args(Vec<String>),
}

impl Command {
    /// The argument vector, program first.
    pub fn argv(&self) -> Result<Vec<String>, TransportError> {
        let argv = match self {
            Command::Line(line) => shell_words::split(line)
                .map_err(|e| TransportError::Invalid(format!("command `{line}`: {e}")))?,
            Command::Args(args) => args.clone(),
        };
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(TransportError::Invalid("empty command".into()));
        }
        Ok(argv)
    }
}

/// One program run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCall {
    pub command: Command,
    /// Added to the runner's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Written to the program's stdin, which is then closed; without it
    /// stdin is empty (`/dev/null`).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Working directory, relative to the suite's directory (the default).
    #[serde(default)]
    pub cwd: Option<String>,
    /// humantime, default 60s.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Runs the program to completion or timeout.
///
/// The status is the exit code, or 128 + the signal number when a signal
/// ended the program. Stdout and stderr are each capped at 16 MiB; a note
/// on stderr says when either was cut.
///
/// Output is read until every process holding it has closed it, so a
/// program that leaves a background child writing to its stdout runs into
/// the timeout; redirect such a child's output.
pub async fn run(call: &ExecCall, base_dir: &Path) -> Result<Reply, TransportError> {
    let start = Instant::now();
    let argv = call.command.argv()?;
    let timeout =
        super::parse_duration(call.timeout.as_deref(), "timeout")?.unwrap_or(DEFAULT_TIMEOUT);
    let cwd = match &call.cwd {
        Some(dir) => base_dir.join(dir),
        None => base_dir.to_path_buf(),
    };
    if !cwd.is_dir() {
        return Err(TransportError::Invalid(format!(
            "cwd {} is not a directory",
            cwd.display()
        )));
    }
    if let Some(bad) = call
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', '\0']))
    {
        return Err(TransportError::Invalid(format!(
            "environment variable name `{bad}` is empty or holds `=` or NUL"
        )));
    }
    let name = &argv[0];
    let mut command = tokio::process::Command::new(program_path(name, &cwd));
    command.args(&argv[1..]).envs(&call.env).current_dir(&cwd);
    // The group dies with this process (an agent SIGKILLed mid-step), so
    // nothing of a step outlives whoever could report it.
    let stdin = call.stdin.clone().map(String::into_bytes);
    let mut group = testbed_process::spawn(&mut command, stdin).map_err(|e| match e {
        SpawnError::Prepare(e) | SpawnError::Spawn(e) => spawn_error(name, e),
        SpawnError::Vanished => TransportError::Connect(format!("`{name}`: {e}")),
    })?;
    let mut stdout = tokio::spawn(read_capped(group.child().stdout.take()));
    let mut stderr = tokio::spawn(read_capped(group.child().stderr.take()));

    let finished = tokio::time::timeout(timeout, async {
        let status = group.wait().await;
        // Outputs close when every process holding them has exited, which
        // may be after the program itself when it left children behind.
        let out = (&mut stdout).await;
        let err = (&mut stderr).await;
        (status, out, err)
    })
    .await;

    let (status, out, err) = match finished {
        Ok(done) => done,
        Err(_) => {
            // Reap the killed child; it is already dead or dying.
            let _ = group.kill_and_wait().await;
            stdout.abort();
            stderr.abort();
            return Err(TransportError::Timeout(format!(
                "{} (`{name}` killed)",
                humantime::format_duration(timeout)
            )));
        }
    };
    group.release();
    drop(group);

    let status = status.map_err(|e| TransportError::Io(format!("waiting for `{name}`: {e}")))?;
    let code = status
        .code()
        .map(i64::from)
        .or_else(|| status.signal().map(|s| 128 + i64::from(s)))
        .unwrap_or(-1);
    let (stdout, out_cut) = joined(out, name, "stdout")?;
    let (stderr, err_cut) = joined(err, name, "stderr")?;
    let mut stderr = String::from_utf8_lossy(&stderr).into_owned();
    for (cut, which) in [(out_cut, "stdout"), (err_cut, "stderr")] {
        if cut {
            stderr.push_str(&format!(
                "\n[testbed: {which} cut at {} MiB]\n",
                MAX_OUTPUT >> 20
            ));
        }
    }
    let json = if stdout.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Value>(&stdout).ok()
    };
    Ok(Reply {
        status: Some(code),
        headers: Vec::new(),
        body: stdout,
        json,
        stderr: Some(stderr),
        duration: start.elapsed(),
    })
}

/// A relative path with a slash names a file under `cwd`, as it would in a
/// shell started there; std leaves that case unspecified.
fn program_path(name: &str, cwd: &Path) -> PathBuf {
    let path = Path::new(name);
    if path.is_relative() && name.contains('/') {
        cwd.join(path)
    } else {
        path.to_path_buf()
    }
}

fn spawn_error(name: &str, e: std::io::Error) -> TransportError {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            TransportError::Connect(format!("program `{name}` not found"))
        }
        std::io::ErrorKind::PermissionDenied => {
            TransportError::Connect(format!("program `{name}` is not executable"))
        }
        _ => TransportError::Connect(format!("cannot start `{name}`: {e}")),
    }
}

/// The bytes a reader kept, and whether it had to drop some.
type Captured = std::io::Result<(Vec<u8>, bool)>;

/// Reads everything, keeping the first `MAX_OUTPUT` bytes. Reading goes on
/// past the cap so the program is never blocked on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(reader: Option<R>) -> Captured {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, cut));
        }
        let room = MAX_OUTPUT - kept.len();
        kept.extend_from_slice(&chunk[..n.min(room)]);
        cut |= n > room;
    }
}

fn joined(
    result: Result<Captured, tokio::task::JoinError>,
    name: &str,
    which: &str,
) -> Result<(Vec<u8>, bool), TransportError> {
    result
        .map_err(|e| TransportError::Io(format!("reading {which} of `{name}`: {e}")))?
        .map_err(|e| TransportError::Io(format!("reading {which} of `{name}`: {e}")))
}
