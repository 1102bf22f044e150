//! `testbed perf run plan.yaml`: a performance plan through a server's
//! `/api/performance` API, followed live, judged by its thresholds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum PerfCmd {
    /// Create a performance plan from a file, start it on the server's load
    /// agents and follow it live (exit 1 when a threshold fails).
    Run(PerfRunArgs),
}

#[derive(Args, Debug)]
pub struct PerfRunArgs {
    /// A YAML file: `name`, `description` and `project_id` (optional), and
    /// the load `config` (docs/performance.md).
    pub plan: PathBuf,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
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

/// The project to file plans under when the plan names none: `default`,
/// created on first use.
async fn default_project(c: &Client) -> anyhow::Result<u64> {
    let page: Value = c.get("/api/projects?page_size=1000").await?;
    if let Some(p) = page["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "default")
    {
        return p["id"].as_u64().context("project id");
    }
    let p: Value = c
        .post(
            "/api/projects",
            &json!({"name": "default", "description": "plans run from the CLI"}),
        )
        .await?;
    p["id"].as_u64().context("project id")
}

pub async fn perf(cmd: PerfCmd) -> anyhow::Result<ExitCode> {
    let PerfCmd::Run(args) = cmd;
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
    let c = Client::from_env()?;
    let project_id = match file.project_id {
        Some(id) => id,
        None => default_project(&c).await?,
    };
    let plan: Value = match c
        .post(
            "/api/performance/plans/",
            &json!({"name": file.name, "description": file.description, "project_id": project_id, "config": file.config}),
        )
        .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e:#}", args.plan.display());
            return Ok(ExitCode::from(2));
        }
    };
    let plan_id = plan["id"].as_u64().context("plan id")?;
    let started: Value = c
        .post(
            &format!("/api/performance/plans/{plan_id}/start/"),
            &json!({}),
        )
        .await?;
    let ws_url = started["websocket_url"].as_str().context("websocket_url")?;
    eprintln!(
        "execution {} of plan {plan_id}",
        started["execution_id"].as_str().unwrap_or("?")
    );
    let (mut ws, _) = crate::client::ws_connect(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)?,
    )
    .await
    .context("opening live metrics")?;
    let mut report_id: Option<u64> = None;
    let mut second = 0u64;
    while let Some(msg) = ws.next().await {
        let Message::Text(t) = msg? else { continue };
        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("metrics") => {
                second += 1;
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
    let report: Value = match report_id {
        Some(id) => c.get(&format!("/api/performance/reports/{id}/")).await?,
        None => {
            let page: Value = c
                .get(&format!(
                    "/api/performance/reports/?plan_id={plan_id}&page_size=1"
                ))
                .await?;
            page["results"][0].clone()
        }
    };
    if args.json {
        crate::output::print_json(&report)?;
    } else {
        let s = &report["summary"];
        let p = &report["metrics"]["response_times"]["percentiles"];
        println!(
            "{}: {} requests, {}% success, avg {} ms, p50 {} / p90 {} / p95 {} / p99 {} ms, {} errors",
            report["status"].as_str().unwrap_or("?"),
            s["total_requests"],
            s["success_rate"],
            s["avg_response_time"],
            p["p50"],
            p["p90"],
            p["p95"],
            p["p99"],
            s["error_count"]
        );
        for t in report["thresholds"].as_array().into_iter().flatten() {
            println!(
                "  {} {} (observed {})",
                if t["passed"] == true { "✓" } else { "✗" },
                t["expr"].as_str().unwrap_or("?"),
                t["observed"]
            );
        }
    }
    Ok(if report["passed"] == false {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
