//! Per-second metric windows: the public [`Window`] (serde, histogram
//! included, so it can travel between agents and server and be merged
//! exactly) and the lock-free recorder each engine thread fills.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms keep at full precision: one hour in µs
/// (larger values are clamped to it).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant decimal digits kept by the latency histograms.
pub const SIGFIG: u8 = 3;

/// An empty latency histogram (µs) with the engine's bounds; histograms with
/// these bounds add exactly.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// How a request failed. Labels follow the seed's error statistics
/// (`HTTP 500`, `Timeout`, `Connection Error`…); the connection errors whose
/// cause is known keep the `Connection Error` label and name the cause in
/// [`ErrorKind::cause`] (counted in [`Window::error_causes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// A 4xx or 5xx response.
    Http(u16),
    Timeout,
    /// A connection error of no more precise cause (closed mid-response,
    /// unparsable response…).
    Connection,
    /// Nobody listens on the port.
    Refused,
    /// The host name did not resolve.
    UnknownHost,
    /// The peer reset or aborted the connection.
    Reset,
    Tls,
    CheckFailed,
}

impl ErrorKind {
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// The cause of a connection error, when known: `connection refused`,
    /// `unknown host (DNS lookup failed)`, `connection reset`.
    pub fn cause(&self) -> Option<&'static str> {
        match self {
            ErrorKind::Refused => Some(CAUSE_REFUSED),
            ErrorKind::UnknownHost => Some(CAUSE_UNKNOWN_HOST),
            ErrorKind::Reset => Some(CAUSE_RESET),
            _ => None,
        }
    }

    /// The kind named by `label`, if it is one of ours.
    pub fn from_label(label: &str) -> Option<ErrorKind> {
        match label {
            "Timeout" => Some(ErrorKind::Timeout),
            "Connection Error" => Some(ErrorKind::Connection),
            "TLS Error" => Some(ErrorKind::Tls),
            "Check Failed" => Some(ErrorKind::CheckFailed),
            _ => label
                .strip_prefix("HTTP ")
                .and_then(|c| c.parse().ok())
                .map(ErrorKind::Http),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Http(code) => write!(f, "HTTP {code}"),
            ErrorKind::Timeout => f.write_str("Timeout"),
            ErrorKind::Connection
            | ErrorKind::Refused
            | ErrorKind::UnknownHost
            | ErrorKind::Reset => f.write_str("Connection Error"),
            ErrorKind::Tls => f.write_str("TLS Error"),
            ErrorKind::CheckFailed => f.write_str("Check Failed"),
        }
    }
}

/// [`ErrorKind::cause`] texts, the keys of [`Window::error_causes`].
pub const CAUSE_REFUSED: &str = "connection refused";
pub const CAUSE_UNKNOWN_HOST: &str = "unknown host (DNS lookup failed)";
pub const CAUSE_RESET: &str = "connection reset";

/// Pass/fail counts of one check (by position in the scenario).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCount {
    pub passed: u64,
    pub failed: u64,
}

/// One second of a run (the last may be shorter), from one engine or
/// merged from several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds since the run started (wall clock, pauses included).
    pub index: u64,
    /// Unix time (seconds) at the window's start.
    pub timestamp: u64,
    /// Length in milliseconds: 1000 except for a final partial window.
    pub duration_ms: u64,
    /// The run was paused at some point during this window.
    pub paused: bool,
    /// Requests that finished (successfully or not) in this window.
    pub requests: u64,
    /// Of which failed (any [`ErrorKind`]).
    pub errors: u64,
    pub iterations: u64,
    /// Open model: arrivals skipped because every virtual user was busy.
    pub dropped_iterations: u64,
    /// Most virtual users active at once during the window.
    pub vus: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Responses by status code (errors included).
    pub status_codes: BTreeMap<u16, u64>,
    /// Errors by label (`HTTP 404`, `Timeout`, `Connection Error`, `TLS Error`, `Check Failed`).
    pub error_kinds: BTreeMap<String, u64>,
    /// Of the `Connection Error`s, those of a known cause, by
    /// [`ErrorKind::cause`] (`connection refused`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_causes: BTreeMap<String, u64>,
    /// Requests waiting for an answer when the window closed.
    #[serde(default)]
    pub in_flight: u64,
    /// Requests abandoned unanswered because the run ended (its duration
    /// was up, or it was stopped). Not counted in `requests`.
    #[serde(default)]
    pub cut: u64,
    pub checks: Vec<CheckCount>,
    /// Latency of every response in µs. Serialized as base64 of the HdrHistogram
    /// V2 encoding, so it can be merged exactly wherever it lands.
    #[serde(with = "hist_base64")]
    pub latency: Histogram<u64>,
}

impl Window {
    pub fn empty(index: u64, timestamp: u64) -> Window {
        Window {
            index,
            timestamp,
            duration_ms: 1000,
            paused: false,
            requests: 0,
            errors: 0,
            iterations: 0,
            dropped_iterations: 0,
            vus: 0,
            bytes_in: 0,
            bytes_out: 0,
            status_codes: BTreeMap::new(),
            error_kinds: BTreeMap::new(),
            error_causes: BTreeMap::new(),
            in_flight: 0,
            cut: 0,
            checks: Vec::new(),
            latency: new_histogram(),
        }
    }

    /// Adds `other` (the same second from another engine) into this one:
    /// counts add, histograms add bin by bin, so percentiles of the result
    /// are those of all samples together.
    pub fn merge(&mut self, other: &Window) {
        self.duration_ms = self.duration_ms.max(other.duration_ms);
        self.paused |= other.paused;
        self.requests += other.requests;
        self.errors += other.errors;
        self.iterations += other.iterations;
        self.dropped_iterations += other.dropped_iterations;
        self.vus += other.vus;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        for (k, v) in &other.status_codes {
            *self.status_codes.entry(*k).or_default() += v;
        }
        for (k, v) in &other.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.error_causes {
            *self.error_causes.entry(k.clone()).or_default() += v;
        }
        self.in_flight += other.in_flight;
        self.cut += other.cut;
        if self.checks.len() < other.checks.len() {
            self.checks
                .resize(other.checks.len(), CheckCount::default());
        }
        for (a, b) in self.checks.iter_mut().zip(&other.checks) {
            a.passed += b.passed;
            a.failed += b.failed;
        }
        add_histogram(&mut self.latency, &other.latency);
    }

    /// Requests per second in this window.
    pub fn rps(&self) -> f64 {
        if self.duration_ms == 0 {
            0.0
        } else {
            self.requests as f64 * 1000.0 / self.duration_ms as f64
        }
    }
}

/// Adds `b` into `a`. Histograms made by [`new_histogram`] always add; should
/// the bounds differ (a foreign window), values are re-recorded one bin at a
/// time, clamped to `a`'s range, so nothing is lost.
pub(crate) fn add_histogram(a: &mut Histogram<u64>, b: &Histogram<u64>) {
    if a.add(b).is_err() {
        for v in b.iter_recorded() {
            a.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Merges windows from several engines: the same `index` adds up, result
/// sorted by index.
pub fn merge_windows<'a>(windows: impl IntoIterator<Item = &'a Window>) -> Vec<Window> {
    let mut by_index: BTreeMap<u64, Window> = BTreeMap::new();
    for w in windows {
        match by_index.get_mut(&w.index) {
            Some(acc) => acc.merge(w),
            None => {
                by_index.insert(w.index, w.clone());
            }
        }
    }
    by_index.into_values().collect()
}

pub(crate) mod hist_base64 {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Deserializer as HDeser, Serializer as _, V2Serializer};
    use hdrhistogram::Histogram;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn encode(h: &Histogram<u64>) -> Result<String, String> {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut buf)
            .map_err(|e| format!("{e:?}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(buf))
    }

    pub fn decode(s: &str) -> Result<Histogram<u64>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| e.to_string())?;
        HDeser::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| format!("{e:?}"))
    }

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(h).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map_err(de::Error::custom)
    }
}

/// Status codes kept in the fixed table; others (non-standard) go to a map.
const STATUS_TABLE: usize = 600;

/// The window an engine thread is filling. Only its own thread touches it,
/// so recording is plain arithmetic: no atomics, no locks.
pub(crate) struct LocalWindow {
    pub index: u64,
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub iterations: u64,
    pub dropped: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    status: Box<[u64; STATUS_TABLE]>,
    other_status: BTreeMap<u16, u64>,
    pub timeouts: u64,
    /// Every connection error, of a known cause or not.
    pub conn_errors: u64,
    pub refused: u64,
    pub unknown_host: u64,
    pub reset: u64,
    pub in_flight: u64,
    pub cut: u64,
    pub tls_errors: u64,
    pub check_failed: u64,
    pub http_errors: u64,
    pub checks: Vec<CheckCount>,
    pub vus: u64,
}

impl LocalWindow {
    pub fn new(index: u64, n_checks: usize) -> LocalWindow {
        LocalWindow {
            index,
            latency: new_histogram(),
            requests: 0,
            iterations: 0,
            dropped: 0,
            bytes_in: 0,
            bytes_out: 0,
            status: Box::new([0; STATUS_TABLE]),
            other_status: BTreeMap::new(),
            timeouts: 0,
            conn_errors: 0,
            refused: 0,
            unknown_host: 0,
            reset: 0,
            in_flight: 0,
            cut: 0,
            tls_errors: 0,
            check_failed: 0,
            http_errors: 0,
            checks: vec![CheckCount::default(); n_checks],
            vus: 0,
        }
    }

    #[inline]
    pub fn record_status(&mut self, status: u16) {
        match self.status.get_mut(status as usize) {
            Some(c) => *c += 1,
            None => *self.other_status.entry(status).or_default() += 1,
        }
    }

    #[inline]
    pub fn record_error(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Http(_) => self.http_errors += 1,
            ErrorKind::Timeout => self.timeouts += 1,
            ErrorKind::Connection => self.conn_errors += 1,
            ErrorKind::Refused => {
                self.conn_errors += 1;
                self.refused += 1;
            }
            ErrorKind::UnknownHost => {
                self.conn_errors += 1;
                self.unknown_host += 1;
            }
            ErrorKind::Reset => {
                self.conn_errors += 1;
                self.reset += 1;
            }
            ErrorKind::Tls => self.tls_errors += 1,
            ErrorKind::CheckFailed => self.check_failed += 1,
        }
    }

    /// The public form.
    pub fn into_window(self, timestamp: u64, duration_ms: u64) -> Window {
        let mut status_codes = self.other_status;
        let mut error_kinds = BTreeMap::new();
        for (code, &n) in self.status.iter().enumerate() {
            if n > 0 {
                status_codes.insert(code as u16, n);
            }
        }
        let mut errors = 0;
        for (&code, &n) in &status_codes {
            if code >= 400 {
                error_kinds.insert(ErrorKind::Http(code).label(), n);
                errors += n;
            }
        }
        for (kind, n) in [
            (ErrorKind::Timeout, self.timeouts),
            (ErrorKind::Connection, self.conn_errors),
            (ErrorKind::Tls, self.tls_errors),
            (ErrorKind::CheckFailed, self.check_failed),
        ] {
            if n > 0 {
                error_kinds.insert(kind.label(), n);
                errors += n;
            }
        }
        let mut error_causes = BTreeMap::new();
        for (cause, n) in [
            (CAUSE_REFUSED, self.refused),
            (CAUSE_UNKNOWN_HOST, self.unknown_host),
            (CAUSE_RESET, self.reset),
        ] {
            if n > 0 {
                error_causes.insert(cause.to_string(), n);
            }
        }
        Window {
            index: self.index,
            timestamp,
            duration_ms,
            paused: false,
            requests: self.requests,
            errors,
            iterations: self.iterations,
            dropped_iterations: self.dropped,
            vus: self.vus,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            status_codes,
            error_kinds,
            error_causes,
            in_flight: self.in_flight,
            cut: self.cut,
            checks: self.checks,
            latency: self.latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_round_trips_through_json() {
        let mut w = Window::empty(3, 1_700_000_003);
        for v in [120, 250, 250, 9_000, 1_000_000] {
            w.latency.record(v).unwrap();
        }
        w.requests = 5;
        w.error_kinds.insert("HTTP 500".into(), 1);
        let json = serde_json::to_string(&w).unwrap();
        let back: Window = serde_json::from_str(&json).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn labels_round_trip() {
        for k in [
            ErrorKind::Http(404),
            ErrorKind::Timeout,
            ErrorKind::Connection,
            ErrorKind::Tls,
            ErrorKind::CheckFailed,
        ] {
            assert_eq!(ErrorKind::from_label(&k.label()), Some(k));
        }
        // Causes refine the seed's label without changing it.
        for k in [ErrorKind::Refused, ErrorKind::UnknownHost, ErrorKind::Reset] {
            assert_eq!(k.label(), "Connection Error");
            assert!(k.cause().is_some());
        }
    }

    #[test]
    fn causes_are_counted_apart_and_within_connection_errors() {
        let mut lw = LocalWindow::new(0, 0);
        lw.record_error(ErrorKind::Refused);
        lw.record_error(ErrorKind::Refused);
        lw.record_error(ErrorKind::Connection);
        lw.record_error(ErrorKind::UnknownHost);
        let w = lw.into_window(0, 1000);
        assert_eq!(w.error_kinds["Connection Error"], 4);
        assert_eq!(w.error_causes[CAUSE_REFUSED], 2);
        assert_eq!(w.error_causes[CAUSE_UNKNOWN_HOST], 1);
        assert_eq!(w.errors, 4);
        let mut m = w.clone();
        m.merge(&w);
        assert_eq!(m.error_causes[CAUSE_REFUSED], 4);
    }
}
