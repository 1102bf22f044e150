//! Running child processes for plugins.
//!
//! Every command a task starts goes through [`run`] (or [`run_lines`]), so
//! the rules hold everywhere: the child gets its own process group (through
//! [`testbed_process`]), so that cancelling or timing out kills everything
//! it started and not only the direct child, and the group is SIGKILLed if
//! the agent dies (however it dies) while the task runs; output is streamed
//! into the task log as it arrives rather than collected at the end; and
//! nothing here waits forever, even on a grandchild that keeps a pipe open
//! or ignores SIGTERM.

use std::collections::VecDeque;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::{geteuid, User};
use testbed_process::{Ended, SpawnError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::plugin::{LogSink, PluginError, RunAs, TaskContext};

/// How much of stdout a [`ProcessOutcome`] keeps.
pub const STDOUT_TAIL_BYTES: usize = 64 * 1024;

/// Time between SIGTERM and SIGKILL when a process group is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long output is still read after the main child exited. Background
/// processes it left behind may hold the pipes open indefinitely.
pub const READ_GRACE: Duration = Duration::from_secs(2);

/// A partial line is written to the log once output pauses this long, so a
/// prompt or a progress dot shows up without waiting for a newline.
const PARTIAL_FLUSH_AFTER: Duration = Duration::from_millis(100);

/// A line longer than this is passed on in pieces rather than buffered
/// without bound.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Environment variables holding the agent's own secrets; a task has no
/// business reading them.
const SECRET_ENV: &[&str] = &[
    "TESTBED_JOIN_TOKEN",
    "TESTBED_TOKEN",
    "TESTBED_ADMIN_PASSWORD",
];

/// What to run.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// Looked up in `PATH` unless it contains a `/`.
    pub program: String,
    pub args: Vec<String>,
    /// Defaults to the task's work directory.
    pub cwd: Option<PathBuf>,
    /// Added to (or overriding) the agent's environment.
    pub env: Vec<(String, String)>,
    /// Written to the child's stdin, which is then closed. Without it stdin
    /// is `/dev/null`, so nothing can block waiting for input.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

impl CommandSpec {
    pub fn new(program: impl Into<String>) -> Self {
        CommandSpec {
            program: program.into(),
            ..CommandSpec::default()
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Program followed by its arguments.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// The command as a user would type it, for the task log.
    pub fn display(&self) -> String {
        shell_words::join(self.argv())
    }
}

impl fmt::Debug for CommandSpec {
    // Environment values and stdin may carry secrets; keep them out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("stdin_bytes", &self.stdin.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutcome {
    /// `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// The last [`STDOUT_TAIL_BYTES`] of stdout (lossily decoded), empty in
    /// line mode, where stdout goes to the caller's callback instead.
    pub stdout_tail: String,
    pub duration_ms: u64,
}

impl ProcessOutcome {
    /// Exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }

    /// "exit status 3", "killed by signal 9", for messages.
    pub fn describe(&self) -> String {
        match (self.exit_code, self.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "unknown status".to_string(),
        }
    }

    fn not_started(cancelled: bool) -> Self {
        ProcessOutcome {
            exit_code: None,
            signal: None,
            timed_out: false,
            cancelled,
            stdout_tail: String::new(),
            duration_ms: 0,
        }
    }
}

/// Receives one line of output, without its line end.
pub type LineHandler = Box<dyn FnMut(&[u8]) + Send>;

/// Where stdout goes.
pub enum StdoutMode {
    /// Into the log, like stderr, keeping a tail for the outcome.
    Log,
    /// Each complete line (without its `\n`) to a callback, which decides
    /// what reaches the log. A final unterminated line is passed too.
    Lines(LineHandler),
}

/// The parts of a task context a process needs; [`run_in`] takes this so a
/// process can also be run outside any task (exec plugin discovery).
#[derive(Clone, Copy)]
pub struct RunEnv<'a> {
    pub log: &'a LogSink,
    pub cancel: &'a CancellationToken,
    pub run_as: Option<&'a RunAs>,
    /// The working directory when the command names none.
    pub work_dir: &'a Path,
}

impl<'a> From<&'a TaskContext> for RunEnv<'a> {
    fn from(ctx: &'a TaskContext) -> Self {
        RunEnv {
            log: &ctx.log,
            cancel: &ctx.cancel,
            run_as: ctx.settings.run_as.as_ref(),
            work_dir: &ctx.work_dir,
        }
    }
}

/// Runs `cmd` for a task: stdout and stderr stream into `ctx.log`.
///
/// Cancellation and timeout are not errors: they come back as
/// [`ProcessOutcome::cancelled`] / [`ProcessOutcome::timed_out`] once the
/// whole process group is gone. Errors are for commands that could not be
/// started at all.
pub async fn run(cmd: CommandSpec, ctx: &TaskContext) -> Result<ProcessOutcome, PluginError> {
    run_in(cmd, RunEnv::from(ctx), StdoutMode::Log).await
}

/// Like [`run`], but stdout is handed to `on_line` line by line (for
/// protocols spoken over stdout); stderr still goes to the log.
pub async fn run_lines(
    cmd: CommandSpec,
    ctx: &TaskContext,
    on_line: impl FnMut(&[u8]) + Send + 'static,
) -> Result<ProcessOutcome, PluginError> {
    run_in(cmd, RunEnv::from(ctx), StdoutMode::Lines(Box::new(on_line))).await
}

/// The general form of [`run`].
pub async fn run_in(
    cmd: CommandSpec,
    env: RunEnv<'_>,
    stdout_mode: StdoutMode,
) -> Result<ProcessOutcome, PluginError> {
    if env.cancel.is_cancelled() {
        return Ok(ProcessOutcome::not_started(true));
    }
    let cwd = cmd
        .cwd
        .clone()
        .unwrap_or_else(|| env.work_dir.to_path_buf());
    // A missing directory makes spawn fail with ENOENT, which would be
    // reported as the program not being found.
    if !cwd.is_dir() {
        return Err(PluginError::Failed(format!(
            "working directory does not exist: {}",
            cwd.display()
        )));
    }

    let mut command = Command::new(&cmd.program);
    command.args(&cmd.args).current_dir(&cwd);
    for key in SECRET_ENV {
        command.env_remove(key);
    }
    if let Some(run_as) = env.run_as {
        apply_run_as(&mut command, run_as)?;
    }
    for (key, value) in &cmd.env {
        command.env(key, value);
    }

    // The group dies with the agent, even a SIGKILLed one: a task whose
    // outcome nobody can report any more must not finish behind the
    // server's back (it is marked lost and may be retried elsewhere).
    let started = Instant::now();
    let mut group = testbed_process::spawn(&mut command, cmd.stdin).map_err(|e| match e {
        SpawnError::Prepare(e) => PluginError::io(format!("preparing {}", cmd.program), e),
        SpawnError::Spawn(e) => spawn_error(&cmd.program, e),
        SpawnError::Vanished => PluginError::Failed(format!("{}: {e}", cmd.program)),
    })?;

    let stop_reading = CancellationToken::new();
    let out_done = CancellationToken::new();
    let err_done = CancellationToken::new();
    let out_sink = match stdout_mode {
        StdoutMode::Log => Sink::log(env.log.clone(), true),
        StdoutMode::Lines(f) => Sink::lines(f),
    };
    let out_task = spawn_pump(
        group.child().stdout.take(),
        out_sink,
        stop_reading.clone(),
        out_done.clone(),
    );
    let err_task = spawn_pump(
        group.child().stderr.take(),
        Sink::log(env.log.clone(), false),
        stop_reading.clone(),
        err_done.clone(),
    );

    let stop = group.wait_until(env.cancel, cmd.timeout).await;
    let (cancelled, timed_out) = match &stop {
        Ended::Exited(_) => (false, false),
        Ended::Cancelled => (true, false),
        Ended::TimedOut => (false, true),
    };
    let status = match stop {
        Ended::Exited(status) => status,
        Ended::Cancelled | Ended::TimedOut => {
            // The grace period ends early once the leader is reaped and
            // nobody holds the output pipes any more.
            let pipes_closed = async {
                out_done.cancelled().await;
                err_done.cancelled().await;
            };
            match group.terminate(KILL_GRACE, pipes_closed).await {
                Some(status) => status,
                None => {
                    stop_reading.cancel();
                    return Err(PluginError::Failed(format!(
                        "{}: the process did not exit after SIGKILL",
                        cmd.program
                    )));
                }
            }
        }
    };
    let status = status.map_err(|e| PluginError::io(format!("waiting for {}", cmd.program), e))?;
    let duration = started.elapsed();
    // Background processes the command left behind are not killed (a task
    // may mean to start a daemon), but their output is not waited for
    // beyond the grace period either; nor are they killed should the agent
    // die later: the task's outcome is known by then.
    group.release();

    let pipes_closed = async {
        out_done.cancelled().await;
        err_done.cancelled().await;
    };
    if tokio::time::timeout(READ_GRACE, pipes_closed)
        .await
        .is_err()
    {
        stop_reading.cancel();
    }
    let out_sink = out_task.await.ok();
    // Joined only so the last of stderr is in the log before we return.
    let _ = err_task.await;
    // Dropping the group stops feeding stdin: a leftover process that
    // inherited it but never reads would keep the writer blocked.
    drop(group);

    let stdout_tail = out_sink.map(Sink::into_tail).unwrap_or_default();
    Ok(ProcessOutcome {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        cancelled,
        stdout_tail,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Looks up a local user to run tasks as.
pub fn resolve_run_as(user: &str) -> Result<RunAs, String> {
    match User::from_name(user) {
        Ok(Some(u)) => Ok(RunAs {
            user: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }),
        Ok(None) => Err(format!("no such user: {user}")),
        Err(e) => Err(format!("cannot look up user {user}: {e}")),
    }
}

fn apply_run_as(command: &mut Command, run_as: &RunAs) -> Result<(), PluginError> {
    let euid = geteuid();
    if run_as.uid != euid.as_raw() {
        if !euid.is_root() {
            return Err(PluginError::Refused(format!(
                "cannot run tasks as user `{}`: the agent is not running as root",
                run_as.user
            )));
        }
        // std also clears the supplementary groups when a root parent sets
        // the uid, so the task does not keep root's groups.
        command.uid(run_as.uid).gid(run_as.gid);
    }
    command
        .env("HOME", &run_as.home)
        .env("USER", &run_as.user)
        .env("LOGNAME", &run_as.user);
    Ok(())
}

fn spawn_error(program: &str, e: std::io::Error) -> PluginError {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            PluginError::Failed(format!("command not found: {program}"))
        }
        std::io::ErrorKind::PermissionDenied => {
            PluginError::Failed(format!("permission denied: {program}"))
        }
        _ => PluginError::Failed(format!("cannot run {program}: {e}")),
    }
}

fn spawn_pump<R>(
    reader: Option<R>,
    sink: Sink,
    stop: CancellationToken,
    done: CancellationToken,
) -> JoinHandle<Sink>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _done = done.drop_guard();
        let mut sink = sink;
        if let Some(reader) = reader {
            pump(reader, &mut sink, &stop).await;
        }
        sink.finish();
        sink
    })
}

async fn pump<R: AsyncRead + Unpin>(mut reader: R, sink: &mut Sink, stop: &CancellationToken) {
    let mut buf = vec![0u8; 8192];
    loop {
        tokio::select! {
            // Checked first so a process flooding its output cannot starve
            // the stop request.
            biased;
            _ = stop.cancelled() => return,
            n = reader.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => sink.feed(&buf[..n]),
            },
            _ = tokio::time::sleep(PARTIAL_FLUSH_AFTER), if sink.has_partial() => sink.flush_partial(),
        }
    }
}

/// Receives one output stream, cut at line ends.
struct Sink {
    pending: Vec<u8>,
    target: Target,
    tail: Option<Tail>,
}

enum Target {
    Log(LogSink),
    Lines(LineHandler),
}

impl Sink {
    fn log(log: LogSink, keep_tail: bool) -> Self {
        Sink {
            pending: Vec::new(),
            target: Target::Log(log),
            tail: keep_tail.then(|| Tail::new(STDOUT_TAIL_BYTES)),
        }
    }

    fn lines(f: LineHandler) -> Self {
        Sink {
            pending: Vec::new(),
            target: Target::Lines(f),
            tail: None,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if let Some(tail) = &mut self.tail {
            tail.push(bytes);
        }
        self.pending.extend_from_slice(bytes);
        match &mut self.target {
            Target::Log(log) => {
                // Whole lines go out together so stdout and stderr
                // interleave at line boundaries in the log.
                if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
                    log.write(&self.pending[..=end]);
                    self.pending.drain(..=end);
                }
                if self.pending.len() >= MAX_LINE_BYTES {
                    log.write(&self.pending);
                    self.pending.clear();
                }
            }
            Target::Lines(f) => {
                let mut start = 0;
                while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
                    f(strip_cr(&self.pending[start..start + pos]));
                    start += pos + 1;
                }
                self.pending.drain(..start);
                if self.pending.len() >= MAX_LINE_BYTES {
                    f(&self.pending);
                    self.pending.clear();
                }
            }
        }
    }

    /// Partial lines only mean something to a human reading the log; a
    /// line protocol must wait for the line to complete.
    fn has_partial(&self) -> bool {
        !self.pending.is_empty() && matches!(self.target, Target::Log(_))
    }

    fn flush_partial(&mut self) {
        if let Target::Log(log) = &self.target {
            log.write(&self.pending);
            self.pending.clear();
        }
    }

    fn finish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match &mut self.target {
            Target::Log(log) => log.write(&self.pending),
            Target::Lines(f) => f(strip_cr(&self.pending)),
        }
        self.pending.clear();
    }

    fn into_tail(self) -> String {
        self.tail.map(Tail::into_string).unwrap_or_default()
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The last `cap` bytes written.
struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            buf: VecDeque::new(),
            cap,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }

    fn into_string(self) -> String {
        let bytes: Vec<u8> = self.buf.into();
        // The cut may have fallen inside a UTF-8 sequence; drop its
        // continuation bytes rather than show a replacement character.
        let start = bytes
            .iter()
            .take(3)
            .take_while(|&&b| b & 0b1100_0000 == 0b1000_0000)
            .count();
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        t.push(b"cdef");
        assert_eq!(t.into_string(), "cdef");
        let mut t = Tail::new(4);
        t.push(b"abcdefgh");
        t.push(b"i");
        assert_eq!(t.into_string(), "fghi");
    }

    #[test]
    fn tail_does_not_start_inside_a_character() {
        let mut t = Tail::new(3);
        t.push("aé€".as_bytes()); // é is 2 bytes, € is 3
        assert_eq!(t.into_string(), "€");
        let mut t = Tail::new(4);
        t.push("é€".as_bytes());
        assert_eq!(t.into_string(), "€");
    }

    #[test]
    fn lines_are_split_and_the_last_partial_one_kept() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let s2 = seen.clone();
        let mut sink = Sink::lines(Box::new(move |l| {
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(l).into_owned())
        }));
        sink.feed(b"one\r\ntw");
        sink.feed(b"o\n\nthr");
        sink.finish();
        assert_eq!(*seen.lock().unwrap(), vec!["one", "two", "", "thr"]);
    }
}
