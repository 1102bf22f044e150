//! The harness: finds test scripts, runs them (in parallel, each with a time
//! limit) against the configured platform and parses their TAP as it streams.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use testbed_report::{CaseList, CompactReport, Outcome, Report, Suite};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::config::KitConfig;
use crate::expect::LABEL_PREFIX;
use crate::parser::{Parser, ScriptExit, SCRIPT_CASE};

/// How much of a script's TAP is kept for `--verbose` and reports; the rest is
/// parsed as it streams and dropped, so a runaway script cannot exhaust memory.
pub const MAX_CAPTURE: usize = 1024 * 1024;
/// How much of a script's stderr is kept as the output excerpt.
pub const MAX_STDERR: usize = 64 * 1024;

/// Why a kit could not be run at all (a script failing is a result, not this).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error("cannot read directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no test scripts found")]
    NoScripts,
}

/// Called with each script's name, captured TAP and stderr as it finishes.
pub type EchoFn = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// What to run and how.
#[derive(Clone)]
pub struct RunConfig {
    /// Directories (searched recursively) and script files.
    pub paths: Vec<PathBuf>,
    pub kit: KitConfig,
    /// Scripts run at once.
    pub jobs: usize,
    /// Time limit per script.
    pub timeout: Duration,
    pub echo: Option<EchoFn>,
}

impl RunConfig {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        RunConfig {
            paths,
            kit: KitConfig::default(),
            jobs: 1,
            timeout: Duration::from_secs(60),
            echo: None,
        }
    }
}

/// A script to run, with its suite name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub path: PathBuf,
    pub name: String,
}

/// The kit directory suite names are relative to: the config file's directory,
/// else the first directory given, else the first script's directory.
pub fn kit_root(cfg: &RunConfig) -> PathBuf {
    if let Some(dir) = cfg.kit.path.as_deref().and_then(Path::parent) {
        return absolute(dir);
    }
    match cfg.paths.first() {
        Some(p) if p.is_dir() => absolute(p),
        Some(p) => absolute(p.parent().unwrap_or(Path::new("."))),
        None => absolute(Path::new(".")),
    }
}

fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Finds the scripts to run: files as given, directories recursively in sorted
/// order (hidden entries skipped; `.t`, `.py` and executable files taken).
pub fn discover(cfg: &RunConfig) -> Result<Vec<Script>, HarnessError> {
    let root = kit_root(cfg);
    let mut files = Vec::new();
    for p in &cfg.paths {
        if p.is_dir() {
            walk(p, &mut files)?;
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(HarnessError::NotFound(p.clone()));
        }
    }
    if files.is_empty() {
        return Err(HarnessError::NoScripts);
    }
    Ok(files
        .into_iter()
        .map(|path| {
            let abs = absolute(&path);
            let name = abs
                .strip_prefix(&root)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| path.display().to_string());
            Script { path, name }
        })
        .collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), HarnessError> {
    let err = |source| HarnessError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_script(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn is_script(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("t" | "py"))
        || std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// The command line that runs a script: `.t` through `perl`, `.py` through
/// `python3`, an executable directly (the kernel honours its shebang), else
/// the interpreter its shebang names.
pub fn command_for(path: &Path) -> Result<Vec<String>, String> {
    let p = path.display().to_string();
    match path.extension().and_then(|e| e.to_str()) {
        Some("t") => return Ok(vec!["perl".into(), p]),
        Some("py") => return Ok(vec!["python3".into(), p]),
        _ => {}
    }
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0) {
        let direct = if path.is_absolute() || p.contains('/') {
            p
        } else {
            format!("./{p}")
        };
        return Ok(vec![direct]);
    }
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| format!("cannot read {p}: {e}"))?;
    let head = String::from_utf8_lossy(&head[..n]);
    match head.strip_prefix("#!") {
        Some(rest) => {
            let line = rest.lines().next().unwrap_or("");
            let mut cmd: Vec<String> = line.split_whitespace().map(String::from).collect();
            if cmd.is_empty() {
                return Err(format!("{p}: empty shebang"));
            }
            cmd.push(p);
            Ok(cmd)
        }
        None => Err(format!("{p}: not executable and has no shebang")),
    }
}

/// Runs every script of the kit and gathers their suites into one report.
pub async fn run_kit(cfg: &RunConfig) -> Result<Report, HarnessError> {
    Ok(run_kit_compact(cfg).await?.into_report())
}

/// [`run_kit`], the report in compact form: a kit printing a million passing
/// test points takes megabytes, not gigabytes.
pub async fn run_kit_compact(cfg: &RunConfig) -> Result<CompactReport, HarnessError> {
    let scripts = discover(cfg)?;
    let root = kit_root(cfg);
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tck".to_string());
    let now = Utc::now();
    let id = format!(
        "tck-{}-{}",
        now.timestamp_nanos_opt().unwrap_or_default(),
        std::process::id()
    );
    let mut report = Report::new(id, name, now);
    report.started_at = Some(now);
    if let Some(p) = &cfg.kit.platform {
        report.properties.insert("platform".into(), p.clone());
    }
    for (k, v) in &cfg.kit.labels {
        report
            .properties
            .insert(format!("{LABEL_PREFIX}{k}"), v.clone());
    }

    let env = Arc::new(cfg.kit.env());
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, script) in scripts.iter().cloned().enumerate() {
        let env = env.clone();
        let permits = permits.clone();
        let root = root.clone();
        let timeout = cfg.timeout;
        let echo = cfg.echo.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let suite = run_script_compact(&script, &root, &env, timeout, echo.as_ref()).await;
            (i, suite)
        });
    }
    let mut suites: Vec<Option<(Suite, CaseList)>> = vec![None; scripts.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, suite)) = joined {
            suites[i] = Some(suite);
        }
    }
    let mut report = CompactReport::new(report);
    for (s, script) in suites.into_iter().zip(&scripts) {
        let (suite, list) = s.unwrap_or_else(|| {
            error_suite(&script.name, "the harness task running it panicked".into())
        });
        report.push_suite(suite, list);
    }
    report.head.finished_at = Some(Utc::now());
    Ok(report)
}

fn error_suite(name: &str, msg: String) -> (Suite, CaseList) {
    let (parsed, list) = Parser::new().finish_list();
    parsed.into_suite_list(list, name, &ScriptExit::Error(msg))
}

/// Reads `reader` to its end, keeping at most `max` bytes.
async fn capture_bounded(mut reader: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// Runs one script and judges it; never fails, a script that cannot run is
/// an `error` suite.
pub async fn run_script(
    script: &Script,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    echo: Option<&EchoFn>,
) -> Suite {
    let (mut suite, list) = run_script_compact(script, cwd, env, timeout, echo).await;
    suite.cases = list.to_vec();
    suite
}

/// [`run_script`], the cases in a compact list rather than in the suite.
pub async fn run_script_compact(
    script: &Script,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    echo: Option<&EchoFn>,
) -> (Suite, CaseList) {
    let started = Utc::now();
    let clock = Instant::now();
    let argv = match command_for(&script.path) {
        Ok(a) => a,
        Err(e) => return error_suite(&script.name, e),
    };
    // Run from the kit directory with an absolute script path, so scripts can
    // find their fixtures relative to the kit.
    let mut argv = argv;
    if let Some(last) = argv.last_mut() {
        *last = absolute(&script.path).display().to_string();
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)));
    // Its own process group, so a timeout kills the children it spawned,
    // and that group dies with this process (an agent SIGKILLed mid-run),
    // so no script outlives whoever could report it.
    let mut group = match testbed_process::spawn(&mut cmd, None) {
        Ok(g) => g,
        Err(e) => return error_suite(&script.name, format!("cannot run {}: {e}", argv[0])),
    };
    let stderr_task = group
        .child()
        .stderr
        .take()
        .map(|e| tokio::spawn(capture_bounded(e, MAX_STDERR)));
    let mut stdout = group.child().stdout.take();
    let mut parser = Parser::new();
    let mut transcript: Vec<u8> = Vec::new();

    let run = async {
        if let Some(out) = stdout.as_mut() {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        parser.push(&buf[..n]);
                        let room = MAX_CAPTURE.saturating_sub(transcript.len());
                        transcript.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
        }
        group.wait().await
    };
    let exit = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) => match (status.code(), status.signal()) {
            (Some(c), _) => ScriptExit::Code(c),
            (None, Some(s)) => ScriptExit::Signal(s),
            (None, None) => ScriptExit::Error("exited without a status".into()),
        },
        Ok(Err(e)) => ScriptExit::Error(format!("waiting for the script: {e}")),
        Err(_) => {
            let _ = group.kill_and_wait().await;
            ScriptExit::TimedOut(timeout)
        }
    };
    // Whatever the script left running after it exited by itself is its
    // own business.
    group.release();
    drop(stdout);
    let stderr = match stderr_task {
        // A grandchild outside the group may hold the pipe open; don't wait on it.
        Some(task) => match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        },
        None => String::new(),
    };
    let tap = String::from_utf8_lossy(&transcript).into_owned();
    if let Some(echo) = echo {
        echo(&script.name, &tap, &stderr);
    }
    let (parsed, list) = parser.finish_list();
    let (mut suite, mut list) = parsed.into_suite_list(list, &script.name, &exit);
    suite.started_at = Some(started);
    suite.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    suite.properties.insert("command".into(), argv.join(" "));
    attach_stderr(&mut list, stderr);
    (suite, list)
}

/// Puts stderr where a reader of a failure looks: on the `(script)` case, else
/// on the first failing case.
fn attach_stderr(list: &mut CaseList, stderr: String) {
    if stderr.trim().is_empty() {
        return;
    }
    // Both kinds of target are failures or the script's case, never bare passes.
    let target = list
        .whole()
        .find(|(_, c)| c.name == SCRIPT_CASE && c.outcome != Outcome::Skip)
        .or_else(|| list.whole().find(|(_, c)| c.outcome.is_failure()))
        .map(|(i, _)| i);
    if let Some(i) = target {
        let mut case = list.get(i).into_owned();
        let out = case.output.get_or_insert_with(String::new);
        if !out.is_empty() {
            out.push_str("\n--- stderr ---\n");
        }
        out.push_str(&stderr);
        list.set(i, case);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters() {
        assert_eq!(command_for(Path::new("a/b.t")).unwrap()[0], "perl");
        assert_eq!(command_for(Path::new("a/b.py")).unwrap()[0], "python3");
    }
}
