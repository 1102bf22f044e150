//! `testbed runs ls|show|cancel|logs`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};

use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// List recent runs.
    Ls {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a run's steps.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run.
    Cancel { id: String },
    /// Print the logs of a run's tasks; `-f` follows until the run ends.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
}

pub async fn runs(cmd: RunsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    match cmd {
        RunsCmd::Ls { status, json } => {
            let path = match status {
                Some(s) => format!("/api/runs?page_size=50&status={s}"),
                None => "/api/runs?page_size=50".into(),
            };
            let page: Value = c.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(["ID", "PLAN", "STATUS", "BY", "CREATED", "REPORT"]);
            for r in page["results"].as_array().into_iter().flatten() {
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
            let r: Value = c.get(&format!("/api/runs/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "run {} of {}: {}{}",
                r["id"].as_str().unwrap_or_default(),
                r["plan_name"].as_str().unwrap_or_default(),
                r["status"].as_str().unwrap_or_default(),
                r["reason"]
                    .as_str()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default()
            );
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(["STEP", "STATUS", "AGENTS", "ATTEMPTS", "REASON"]);
            for s in r["spec"]["steps"].as_array().into_iter().flatten() {
                let id = s["id"].as_str().unwrap_or_default();
                let st = &r["steps"][id];
                let insts = st["instances"].as_array().cloned().unwrap_or_default();
                t.add_row([
                    id.to_string(),
                    st["status"].as_str().unwrap_or_default().to_string(),
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
                    st["reason"].as_str().unwrap_or_default().to_string(),
                ]);
            }
            println!("{t}");
        }
        RunsCmd::Cancel { id } => {
            let r: Value = c
                .post(&format!("/api/runs/{id}/cancel"), &json!({}))
                .await?;
            println!(
                "cancel requested; run is {}",
                r["status"].as_str().unwrap_or("?")
            );
        }
        RunsCmd::Logs { id, follow } => {
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
