//! `testbed load URL`: quick load generation (like wrk/oha) on the embedded
//! engine, with a live line per second, a final summary and `--json`.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use testbed_load::output::Outputs;
use testbed_load::{
    Load, LoadProfile, LoadReport, Protocol, RateStage, RequestSpec, Stage, Window,
};

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Errors are named by cause, live and in the summary: connection refused, \
unknown host (DNS lookup failed), connection reset, Timeout (no answer within --timeout), \
TLS Error, HTTP <status>, Check Failed.\n\
The run ends on time: requests still unanswered 0.25 s after --duration are cut and counted \
as `cut at deadline` (not as requests).\n\n\
Exit codes:\n  \
0  the run ended, at least one request succeeded and every --threshold passed\n  \
1  a --threshold failed, or no request succeeded (all failed or were cut)\n  \
2  bad usage or configuration (URL, header, threshold…)"
)]
pub struct LoadArgs {
    /// Target URL (http:// or https://).
    pub url: String,
    /// Concurrent virtual users, one connection each (with --rate: the most users).
    #[arg(short = 'c', long = "connections", default_value_t = 50)]
    pub connections: u64,
    /// How long to run, e.g. 30s, 2m, 1h; requests unanswered by then are
    /// cut (after a 0.25 s grace).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open model: start this many requests per second whatever the response
    /// times; latency counts from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Reach full load linearly over this time.
    #[arg(long, value_parser = parse_duration)]
    pub ramp_up: Option<Duration>,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(short = 'b', long)]
    pub body: Option<String>,
    /// HTTP/2: h2c with prior knowledge on http://, ALPN h2 on https://.
    #[arg(long)]
    pub http2: bool,
    /// HTTP/1.1 only, even when TLS could negotiate h2.
    #[arg(long, conflicts_with = "http2")]
    pub http1: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Accept any TLS certificate.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Engine threads (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Pass/fail rule such as 'p(99)<500', 'error_rate<0.01', 'rps>1000'
    /// (repeatable); exit code 1 when one fails.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Print only the final report, as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also send every per-second window to: `json=FILE` (JSON lines),
    /// `csv=FILE`, `prometheus-rw=URL` (Prometheus remote write, e.g.
    /// http://prometheus:9090/api/v1/write) or `otlp=URL` (OTLP/HTTP
    /// metrics, e.g. http://otel-collector:4318). Repeatable. An output that
    /// falls behind drops windows (counted at the end), never slowing the load.
    #[arg(long = "out", value_name = "KIND=WHERE")]
    pub outs: Vec<String>,
    /// Label `K=V` on every remote-write series and OTLP data point
    /// (repeatable), e.g. testid=nightly.
    #[arg(long = "tag", value_name = "K=V")]
    pub tags: Vec<String>,
    /// The run's name in OTLP outputs (attribute `testbed.plan`); default: the URL.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// `--tag K=V` settings as label pairs; names as Prometheus allows them.
pub fn tags(tags: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    tags.iter()
        .map(|t| {
            let Some((k, v)) = t.split_once('=') else {
                bail!("--tag {t:?}: expected K=V");
            };
            let valid = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with("__");
            if !valid {
                bail!("--tag {t:?}: a label name is letters, digits and _, not starting with a digit or __");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    testbed_load::duration::parse_duration(s)
}

/// The plan `args` describe.
pub fn plan(args: &LoadArgs) -> anyhow::Result<LoadProfile> {
    let mut req = RequestSpec::get(args.url.clone());
    req.method = args.method.clone();
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("header {h:?} is not 'Name: value'");
        };
        req.headers
            .insert(k.trim().to_string(), v.trim().to_string());
    }
    req.body = args.body.clone();
    let ramp = args.ramp_up.filter(|r| !r.is_zero());
    let mut plan = match args.rate {
        Some(rate) => {
            let mut p = LoadProfile::open(args.url.clone(), rate, args.duration, args.connections);
            if let (
                Some(r),
                Load::Open {
                    start_rate, stages, ..
                },
            ) = (ramp, &mut p.load)
            {
                *start_rate = 0.0;
                stages.insert(
                    0,
                    RateStage {
                        duration: r,
                        target: rate,
                    },
                );
            }
            p
        }
        None => {
            let mut p = LoadProfile::closed(args.url.clone(), args.connections, args.duration);
            if let (Some(r), Load::Closed { start_vus, stages }) = (ramp, &mut p.load) {
                *start_vus = 0;
                stages.insert(
                    0,
                    Stage {
                        duration: r,
                        target: args.connections,
                    },
                );
            }
            p
        }
    };
    plan.scenario.requests = vec![req];
    plan.request_timeout = args.timeout;
    plan.thresholds = args.thresholds.clone();
    plan.insecure = args.insecure;
    plan.workers = args.workers;
    plan.protocol = if args.http2 {
        Protocol::Http2
    } else if args.http1 {
        Protocol::Http1
    } else {
        Protocol::Auto
    };
    plan.validate()?;
    Ok(plan)
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let total = plan.duration();
    // Opened before the load starts: a file that cannot be created stops
    // here, not after the run.
    let name = args.name.as_deref().unwrap_or(&args.url);
    let outputs = Outputs::open(&args.outs, &tags(&args.tags)?, name)?;
    let mut run = testbed_load::start(plan).context("starting the load")?;
    let ctl = run.control();
    let stopper = tokio::spawn(async move {
        super::terminated().await;
        ctl.stop();
    });
    let mut live = Live::new(!args.json, total);
    while let Some(w) = run.next_window().await {
        outputs.window(&w);
        live.window(&w);
    }
    live.finish();
    stopper.abort();
    let report = run.report().await?;
    finish_outputs(outputs).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", summary(&report))?;
    }
    if report.summary.successes == 0 {
        // Every request failed: thresholds or not, that is no pass.
        eprintln!("error: no request succeeded ({})", failure_causes(&report));
        return Ok(ExitCode::from(1));
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Flushes the outputs and says, on stderr (stdout may be a --json
/// report), what each wrote and dropped.
pub async fn finish_outputs(outputs: Outputs) -> anyhow::Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let stats = tokio::task::spawn_blocking(move || outputs.finish()).await?;
    for s in stats {
        match (&s.last_error, s.dropped) {
            (None, 0) => eprintln!("output {}: {} window(s) written", s.output, s.written),
            (e, dropped) => eprintln!(
                "output {}: {} window(s) written, {dropped} dropped{}",
                s.output,
                s.written,
                e.as_ref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ),
        }
    }
    Ok(())
}

/// Human names and counts of a report's errors, most frequent first:
/// connection errors by cause where known, then the seed's labels, then the
/// requests cut at the deadline.
fn error_breakdown(r: &LoadReport) -> Vec<(String, u64)> {
    let mut out = named_errors(
        r.errors.iter().map(|e| (e.label.as_str(), e.count)),
        r.error_causes.iter().map(|e| (e.label.as_str(), e.count)),
    );
    if r.summary.cut > 0 {
        out.push(("cut at deadline".to_string(), r.summary.cut));
    }
    out
}

/// Labels and causes merged: a `Connection Error` count is split into its
/// known causes, with what remains as `connection error`.
fn named_errors<'a>(
    labels: impl Iterator<Item = (&'a str, u64)>,
    causes: impl Iterator<Item = (&'a str, u64)> + Clone,
) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for (label, n) in labels {
        if label == "Connection Error" {
            let mut known = 0;
            for (cause, c) in causes.clone() {
                out.push((cause.to_string(), c));
                known += c;
            }
            if n > known {
                out.push(("connection error".to_string(), n - known));
            }
        } else {
            out.push((label.to_string(), n));
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

fn failure_causes(r: &LoadReport) -> String {
    let list = error_breakdown(r);
    if list.is_empty() {
        return "no request was sent".to_string();
    }
    list.iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The per-second view: one rewritten line on a terminal, plain lines otherwise.
struct Live {
    enabled: bool,
    tty: bool,
    total: Duration,
    errors: u64,
}

impl Live {
    fn new(enabled: bool, total: Duration) -> Live {
        Live {
            enabled,
            tty: std::io::stdout().is_terminal(),
            total,
            errors: 0,
        }
    }

    fn window(&mut self, w: &Window) {
        self.errors += w.errors;
        // A final partial second would show an extrapolated rate; the
        // summary covers it.
        if !self.enabled || w.duration_ms < 1000 {
            return;
        }
        let h = &w.latency;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64 / 1000.0
            }
        };
        // Errors as they happen, by cause, and requests still waiting for
        // an answer: a stalled target shows here, not only in the summary.
        let causes = named_errors(
            w.error_kinds.iter().map(|(k, n)| (k.as_str(), *n)),
            w.error_causes.iter().map(|(k, n)| (k.as_str(), *n)),
        );
        let causes = if causes.is_empty() {
            String::new()
        } else {
            format!(
                " [{}]",
                causes
                    .iter()
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let waiting = if w.in_flight > 0 {
            format!("  waiting {}", w.in_flight)
        } else {
            String::new()
        };
        let line = format!(
            "[{:>4}s/{}s] {:>9.0} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {:>6}{causes} (total {}){waiting}  vus {}{}",
            w.index + 1,
            self.total.as_secs(),
            w.rps(),
            q(0.5),
            q(0.99),
            w.errors,
            self.errors,
            w.vus,
            if w.paused { "  [paused]" } else { "" },
        );
        let mut out = std::io::stdout().lock();
        let _ = if self.tty {
            write!(out, "\r\x1b[2K{line}")
        } else {
            writeln!(out, "{line}")
        };
        let _ = out.flush();
    }

    fn finish(&self) {
        if self.enabled && self.tty {
            println!();
        }
    }
}

fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.2} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// The human summary: totals, percentiles, a latency histogram, status
/// codes, errors and thresholds.
pub fn summary(r: &LoadReport) -> String {
    let s = &r.summary;
    let mut o = String::new();
    let _ = writeln!(o, "\nSummary:");
    let _ = writeln!(
        o,
        "  Requests:     {} in {:.2}s ({:.2} req/s){}",
        s.requests,
        s.duration_secs,
        s.rps,
        if r.end == testbed_load::EndReason::Stopped {
            ", stopped early"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "  Success rate: {:.2}%", s.success_rate * 100.0);
    let _ = writeln!(
        o,
        "  Transfer:     {} in, {} out",
        bytes(s.bytes_in),
        bytes(s.bytes_out)
    );
    if s.cut > 0 {
        let _ = writeln!(
            o,
            "  Cut:          {} at deadline (no answer when the run ended; not counted as requests)",
            s.cut
        );
    }
    if s.dropped_iterations > 0 {
        let _ = writeln!(
            o,
            "  Dropped:      {} (every user busy; raise -c)",
            s.dropped_iterations
        );
    }
    let _ = writeln!(o, "\nLatency (ms):");
    let _ = writeln!(
        o,
        "  avg {:.3}  min {:.3}  max {:.3}  stdev {:.3}",
        s.avg_ms, s.min_ms, s.max_ms, s.stdev_ms
    );
    let _ = writeln!(
        o,
        "  p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}",
        s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms, s.p999_ms
    );
    if !s.latency.is_empty() {
        let _ = writeln!(o, "\nLatency histogram (ms):");
        o.push_str(&histogram_text(&s.latency));
    }
    if !r.status_codes.is_empty() {
        let codes: Vec<String> = r
            .status_codes
            .iter()
            .map(|(c, n)| format!("[{c}] {n}"))
            .collect();
        let _ = writeln!(o, "\nStatus codes: {}", codes.join("  "));
    }
    let errors = error_breakdown(r);
    if !errors.is_empty() {
        let _ = writeln!(o, "\nErrors:");
        for (name, n) in &errors {
            let _ = writeln!(o, "  {name:<34} {n}");
        }
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(o, "\nThresholds:");
        for t in &r.thresholds {
            let _ = writeln!(
                o,
                "  {} {}  (observed {:.3})",
                if t.passed { "PASS" } else { "FAIL" },
                t.expr,
                t.observed
            );
        }
    }
    o
}

/// Ten linear buckets from the minimum to p99.9 plus one for the tail.
fn histogram_text(h: &testbed_load::hdrhistogram::Histogram<u64>) -> String {
    const ROWS: usize = 10;
    const WIDTH: u64 = 40;
    let lo = h.min();
    let hi = h.value_at_quantile(0.999).max(lo + 1);
    let step = ((hi - lo) as f64 / ROWS as f64).max(1.0);
    let mut counts = [0u64; ROWS + 1];
    for v in h.iter_recorded() {
        let x = h.highest_equivalent(v.value_iterated_to());
        let i = if x > hi {
            ROWS
        } else {
            (((x - lo) as f64 / step) as usize).min(ROWS - 1)
        };
        counts[i] += v.count_at_value();
    }
    let peak = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut o = String::new();
    for (i, &c) in counts.iter().enumerate() {
        if i == ROWS && c == 0 {
            break;
        }
        let label = if i == ROWS {
            format!("> {:.3}", hi as f64 / 1000.0)
        } else {
            format!("{:.3}", (lo as f64 + step * (i + 1) as f64) / 1000.0)
        };
        let bar = "■".repeat(((c * WIDTH).div_ceil(peak)) as usize);
        let _ = writeln!(o, "  {label:>12} [{c:>9}] {bar}");
    }
    o
}
