//! `testbed tck`: compatibility kits. `run` executes TAP-speaking scripts
//! against a configured platform, `problems` masks the known broken and lists
//! what is left, `compare` diffs two reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use testbed_report::compare::{self, Thresholds};
use testbed_report::{CompactReport, Format, View};
use testbed_tap::expect::{problems, stale};
use testbed_tap::{Expectations, KitConfig, RunConfig};

use super::run::ReportFiles;

#[derive(Subcommand, Debug)]
pub enum TckCmd {
    /// Run test scripts (directories recursively, or files) and report their TAP.
    Run(TckRunArgs),
    /// Mask the known broken in a JSON report and list what needs fixing.
    Problems(ProblemsArgs),
    /// Compare two JSON reports: regressions, fixes, new/removed tests, durations.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct TckRunArgs {
    /// Kit directories and/or script files.
    #[arg(required = true, value_name = "DIR|FILE")]
    pub paths: Vec<PathBuf>,
    /// The kit configuration (platform, resources, labels).
    #[arg(long, value_name = "kit.toml")]
    pub config: Option<PathBuf>,
    /// Known-broken expectations (TOML).
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Scripts to run in parallel.
    #[arg(short = 'j', long, default_value_t = 1)]
    pub jobs: usize,
    /// Time limit per script (e.g. 60s, 2m, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Echo each script's TAP as it finishes.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub reports: ReportFiles,
}

#[derive(Args, Debug)]
pub struct ProblemsArgs {
    /// A JSON report file (from `tck run --json`) or a stored report's id.
    pub report: PathBuf,
    /// Known-broken expectations (TOML).
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Print the problems as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The earlier report: a JSON file or a stored report's id.
    pub before: PathBuf,
    /// The later report: a JSON file or a stored report's id.
    pub after: PathBuf,
    /// text, json or html.
    #[arg(long, default_value = "text", value_parser = ["text", "json", "html"])]
    pub format: String,
    /// Relative duration change worth listing.
    #[arg(long, default_value = "20%")]
    pub threshold: String,
    /// Absolute duration change (ms) below which nothing is listed.
    #[arg(long, default_value_t = 100)]
    pub min_delta_ms: u64,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("bad duration unit {u:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

pub async fn tck(cmd: TckCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TckCmd::Run(a) => run(a).await,
        TckCmd::Problems(a) => problems_cmd(a).await,
        TckCmd::Compare(a) => compare_cmd(a).await,
    }
}

async fn run(a: TckRunArgs) -> anyhow::Result<ExitCode> {
    let kit = match &a.config {
        Some(p) => KitConfig::load(p)?,
        None => KitConfig::default(),
    };
    let expect = a.expect.as_deref().map(Expectations::load).transpose()?;
    let mut cfg = RunConfig::new(a.paths);
    cfg.kit = kit;
    cfg.jobs = a.jobs.max(1);
    cfg.timeout = a.timeout;
    if a.verbose {
        // One lock so the transcripts of parallel scripts don't interleave.
        let lock = Arc::new(Mutex::new(()));
        cfg.echo = Some(Arc::new(move |name: &str, tap: &str, stderr: &str| {
            let _g = lock.lock();
            println!("# --- {name}");
            print!("{tap}");
            if !tap.is_empty() && !tap.ends_with('\n') {
                println!();
            }
            for l in stderr.lines() {
                println!("# stderr: {l}");
            }
        }));
    }
    let mut report = testbed_tap::run_kit_compact(&cfg).await?;
    if let Some(e) = &expect {
        e.apply_compact(&mut report);
    }
    conclude(&a.reports, &report)
}

/// [`ReportFiles::conclude`] for a report in compact form: every file is
/// written as it is rendered, so neither the cases nor the text of a million
/// of them are ever held whole.
fn conclude(files: &ReportFiles, report: &CompactReport) -> anyhow::Result<ExitCode> {
    for (path, format) in [
        (&files.json, Format::Json),
        (&files.tap, Format::Tap),
        (&files.html, Format::Html),
        (&files.junit, Format::Junit),
    ] {
        if let Some(p) = path {
            write_report_file(p, format, report)?;
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    testbed_report::write_summary(report, &mut out).context("writing the summary")?;
    Ok(if report.summary().ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes `report` in `format` to `path` through a temporary file and a
/// rename, so a CI job that reads the file never sees half a report, even if
/// this process is killed.
pub(crate) fn write_report_file(
    path: &Path,
    format: Format,
    report: &impl View,
) -> anyhow::Result<()> {
    let ctx = || format!("writing {}", path.display());
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new("."))).with_context(ctx)?;
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, tmp);
    format.write(report, &mut w).with_context(ctx)?;
    let tmp = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(ctx)?;
    // A temporary file is private (0600); a report is not.
    let mut mode = tmp.as_file().metadata().with_context(ctx)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o644);
    tmp.as_file().set_permissions(mode).with_context(ctx)?;
    tmp.persist(path).with_context(ctx)?;
    Ok(())
}

/// A JSON report file or, when no such file exists, the id (or a unique
/// prefix of it) of a report stored on the server (`TESTBED_SERVER`, as for
/// `testbed report show`), downloaded to a temporary file: either way opened
/// for [`testbed_report::read_compact`] to read as it streams. Also returns
/// what to call it in errors.
pub(crate) async fn open_report(path: &Path) -> anyhow::Result<(std::fs::File, String)> {
    if path.exists() {
        let what = path.display().to_string();
        let file = std::fs::File::open(path).with_context(|| format!("reading {what}"))?;
        return Ok((file, what));
    }
    let given = path.display().to_string();
    let client = crate::client::Client::from_env()
        .with_context(|| format!("{given} is not a file; fetching it as a stored report"))?;
    let not_stored = || format!("{given} is not a file, nor a stored report");
    let id = client
        .resolve(crate::client::IdKind::Report, &given)
        .await
        .with_context(not_stored)?;
    // The download's error names the report and gives the server's answer.
    let file = client
        .download_report(&id)
        .await
        .with_context(|| format!("{given} is not a file"))?;
    Ok((file, format!("stored report {id}")))
}

/// [`open_report`], read into the compact form: memory grows with the cases'
/// names and the failures, never with the size of the JSON.
async fn load_report(path: &Path) -> anyhow::Result<CompactReport> {
    let (file, what) = open_report(path).await?;
    // On a blocking thread: `compare` reads its two reports at once, one per
    // core, which halves its time at a million cases.
    let ctx = || format!("reading {what}");
    tokio::task::spawn_blocking(move || testbed_report::read_compact(file))
        .await
        .with_context(ctx)?
        .with_context(ctx)
}

async fn problems_cmd(a: ProblemsArgs) -> anyhow::Result<ExitCode> {
    let mut report = load_report(&a.report).await?;
    if let Some(p) = &a.expect {
        Expectations::load(p)?.apply_compact(&mut report);
    }
    let left = problems(&report);
    let stale = stale(&report);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"problems": left, "stale": stale}))?
        );
    } else {
        for p in &left {
            let msg = p.message.lines().next().unwrap_or("");
            println!("{} :: {} [{}] {}", p.script, p.test, p.outcome, msg);
        }
        if !stale.is_empty() {
            println!("\nKnown broken but passed (stale expectations):");
            for p in &stale {
                println!("  {} :: {}", p.script, p.test);
            }
        }
        println!(
            "\n{} problem(s) to fix{}",
            left.len(),
            if left.is_empty() { "; all clear" } else { "" }
        );
    }
    Ok(if left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn compare_cmd(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let percent = compare::parse_percent(&a.threshold)
        .with_context(|| format!("bad --threshold {:?} (expected e.g. 20%)", a.threshold))?;
    let (before, after) = tokio::try_join!(load_report(&a.before), load_report(&a.after))?;
    let c = compare::compare(
        &before,
        &after,
        Thresholds {
            percent,
            min_delta_ms: a.min_delta_ms,
        },
    );
    let out = match a.format.as_str() {
        "json" => compare::to_json(&c),
        "html" => compare::to_html(&c),
        _ => compare::to_text(&c),
    };
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(if c.has_regressions() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5x").is_err());
    }
}
