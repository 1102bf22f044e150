//! `testbed report show|convert`: reports from the server or from a file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum ReportCmd {
    /// Print a stored report.
    Show {
        id: String,
        /// summary (default), json, junit, tap or html.
        #[arg(long, default_value = "summary")]
        format: String,
    },
    /// Convert a JSON report file to another format.
    Convert {
        /// A report in the canonical JSON format.
        file: PathBuf,
        /// summary, json, junit, tap or html.
        #[arg(long)]
        to: String,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

pub fn render(report: &testbed_report::Report, format: &str) -> anyhow::Result<String> {
    Ok(match format {
        "summary" | "text" => testbed_report::to_summary(report),
        "json" => testbed_report::to_json(report),
        "junit" | "xml" => testbed_report::to_junit(report)?,
        "tap" => testbed_report::to_tap(report),
        "html" => testbed_report::to_html(report),
        other => anyhow::bail!("unknown format `{other}` (summary, json, junit, tap, html)"),
    })
}

pub async fn report(cmd: ReportCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ReportCmd::Show { id, format } => {
            let c = Client::from_env()?;
            let (text, _) = c
                .get_text(&format!("/api/reports/{id}?format=json"))
                .await?;
            let r = testbed_report::from_json(&text)?;
            print!("{}", render(&r, &format)?);
            Ok(if r.summary().ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        ReportCmd::Convert { file, to, output } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let r =
                testbed_report::from_json(&text).with_context(|| format!("{}", file.display()))?;
            let out = render(&r, &to)?;
            match output {
                Some(p) => {
                    std::fs::write(&p, out).with_context(|| format!("writing {}", p.display()))?
                }
                None => print!("{out}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
