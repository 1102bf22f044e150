//! `testbed api`: API test suites and Postman collections (`run`), static
//! checks of those files (`lint`), and OpenAPI contract checks (`check`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use testbed_apitest::files::{self, Options};
use testbed_apitest::openapi::{self, CheckOptions};
use testbed_apitest::postman;

use super::run::ReportFiles;

#[derive(Subcommand, Debug)]
pub enum ApiCmd {
    /// Run YAML suites and/or Postman v2.0/v2.1 collections (exit 1 when a test fails, 2 on bad input).
    Run(RunArgs),
    /// Check suites and collections without sending anything: every problem, with line:column.
    Lint(LintArgs),
    /// Call every operation of an OpenAPI spec and check status codes and bodies against it.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Suite files (.yaml), collections (.json), or directories of them.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
    /// A suite environment's name, or a file of variables (YAML/JSON, or a Postman environment).
    #[arg(short = 'e', long = "environment", value_name = "NAME|FILE")]
    pub environment: Option<String>,
    /// Postman globals file.
    #[arg(short = 'g', long, value_name = "FILE")]
    pub globals: Option<PathBuf>,
    /// Iteration data for collections: a JSON array of objects or a CSV file, one iteration per row.
    #[arg(short = 'd', long = "iteration-data", value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Iterations of each collection (default: one per data row, or 1; rows run out → the last is reused).
    #[arg(short = 'n', long = "iteration-count", value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iterations: Option<usize>,
    /// A variable, `name=value` (repeatable; wins over files and environments, not over iteration data).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Run only tests with this tag (repeatable).
    #[arg(short = 't', long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Leave out tests with this tag (repeatable).
    #[arg(long = "skip-tag", value_name = "TAG")]
    pub skip_tags: Vec<String>,
    /// Accept any TLS certificate (Postman collections; suites say `tls.insecure`).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Time limit per collection test script (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = super::tck::parse_duration)]
    pub script_timeout: Duration,
    /// Files to run at the same time (each file's output is printed when it ends).
    #[arg(short = 'j', long, default_value_t = 1)]
    pub jobs: usize,
    /// Print only the summary.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub reports: ReportFiles,
    /// Boxed: Newman's options would make `run` far the largest command.
    #[command(flatten)]
    pub newman: Box<NewmanArgs>,
}

/// Newman's `run` options, spelt as Newman spells them, so that a CI line
/// `newman run …` works as `testbed api run …` (docs/api-tests.md maps each).
#[derive(Args, Debug)]
#[command(next_help_heading = "Newman options (Postman collections)")]
pub struct NewmanArgs {
    /// Run only this folder or request, by name (repeatable).
    #[arg(long = "folder", value_name = "NAME")]
    pub folders: Vec<String>,
    /// Stop at the first failure or error. Modifiers (comma-separated):
    /// `folder` runs nothing when a --folder name is unknown; `failure` is
    /// plain --bail.
    #[arg(long, value_name = "MODIFIERS", num_args = 0..=1, default_missing_value = "",
          value_parser = parse_bail)]
    pub bail: Option<Bail>,
    /// Wait this long between requests, in milliseconds.
    #[arg(long, value_name = "MS", value_parser = millis)]
    pub delay_request: Option<Duration>,
    /// Time limit per request, in milliseconds (0: none; default 30000).
    #[arg(long, value_name = "MS", value_parser = millis)]
    pub timeout_request: Option<Duration>,
    /// Time limit per script, in milliseconds (0: none); as --script-timeout.
    #[arg(long, value_name = "MS", value_parser = millis, conflicts_with = "script_timeout")]
    pub timeout_script: Option<Duration>,
    /// Time limit for the whole run of each collection, in milliseconds (0: none).
    #[arg(long, value_name = "MS", value_parser = millis)]
    pub timeout: Option<Duration>,
    /// Do not follow redirects: a 3xx reply is the response the tests see.
    #[arg(long)]
    pub ignore_redirects: bool,
    /// Write the environment as the run left it here (a Postman environment file).
    #[arg(long, value_name = "FILE")]
    pub export_environment: Option<PathBuf>,
    /// Write the globals as the run left them here.
    #[arg(long, value_name = "FILE")]
    pub export_globals: Option<PathBuf>,
    /// Write the collection, with its variables as the run left them, here.
    #[arg(long, value_name = "FILE")]
    pub export_collection: Option<PathBuf>,
    /// Start with the cookies of this jar (tough-cookie's JSON, as Newman reads it).
    #[arg(long, value_name = "FILE")]
    pub cookie_jar: Option<PathBuf>,
    /// Write the run's cookie jar here (tough-cookie's JSON).
    #[arg(long, value_name = "FILE")]
    pub export_cookie_jar: Option<PathBuf>,
    /// An environment variable, KEY=VALUE (repeatable); as --var.
    #[arg(long = "env-var", value_name = "KEY=VALUE")]
    pub env_vars: Vec<String>,
    /// A global variable, KEY=VALUE (repeatable; wins over -g).
    #[arg(long = "global-var", value_name = "KEY=VALUE")]
    pub global_vars: Vec<String>,
    /// Reporters, comma-separated: cli (the default), json, junit.
    #[arg(short = 'r', long = "reporters", value_name = "NAMES", value_delimiter = ',',
          value_parser = ["cli", "json", "junit"])]
    pub reporters: Vec<String>,
    /// Where the json reporter writes (default: newman/newman-run-report-<time>.json).
    #[arg(long, value_name = "FILE")]
    pub reporter_json_export: Option<PathBuf>,
    /// Where the junit reporter writes (default: newman/newman-run-report-<time>.xml).
    #[arg(long, value_name = "FILE")]
    pub reporter_junit_export: Option<PathBuf>,
    /// Colour: on, off or auto (the output has none; accepted for Newman's CI lines).
    #[arg(long, value_name = "on|off|auto", value_parser = ["on", "off", "auto"])]
    pub color: Option<String>,
    /// Plain ASCII instead of Unicode marks and rules in the cli output.
    #[arg(long)]
    pub disable_unicode: bool,
    /// Accepted for Newman's CI lines; the output is the same.
    #[arg(long)]
    pub verbose: bool,
    /// No cli reporter output (the closing summary line stays).
    #[arg(long)]
    pub silent: bool,
    /// Exit 0 even when tests fail (bad input still exits 2).
    #[arg(short = 'x', long)]
    pub suppress_exit_code: bool,
    /// Where file bodies and form-data files are read from (default: the collection's directory).
    #[arg(long, value_name = "DIR")]
    pub working_dir: Option<PathBuf>,
}

/// `--bail` and its modifiers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bail {
    pub folder: bool,
}

fn parse_bail(s: &str) -> Result<Bail, String> {
    let mut bail = Bail::default();
    for m in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        match m {
            "folder" => bail.folder = true,
            "failure" => {}
            other => {
                return Err(format!(
                    "unknown modifier {other:?} (use folder, failure, or none)"
                ))
            }
        }
    }
    Ok(bail)
}

/// Milliseconds, as Newman's options take them; 0 means no limit.
fn millis(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("expected a whole number of milliseconds, not {s:?}"))
}

/// Newman's 0 ("no limit") for a time limit.
fn limit(d: Duration) -> Duration {
    if d.is_zero() {
        // A year stands for "never": tokio's timers take it without overflow.
        Duration::from_secs(365 * 24 * 3600)
    } else {
        d
    }
}

fn key_values(
    flag: &str,
    given: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut out = serde_json::Map::new();
    for v in given {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("{flag} {v:?}: expected NAME=VALUE"))?;
        out.insert(
            k.trim().to_string(),
            serde_json::Value::String(val.to_string()),
        );
    }
    Ok(out)
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// Suite files (.yaml), collections (.json), or directories of them.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The OpenAPI 3 document: a file or an http(s) URL.
    #[arg(long, value_name = "FILE|URL")]
    pub spec: String,
    /// Where the API is served, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub base_url: String,
    /// A bearer token for every request.
    #[arg(long, env = "TESTBED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log in first (`user:password`, Testbed's /api/auth/login) and use the token.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub login: Option<String>,
    /// An extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Leave out `METHOD /path` (a trailing `*` matches a prefix; repeatable).
    #[arg(long, value_name = "METHOD /PATH")]
    pub skip: Vec<String>,
    /// Also call every operation that requires credentials without them; it must answer a documented 401 or 403.
    #[arg(long)]
    pub check_auth: bool,
    /// Also call POST, PUT, PATCH and DELETE: they create resources of the check's own, act only on
    /// those, and delete them at the end (without it the check only reads).
    #[arg(long)]
    pub write: bool,
    /// Accept any TLS certificate from the API under test.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    #[command(flatten)]
    pub reports: ReportFiles,
}

pub async fn api(cmd: ApiCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ApiCmd::Run(a) => run(a).await,
        ApiCmd::Lint(a) => lint(a),
        ApiCmd::Check(a) => check(a).await,
    }
}

fn print_problems(problems: &[files::FileProblem]) {
    for p in problems {
        eprintln!("{p}");
    }
    eprintln!("{} problem(s); nothing was run", problems.len());
}

async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let n = &a.newman;
    let mut vars = key_values("--env-var", &n.env_vars)?;
    vars.extend(key_values("--var", &a.vars)?);
    let reporters: Vec<&str> = if n.reporters.is_empty() {
        vec!["cli"]
    } else {
        n.reporters.iter().map(String::as_str).collect()
    };
    let quiet = a.quiet || n.silent || !reporters.contains(&"cli");
    let ascii = n.disable_unicode;
    let collections = files::CollectionOptions {
        folders: n.folders.clone(),
        bail: n.bail.is_some(),
        bail_on_unknown_folder: n.bail.is_some_and(|b| b.folder),
        delay_request: n.delay_request.unwrap_or_default(),
        request_timeout: n.timeout_request.map(limit),
        run_timeout: n.timeout.filter(|t| !t.is_zero()),
        ignore_redirects: n.ignore_redirects,
        cookie_jar: n.cookie_jar.clone(),
        global_vars: key_values("--global-var", &n.global_vars)?,
        working_dir: n.working_dir.clone(),
    };
    let script_timeout = n.timeout_script.map_or(a.script_timeout, limit);
    let opts = Options {
        environment: a.environment,
        globals: a.globals,
        vars,
        tags: a.tags,
        skip_tags: a.skip_tags,
        insecure: a.insecure,
        script_timeout,
        jobs: a.jobs,
        data: a.data,
        iterations: a.iterations,
        collections,
        echo: (!quiet).then(|| {
            Arc::new(move |l: &str| {
                if ascii {
                    println!("{}", postman::ascii(l));
                } else {
                    println!("{l}");
                }
            }) as files::Echo
        }),
    };
    let loaded = match files::load(&a.paths, &opts) {
        Ok(l) => l,
        Err(problems) => {
            print_problems(&problems);
            return Ok(ExitCode::from(2));
        }
    };
    // Steps run one after another, so one thread serves them best: the
    // request and its connection task then never wake each other across
    // threads (about a third of the time per request on loopback).
    // Newman runs one collection; its file outputs describe that one run.
    let outputs = newman_outputs(&a.newman, &reporters);
    let collections = loaded
        .inputs
        .iter()
        .filter(|i| matches!(i, files::Input::Collection { .. }))
        .count();
    if !outputs.is_empty() && (collections != 1 || loaded.inputs.len() != 1) {
        eprintln!(
            "{} write(s) what one Postman collection's run left, as Newman does: give exactly \
             one collection (got {} input(s), {collections} collection(s))",
            outputs.join(", "),
            loaded.inputs.len()
        );
        return Ok(ExitCode::from(2));
    }
    // Cases and newman's JSON reporter's requests go to unlinked temporary
    // files as they end, and the reports are written from there: a run of
    // many iterations holds a few bytes a case, not the run.
    let spool = tempfile::tempfile().context("creating a temporary file for the cases")?;
    let newman_json = if reporters.contains(&"json") {
        Some(postman::NewmanJson::new(tempfile::tempfile().context(
            "creating a temporary file for the json reporter",
        )?))
    } else {
        None
    };
    let ran = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(files::run_streamed(&loaded, &opts, spool, newman_json)))
    })
    .await
    .context("the test runner stopped")?
    .context("starting the test runner")?
    .context("writing the run's cases to a temporary file")?;
    if let Some(c) = ran.collections.first() {
        write_newman_outputs(&a.newman, &reporters, c, &ran.report, ran.newman_json)?;
    }
    let code = a.reports.conclude_view(&ran.report)?;
    Ok(if a.newman.suppress_exit_code {
        ExitCode::SUCCESS
    } else {
        code
    })
}

/// The Newman options given that write files about one collection's run.
fn newman_outputs(n: &NewmanArgs, reporters: &[&str]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (given, flag) in [
        (n.export_environment.is_some(), "--export-environment"),
        (n.export_globals.is_some(), "--export-globals"),
        (n.export_collection.is_some(), "--export-collection"),
        (n.export_cookie_jar.is_some(), "--export-cookie-jar"),
        (reporters.contains(&"json"), "-r json"),
        (reporters.contains(&"junit"), "-r junit"),
    ] {
        if given {
            out.push(flag);
        }
    }
    out
}

/// Where a reporter writes: the path given, or Newman's default
/// `newman/newman-run-report-<time>.<ext>`; a given directory (existing, or
/// written with a trailing `/`) gets the default name inside it, as in Newman.
fn report_path(given: Option<&PathBuf>, ext: &str) -> PathBuf {
    let t = chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S-%3f-0");
    let name = format!("newman-run-report-{t}.{ext}");
    match given {
        None => PathBuf::from("newman").join(name),
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => p.join(name),
        Some(p) => p.clone(),
    }
}

fn create_parent(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn write_file(path: &std::path::Path, body: &str) -> anyhow::Result<()> {
    create_parent(path)?;
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Newman's file outputs of the run of `c`: its exports, the JSON reporter's
/// document (`json`, which has every request) and the JUnit reporter's
/// report (the run's `report`), each written as it is rendered.
fn write_newman_outputs(
    n: &NewmanArgs,
    reporters: &[&str],
    c: &files::CollectionRun,
    report: &testbed_apitest::spool::SpooledReport,
    json: Option<postman::NewmanJson>,
) -> anyhow::Result<()> {
    let run = &c.run;
    if let Some(p) = &n.export_environment {
        write_file(
            p,
            &pretty(&postman::newman_scope(&run.environment, "environment", "")),
        )?;
    }
    if let Some(p) = &n.export_globals {
        write_file(
            p,
            &pretty(&postman::newman_scope(&run.globals, "globals", "globals")),
        )?;
    }
    if let Some(p) = &n.export_cookie_jar {
        write_file(p, &pretty(&postman::cookie_jar_json(&run.cookies)))?;
    }
    if let Some(p) = &n.export_collection {
        let text = std::fs::read_to_string(&c.file)
            .with_context(|| format!("reading {}", c.file.display()))?;
        let mut doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("reading {}", c.file.display()))?;
        doc["variable"] = run
            .collection_variables
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v, "type": "any"}))
            .collect();
        write_file(p, &pretty(&doc))?;
    }
    if let Some(json) = json {
        let p = report_path(n.reporter_json_export.as_ref(), "json");
        let ctx = || format!("writing {}", p.display());
        create_parent(&p)?;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&p).with_context(ctx)?);
        json.finish(run, &mut w).with_context(ctx)?;
        std::io::Write::flush(&mut w).with_context(ctx)?;
    }
    if reporters.contains(&"junit") {
        let p = report_path(n.reporter_junit_export.as_ref(), "xml");
        create_parent(&p)?;
        super::tck::write_report_file(&p, testbed_report::Format::Junit, report)?;
    }
    Ok(())
}

fn lint(a: LintArgs) -> anyhow::Result<ExitCode> {
    match files::load(&a.paths, &Options::default()) {
        Ok(loaded) => {
            for i in &loaded.inputs {
                println!("ok {}", i.describe());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            Ok(ExitCode::from(2))
        }
    }
}

async fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let text = if a.spec.starts_with("http://") || a.spec.starts_with("https://") {
        reqwest::get(&a.spec)
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("fetching {}", a.spec))?
            .text()
            .await?
    } else {
        std::fs::read_to_string(&a.spec).with_context(|| format!("reading {}", a.spec))?
    };
    let spec: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| testbed_core::yaml::from_str_with(&text, &testbed_core::yaml::Limits::LARGE))
        .with_context(|| format!("{}: neither JSON nor YAML", a.spec))?;
    let mut headers = BTreeMap::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected `Name: value`"))?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let token = match (&a.login, a.token) {
        (Some(l), _) => {
            let (user, pass) = l
                .split_once(':')
                .context("--login: expected USER:PASSWORD")?;
            Some(crate::client::login(&a.base_url, user, pass).await?)
        }
        (None, t) => t,
    };
    if let Some(t) = token {
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    if a.write {
        eprintln!(
            "warning: --write: calling POST, PUT, PATCH and DELETE operations on {}; \
             they act only on resources this check creates, which it deletes at the end",
            a.base_url
        );
    }
    let opts = CheckOptions {
        write: a.write,
        base_url: a.base_url,
        headers,
        timeout: Some(Duration::from_secs(30)),
        insecure: a.insecure,
        skip: a.skip,
        check_auth: a.check_auth,
    };
    let report = openapi::check(&spec, &opts).await?;
    for s in &report.suites {
        for c in &s.cases {
            let status = c
                .properties
                .get("status")
                .map(String::as_str)
                .unwrap_or("-");
            let msg = c
                .message
                .as_deref()
                .map(|m| format!(" — {m}"))
                .unwrap_or_default();
            println!("  {:<5} {:<4} {}{msg}", c.outcome.as_str(), status, c.name);
        }
    }
    if let Some(left) = report.properties.get(openapi::LEFTOVERS) {
        eprintln!("warning: this check created and left behind: {left}");
    }
    a.reports.conclude(&report)
}
