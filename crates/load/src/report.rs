//! Totals over many windows ([`Aggregate`]) and the final [`LoadReport`]:
//! summary with percentiles, error breakdown, per-second series and
//! threshold results.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::{add_histogram, new_histogram, CheckCount, Window};
use crate::threshold::{Threshold, ThresholdResult};

/// Whole-run (or whole-so-far) figures. Latencies in milliseconds, rates as
/// fractions (0–1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub successes: u64,
    pub errors: u64,
    pub success_rate: f64,
    pub error_rate: f64,
    /// Requests per second of active (unpaused) time.
    pub rps: f64,
    /// Active seconds the rate is computed over.
    pub duration_secs: f64,
    pub iterations: u64,
    pub dropped_iterations: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    /// Fraction of checks that passed (1 when none ran).
    pub checks_rate: f64,
    pub vus_max: u64,
    /// Requests abandoned unanswered when the run ended (not in `requests`).
    #[serde(default)]
    pub cut: u64,
    pub avg_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub stdev_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The whole latency histogram (µs), base64 HdrHistogram V2, for
    /// further percentiles or merging.
    #[serde(with = "crate::metrics::hist_base64")]
    pub latency: Histogram<u64>,
}

impl Summary {
    /// Latency percentile `p` (0–100) in ms.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        us_to_ms(self.latency.value_at_quantile(p / 100.0))
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One point of the per-second series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub index: u64,
    pub timestamp: u64,
    pub paused: bool,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub error_rate: f64,
    pub vus: u64,
    pub dropped_iterations: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl From<&Window> for SeriesPoint {
    fn from(w: &Window) -> Self {
        let h = &w.latency;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                us_to_ms(h.value_at_quantile(p))
            }
        };
        SeriesPoint {
            index: w.index,
            timestamp: w.timestamp,
            paused: w.paused,
            requests: w.requests,
            errors: w.errors,
            rps: w.rps(),
            error_rate: ratio(w.errors, w.requests),
            vus: w.vus,
            dropped_iterations: w.dropped_iterations,
            bytes_in: w.bytes_in,
            bytes_out: w.bytes_out,
            avg_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: if h.is_empty() { 0.0 } else { us_to_ms(h.max()) },
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Running totals over windows (from one engine or several): feed it every
/// window, ask for a [`Summary`] at any time.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub requests: u64,
    pub errors: u64,
    pub iterations: u64,
    pub dropped_iterations: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub vus_max: u64,
    pub status_codes: BTreeMap<u16, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Connection errors of a known cause ([`Window::error_causes`]).
    pub error_causes: BTreeMap<String, u64>,
    pub cut: u64,
    pub checks: Vec<CheckCount>,
    pub latency: Histogram<u64>,
    /// Windows in which the run was not paused.
    pub active_windows: u64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            requests: 0,
            errors: 0,
            iterations: 0,
            dropped_iterations: 0,
            bytes_in: 0,
            bytes_out: 0,
            vus_max: 0,
            status_codes: BTreeMap::new(),
            error_kinds: BTreeMap::new(),
            error_causes: BTreeMap::new(),
            cut: 0,
            checks: Vec::new(),
            latency: new_histogram(),
            active_windows: 0,
        }
    }
}

impl Aggregate {
    pub fn add(&mut self, w: &Window) {
        self.requests += w.requests;
        self.errors += w.errors;
        self.iterations += w.iterations;
        self.dropped_iterations += w.dropped_iterations;
        self.bytes_in += w.bytes_in;
        self.bytes_out += w.bytes_out;
        self.vus_max = self.vus_max.max(w.vus);
        for (k, v) in &w.status_codes {
            *self.status_codes.entry(*k).or_default() += v;
        }
        for (k, v) in &w.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &w.error_causes {
            *self.error_causes.entry(k.clone()).or_default() += v;
        }
        self.cut += w.cut;
        if self.checks.len() < w.checks.len() {
            self.checks.resize(w.checks.len(), CheckCount::default());
        }
        for (a, b) in self.checks.iter_mut().zip(&w.checks) {
            a.passed += b.passed;
            a.failed += b.failed;
        }
        add_histogram(&mut self.latency, &w.latency);
        if !w.paused {
            self.active_windows += 1;
        }
    }

    /// Summary with rates over `duration_secs` of active time.
    pub fn summary(&self, duration_secs: f64) -> Summary {
        let h = &self.latency;
        let (passed, failed) = self
            .checks
            .iter()
            .fold((0, 0), |(p, f), c| (p + c.passed, f + c.failed));
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                us_to_ms(h.value_at_quantile(p))
            }
        };
        let successes = self.requests - self.errors.min(self.requests);
        Summary {
            requests: self.requests,
            successes,
            errors: self.errors,
            success_rate: if self.requests == 0 {
                0.0
            } else {
                ratio(successes, self.requests)
            },
            error_rate: ratio(self.errors, self.requests),
            rps: if duration_secs > 0.0 {
                self.requests as f64 / duration_secs
            } else {
                0.0
            },
            duration_secs,
            iterations: self.iterations,
            dropped_iterations: self.dropped_iterations,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            checks_passed: passed,
            checks_failed: failed,
            checks_rate: if passed + failed == 0 {
                1.0
            } else {
                ratio(passed, passed + failed)
            },
            vus_max: self.vus_max,
            cut: self.cut,
            avg_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            min_ms: if h.is_empty() { 0.0 } else { us_to_ms(h.min()) },
            max_ms: if h.is_empty() { 0.0 } else { us_to_ms(h.max()) },
            stdev_ms: if h.is_empty() {
                0.0
            } else {
                h.stdev() / 1000.0
            },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            latency: h.clone(),
        }
    }
}

/// Count of one error label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub label: String,
    pub count: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The stages ran to their end.
    Completed,
    /// `stop()` was called.
    Stopped,
}

/// The final result of a run (or of several merged runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Unix time (ms) at which load started.
    pub started_at_ms: u64,
    /// Wall-clock length including pauses, in seconds.
    pub wall_secs: f64,
    pub end: EndReason,
    pub summary: Summary,
    /// Most frequent first.
    pub errors: Vec<ErrorCount>,
    /// Connection errors of a known cause (`connection refused`, `unknown
    /// host (DNS lookup failed)`, `connection reset`), most frequent first;
    /// each is also counted under `Connection Error` in `errors`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_causes: Vec<ErrorCount>,
    pub status_codes: BTreeMap<u16, u64>,
    /// Pass/fail counts per check, in scenario order, with their names.
    pub checks: Vec<NamedCheckCount>,
    pub series: Vec<SeriesPoint>,
    pub thresholds: Vec<ThresholdResult>,
    /// All thresholds passed (true when there are none).
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCheckCount {
    pub name: String,
    pub passed: u64,
    pub failed: u64,
}

impl LoadReport {
    /// Builds a report from (possibly merged) windows. `active_secs` is the
    /// run's length without pauses; `check_names` label the check counts.
    pub fn from_windows(
        windows: &[Window],
        active_secs: f64,
        wall_secs: f64,
        started_at_ms: u64,
        end: EndReason,
        thresholds: &[Threshold],
        check_names: &[String],
    ) -> LoadReport {
        let mut agg = Aggregate::default();
        for w in windows {
            agg.add(w);
        }
        let summary = agg.summary(active_secs);
        let mut errors: Vec<ErrorCount> = agg
            .error_kinds
            .iter()
            .map(|(label, &count)| ErrorCount {
                label: label.clone(),
                count,
            })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
        let mut error_causes: Vec<ErrorCount> = agg
            .error_causes
            .iter()
            .map(|(label, &count)| ErrorCount {
                label: label.clone(),
                count,
            })
            .collect();
        error_causes.sort_by(|a, b| b.count.cmp(&a.count).then(a.label.cmp(&b.label)));
        let thresholds: Vec<ThresholdResult> =
            thresholds.iter().map(|t| t.judge(&summary)).collect();
        let checks = agg
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| NamedCheckCount {
                name: check_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("check {i}")),
                passed: c.passed,
                failed: c.failed,
            })
            .collect();
        LoadReport {
            started_at_ms,
            wall_secs,
            end,
            passed: thresholds.iter().all(|t| t.passed),
            errors,
            error_causes,
            status_codes: agg.status_codes.clone(),
            checks,
            series: windows.iter().map(SeriesPoint::from).collect(),
            thresholds,
            summary,
        }
    }
}
