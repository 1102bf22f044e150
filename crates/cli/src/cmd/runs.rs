//! `testbed runs ls|show|cancel|logs`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::query_value;
use crate::client::{Client, IdKind};
use crate::output::{self, cell};

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// List recent runs, newest first.
    #[command(visible_alias = "list")]
    Ls {
        /// Only runs in this status.
        #[arg(long, value_parser = ["pending", "running", "passed", "failed", "cancelled", "error"])]
        status: Option<String>,
        /// How many runs to list (1–1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Print a JSON array of runs instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's steps.
    Show {
        /// The run's id, or a unique prefix of it.
        id: String,
        /// Print the run as a JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run.
    Cancel {
        /// The run's id, or a unique prefix of it.
        id: String,
    },
    /// Print the logs of a run's tasks; `-f` follows until the run ends.
    Logs {
        /// The run's id, or a unique prefix of it.
        id: String,
        /// Keep printing new output until the run ends.
        #[arg(short, long)]
        follow: bool,
    },
}

pub async fn runs(cmd: RunsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    match cmd {
        RunsCmd::Ls {
            status,
            limit,
            json,
        } => {
            let mut path = format!("/api/runs?page_size={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={}", query_value(&s)));
            }
            let page: Value = c.get(&path).await?;
            let rows = page["results"].as_array().cloned().unwrap_or_default();
            if json {
                output::print_json_list(&rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = output::table(["ID", "PLAN", "STATUS", "BY", "CREATED", "REPORT"]);
            for r in &rows {
                t.add_row([
                    r["id"].as_str().unwrap_or_default(),
                    r["plan_name"].as_str().unwrap_or_default(),
                    r["status"].as_str().unwrap_or_default(),
                    r["created_by"].as_str().unwrap_or_default(),
                    r["created_at"].as_str().unwrap_or_default(),
                    r["report_id"].as_str().unwrap_or_default(),
                ]);
            }
            println!("{t}");
        }
        RunsCmd::Show { id, json } => {
            let id = c.resolve(IdKind::Run, &id).await?;
            let r: Value = c.get(&format!("/api/runs/{id}")).await?;
            if json {
                output::print_json(&r)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "run {} of {}: {}",
                cell(&r["id"]),
                cell(&r["plan_name"]),
                output::status_with_reason(&cell(&r["status"]), &cell(&r["reason"]))
            );
            let mut t = output::table(["STEP", "STATUS", "AGENTS", "ATTEMPTS", "REASON"]);
            for s in r["spec"]["steps"].as_array().into_iter().flatten() {
                let id = s["id"].as_str().unwrap_or_default();
                let st = &r["steps"][id];
                let insts = st["instances"].as_array().cloned().unwrap_or_default();
                let status = cell(&st["status"]);
                let reason = output::reason_only(&status, &cell(&st["reason"]));
                t.add_row([
                    id.to_string(),
                    status,
                    insts
                        .iter()
                        .filter_map(|i| i["agent_name"].as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    insts
                        .iter()
                        .map(|i| i["attempt"].to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    reason,
                ]);
            }
            println!("{t}");
        }
        RunsCmd::Cancel { id } => {
            let id = c.resolve(IdKind::Run, &id).await?;
            let r: Value = c
                .post(&format!("/api/runs/{id}/cancel"), &json!({}))
                .await?;
            println!(
                "cancel requested; run is {}",
                r["status"].as_str().unwrap_or("?")
            );
        }
        RunsCmd::Logs { id, follow } => {
            let id = c.resolve(IdKind::Run, &id).await?;
            let mut offsets: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let r: Value = c.get(&format!("/api/runs/{id}")).await?;
                for s in r["spec"]["steps"].as_array().into_iter().flatten() {
                    let step = s["id"].as_str().unwrap_or_default();
                    for inst in r["steps"][step]["instances"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let Some(task) = inst["task_id"].as_str() else {
                            continue;
                        };
                        let off = offsets.entry(task.to_string()).or_insert(0);
                        let (text, _) = c
                            .get_text(&format!("/api/tasks/{task}/log?offset={off}"))
                            .await?;
                        if text.is_empty() {
                            continue;
                        }
                        if *off == 0 {
                            println!(
                                "── {step} on {} ──",
                                inst["agent_name"].as_str().unwrap_or("?")
                            );
                        }
                        *off += text.len();
                        print!("{text}");
                    }
                }
                if !follow || !matches!(r["status"].as_str(), Some("pending" | "running")) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
