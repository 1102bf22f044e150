//! Where per-second windows go besides the live view, like k6's `--out`:
//! a JSON-lines file, a CSV file, a Prometheus remote-write endpoint or an
//! OTLP/HTTP metrics endpoint ([`otlp`]).
//!
//! Every output runs on a thread of its own behind a bounded queue that
//! the caller feeds with [`Outputs::window`], which never waits: when an
//! output falls behind (a slow disk, a remote-write endpoint that is down)
//! its windows are dropped and counted, and the load goes on at its pace.
//! [`Outputs::finish`] flushes what is queued, waiting at most
//! [`FINISH_WITHIN`], and says what each output wrote and dropped.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use crate::metrics::Window;

mod otlp;

/// The OTLP messages [`otlp`] sends, re-exported so a receiver (a test)
/// decodes them with the very same types.
pub use opentelemetry_proto::tonic as otlp_proto;
pub use otlp::LATENCY_BOUNDS_S;
/// prost, for `Message::decode` on [`otlp_proto`] types.
pub use prost;

/// Windows an output may have queued before new ones are dropped: a
/// minute of a run.
pub const QUEUE: usize = 60;
/// Longest [`Outputs::finish`] waits for the outputs to drain.
pub const FINISH_WITHIN: Duration = Duration::from_secs(5);
/// Longest one remote-write request may take.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum OutputError {
    /// `--out` was not `json=FILE`, `csv=FILE`, `prometheus-rw=URL` or `otlp=URL`.
    #[error("--out {spec}: {reason}")]
    Spec { spec: String, reason: String },
    #[error("--out {spec}: cannot create {path}: {source}")]
    Create {
        spec: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--out {spec}: {source}")]
    Thread {
        spec: String,
        source: std::io::Error,
    },
}

/// One `--out` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    Json(PathBuf),
    Csv(PathBuf),
    PrometheusRw(String),
    /// The full OTLP/HTTP metrics URL (`/v1/metrics` added to a bare
    /// endpoint).
    Otlp(String),
}

impl OutputSpec {
    /// `json=FILE`, `csv=FILE`, `prometheus-rw=URL` or `otlp=URL` (http or
    /// https).
    pub fn parse(spec: &str) -> Result<OutputSpec, OutputError> {
        let err = |reason: &str| OutputError::Spec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let Some((kind, arg)) = spec.split_once('=') else {
            return Err(err(
                "expected json=FILE, csv=FILE, prometheus-rw=URL or otlp=URL",
            ));
        };
        if arg.is_empty() {
            return Err(err("nothing after `=`"));
        }
        let http_url = |example: &str| {
            url::Url::parse(arg)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .ok_or_else(|| err(&format!("{arg:?} is not an http(s) URL (e.g. {example})")))
        };
        match kind {
            "json" => Ok(OutputSpec::Json(PathBuf::from(arg))),
            "csv" => Ok(OutputSpec::Csv(PathBuf::from(arg))),
            "prometheus-rw" | "experimental-prometheus-rw" => {
                http_url("http://prometheus:9090/api/v1/write")?;
                Ok(OutputSpec::PrometheusRw(arg.to_string()))
            }
            "otlp" | "opentelemetry" => {
                let mut url = http_url("http://otel-collector:4318")?;
                // As OTEL_EXPORTER_OTLP_ENDPOINT: a bare endpoint gets the
                // signal's path; a URL with a path is used as it is.
                if url.path() == "/" {
                    url.set_path("/v1/metrics");
                }
                Ok(OutputSpec::Otlp(url.to_string()))
            }
            other => Err(err(&format!(
                "unknown output `{other}`: expected json, csv, prometheus-rw or otlp"
            ))),
        }
    }
}

/// What one output did, for the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct OutputStats {
    /// The `--out` setting as given.
    pub output: String,
    /// Windows written or sent.
    pub written: u64,
    /// Windows dropped: the queue was full, or writing or sending failed.
    pub dropped: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counts {
    /// Taken into the queue.
    queued: u64,
    written: u64,
    /// Taken but not written: writing or sending failed.
    failed: u64,
    /// Not taken: the queue was full.
    full: u64,
    last_error: Option<String>,
}

struct Output {
    spec: String,
    tx: Option<SyncSender<Row>>,
    counts: Arc<Mutex<Counts>>,
    thread: Option<JoinHandle<()>>,
}

/// The outputs of one run.
pub struct Outputs {
    outputs: Vec<Output>,
}

impl Outputs {
    /// Opens every output now, so a file that cannot be created is an
    /// error before any load starts. `labels` go on every remote-write
    /// series (`job` is always set) and every OTLP data point; `name`
    /// (the plan's) is the OTLP attribute `testbed.plan`.
    pub fn open(
        specs: &[String],
        labels: &[(String, String)],
        name: &str,
    ) -> Result<Outputs, OutputError> {
        let mut outputs = Vec::new();
        for spec in specs {
            let parsed = OutputSpec::parse(spec)?;
            let counts = Arc::new(Mutex::new(Counts::default()));
            let (tx, rx) = sync_channel::<Row>(QUEUE);
            let sink: Box<dyn Sink> = match parsed {
                OutputSpec::Json(path) => Box::new(JsonLines {
                    out: create(spec, &path)?,
                }),
                OutputSpec::Csv(path) => Box::new(Csv::create(spec, &path)?),
                OutputSpec::PrometheusRw(url) => Box::new(RemoteWrite::new(url, labels)),
                OutputSpec::Otlp(url) => Box::new(otlp::Otlp::new(url, labels, name)),
            };
            let c = counts.clone();
            let thread = std::thread::Builder::new()
                .name("load-output".into())
                .spawn(move || drain(rx, sink, c))
                .map_err(|source| OutputError::Thread {
                    spec: spec.clone(),
                    source,
                })?;
            outputs.push(Output {
                spec: spec.clone(),
                tx: Some(tx),
                counts,
                thread: Some(thread),
            });
        }
        Ok(Outputs { outputs })
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Queues `w` on every output; never blocks.
    pub fn window(&self, w: &Window) {
        if self.outputs.is_empty() {
            return;
        }
        let row = Row::of(w);
        for o in &self.outputs {
            let Some(tx) = &o.tx else { continue };
            match tx.try_send(row.clone()) {
                Ok(()) => lock(&o.counts).queued += 1,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    lock(&o.counts).full += 1;
                }
            }
        }
    }

    /// Closes the queues and waits (at most [`FINISH_WITHIN`] in all) for
    /// the outputs to write what they hold. Windows still queued after
    /// that count as dropped.
    pub fn finish(mut self) -> Vec<OutputStats> {
        let deadline = Instant::now() + FINISH_WITHIN;
        for o in &mut self.outputs {
            o.tx = None;
        }
        let mut stats = Vec::new();
        for o in &mut self.outputs {
            let mut abandoned = false;
            if let Some(t) = o.thread.take() {
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if t.is_finished() {
                    let _ = t.join();
                } else {
                    abandoned = true;
                }
            }
            let mut c = lock(&o.counts);
            let mut dropped = c.full + c.failed;
            if abandoned {
                // What it still holds is lost with it.
                dropped += c.queued.saturating_sub(c.written + c.failed);
                c.last_error = Some(format!(
                    "still writing {FINISH_WITHIN:?} after the run ended; abandoned (last error: {})",
                    c.last_error.as_deref().unwrap_or("none")
                ));
            }
            stats.push(OutputStats {
                output: o.spec.clone(),
                written: c.written,
                dropped,
                last_error: c.last_error.clone(),
            });
        }
        stats
    }
}

fn lock(c: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // Plain counters: a panic mid-update leaves them usable.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn create(spec: &str, path: &Path) -> Result<BufWriter<File>, OutputError> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|source| OutputError::Create {
            spec: spec.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

fn drain(rx: Receiver<Row>, mut sink: Box<dyn Sink>, counts: Arc<Mutex<Counts>>) {
    while let Ok(row) = rx.recv() {
        // Catch up in one go when behind (one remote-write request for
        // several windows).
        let mut batch = vec![row];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let n = batch.len() as u64;
        let result = sink.write(&batch);
        let mut c = lock(&counts);
        match result {
            Ok(()) => c.written += n,
            Err(e) => {
                c.failed += n;
                c.last_error = Some(e);
            }
        }
    }
    if let Err(e) = sink.close() {
        lock(&counts).last_error = Some(e);
    }
}

/// One window as the outputs write it: counts, rates and latency
/// percentiles (milliseconds), the histogram left out.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Unix time of the window's start, in milliseconds.
    pub time_ms: u64,
    /// Seconds since the run started.
    pub index: u64,
    pub duration_ms: u64,
    pub requests: u64,
    pub errors: u64,
    /// Requests per second over the window.
    pub rps: f64,
    pub vus: u64,
    pub iterations: u64,
    pub dropped_iterations: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub in_flight: u64,
    pub cut: u64,
    pub paused: bool,
    /// Latency percentiles of the window's responses (null without any).
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub status_codes: std::collections::BTreeMap<u16, u64>,
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// The window's latencies for histogram outputs (not written to files).
    #[serde(skip)]
    pub latency: LatencyBuckets,
}

/// The smaller (or larger) of two optional values; the one there is when
/// only one is.
fn combine(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// A window's latencies counted into [`LATENCY_BOUNDS_S`]' buckets: one
/// count per bound (values up to it) and one for the values above the last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyBuckets {
    pub counts: Vec<u64>,
    /// How many responses, and the sum of their latencies in seconds.
    pub count: u64,
    pub sum_s: f64,
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
}

impl LatencyBuckets {
    /// Adds `other`'s latencies: the buckets of both windows together.
    fn add(&mut self, other: &LatencyBuckets) {
        self.counts
            .resize(other.counts.len().max(self.counts.len()), 0);
        for (b, c) in self.counts.iter_mut().zip(&other.counts) {
            *b += c;
        }
        self.count += other.count;
        self.sum_s += other.sum_s;
        self.min_s = combine(self.min_s, other.min_s, f64::min);
        self.max_s = combine(self.max_s, other.max_s, f64::max);
    }

    fn of(h: &hdrhistogram::Histogram<u64>) -> LatencyBuckets {
        let mut counts = vec![0u64; LATENCY_BOUNDS_S.len() + 1];
        let mut sum_s = 0.0;
        for v in h.iter_recorded() {
            let s = h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            let i = LATENCY_BOUNDS_S.partition_point(|&b| b < s);
            counts[i] += v.count_at_value();
            sum_s += s * v.count_at_value() as f64;
        }
        let any = !h.is_empty();
        LatencyBuckets {
            counts,
            count: h.len(),
            sum_s,
            min_s: any.then(|| h.min() as f64 / 1e6),
            max_s: any.then(|| h.max() as f64 / 1e6),
        }
    }
}

impl Row {
    /// The latency percentiles the window has, as Prometheus and OTLP name
    /// them: the quantile (`"0.5"` … `"1"` for the maximum) and seconds.
    pub fn quantiles_s(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("0.5", self.p50_ms),
            ("0.9", self.p90_ms),
            ("0.95", self.p95_ms),
            ("0.99", self.p99_ms),
            ("1", self.max_ms),
        ]
        .into_iter()
        .filter_map(|(q, ms)| Some((q, ms? / 1000.0)))
    }

    pub fn of(w: &Window) -> Row {
        let h = &w.latency;
        let q = |p: f64| (!h.is_empty()).then(|| h.value_at_quantile(p) as f64 / 1000.0);
        Row {
            time_ms: w.timestamp * 1000,
            index: w.index,
            duration_ms: w.duration_ms,
            requests: w.requests,
            errors: w.errors,
            rps: w.rps(),
            vus: w.vus,
            iterations: w.iterations,
            dropped_iterations: w.dropped_iterations,
            bytes_in: w.bytes_in,
            bytes_out: w.bytes_out,
            in_flight: w.in_flight,
            cut: w.cut,
            paused: w.paused,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
            status_codes: w.status_codes.clone(),
            error_kinds: w.error_kinds.clone(),
            latency: LatencyBuckets::of(h),
        }
    }
}

pub(crate) trait Sink: Send {
    fn write(&mut self, rows: &[Row]) -> Result<(), String>;
    fn close(&mut self) -> Result<(), String> {
        Ok(())
    }
}

struct JsonLines {
    out: BufWriter<File>,
}

impl Sink for JsonLines {
    fn write(&mut self, rows: &[Row]) -> Result<(), String> {
        for r in rows {
            serde_json::to_writer(&mut self.out, r).map_err(|e| e.to_string())?;
            self.out.write_all(b"\n").map_err(|e| e.to_string())?;
        }
        // A line per second, readable while the run goes on (tail -f).
        self.out.flush().map_err(|e| e.to_string())
    }
}

/// Columns of the CSV output, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "time_ms",
    "index",
    "duration_ms",
    "requests",
    "errors",
    "rps",
    "vus",
    "iterations",
    "dropped_iterations",
    "bytes_in",
    "bytes_out",
    "in_flight",
    "cut",
    "paused",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "status_codes",
    "error_kinds",
];

struct Csv {
    out: csv::Writer<BufWriter<File>>,
}

impl Csv {
    /// The file, with its header written at once: a run without a single
    /// window still leaves a valid CSV file.
    fn create(spec: &str, path: &Path) -> Result<Csv, OutputError> {
        let mut out = csv::Writer::from_writer(create(spec, path)?);
        out.write_record(CSV_COLUMNS)
            .and_then(|()| out.flush().map_err(csv::Error::from))
            .map_err(|e| OutputError::Create {
                spec: spec.to_string(),
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(Csv { out })
    }

    fn record(r: &Row) -> Vec<String> {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        // Maps as `key:count` pairs separated by `;` (one cell each).
        let codes = r
            .status_codes
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(";");
        let kinds = r
            .error_kinds
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(";");
        vec![
            r.time_ms.to_string(),
            r.index.to_string(),
            r.duration_ms.to_string(),
            r.requests.to_string(),
            r.errors.to_string(),
            format!("{:.3}", r.rps),
            r.vus.to_string(),
            r.iterations.to_string(),
            r.dropped_iterations.to_string(),
            r.bytes_in.to_string(),
            r.bytes_out.to_string(),
            r.in_flight.to_string(),
            r.cut.to_string(),
            r.paused.to_string(),
            opt(r.p50_ms),
            opt(r.p90_ms),
            opt(r.p95_ms),
            opt(r.p99_ms),
            opt(r.max_ms),
            codes,
            kinds,
        ]
    }
}

impl Sink for Csv {
    fn write(&mut self, rows: &[Row]) -> Result<(), String> {
        for r in rows {
            self.out
                .write_record(Self::record(r))
                .map_err(|e| e.to_string())?;
        }
        self.out.flush().map_err(|e| e.to_string())
    }
}

/// Prometheus remote write 1.0: a snappy-compressed protobuf
/// `WriteRequest` per POST.
struct RemoteWrite {
    url: String,
    labels: Vec<(String, String)>,
    client: Result<Poster, String>,
    /// Running totals, so counters keep counting across windows.
    totals: Totals,
    /// The last sample time sent: Prometheus refuses a second sample at
    /// the same time ("duplicate sample for timestamp"), which a short last
    /// window ending where its predecessor did would otherwise give.
    last_ms: i64,
}

/// A series: its metric name and the labels of its own (beside the
/// output's).
type SeriesKey = (String, Vec<(String, String)>);

/// The counters of a stream of windows summed up to the latest, for the
/// outputs whose counters keep counting across windows (remote write, OTLP).
#[derive(Default)]
struct Totals {
    requests: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    dropped_iterations: u64,
}

impl Totals {
    fn add(&mut self, r: &Row) {
        self.requests += r.requests;
        self.errors += r.errors;
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
        self.dropped_iterations += r.dropped_iterations;
    }
}

impl RemoteWrite {
    fn new(url: String, labels: &[(String, String)]) -> RemoteWrite {
        let mut all = vec![("job".to_string(), "testbed_load".to_string())];
        all.extend(labels.iter().filter(|(k, _)| k != "job").cloned());
        RemoteWrite {
            url,
            labels: all,
            client: Poster::new(),
            totals: Totals::default(),
            last_ms: 0,
        }
    }

    fn series(&mut self, rows: &[Row]) -> Vec<remote::TimeSeries> {
        let mut by_name: std::collections::BTreeMap<SeriesKey, Vec<remote::Sample>> =
            Default::default();
        let mut add = |name: &str, extra: &[(&str, &str)], t: i64, v: f64| {
            let extra = extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            by_name
                .entry((name.to_string(), extra))
                .or_default()
                .push(remote::Sample {
                    value: v,
                    timestamp: t,
                });
        };
        for r in rows {
            // Stamped at the window's end: its figures are complete then.
            let t = ((r.time_ms + r.duration_ms) as i64).max(self.last_ms + 1);
            self.last_ms = t;
            let tot = &mut self.totals;
            tot.add(r);
            add("testbed_load_requests_total", &[], t, tot.requests as f64);
            add("testbed_load_errors_total", &[], t, tot.errors as f64);
            add(
                "testbed_load_received_bytes_total",
                &[],
                t,
                tot.bytes_in as f64,
            );
            add(
                "testbed_load_sent_bytes_total",
                &[],
                t,
                tot.bytes_out as f64,
            );
            add(
                "testbed_load_dropped_iterations_total",
                &[],
                t,
                tot.dropped_iterations as f64,
            );
            add("testbed_load_requests_per_second", &[], t, r.rps);
            add("testbed_load_vus", &[], t, r.vus as f64);
            add("testbed_load_in_flight", &[], t, r.in_flight as f64);
            for (q, v) in r.quantiles_s() {
                add("testbed_load_latency_seconds", &[("quantile", q)], t, v);
            }
        }
        by_name
            .into_iter()
            .map(|((name, extra), samples)| {
                let mut labels: Vec<remote::Label> =
                    std::iter::once(("__name__".to_string(), name))
                        .chain(self.labels.iter().cloned())
                        .chain(extra)
                        .map(|(name, value)| remote::Label { name, value })
                        .collect();
                // Remote write wants labels sorted by name.
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                remote::TimeSeries { labels, samples }
            })
            .collect()
    }
}

impl Sink for RemoteWrite {
    fn write(&mut self, rows: &[Row]) -> Result<(), String> {
        use prost::Message as _;
        let series = self.series(rows);
        let poster = self.client.as_ref().map_err(|e| e.clone())?;
        let body = remote::WriteRequest { timeseries: series }.encode_to_vec();
        let body = snap::raw::Encoder::new()
            .compress_vec(&body)
            .map_err(|e| format!("snappy: {e}"))?;
        poster.post(
            &self.url,
            &[
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ],
            body,
        )
    }
}

/// An error with its causes: reqwest's own message alone does not say
/// whether the connection was refused or timed out.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_text = c.to_string();
        if !out.contains(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        cur = c.source();
    }
    out
}

/// An HTTP client for the remote outputs, driven on the output's own
/// thread (a runtime of its own: the load's runtime never waits on it).
pub(crate) struct Poster {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Poster {
    pub(crate) fn new() -> Result<Poster, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .timeout(REMOTE_TIMEOUT)
            .connect_timeout(REMOTE_TIMEOUT)
            .user_agent("testbed-load")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Poster { rt, client })
    }

    /// POSTs a protobuf body; anything but a 2xx answer is an error that
    /// names the URL.
    pub(crate) fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), String> {
        self.rt.block_on(async {
            let mut req = self
                .client
                .post(url)
                .header("Content-Type", "application/x-protobuf");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let r = req
                .body(body)
                .send()
                .await
                .map_err(|e| format!("{url}: {}", causes(&e)))?;
            if !r.status().is_success() {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(format!("{url}: {status} {}", text.trim()));
            }
            Ok(())
        })
    }
}

/// The messages of Prometheus' `remote.proto` / `types.proto` that remote
/// write 1.0 sends.
mod remote {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_write_samples_never_share_a_time() {
        let mut rw = RemoteWrite::new("http://127.0.0.1:9/api/v1/write".into(), &[]);
        let full = Row::of(&Window::empty(0, 1_700_000_000));
        // A short last window that ends where the one before it did.
        let mut last = Row::of(&Window::empty(1, 1_700_000_001));
        last.duration_ms = 0;
        let series = rw.series(&[full, last]);
        for s in &series {
            let times: Vec<i64> = s.samples.iter().map(|x| x.timestamp).collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        }
        assert!(!series.is_empty());
    }

    #[test]
    fn specs_parse_or_name_the_problem() {
        assert_eq!(
            OutputSpec::parse("json=out.jsonl").unwrap(),
            OutputSpec::Json("out.jsonl".into())
        );
        assert_eq!(
            OutputSpec::parse("prometheus-rw=http://127.0.0.1:9090/api/v1/write").unwrap(),
            OutputSpec::PrometheusRw("http://127.0.0.1:9090/api/v1/write".into())
        );
        assert_eq!(
            OutputSpec::parse("otlp=http://127.0.0.1:4318").unwrap(),
            OutputSpec::Otlp("http://127.0.0.1:4318/v1/metrics".into())
        );
        assert_eq!(
            OutputSpec::parse("otlp=https://otel.example/api/otlp/v1/metrics").unwrap(),
            OutputSpec::Otlp("https://otel.example/api/otlp/v1/metrics".into())
        );
        for (bad, says) in [
            ("json", "expected json=FILE"),
            ("otlp=127.0.0.1:4318", "not an http(s) URL"),
            ("otlp=grpc://collector:4317", "not an http(s) URL"),
            ("csv=", "nothing after"),
            ("influx=http://x", "unknown output `influx`"),
            ("prometheus-rw=localhost:9090", "not an http(s) URL"),
            ("prometheus-rw=http://", "not an http(s) URL"),
        ] {
            let e = OutputSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--out {bad}: ")), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn files_get_a_line_per_window() {
        let dir = std::env::temp_dir().join(format!("load-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (json, csv) = (dir.join("w.jsonl"), dir.join("w.csv"));
        let outs = Outputs::open(
            &[
                format!("json={}", json.display()),
                format!("csv={}", csv.display()),
            ],
            &[],
            "files",
        )
        .unwrap();
        let mut w = Window::empty(0, 1_700_000_000);
        w.requests = 3;
        w.latency.record(2_000).unwrap();
        w.status_codes.insert(200, 3);
        outs.window(&w);
        outs.window(&Window::empty(1, 1_700_000_001));
        let stats = outs.finish();
        assert!(
            stats.iter().all(|s| s.written == 2 && s.dropped == 0),
            "{stats:?}"
        );
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["time_ms"], 1_700_000_000_000u64);
        assert_eq!(lines[0]["requests"], 3);
        assert_eq!(lines[0]["status_codes"]["200"], 3);
        assert!((lines[0]["p50_ms"].as_f64().unwrap() - 2.0).abs() < 0.01);
        assert_eq!(lines[1]["p99_ms"], serde_json::Value::Null);
        let text = std::fs::read_to_string(&csv).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], CSV_COLUMNS.join(","));
        assert!(
            rows[1].starts_with("1700000000000,0,1000,3,0,3.000,"),
            "{}",
            rows[1]
        );
        assert!(rows[1].ends_with(",200:3,"), "{}", rows[1]);
        assert_eq!(rows.len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_stalled_output_drops_instead_of_blocking() {
        // A listener that never answers: every request stalls until its
        // timeout.
        let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/write", stall.local_addr().unwrap());
        let outs = Outputs::open(
            &[
                format!("prometheus-rw={url}"),
                format!("otlp=http://{}", stall.local_addr().unwrap()),
            ],
            &[],
            "stalled",
        )
        .unwrap();
        let fed = QUEUE as u64 * 3;
        for i in 0..fed {
            outs.window(&Window::empty(i, 1_700_000_000 + i));
        }
        // Beyond the queue (and the one batch in flight), windows were
        // dropped rather than waited for; the rest failed, or was lost
        // with the sender abandoned at the end: every window is counted.
        let stats = outs.finish();
        for s in &stats {
            assert_eq!(s.written, 0, "{stats:?}");
            assert_eq!(s.dropped, fed, "{stats:?}");
            assert!(s.last_error.is_some(), "{stats:?}");
        }
    }

    #[test]
    fn otlp_counters_and_histogram_accumulate_over_windows() {
        use otlp_proto::metrics::v1::{metric::Data, number_data_point::Value};
        let mut o = otlp::Otlp::new(
            "http://127.0.0.1:1/v1/metrics".into(),
            &[("testid".into(), "unit".into())],
            "plan-a",
        );
        let mut w0 = Window::empty(0, 1_700_000_000);
        w0.requests = 3;
        for us in [300, 2_000, 40_000] {
            w0.latency.record(us).unwrap();
        }
        let mut w1 = Window::empty(1, 1_700_000_001);
        w1.requests = 2;
        w1.errors = 1;
        w1.latency.record(2_000).unwrap();
        w1.latency.record(2_000).unwrap();
        let req = o.request(&[Row::of(&w0), Row::of(&w1)]);
        let rm = &req.resource_metrics[0];
        let service = &rm.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let metrics = &rm.scope_metrics[0].metrics;
        let find = |n: &str| metrics.iter().find(|m| m.name == n).unwrap();
        let Some(Data::Sum(requests)) = &find(otlp::names::REQUESTS).data else {
            panic!("requests is a sum")
        };
        let values: Vec<_> = requests.data_points.iter().map(|p| p.value).collect();
        assert_eq!(values, [Some(Value::AsInt(3)), Some(Value::AsInt(5))]);
        let p = &requests.data_points[1];
        assert_eq!(p.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(p.time_unix_nano, 1_700_000_002_000_000_000);
        assert!(p.attributes.iter().any(|a| a.key == "testbed.plan"));
        assert!(p.attributes.iter().any(|a| a.key == "testid"));
        let Some(Data::Histogram(h)) = &find(otlp::names::DURATION).data else {
            panic!("duration is a histogram")
        };
        let last = &h.data_points[1];
        assert_eq!(last.count, 5);
        assert_eq!(last.bucket_counts.iter().sum::<u64>(), 5);
        assert_eq!(last.bucket_counts.len(), LATENCY_BOUNDS_S.len() + 1);
        // 0.3 ms in the first bucket (≤ 0.5 ms), the three 2 ms in ≤ 2.5 ms.
        assert_eq!(last.bucket_counts[0], 1);
        assert_eq!(last.bucket_counts[2], 3);
        assert!((last.max.unwrap() - 0.04).abs() < 0.001, "{last:?}");
    }
}
