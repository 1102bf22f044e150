//! `testbed run plan.yaml`: submit a plan, follow it live, write reports.
//!
//! Logged in (`testbed login`, or `TESTBED_SERVER`/`TESTBED_TOKEN`), the plan
//! runs on that server. Otherwise, or with `--local`, a local platform
//! (server, store and local agents) starts in this process for the run: in
//! a scratch directory thrown away after it, or kept in `--data-dir DIR`
//! with the layout of `testbed up --data-dir DIR`, which reopens it. Its log
//! goes to DIR/testbed.log, not into the user's output (`-v` shows it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiFailure, Client};
use crate::output;
use testbed_api::agents::Slave;
use testbed_api::auth::UserView;
use testbed_api::runs::{CreateRun, Run, RunStatus, StepState, StepStatus};

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

    /// Writes every requested format of any [`testbed_report::View`] of a
    /// report as it is rendered (through a temporary file and a rename each),
    /// so neither its cases nor its text are held whole.
    pub fn write_view(&self, report: &impl testbed_report::View) -> anyhow::Result<()> {
        use testbed_report::Format;
        for (path, format) in [
            (&self.json, Format::Json),
            (&self.tap, Format::Tap),
            (&self.html, Format::Html),
            (&self.junit, Format::Junit),
        ] {
            if let Some(p) = path {
                super::tck::write_report_file(p, format, report)?;
            }
        }
        Ok(())
    }

    /// [`Self::conclude`] for any [`testbed_report::View`]: the files are
    /// written and the summary printed as they are rendered.
    pub fn conclude_view(
        &self,
        report: &impl testbed_report::View,
    ) -> anyhow::Result<std::process::ExitCode> {
        self.write_view(report)?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        testbed_report::write_summary(report, &mut out).context("writing the summary")?;
        std::io::Write::flush(&mut out).context("writing the summary")?;
        Ok(if testbed_report::view::summary(report).ok {
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
#[command(after_help = "Where the plan runs:\n  \
    logged in (`testbed login`, or TESTBED_SERVER + TESTBED_TOKEN)\n      \
    on that server; stderr says which server and user.\n  \
    --local\n      \
    on a local platform (server, store, --agents agents) started in this\n      \
    process for the run and thrown away after it, records and logs included.\n  \
    --data-dir DIR\n      \
    the same, but kept in DIR: reopen it with `testbed up --data-dir DIR` and\n      \
    look at the run with `testbed runs show ID`. Its log is DIR/testbed.log.\n  \
    neither logged in nor a flag\n      \
    like --local, and stderr says so.\n\n\
    The local platform's log is not shown unless -v or TESTBED_LOG asks.\n\n\
Exit codes:\n  \
    0  the run passed\n  \
    1  a test (step) failed\n  \
    2  no verdict: the run was cancelled (Ctrl-C, SIGTERM, `testbed runs cancel`;\n     \
    the summary says `Result: CANCELLED`), the plan is invalid, or the server\n     \
    could not be reached")]
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
    /// Run on a local platform started for this run, even when logged in
    /// (thrown away after the run unless --data-dir keeps it).
    #[arg(long)]
    pub local: bool,
    /// Keep the local platform in DIR (implies --local); `testbed up
    /// --data-dir DIR` reopens it.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Local agents of the local platform.
    #[arg(long, default_value_t = 1)]
    pub agents: u32,
    /// Labels and groups of the local platform's agents.
    #[command(flatten)]
    pub tags: super::up::LocalAgentTags,
    /// Show the local platform's log on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// Where a run's platform lives.
enum Place {
    /// A server the user is logged in to.
    Remote,
    /// A local platform in a directory deleted after the run.
    Throwaway,
    /// A local platform kept in this directory.
    Kept(PathBuf),
}

/// The local platform of a run without a server, on its own runtime so that
/// its log goes where [`local_log`] says, not into the user's output.
struct Embedded {
    rt: Option<tokio::runtime::Runtime>,
    server: Option<testbed_server::Server>,
    stop: CancellationToken,
    _dir: Option<tempfile::TempDir>,
}

impl Embedded {
    async fn shutdown(mut self) {
        self.stop.cancel();
        if let (Some(rt), Some(server)) = (&self.rt, self.server.take()) {
            let _ = rt.spawn(server.shutdown()).await;
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a runtime thread (this one) must
        // not do; the platform's tasks are stopped without waiting.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Where the local platform's log goes: DIR/testbed.log when kept (at
/// TESTBED_LOG's level, info by default), and on stderr only errors, unless
/// `-v` or TESTBED_LOG asks for more.
fn local_log(dir: Option<&Path>, verbose: bool) -> anyhow::Result<tracing::Dispatch> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let asked = std::env::var_os("TESTBED_LOG").is_some();
    let level =
        || EnvFilter::try_from_env("TESTBED_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_filter = if verbose || asked {
        level()
    } else {
        EnvFilter::new("error")
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(stderr_filter);
    let file = match dir {
        Some(d) => {
            let path = d.join("testbed.log");
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f))
                    .with_filter(level()),
            )
        }
        None => None,
    };
    Ok(tracing::Dispatch::new(
        tracing_subscriber::registry().with(stderr).with(file),
    ))
}

/// Labels and groups of the local agents.
type AgentTags = (BTreeMap<String, String>, Vec<String>);

async fn embedded(
    dir: Option<&Path>,
    agents: u32,
    tags: AgentTags,
    verbose: bool,
) -> anyhow::Result<(Embedded, Client)> {
    let (temp, root) = match dir {
        Some(d) => {
            testbed_store::private::ensure_private_dir(d)
                .with_context(|| format!("preparing {}", d.display()))?;
            (None, d.to_path_buf())
        }
        None => {
            let t = tempfile::tempdir().context("creating a scratch directory")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let dispatch = local_log(dir, verbose)?;
    // Every thread of this runtime, blocking ones included, logs to the
    // local platform's subscriber instead of the process-wide one.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("testbed-local")
        .enable_all()
        .on_thread_start(move || {
            // Kept for the thread's whole life: never popped.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .build()
        .context("starting the local platform's runtime")?;
    let stop = CancellationToken::new();
    let kept = dir.is_some();
    let started = rt
        .spawn(start_local(root.clone(), agents, tags, stop.clone(), kept))
        .await
        .context("starting the local platform")?;
    let mut e = Embedded {
        rt: Some(rt),
        server: None,
        stop,
        _dir: temp,
    };
    let (server, token) = started?;
    let client = Client::new(&server.url(), &token);
    e.server = Some(server);
    // Wait for the local agents so the plan's checks see their plugins.
    for _ in 0..100 {
        let d: BTreeMap<String, Slave> = client.get("/v2.1/slaves/detail").await?;
        if d.len() >= agents.max(1) as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((e, client))
}

/// Starts the server and agents of a local platform in `root` (the layout
/// of `testbed up --data-dir`) and returns the server and an admin token.
async fn start_local(
    root: PathBuf,
    agents: u32,
    (labels, groups): AgentTags,
    stop: CancellationToken,
    kept: bool,
) -> anyhow::Result<(testbed_server::Server, String)> {
    let db = root.join("testbed.redb");
    let store = testbed_store::open(&format!("redb:{}", db.display()), Default::default())
        .await
        .with_context(|| {
            format!(
                "opening {} (if a `testbed up --data-dir {}` is using it, log in to that \
                 server and run without --data-dir)",
                db.display(),
                root.display()
            )
        })?;
    let server = testbed_server::start(testbed_server::ServerConfig {
        listen: "127.0.0.1:0".into(),
        store: store.clone(),
        blobs: testbed_server::blobs::Blobs::local(&root.join("blobs"))?,
        settings: Default::default(),
        // A kept platform's admin is the one `testbed up` will know.
        admin_password: if kept {
            std::env::var("TESTBED_ADMIN_PASSWORD").ok()
        } else {
            None
        },
        join_token: None,
        token_ttl: Duration::from_secs(24 * 3600),
        replica: "embedded".into(),
    })
    .await?;
    if kept {
        if let Some(p) = &server.generated_admin_password {
            eprintln!(
                "created user admin with password {p} (shown once; `testbed admin \
                 reset-password --data-dir {}` sets another)",
                root.display()
            );
        }
    }
    let token = local_admin_token(&store).await?;
    for i in 1..=agents.max(1) {
        let name = format!("local-{i}");
        let mut cfg = testbed_agent::AgentConfig::new(&server.url(), &server.join_token, &name);
        cfg.plugins = vec!["linux_system".into(), "build_server".into()];
        cfg.state_dir = root.join("agents").join(&name);
        cfg.labels = labels.clone();
        cfg.groups = groups.clone();
        let agent = testbed_agent::Agent::build(cfg).await?;
        let s = stop.clone();
        tokio::spawn(async move { agent.run(s).await });
    }
    Ok((server, token))
}

/// An admin session token signed with the store's own key. Whoever can open
/// the store owns the platform (as with `testbed admin reset-password`), so
/// a kept data dir needs no password, and none is ever typed or shown.
async fn local_admin_token(store: &testbed_store::DynStore) -> anyhow::Result<String> {
    let secret = store
        .get(&testbed_core::keys::config("jwt_secret"))
        .await?
        .context("the local store has no signing key")?
        .value;
    let (admin, _) = testbed_server::records::get::<testbed_core::user::UserRecord>(
        store,
        &testbed_core::keys::user("admin"),
    )
    .await?
    .context("the local store has no admin user")?;
    let auth =
        testbed_server::auth::Auth::new(&secret, String::new(), Duration::from_secs(24 * 3600));
    auth.issue_user(&admin)
        .map_err(|e| anyhow::anyhow!("signing a local token: {}", e.message))
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
    match f.details.as_slice() {
        [] => eprintln!("{}: {}", file.display(), f.message),
        list => {
            for d in list {
                let field = d.field.as_str();
                // "steps[1].depends_on[0] (line 9, column 17)"
                let (path, loc) = match field.split_once(" (line ") {
                    Some((p, rest)) => {
                        let rest = rest.trim_end_matches(')');
                        let (l, c) = rest.split_once(", column ").unwrap_or((rest, "1"));
                        (p.to_string(), format!("{l}:{c}: "))
                    }
                    None => (field.to_string(), String::new()),
                };
                eprintln!("{}:{loc}{path}: {}", file.display(), d.message);
            }
        }
    }
    true
}

/// Whether the user is logged in somewhere: `testbed login`'s file or the
/// environment.
fn logged_in() -> bool {
    std::env::var_os("TESTBED_SERVER").is_some()
        || std::env::var_os("TESTBED_TOKEN").is_some()
        || crate::client::credentials_path().exists()
}

/// The logged-in server's client, after checking it answers, and who we are
/// there.
async fn remote() -> anyhow::Result<(Client, String)> {
    let client = Client::from_env()?;
    let me: Result<UserView, _> = client.get("/api/auth/me").await;
    match me {
        Ok(me) => Ok((client, me.username)),
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) if f.status == 401 => anyhow::bail!(
                "{}: {} — log in again with `testbed login`, or run on a local platform \
                 with `testbed run --local`",
                client.server,
                f.message
            ),
            Some(_) => Err(e),
            None => anyhow::bail!(
                "cannot reach {} ({e:#}): start it (`testbed up`), log in to another server \
                 (`testbed login --server URL`), or run on a local platform with `testbed run \
                 --local`",
                client.server
            ),
        },
    }
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
    let place = match &args.data_dir {
        Some(d) => Place::Kept(d.clone()),
        None if args.local => Place::Throwaway,
        None if logged_in() => Place::Remote,
        None => {
            eprintln!(
                "not logged in to a server (`testbed login`, TESTBED_SERVER): running on a \
                 throwaway local platform, deleted with its records when the run ends.\n\
                 To keep them: testbed run --data-dir DIR {} (then `testbed up --data-dir DIR`)",
                args.plan.display()
            );
            Place::Throwaway
        }
    };
    let (embedded, client) = match &place {
        Place::Remote => {
            let (c, user) = remote().await?;
            eprintln!("running on {} as {user}", c.server);
            (None, c)
        }
        Place::Throwaway => {
            if args.local {
                eprintln!(
                    "running on a throwaway local platform (deleted when the run ends; \
                     --data-dir DIR keeps it)"
                );
            }
            let (e, c) = embedded(None, args.agents, args.tags.parse()?, args.verbose).await?;
            (Some(e), c)
        }
        Place::Kept(dir) => {
            eprintln!(
                "running on a local platform kept in {} (reopen it with `testbed up \
                 --data-dir {}`)",
                dir.display(),
                dir.display()
            );
            let (e, c) = embedded(Some(dir), args.agents, args.tags.parse()?, args.verbose).await?;
            (Some(e), c)
        }
    };
    // Ctrl-C and SIGTERM are caught from here on (registered before the run
    // exists, so no signal can kill it unreported): they cancel the run.
    let interrupted = interrupt_listener()?;
    let created: Result<Run, _> = client
        .post(
            "/api/runs",
            &CreateRun {
                plan_id: None,
                plan: Some(source),
                params,
                environment: args.environment.clone(),
            },
        )
        .await;
    let run = match created {
        Ok(r) => r,
        Err(e) => {
            if !print_problems(&args.plan, &e) {
                eprintln!("error: {e:#}");
            }
            if let Some(e) = embedded {
                e.shutdown().await;
            }
            return Ok(ExitCode::from(2));
        }
    };
    let id = run.id.to_string();
    let plan_name = &run.plan_name;
    match &place {
        // Its id would name a run nobody can look up once the platform is gone.
        Place::Throwaway => eprintln!("run {plan_name} (on the throwaway platform)"),
        _ => eprintln!("run {id}: {plan_name}"),
    }
    let finished = follow(&client, &id, Some(interrupted)).await?;
    let code = conclude(
        &client,
        &finished,
        &args.reports,
        matches!(place, Place::Throwaway),
    )
    .await?;
    match &place {
        Place::Remote => eprintln!("details: testbed runs show {id}"),
        Place::Kept(dir) => eprintln!(
            "kept in {}: `testbed up --data-dir {}`, then `testbed runs show {id}`",
            dir.display(),
            dir.display()
        ),
        Place::Throwaway => {}
    }
    if let Some(e) = embedded {
        e.shutdown().await;
    }
    Ok(code)
}

/// A task that ends on the first SIGINT or SIGTERM. The handlers are
/// installed before this returns.
fn interrupt_listener() -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }))
}

/// Follows a run until it ends, showing each step; Ctrl-C or SIGTERM (the
/// caller's `interrupt` listener, else one of its own) cancels the run.
async fn follow(
    client: &Client,
    id: &str,
    interrupt: Option<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Run> {
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut waiting: BTreeMap<String, Instant> = BTreeMap::new();
    let mut cancelled = false;
    let mut interrupt = Some(interrupt.unwrap_or_else(|| tokio::spawn(super::terminated())));
    loop {
        if let Some(h) = &interrupt {
            if h.is_finished() && !cancelled {
                eprintln!("cancelling the run … (interrupt again to stop waiting)");
                let _: Result<Value, _> = client
                    .post(&format!("/api/runs/{id}/cancel"), &json!({}))
                    .await;
                cancelled = true;
                // A second signal ends the wait for a server that is slow
                // to confirm the cancel.
                interrupt = Some(tokio::spawn(super::terminated()));
            } else if h.is_finished() {
                anyhow::bail!("interrupted again: stopped following the run while it is cancelled");
            }
        }
        let run: Run = client.get(&format!("/api/runs/{id}")).await?;
        let order: Vec<String> = run.spec.steps.iter().map(|s| s.id.clone()).collect();
        for step in &order {
            // A step with no state yet is pending.
            let st = run.steps.get(step).cloned().unwrap_or_default();
            let st = &st;
            let status = &output::text(&st.status);
            let status = status.as_str();
            let reason = st.reason.as_deref().unwrap_or("");
            if tty {
                let bar = bars.entry(step.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.set_prefix(step.clone());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                if !bar.is_finished() {
                    bar.set_message(crate::output::status_with_reason(status, reason));
                }
            } else if status == "pending" && !reason.is_empty() {
                // A log or CI job sees why a step waits: once when it starts
                // waiting, then every 30 s (the reason counts the seconds).
                let due = waiting
                    .get(step)
                    .is_none_or(|t: &Instant| t.elapsed() >= Duration::from_secs(30));
                if due {
                    waiting.insert(step.clone(), Instant::now());
                    eprintln!(
                        "… {step} {}",
                        crate::output::status_with_reason(status, reason)
                    );
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
        if !matches!(run.status, RunStatus::Pending | RunStatus::Running) {
            if let Some(h) = interrupt {
                h.abort();
            }
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn step_line(step: &str, st: &StepState) -> String {
    let status = output::text(&st.status);
    let status = status.as_str();
    let mark = match status {
        "passed" => "✓",
        "skipped" => "-",
        "cancelled" => "⊘",
        _ => "✗",
    };
    let dur = match (st.started_at, st.finished_at) {
        (Some(s), Some(f)) => {
            let secs = (f - s).num_milliseconds() as f64 / 1000.0;
            format!(" ({:.1}s)", secs.max(0.0))
        }
        _ => String::new(),
    };
    let reason = st
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!("{mark} {step} {status}{dur}{reason}")
}

async fn print_failure_log(client: &Client, st: &StepState) {
    for inst in &st.instances {
        if !matches!(inst.status, StepStatus::Failed | StepStatus::Error) {
            continue;
        }
        let Some(task) = inst.task_id else {
            continue;
        };
        if let Ok((log, _)) = client.get_text(&format!("/api/tasks/{task}/log")).await {
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(40);
            eprintln!(
                "  ── log of {} on {} (last {} lines) ──",
                task,
                inst.agent_name,
                lines.len() - start
            );
            for l in &lines[start..] {
                eprintln!("  │ {l}");
            }
        }
    }
}

/// Prints the summary, writes report files, and maps the run to an exit
/// code. `throwaway`: the platform goes away after the run, so the report
/// keeps no links into it.
async fn conclude(
    client: &Client,
    run: &Run,
    files: &ReportFiles,
    throwaway: bool,
) -> anyhow::Result<ExitCode> {
    let id = run.id;
    // The report is written right after the run ends.
    let mut report_id = run.report_id;
    for _ in 0..50 {
        if report_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r: Run = client.get(&format!("/api/runs/{id}")).await?;
        report_id = r.report_id;
    }
    let report_id = report_id.context("the run ended without a report")?;
    // Downloaded to a temporary file and read as it streams into the compact
    // form (a passing case is its name), so a run of a million test points
    // costs the client megabytes, not the report's text and a `Case` a point.
    let file = client.download_report(&report_id.to_string()).await?;
    let what = format!("run {id}'s report {report_id}");
    // A cancelled run's report carries the server's mark, so its summary
    // says CANCELLED (engine::report).
    let mut report = tokio::task::spawn_blocking(move || testbed_report::read_compact(file))
        .await
        .with_context(|| format!("reading {what}"))?
        .with_context(|| format!("reading {what}"))?;
    if throwaway {
        forget_links(&mut report);
    }
    files.write_view(&report)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    testbed_report::write_summary(&report, &mut out).context("writing the summary")?;
    std::io::Write::flush(&mut out).context("writing the summary")?;
    // 2 for a cancelled run: neither a pass nor a test failure.
    Ok(match run.status {
        RunStatus::Passed => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}

/// Drops every case's links into a platform that is going away: only cases
/// kept whole have any (a bare pass has none).
fn forget_links(report: &mut testbed_report::CompactReport) {
    for list in &mut report.lists {
        let linked: Vec<(usize, testbed_report::Case)> = list
            .whole()
            .filter(|(_, c)| c.log_url.is_some() || !c.artifacts.is_empty())
            .map(|(i, c)| {
                let mut c = c.clone();
                c.log_url = None;
                c.artifacts.clear();
                (i, c)
            })
            .collect();
        for (i, c) in linked {
            list.set(i, c);
        }
    }
}
