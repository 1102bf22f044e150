//! `testbed perf run plan.yaml`: a performance plan through a server's
//! `/api/performance` API, followed live, judged by its thresholds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use testbed_api::page::Page;
use testbed_api::performance::{
    LoadTest, LoadTestInput, LoadTestItem, PerfReport, ReportItem, StartResponse,
};
use testbed_api::projects::{Project, ProjectInput};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum PerfCmd {
    /// Create a performance plan from a file, start it on the server's load
    /// agents and follow it live (exit 1 when a threshold fails).
    Run(PerfRunArgs),
    /// List the performance plans of a project.
    #[command(visible_alias = "list")]
    Ls {
        /// The project's id (default: the `default` project `perf run` files plans under).
        #[arg(long, value_name = "ID")]
        project: Option<u64>,
        /// How many plans to list (1–1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Print a JSON array of plans instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct PerfRunArgs {
    /// A YAML file: `name`, `description` and `project_id` (optional), and
    /// the load `config` (docs/performance.md).
    pub plan: PathBuf,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also send every second of the execution (merged over its agents, as
    /// the server streams it) to: `json=FILE`, `csv=FILE`,
    /// `prometheus-rw=URL` or `otlp=URL`, written from here. Repeatable; an
    /// output that falls behind drops seconds (counted at the end).
    #[arg(long = "out", value_name = "KIND=WHERE")]
    pub outs: Vec<String>,
    /// Label `K=V` on every remote-write series and OTLP data point (repeatable).
    #[arg(long = "tag", value_name = "K=V")]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    project_id: Option<u64>,
    config: Value,
}

/// The `default` project's id, if it exists.
async fn find_default_project(c: &Client) -> anyhow::Result<Option<u64>> {
    let page: Page<Project> = c.get("/api/projects?page_size=1000").await?;
    Ok(page
        .results
        .iter()
        .find(|p| p.name == "default")
        .map(|p| p.id))
}

/// The project to file plans under when the plan names none: `default`,
/// created on first use.
async fn default_project(c: &Client) -> anyhow::Result<u64> {
    if let Some(id) = find_default_project(c).await? {
        return Ok(id);
    }
    let p: Project = c
        .post(
            "/api/projects",
            &ProjectInput {
                name: "default".into(),
                description: Some("plans run from the CLI".into()),
            },
        )
        .await?;
    Ok(p.id)
}

pub async fn perf(cmd: PerfCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PerfCmd::Run(args) => run(args).await,
        PerfCmd::Ls {
            project,
            limit,
            json,
        } => list(project, limit, json).await,
    }
}

/// `testbed perf ls`.
async fn list(project: Option<u64>, limit: u16, json: bool) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    let project = match project {
        Some(id) => Some(id),
        None => find_default_project(&c).await?,
    };
    let (path, rows) = match project {
        Some(id) => {
            let path = format!("/api/performance/plans/?project_id={id}&page_size={limit}");
            let page: Value = c.get(&path).await?;
            let rows = page["results"].as_array().cloned().unwrap_or_default();
            (path, rows)
        }
        // No `default` project yet: no plan was run from the CLI.
        None => (String::new(), Vec::new()),
    };
    if json {
        crate::output::print_json_list(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let tests: Vec<LoadTestItem> =
        crate::client::decode(&format!("GET {path}"), Value::Array(rows))?;
    let mut t = crate::output::table(["ID", "NAME", "PROJECT", "STATUS", "CREATED"]);
    for r in &tests {
        t.add_row([
            r.id.to_string(),
            r.name.clone(),
            r.project_id.to_string(),
            r.status.to_string(),
            crate::output::text(&r.created_at),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

async fn run(args: PerfRunArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("reading {}", args.plan.display()))?;
    let file: PlanFile = match testbed_core::yaml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            let at = e
                .location()
                .map(|(l, c)| format!("{l}:{c}: "))
                .unwrap_or_default();
            eprintln!("{}:{at}{}", args.plan.display(), e.message());
            return Ok(ExitCode::from(2));
        }
    };
    // Before anything reaches the server: a bad --out starts nothing.
    let outputs = testbed_load::output::Outputs::open(
        &args.outs,
        &super::load::tags(&args.tags)?,
        &file.name,
    )?;
    let c = Client::from_env()?;
    let project_id = match file.project_id {
        Some(id) => id,
        None => default_project(&c).await?,
    };
    let plan: LoadTest = match c
        .post(
            "/api/performance/plans/",
            &LoadTestInput {
                name: file.name.clone(),
                description: file.description.clone(),
                project_id: Some(project_id),
                config: file.config.clone(),
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e:#}", args.plan.display());
            return Ok(ExitCode::from(2));
        }
    };
    let plan_id = plan.id;
    let started: StartResponse = c
        .post(
            &format!("/api/performance/plans/{plan_id}/start/"),
            &json!({}),
        )
        .await?;
    let ws_url = started.websocket_url.as_str();
    eprintln!("execution {} of plan {plan_id}", started.execution_id);
    let (mut ws, _) = crate::client::ws_connect(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)?,
    )
    .await
    .context("opening live metrics")?;
    let mut report_id: Option<u64> = None;
    let mut second = 0u64;
    let mut no_window_said = outputs.is_empty();
    while let Some(msg) = ws.next().await {
        let Message::Text(t) = msg? else { continue };
        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("metrics") => {
                second += 1;
                match serde_json::from_value::<testbed_load::Window>(v["window"].clone()) {
                    Ok(w) => outputs.window(&w),
                    Err(e) if !no_window_said => {
                        no_window_said = true;
                        eprintln!("warning: --out gets nothing: the server's live seconds carry no window ({e})");
                    }
                    Err(_) => {}
                }
                let d = &v["data"];
                eprintln!(
                    "{second:>4}s  users {:>5}  rps {:>9.1}  avg {:>8.2} ms  errors {:>5.2}%{}",
                    d["active_users"].as_u64().unwrap_or(0),
                    d["requests_per_second"].as_f64().unwrap_or(0.0),
                    d["response_time"].as_f64().unwrap_or(0.0),
                    d["error_rate"].as_f64().unwrap_or(0.0),
                    if d["paused"] == true {
                        "  (paused)"
                    } else {
                        ""
                    }
                );
            }
            Some("finished") => {
                report_id = v["report_id"].as_u64();
                break;
            }
            _ => {}
        }
    }
    super::load::finish_outputs(outputs).await?;
    // Missed on the socket (it closed first): the plan's newest report.
    let report_id = match report_id {
        Some(id) => id,
        None => {
            let page: Page<ReportItem> = c
                .get(&format!(
                    "/api/performance/reports/?plan_id={plan_id}&page_size=1"
                ))
                .await?;
            page.results
                .first()
                .map(|r| r.id)
                .context("the execution ended without a report")?
        }
    };
    let path = format!("/api/performance/reports/{report_id}/");
    let raw: Value = c.get(&path).await?;
    if args.json {
        crate::output::print_json(&raw)?;
    }
    let report: PerfReport = crate::client::decode(&format!("GET {path}"), raw)?;
    if !args.json {
        // Numbers as JSON spells them (`100.0`), as this line always read.
        let n = crate::output::text::<f64>;
        let s = &report.summary;
        let p = &report.metrics.response_times.percentiles;
        println!(
            "{}: {} requests, {}% success, avg {} ms, p50 {} / p90 {} / p95 {} / p99 {} ms, {} errors",
            report.status,
            s.total_requests,
            n(&s.success_rate),
            n(&s.avg_response_time),
            n(&p.p50),
            n(&p.p90),
            n(&p.p95),
            n(&p.p99),
            s.error_count
        );
        for t in &report.thresholds {
            println!(
                "  {} {} (observed {})",
                if t.passed { "✓" } else { "✗" },
                t.expr,
                n(&t.observed)
            );
        }
    }
    Ok(if !report.passed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
