//! `testbed run plan.yaml`: submit a plan, follow it live, write reports.
//!
//! With `TESTBED_SERVER` set the plan runs there; otherwise an embedded
//! platform (server, store and one local agent) starts in this process for
//! the run and stops after it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiFailure, Client};

#[derive(Args, Debug, Clone, Default)]
pub struct ReportFiles {
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a TAP 13 report here.
    #[arg(long, value_name = "FILE")]
    pub tap: Option<PathBuf>,
    /// Write the canonical JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl ReportFiles {
    /// Writes the requested files, prints the prove-style summary and says
    /// how the command exits: 0 when the report is ok, 1 when a test failed.
    pub fn conclude(
        &self,
        report: &testbed_report::Report,
    ) -> anyhow::Result<std::process::ExitCode> {
        self.write(report)?;
        print!("{}", testbed_report::to_summary(report));
        Ok(if report.summary().ok {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(1)
        })
    }

    /// Writes every requested format of `report`.
    pub fn write(&self, report: &testbed_report::Report) -> anyhow::Result<()> {
        // Through a temporary file and a rename, so a CI job that reads the
        // file never sees half a report, even if this process is killed.
        let write = |path: &Option<PathBuf>, body: String| -> anyhow::Result<()> {
            if let Some(p) = path {
                let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
                    .with_context(|| format!("writing {}", p.display()))?;
                std::io::Write::write_all(&mut tmp, body.as_bytes())
                    .with_context(|| format!("writing {}", p.display()))?;
                // A temporary file is private (0600); a report is not.
                let mut mode = tmp
                    .as_file()
                    .metadata()
                    .with_context(|| format!("writing {}", p.display()))?
                    .permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o644);
                tmp.as_file()
                    .set_permissions(mode)
                    .with_context(|| format!("writing {}", p.display()))?;
                tmp.persist(p)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        };
        write(&self.json, testbed_report::to_json(report))?;
        write(&self.tap, testbed_report::to_tap(report))?;
        write(&self.html, testbed_report::to_html(report))?;
        if self.junit.is_some() {
            write(&self.junit, testbed_report::to_junit(report)?)?;
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plan (YAML).
    pub plan: PathBuf,
    /// A parameter, `key=value` (repeatable).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Environment for test-case steps.
    #[arg(short = 'e', long)]
    pub environment: Option<String>,
    #[command(flatten)]
    pub reports: ReportFiles,
    /// Local agents of the embedded platform (when TESTBED_SERVER is unset).
    #[arg(long, default_value_t = 1)]
    pub agents: u32,
}

/// The embedded platform of a run without a server.
struct Embedded {
    server: testbed_server::Server,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn embedded(agents: u32) -> anyhow::Result<(Embedded, Client)> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let store = testbed_store::open(
        &format!("redb:{}", dir.path().join("testbed.redb").display()),
        Default::default(),
    )
    .await?;
    let password = testbed_server::auth::random_token(16);
    let server = testbed_server::start(testbed_server::ServerConfig {
        listen: "127.0.0.1:0".into(),
        store,
        blobs: testbed_server::blobs::Blobs::local(&dir.path().join("blobs"))?,
        settings: Default::default(),
        admin_password: Some(password.clone()),
        join_token: None,
        token_ttl: Duration::from_secs(24 * 3600),
        replica: "embedded".into(),
    })
    .await?;
    let stop = CancellationToken::new();
    for i in 1..=agents.max(1) {
        let name = format!("local-{i}");
        let mut cfg = testbed_agent::AgentConfig::new(&server.url(), &server.join_token, &name);
        cfg.plugins = vec!["linux_system".into(), "build_server".into()];
        cfg.state_dir = dir.path().join("agents").join(&name);
        let agent = testbed_agent::Agent::build(cfg).await?;
        let s = stop.clone();
        tokio::spawn(async move { agent.run(s).await });
    }
    let token = crate::client::login(&server.url(), "admin", &password).await?;
    let client = Client::new(&server.url(), &token);
    // Wait for the local agents so the plan's checks see their plugins.
    for _ in 0..100 {
        let d: Value = client.get("/v2.1/slaves/detail").await?;
        if d.as_object().map_or(0, |m| m.len()) >= agents.max(1) as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((
        Embedded {
            server,
            stop,
            _dir: dir,
        },
        client,
    ))
}

fn parse_params(list: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for p in list {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("-p {p}: expected key=value"))?;
        out.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(out)
}

/// Prints a 422's problems as `FILE:LINE:COLUMN: path: message`.
fn print_problems(file: &Path, err: &anyhow::Error) -> bool {
    let Some(f) = err.downcast_ref::<ApiFailure>() else {
        return false;
    };
    if f.status != 422 {
        return false;
    }
    match f.details.as_array() {
        Some(list) if !list.is_empty() => {
            for d in list {
                let field = d["field"].as_str().unwrap_or("");
                // "steps[1].depends_on[0] (line 9, column 17)"
                let (path, loc) = match field.split_once(" (line ") {
                    Some((p, rest)) => {
                        let rest = rest.trim_end_matches(')');
                        let (l, c) = rest.split_once(", column ").unwrap_or((rest, "1"));
                        (p.to_string(), format!("{l}:{c}: "))
                    }
                    None => (field.to_string(), String::new()),
                };
                eprintln!(
                    "{}:{loc}{path}: {}",
                    file.display(),
                    d["message"].as_str().unwrap_or("")
                );
            }
        }
        _ => eprintln!("{}: {}", file.display(), f.message),
    }
    true
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("reading {}", args.plan.display()))?;
    // Static problems are reported before anything starts.
    if let Err(problems) = testbed_core::plan::parse(&source) {
        for p in problems {
            // Whole-document problems (YAML syntax, input limits) have no path.
            let path = if p.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", p.path)
            };
            match (p.line, p.column) {
                (Some(l), Some(c)) => {
                    eprintln!("{}:{l}:{c}: {path}{}", args.plan.display(), p.message)
                }
                _ => eprintln!("{}: {path}{}", args.plan.display(), p.message),
            }
        }
        return Ok(ExitCode::from(2));
    }
    let params = parse_params(&args.params)?;
    let (embedded, client) = if std::env::var("TESTBED_SERVER").is_ok() {
        (None, Client::from_env()?)
    } else {
        let (e, c) = embedded(args.agents).await?;
        (Some(e), c)
    };
    let created: Result<Value, _> = client
        .post(
            "/api/runs",
            &json!({"plan": source, "params": params, "environment": args.environment}),
        )
        .await;
    let run = match created {
        Ok(r) => r,
        Err(e) => {
            if !print_problems(&args.plan, &e) {
                eprintln!("error: {e:#}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let id = run["id"].as_str().context("no run id")?.to_string();
    eprintln!("run {id}: {}", run["plan_name"].as_str().unwrap_or(""));
    let finished = follow(&client, &id).await?;
    let code = conclude(&client, &finished, &args.reports).await?;
    if let Some(e) = embedded {
        e.stop.cancel();
        e.server.shutdown().await;
    }
    Ok(code)
}

/// Follows a run until it ends, showing each step; Ctrl-C cancels the run.
pub async fn follow(client: &Client, id: &str) -> anyhow::Result<Value> {
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut cancelled = false;
    let interrupt = tokio::spawn(super::terminated());
    let mut interrupt = Some(interrupt);
    loop {
        if let Some(h) = &interrupt {
            if h.is_finished() && !cancelled {
                eprintln!("cancelling run {id} …");
                let _: Result<Value, _> = client
                    .post(&format!("/api/runs/{id}/cancel"), &json!({}))
                    .await;
                cancelled = true;
                interrupt = None;
            }
        }
        let run: Value = client.get(&format!("/api/runs/{id}")).await?;
        let order: Vec<String> = run["spec"]["steps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for step in &order {
            let st = &run["steps"][step];
            let status = st["status"].as_str().unwrap_or("pending");
            let reason = st["reason"].as_str().unwrap_or("");
            if tty {
                let bar = bars.entry(step.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.set_prefix(step.clone());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                if !bar.is_finished() {
                    bar.set_message(format!("{status} {reason}"));
                }
            }
            let terminal = !matches!(status, "pending" | "running");
            if terminal && reported.insert(step.clone()) {
                let line = step_line(step, st);
                if tty {
                    if let Some(b) = bars.get(step) {
                        b.finish_with_message(line.clone());
                    }
                } else {
                    eprintln!("{line}");
                }
                if matches!(status, "failed" | "error") {
                    print_failure_log(client, st).await;
                }
            }
        }
        if !matches!(run["status"].as_str(), Some("pending" | "running")) {
            if let Some(h) = interrupt {
                h.abort();
            }
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn step_line(step: &str, st: &Value) -> String {
    let status = st["status"].as_str().unwrap_or("?");
    let mark = match status {
        "passed" => "✓",
        "skipped" => "-",
        "cancelled" => "⊘",
        _ => "✗",
    };
    let dur = match (st["started_at"].as_str(), st["finished_at"].as_str()) {
        (Some(s), Some(f)) => {
            let p = |t: &str| chrono_like(t);
            match (p(s), p(f)) {
                (Some(a), Some(b)) => format!(" ({:.1}s)", (b - a).max(0.0)),
                _ => String::new(),
            }
        }
        _ => String::new(),
    };
    let reason = st["reason"]
        .as_str()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!("{mark} {step} {status}{dur}{reason}")
}

/// Seconds since the epoch of an RFC 3339 time.
fn chrono_like(t: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_millis() as f64 / 1000.0)
}

async fn print_failure_log(client: &Client, st: &Value) {
    for inst in st["instances"].as_array().into_iter().flatten() {
        if !matches!(inst["status"].as_str(), Some("failed" | "error")) {
            continue;
        }
        let Some(task) = inst["task_id"].as_str() else {
            continue;
        };
        if let Ok((log, _)) = client.get_text(&format!("/api/tasks/{task}/log")).await {
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(40);
            eprintln!(
                "  ── log of {} on {} (last {} lines) ──",
                task,
                inst["agent_name"].as_str().unwrap_or("?"),
                lines.len() - start
            );
            for l in &lines[start..] {
                eprintln!("  │ {l}");
            }
        }
    }
}

/// Prints the summary, writes report files, and maps the run to an exit code.
pub async fn conclude(
    client: &Client,
    run: &Value,
    files: &ReportFiles,
) -> anyhow::Result<ExitCode> {
    let id = run["id"].as_str().unwrap_or("");
    // The report is written right after the run ends.
    let mut report_id = run["report_id"].as_str().map(String::from);
    for _ in 0..50 {
        if report_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r: Value = client.get(&format!("/api/runs/{id}")).await?;
        report_id = r["report_id"].as_str().map(String::from);
    }
    let report_id = report_id.context("the run ended without a report")?;
    let (json_text, _) = client
        .get_text(&format!("/api/reports/{report_id}?format=json"))
        .await?;
    let report = testbed_report::from_json(&json_text)?;
    files.write(&report)?;
    print!("{}", testbed_report::to_summary(&report));
    Ok(match run["status"].as_str() {
        Some("passed") => ExitCode::SUCCESS,
        Some("failed") => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}
