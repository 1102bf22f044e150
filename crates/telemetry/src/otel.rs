//! OpenTelemetry traces over OTLP/HTTP (protobuf), and trace ids in logs.
//!
//! Off unless an endpoint is configured (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`):
//! then no layer, no exporter thread, and [`enabled`] is false, which the
//! instrumented code checks before building anything.
//!
//! Spans of work that outlives one function — a task from submission to its
//! result, a plan run and its steps — are recorded when they end, with the
//! times stored on their records ([`Finished`]). Their ids are derived from
//! the records' uuids ([`SpanRef`]), so whichever server replica sees the end
//! records them, and a child (an agent's execution, a task of a step) can
//! name its parent before the parent is recorded, with nothing stored.
//!
//! Export never slows the caller: spans go to a queue bounded by
//! `OTEL_BSP_MAX_QUEUE_SIZE` (2048), drained by the SDK's own thread; what
//! does not fit, and batches the endpoint refused, are counted
//! ([`dropped_spans`], `testbed_trace_spans_dropped_total`) and warned
//! about once per outage.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::Context;
/// Attributes of [`Finished`] spans.
pub use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The flag that sets the endpoint, named in errors.
pub const FLAG: &str = "--otlp-endpoint";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_PATH: &str = "/v1/traces";
/// The OpenTelemetry default for `OTEL_BSP_MAX_QUEUE_SIZE`.
const DEFAULT_QUEUE: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("{setting} `{value}`: {reason}")]
    Endpoint {
        setting: &'static str,
        value: String,
        reason: String,
    },
    #[error("the OTLP trace exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported (an endpoint was configured and set up).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Spans lost since start: the queue was full, or the endpoint failed.
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The traces URL from the flag, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
/// (used as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`, as
/// the flag); `None` when none is set. `env` reads a variable (split out
/// for tests). A set but unusable value is an error naming the setting —
/// the SDK would quietly fall back to localhost instead.
pub fn resolve_endpoint(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, OtelError> {
    let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let (setting, value, base) = if let Some(v) = set(flag.map(str::to_string)) {
        (FLAG, v, true)
    } else if let Some(v) = set(env(TRACES_ENDPOINT)) {
        (TRACES_ENDPOINT, v, false)
    } else if let Some(v) = set(env(ENDPOINT)) {
        (ENDPOINT, v, true)
    } else {
        return Ok(None);
    };
    let bad = |reason: String| OtelError::Endpoint {
        setting,
        value: value.clone(),
        reason,
    };
    let mut url = url::Url::parse(value.trim()).map_err(|e| bad(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the scheme must be http or https (OTLP over HTTP), not `{}`",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host".into()));
    }
    if base && !url.path().ends_with(TRACES_PATH) {
        let path = format!("{}{TRACES_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(Some(url.to_string()))
}

/// What [`init`] set up; [`Otel::shutdown`] exports what is queued.
pub struct Otel {
    provider: SdkTracerProvider,
}

impl Otel {
    /// The `tracing` layer that turns this process's spans (of Testbed's
    /// own crates: not of the libraries, nor of the exporter itself) into
    /// OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("testbed"))
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target().starts_with("testbed")
            }))
    }

    /// Exports what is queued (within the exporter's timeout) and stops.
    /// Blocks: call it outside the async runtime.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing traces: {e}");
        }
    }
}

/// Sets up export to `endpoint` (from [`resolve_endpoint`]) as `service`
/// (`OTEL_SERVICE_NAME` overrides it). `OTEL_TRACES_SAMPLER`,
/// `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT}` apply as the SDK
/// reads them.
pub fn init(endpoint: &str, service: &str) -> Result<Otel, OtelError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| OtelError::Exporter {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let limit = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_QUEUE);
    let pending = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        pending: pending.clone(),
        endpoint: endpoint.to_string(),
        failing: AtomicBool::new(false),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(limit)
            .build(),
    )
    .build();
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| service.to_string());
    let resource = Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Bounded {
            inner: batch,
            pending,
            limit,
        })
        .with_resource(resource)
        .build();
    let _ = TRACER.set(provider.tracer("testbed"));
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Otel { provider })
}

/// Holds the queue to `limit` spans counting those being exported, so the
/// SDK's own queue (as large) never overflows uncounted.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
    limit: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it could not deliver.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
    endpoint: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(n, Ordering::Relaxed);
        match &result {
            Err(e) => {
                DROPPED.fetch_add(n as u64, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "exporting traces to {} failed: {e}; spans are dropped (and counted in testbed_trace_spans_dropped_total) until it answers",
                        self.endpoint
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("exporting traces to {} works again", self.endpoint);
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A span's place in a trace: its trace id and its own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRef {
    pub trace_id: u128,
    pub span_id: u64,
}

/// FNV-1a: stable across processes and versions, unlike std's hasher.
fn span_id_of(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Zero is the invalid span id.
    h.max(1)
}

impl SpanRef {
    /// A plan run: its own trace, named by the run's uuid.
    pub fn run(run: u128) -> SpanRef {
        SpanRef {
            trace_id: run.max(1),
            span_id: span_id_of(&[&run.to_be_bytes(), b"run"]),
        }
    }

    /// One step of a run, a child of the run's span.
    pub fn step(run: u128, step: &str) -> SpanRef {
        SpanRef {
            trace_id: run.max(1),
            span_id: span_id_of(&[&run.to_be_bytes(), b"step", step.as_bytes()]),
        }
    }

    /// A task: in its run's trace when it has one (under its step), else
    /// a trace of its own.
    pub fn task(task: u128, run: Option<u128>) -> SpanRef {
        SpanRef {
            trace_id: run.unwrap_or(task).max(1),
            span_id: span_id_of(&[&task.to_be_bytes(), b"task"]),
        }
    }

    /// W3C `traceparent` (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }

    /// Reads a W3C `traceparent`; `None` unless it is well formed with
    /// non-zero ids.
    pub fn parse(traceparent: &str) -> Option<SpanRef> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(SpanRef { trace_id, span_id })
    }

    fn context(&self) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }
}

/// `span` as a child of `parent` (a span of another process, or one
/// recorded later by [`record`]), or a root without one; `Span::none()`
/// when tracing is off, so `make` is not even called.
pub fn child_of(
    parent: impl Into<Option<SpanRef>>,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = make();
    if let Some(parent) = parent.into() {
        // Fails only for a disabled span, which then has no parent to have.
        let _ = span.set_parent(parent.context());
    }
    span
}

/// A span that ended, recorded after the fact with its own times.
#[derive(Debug)]
pub struct Finished {
    pub name: &'static str,
    pub at: SpanRef,
    pub parent: Option<SpanRef>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Moments within it (e.g. `started`), by name.
    pub events: Vec<(&'static str, SystemTime)>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Exports `span` (nothing when tracing is off).
pub fn record(span: Finished) {
    let Some(tracer) = TRACER.get().filter(|_| enabled()) else {
        return;
    };
    let mut builder = tracer
        .span_builder(span.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(span.start)
        .with_attributes(span.attributes)
        .with_events(
            span.events
                .into_iter()
                .map(|(name, at)| opentelemetry::trace::Event::new(name, at, Vec::new(), 0))
                .collect(),
        )
        .with_status(match span.error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        });
    builder.trace_id = Some(TraceId::from(span.at.trace_id));
    builder.span_id = Some(SpanId::from(span.at.span_id));
    let cx = span.parent.map(|p| p.context()).unwrap_or_default();
    let mut s = tracer.build_with_context(builder, &cx);
    opentelemetry::trace::Span::end_with_timestamp(&mut s, span.end.max(span.start));
}

/// The ids of the innermost span an event happened in that has them.
fn current_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, SpanId)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    for span in ctx.event_scope()? {
        let ext = span.extensions();
        if let Some(data) = ext.get::<tracing_opentelemetry::OtelData>() {
            if let (Some(t), Some(s)) = (data.trace_id(), data.span_id()) {
                if t != TraceId::INVALID {
                    return Some((t, s));
                }
            }
        }
    }
    None
}

/// A log line formatter that adds `trace_id` and `span_id` to lines
/// logged inside a traced span: as fields of the object for JSON, appended
/// as `trace_id=… span_id=…` to text. Lines outside a span are unchanged.
pub struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<F> WithTraceIds<F> {
    pub fn new(inner: F, json: bool) -> Self {
        WithTraceIds { inner, json }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace, span)) = current_ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        match body.strip_suffix('}').filter(|_| self.json) {
            Some(open) => {
                writeln!(
                    writer,
                    r#"{open},"trace_id":"{trace}","span_id":"{span}"}}"#
                )
            }
            None => writeln!(writer, "{body} trace_id={trace} span_id={span}"),
        }
    }
}

/// Appends the dropped-span counter to a Prometheus scrape (only when
/// tracing is on, so scrapes without it are unchanged).
pub(crate) fn encode_dropped(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
) -> std::fmt::Result {
    use prometheus_client::encoding::EncodeMetric;
    if !enabled() {
        return Ok(());
    }
    let c = prometheus_client::metrics::counter::ConstCounter::new(dropped_spans());
    c.encode(encoder.encode_descriptor(
        "testbed_trace_spans_dropped",
        "Spans not exported to the OTLP endpoint: its queue was full or it failed",
        None,
        c.metric_type(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn endpoint_comes_from_the_flag_then_the_standard_variables() {
        let none = env_of(&[]);
        assert_eq!(resolve_endpoint(None, &none).unwrap(), None);
        assert_eq!(
            resolve_endpoint(Some("http://c:4318"), &none)
                .unwrap()
                .unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            resolve_endpoint(Some("http://c:4318/v1/traces"), &none)
                .unwrap()
                .unwrap(),
            "http://c:4318/v1/traces"
        );
        let both = env_of(&[
            (ENDPOINT, "http://base:4318/"),
            (TRACES_ENDPOINT, "https://t:4319/custom"),
        ]);
        assert_eq!(
            resolve_endpoint(None, &both).unwrap().unwrap(),
            "https://t:4319/custom"
        );
        let base = env_of(&[(ENDPOINT, "http://base:4318/"), (TRACES_ENDPOINT, "")]);
        assert_eq!(
            resolve_endpoint(None, &base).unwrap().unwrap(),
            "http://base:4318/v1/traces"
        );
        assert_eq!(
            resolve_endpoint(Some("http://f:1"), &both)
                .unwrap()
                .unwrap(),
            "http://f:1/v1/traces"
        );
    }

    #[test]
    fn a_bad_endpoint_names_its_setting() {
        let none = env_of(&[]);
        let e = resolve_endpoint(Some("not a url"), &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--otlp-endpoint `not a url`: not a URL"),
            "{e}"
        );
        let e = resolve_endpoint(Some("grpc://c:4317"), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheme must be http or https"), "{e}");
        let env = env_of(&[(ENDPOINT, "localhost:4318")]);
        let e = resolve_endpoint(None, &env).unwrap_err().to_string();
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT `localhost:4318`"),
            "{e}"
        );
    }

    #[test]
    fn span_refs_are_stable_and_round_trip() {
        let run = 0x1234_5678_9abc_def0_1122_3344_5566_7788u128;
        let task = 0xfeed_u128 << 64 | 7;
        assert_eq!(SpanRef::run(run), SpanRef::run(run));
        assert_ne!(
            SpanRef::step(run, "a").span_id,
            SpanRef::step(run, "b").span_id
        );
        assert_ne!(SpanRef::step(run, "a").span_id, SpanRef::run(run).span_id);
        let t = SpanRef::task(task, Some(run));
        assert_eq!(t.trace_id, run);
        assert_eq!(SpanRef::task(task, None).trace_id, task);
        let tp = t.traceparent();
        assert_eq!(tp.len(), 55, "{tp}");
        assert_eq!(SpanRef::parse(&tp), Some(t));
        assert_eq!(SpanRef::parse("00-0-0-01"), None);
        assert_eq!(
            SpanRef::parse("00-00000000000000000000000000000000-0000000000000001-01"),
            None
        );
    }
}
