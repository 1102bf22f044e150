//! `testbed report show|convert`: reports from the server or from a file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use std::io::Write;
use testbed_report::Format;

use testbed_api::page::Page;
use testbed_api::reports::ReportRecord;

use crate::client::{Client, IdKind};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum ReportCmd {
    /// List stored reports, newest first.
    #[command(visible_alias = "list")]
    Ls {
        /// How many reports to list (1–1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Print a JSON array of reports instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a stored report (exit 1 when it records a failure).
    Show {
        /// The report's id, or a unique prefix of it.
        id: String,
        /// summary (default), json, junit, tap or html.
        #[arg(long, default_value = "summary")]
        format: String,
    },
    /// Convert a JSON report file (or a stored report) to another format.
    Convert {
        /// A report in the canonical JSON format, or a stored report's id
        /// (when no such file exists).
        file: PathBuf,
        /// summary, json, junit, tap or html.
        #[arg(long)]
        to: String,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// The format named on a command line.
fn format_named(format: &str) -> anyhow::Result<Format> {
    Ok(match format {
        "summary" | "text" => Format::Summary,
        "json" => Format::Json,
        "junit" | "xml" => Format::Junit,
        "tap" => Format::Tap,
        "html" => Format::Html,
        other => anyhow::bail!("unknown format `{other}` (summary, json, junit, tap, html)"),
    })
}

pub async fn report(cmd: ReportCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ReportCmd::Ls { limit, json } => {
            let c = Client::from_env()?;
            let path = format!("/api/reports?page_size={limit}");
            let Some(page) = c.list_page::<Page<ReportRecord>>(&path, json).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let mut t = output::table([
                "ID", "NAME", "RESULT", "TOTAL", "PASSED", "FAILED", "ERRORS", "SKIPPED", "CREATED",
            ]);
            for r in &page.results {
                t.add_row([
                    r.id.to_string(),
                    r.name.clone(),
                    if r.ok { "PASS" } else { "FAIL" }.to_string(),
                    r.total.to_string(),
                    r.passed.to_string(),
                    r.failed.to_string(),
                    r.errors.to_string(),
                    r.skipped.to_string(),
                    output::text(&r.created_at),
                ]);
            }
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
        ReportCmd::Show { id, format } => {
            let c = Client::from_env()?;
            let format = format_named(&format)?;
            let id = c.resolve(IdKind::Report, &id).await?;
            // Downloaded to a temporary file and read from there as it
            // streams, as a local file is: never the whole JSON in memory.
            let file = c.download_report(&id).await?;
            let r = testbed_report::read_compact(file)
                .with_context(|| format!("reading stored report {id}"))?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            format.write(&r, &mut out)?;
            out.flush()?;
            Ok(if r.summary().ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        ReportCmd::Convert { file, to, output } => {
            let format = format_named(&to)?;
            // Read and written as they stream, so a report of a million cases
            // converts in bounded memory.
            let (f, what) = super::tck::open_report(&file).await?;
            let r = testbed_report::read_compact(f).with_context(|| what.clone())?;
            match output {
                Some(p) => super::tck::write_report_file(&p, format, &r)?,
                None => {
                    let stdout = std::io::stdout();
                    let mut out = std::io::BufWriter::new(stdout.lock());
                    format.write(&r, &mut out)?;
                    out.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
