//! `testbed runs ls|show|cancel|logs`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::query_value;
use testbed_api::page::Page;
use testbed_api::runs::{Run, RunStatus, RunSummary};

use crate::client::{self, Client, IdKind};
use crate::output;

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
            let Some(page) = c.list_page::<Page<RunSummary>>(&path, json).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let mut t = output::table(["ID", "PLAN", "STATUS", "BY", "CREATED", "REPORT"]);
            for r in &page.results {
                t.add_row([
                    r.id.to_string(),
                    r.plan_name.clone(),
                    output::text(&r.status),
                    r.created_by.clone(),
                    output::text(&r.created_at),
                    output::text(&r.report_id),
                ]);
            }
            println!("{t}");
        }
        RunsCmd::Show { id, json } => {
            let id = c.resolve(IdKind::Run, &id).await?;
            let path = format!("/api/runs/{id}");
            let raw: Value = c.get(&path).await?;
            if json {
                output::print_json(&raw)?;
                return Ok(ExitCode::SUCCESS);
            }
            let r: Run = client::decode(&format!("GET {path}"), raw)?;
            println!(
                "run {} of {}: {}",
                r.id,
                r.plan_name,
                output::status_with_reason(
                    &output::text(&r.status),
                    r.reason.as_deref().unwrap_or_default()
                )
            );
            let mut t = output::table(["STEP", "STATUS", "AGENTS", "ATTEMPTS", "REASON"]);
            for s in &r.spec.steps {
                let st = r.steps.get(&s.id);
                let insts = st.map(|st| st.instances.as_slice()).unwrap_or_default();
                let status = st.map(|st| output::text(&st.status)).unwrap_or_default();
                let reason = output::reason_only(
                    &status,
                    st.and_then(|st| st.reason.as_deref()).unwrap_or_default(),
                );
                t.add_row([
                    s.id.clone(),
                    status,
                    insts
                        .iter()
                        .map(|i| i.agent_name.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    insts
                        .iter()
                        .map(|i| i.attempt.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    reason,
                ]);
            }
            println!("{t}");
        }
        RunsCmd::Cancel { id } => {
            let id = c.resolve(IdKind::Run, &id).await?;
            let r: Run = c
                .post(&format!("/api/runs/{id}/cancel"), &json!({}))
                .await?;
            println!("cancel requested; run is {}", output::text(&r.status));
        }
        RunsCmd::Logs { id, follow } => {
            let id = c.resolve(IdKind::Run, &id).await?;
            let mut offsets: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let r: Run = c.get(&format!("/api/runs/{id}")).await?;
                for s in &r.spec.steps {
                    let step = s.id.as_str();
                    for inst in r.steps.get(step).into_iter().flat_map(|st| &st.instances) {
                        let Some(task) = inst.task_id else {
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
                            println!("── {step} on {} ──", inst.agent_name);
                        }
                        *off += text.len();
                        print!("{text}");
                    }
                }
                if !follow || !matches!(r.status, RunStatus::Pending | RunStatus::Running) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
