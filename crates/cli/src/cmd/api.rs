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
    let mut vars = serde_json::Map::new();
    for v in &a.vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?}: expected NAME=VALUE"))?;
        vars.insert(
            k.trim().to_string(),
            serde_json::Value::String(val.to_string()),
        );
    }
    let quiet = a.quiet;
    let opts = Options {
        environment: a.environment,
        globals: a.globals,
        vars,
        tags: a.tags,
        skip_tags: a.skip_tags,
        insecure: a.insecure,
        script_timeout: a.script_timeout,
        jobs: a.jobs,
        data: a.data,
        iterations: a.iterations,
        echo: (!quiet).then(|| Arc::new(|l: &str| println!("{l}")) as files::Echo),
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
    let report = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(files::run(&loaded, &opts)))
    })
    .await
    .context("the test runner stopped")?
    .context("starting the test runner")?;
    a.reports.conclude(&report)
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
