//! `--out otlp=URL`: per-second windows as OTLP metrics, one protobuf
//! `ExportMetricsServiceRequest` per POST (OTLP/HTTP, `application/x-protobuf`).
//!
//! Counters and the latency histogram are cumulative from the run's first
//! window, as Prometheus' OTLP receiver and most backends want them, so a
//! window lost on the way (endpoint down, queue full) loses no request: the
//! next one sent carries the totals. Per-second figures (rate, users, in
//! flight, latency quantiles) are gauges.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::{LatencyBuckets, Poster, Row, Sink};

/// Histogram bucket bounds, in seconds: OpenTelemetry's advice for
/// `http.client.request.duration` with finer steps below 5 ms for fast
/// targets, and 30 s for the longest request timeouts.
pub const LATENCY_BOUNDS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0, 30.0,
];

/// Metric names, as OpenTelemetry names them (Prometheus' OTLP receiver
/// turns `testbed.load.requests` into `testbed_load_requests_total`).
pub mod names {
    pub const REQUESTS: &str = "testbed.load.requests";
    pub const ERRORS: &str = "testbed.load.errors";
    pub const DROPPED_ITERATIONS: &str = "testbed.load.dropped_iterations";
    pub const RECEIVED: &str = "testbed.load.received";
    pub const SENT: &str = "testbed.load.sent";
    pub const RATE: &str = "testbed.load.request_rate";
    pub const VUS: &str = "testbed.load.vus";
    pub const IN_FLIGHT: &str = "testbed.load.in_flight";
    pub const LATENCY: &str = "testbed.load.latency";
    pub const DURATION: &str = "testbed.load.request.duration";
}

pub(super) struct Otlp {
    url: String,
    resource: Resource,
    attributes: Vec<KeyValue>,
    client: Result<Poster, String>,
    /// Unix ns of the first window: the start of every cumulative point.
    start_ns: Option<u64>,
    totals: Totals,
}

/// Everything cumulative points carry: the counters and the latency
/// histogram, summed over every window so far.
#[derive(Default)]
struct Totals {
    counters: super::Totals,
    latency: LatencyBuckets,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

impl Otlp {
    pub(super) fn new(url: String, labels: &[(String, String)], name: &str) -> Otlp {
        let mut attributes = vec![kv("testbed.plan", name)];
        attributes.extend(labels.iter().map(|(k, v)| kv(k, v)));
        let resource = Resource {
            attributes: vec![
                kv("service.name", "testbed-load"),
                kv("service.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Default::default()
        };
        Otlp {
            url,
            resource,
            attributes,
            client: Poster::new(),
            start_ns: None,
            totals: Totals::default(),
        }
    }

    /// The request for `rows`, with the totals brought up to their end.
    pub(super) fn request(&mut self, rows: &[Row]) -> ExportMetricsServiceRequest {
        let start = *self.start_ns.get_or_insert_with(|| {
            rows.first()
                .map(|r| ms_to_ns(r.time_ms))
                .unwrap_or_else(|| {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or_default()
                })
        });
        let attrs = &self.attributes;
        let point = |t: u64, v: number_data_point::Value, extra: Option<KeyValue>| {
            let mut attributes = attrs.clone();
            attributes.extend(extra);
            NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: t,
                value: Some(v),
                ..Default::default()
            }
        };
        let int = |n: u64| number_data_point::Value::AsInt(n.min(i64::MAX as u64) as i64);
        let (mut requests, mut errors, mut dropped, mut received, mut sent) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut rate, mut vus, mut in_flight, mut latency, mut duration) =
            (vec![], vec![], vec![], vec![], vec![]);
        for r in rows {
            // Stamped at the window's end: its figures are complete then.
            let t = ms_to_ns(r.time_ms + r.duration_ms);
            self.totals.counters.add(r);
            self.totals.latency.add(&r.latency);
            let (tot, hist) = (&self.totals.counters, &self.totals.latency);
            requests.push(point(t, int(tot.requests), None));
            errors.push(point(t, int(tot.errors), None));
            dropped.push(point(t, int(tot.dropped_iterations), None));
            received.push(point(t, int(tot.bytes_in), None));
            sent.push(point(t, int(tot.bytes_out), None));
            rate.push(point(t, number_data_point::Value::AsDouble(r.rps), None));
            vus.push(point(t, int(r.vus), None));
            in_flight.push(point(t, int(r.in_flight), None));
            for (q, v) in r.quantiles_s() {
                let v = number_data_point::Value::AsDouble(v);
                latency.push(point(t, v, Some(kv("quantile", q))));
            }
            let mut buckets = hist.counts.clone();
            buckets.resize(LATENCY_BOUNDS_S.len() + 1, 0);
            duration.push(HistogramDataPoint {
                attributes: attrs.clone(),
                start_time_unix_nano: start,
                time_unix_nano: t,
                count: hist.count,
                sum: Some(hist.sum_s),
                bucket_counts: buckets,
                explicit_bounds: LATENCY_BOUNDS_S.to_vec(),
                min: hist.min_s,
                max: hist.max_s,
                ..Default::default()
            });
        }
        let cumulative = AggregationTemporality::Cumulative as i32;
        let sum = |name: &str, unit: &str, description: &str, points| Metric {
            name: name.to_string(),
            description: description.to_string(),
            unit: unit.to_string(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: cumulative,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let gauge = |name: &str, unit: &str, description: &str, points| Metric {
            name: name.to_string(),
            description: description.to_string(),
            unit: unit.to_string(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Default::default()
        };
        let metrics = vec![
            sum(
                names::REQUESTS,
                "{request}",
                "Requests answered or failed since the run started",
                requests,
            ),
            sum(
                names::ERRORS,
                "{request}",
                "Failed requests since the run started",
                errors,
            ),
            sum(
                names::DROPPED_ITERATIONS,
                "{iteration}",
                "Arrivals skipped because every virtual user was busy (open model)",
                dropped,
            ),
            sum(names::RECEIVED, "By", "Bytes received", received),
            sum(names::SENT, "By", "Bytes sent", sent),
            gauge(
                names::RATE,
                "{request}/s",
                "Requests per second in the window",
                rate,
            ),
            gauge(
                names::VUS,
                "{user}",
                "Most virtual users active at once in the window",
                vus,
            ),
            gauge(
                names::IN_FLIGHT,
                "{request}",
                "Requests waiting for an answer when the window closed",
                in_flight,
            ),
            gauge(
                names::LATENCY,
                "s",
                "Latency quantiles of the window's responses (quantile 1 is the maximum)",
                latency,
            ),
            Metric {
                name: names::DURATION.to_string(),
                description: "Latency of every response since the run started".to_string(),
                unit: "s".to_string(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: duration,
                    aggregation_temporality: cumulative,
                })),
                ..Default::default()
            },
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "testbed-load".to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}

/// `a` and `b` combined by `f`, either alone when the other is unset.
impl Sink for Otlp {
    fn write(&mut self, rows: &[Row]) -> Result<(), String> {
        use prost::Message as _;
        let body = self.request(rows).encode_to_vec();
        let poster = self.client.as_ref().map_err(|e| e.clone())?;
        poster.post(&self.url, &[], body)
    }
}
