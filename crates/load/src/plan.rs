//! The load profile ([`LoadProfile`]): what to request (scenario), how hard
//! (closed or open workload model with k6-style stages), limits and
//! pass/fail thresholds; its validation with field-naming errors and its
//! split across agents.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_dur;
use crate::error::{ConfigError, FieldError};

/// A complete description of one load run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadProfile {
    pub scenario: Scenario,
    pub load: Load,
    /// Per-request deadline; a request that exceeds it is a `Timeout` error.
    #[serde(with = "serde_dur", default = "default_timeout")]
    pub request_timeout: Duration,
    /// Pass/fail rules such as `p(95)<500` or `error_rate<0.01`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<String>,
    #[serde(default)]
    pub protocol: Protocol,
    /// Accept any TLS certificate (self-signed test targets).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// Engine threads; default: the number of CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// HTTP version policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 on `http://`; ALPN chooses (h2 preferred) on `https://`.
    #[default]
    Auto,
    Http1,
    /// h2c with prior knowledge on `http://`, ALPN `h2` on `https://`.
    Http2,
}

/// The workload model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum Load {
    /// Virtual users loop over the scenario as fast as responses (and think
    /// time) allow; their number follows the stages.
    Closed {
        /// Users at time zero; each stage ramps linearly from the previous
        /// target to its own.
        #[serde(default)]
        start_vus: u64,
        stages: Vec<Stage>,
    },
    /// Iterations start at a given rate whatever the response times, from a
    /// pool of at most `max_vus` users; latency counts from the intended
    /// start, so a slow target cannot hide its queueing (no coordinated
    /// omission). Arrivals that find the pool exhausted are dropped and
    /// counted.
    Open {
        /// Iterations per second at time zero.
        #[serde(default)]
        start_rate: f64,
        stages: Vec<RateStage>,
        max_vus: u64,
    },
}

/// A closed-model stage: ramp linearly to `target` users over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    #[serde(with = "serde_dur")]
    pub duration: Duration,
    pub target: u64,
}

/// An open-model stage: ramp linearly to `target` iterations/s over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateStage {
    #[serde(with = "serde_dur")]
    pub duration: Duration,
    pub target: f64,
}

/// What each iteration does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub requests: Vec<RequestSpec>,
    #[serde(default)]
    pub order: Order,
    /// Pause after each request of an iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_time: Option<ThinkTime>,
    /// Rows whose columns fill `{{name}}` placeholders, one row per iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSource>,
}

/// How an iteration picks its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// One request per iteration, chosen at random by `weight`.
    #[default]
    Weighted,
    /// Every request once per iteration, in order (a user journey).
    Sequence,
}

/// One request template; `{{name}}` in url, header values and body is
/// replaced from the data row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_weight() -> u32 {
    1
}

impl RequestSpec {
    /// A plain `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        RequestSpec {
            name: None,
            method: default_method(),
            url: url.into(),
            headers: BTreeMap::new(),
            body: None,
            weight: 1,
            checks: Vec::new(),
        }
    }
}

/// A response assertion; a failed one makes the request a `Check Failed`
/// error (unless its status already made it an HTTP error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// `{"status": 200}`, `{"status": [200, 201]}` or `{"status": "2xx"}`.
    Status(StatusMatch),
    /// `{"body_contains": "ok"}`
    BodyContains(String),
    /// `{"json_path": {"path": "$.ok", "equals": true}}`; without `equals`
    /// the path must match at least one node.
    JsonPath {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        equals: Option<serde_json::Value>,
    },
}

/// Accepted statuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusMatch {
    One(u16),
    Any(Vec<u16>),
    /// `"2xx"`, `"3xx"`…
    Class(String),
}

impl StatusMatch {
    pub(crate) fn matches(&self, status: u16) -> bool {
        match self {
            StatusMatch::One(s) => *s == status,
            StatusMatch::Any(v) => v.contains(&status),
            StatusMatch::Class(c) => class_digit(c).is_some_and(|d| status / 100 == d),
        }
    }
}

pub(crate) fn class_digit(c: &str) -> Option<u16> {
    let b = c.as_bytes();
    if b.len() == 3 && b[0].is_ascii_digit() && b[1..].eq_ignore_ascii_case(b"xx") {
        Some(u16::from(b[0] - b'0'))
    } else {
        None
    }
}

/// Think time: a fixed pause or uniform between `min` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ThinkTime {
    Fixed(#[serde(with = "serde_dur")] Duration),
    Range {
        #[serde(with = "serde_dur")]
        min: Duration,
        #[serde(with = "serde_dur")]
        max: Duration,
    },
}

/// Variables for `{{name}}`: a CSV (header row = names) or JSON (array of
/// objects) file, or rows given inline (handy when a server ships the plan
/// to agents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<BTreeMap<String, serde_json::Value>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    Csv,
    Json,
}

impl LoadProfile {
    /// `users` users hitting `url` for `duration` (wrk/oha style).
    pub fn closed(url: impl Into<String>, users: u64, duration: Duration) -> LoadProfile {
        LoadProfile::with_load(
            url,
            Load::Closed {
                start_vus: users,
                stages: vec![Stage {
                    duration,
                    target: users,
                }],
            },
        )
    }

    /// `rate` requests/s to `url` for `duration` from at most `max_vus` users.
    pub fn open(
        url: impl Into<String>,
        rate: f64,
        duration: Duration,
        max_vus: u64,
    ) -> LoadProfile {
        LoadProfile::with_load(
            url,
            Load::Open {
                start_rate: rate,
                stages: vec![RateStage {
                    duration,
                    target: rate,
                }],
                max_vus,
            },
        )
    }

    fn with_load(url: impl Into<String>, load: Load) -> LoadProfile {
        LoadProfile {
            scenario: Scenario {
                requests: vec![RequestSpec::get(url)],
                order: Order::Weighted,
                think_time: None,
                data: None,
            },
            load,
            request_timeout: default_timeout(),
            thresholds: Vec::new(),
            protocol: Protocol::Auto,
            insecure: false,
            workers: None,
        }
    }

    /// Scheduled length, pauses excluded.
    pub fn duration(&self) -> Duration {
        match &self.load {
            Load::Closed { stages, .. } => stages.iter().map(|s| s.duration).sum(),
            Load::Open { stages, .. } => stages.iter().map(|s| s.duration).sum(),
        }
    }

    /// Highest number of virtual users the plan can use.
    pub fn max_vus(&self) -> u64 {
        match &self.load {
            Load::Closed { start_vus, stages } => stages
                .iter()
                .map(|s| s.target)
                .max()
                .unwrap_or(0)
                .max(*start_vus),
            Load::Open { max_vus, .. } => *max_vus,
        }
    }

    /// Checks everything that can be checked without I/O, naming each bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        match &self.load {
            Load::Closed { start_vus, stages } => {
                if stages.is_empty() {
                    errs.push(FieldError::new(
                        "load.stages",
                        "at least one stage is required",
                    ));
                }
                for (i, s) in stages.iter().enumerate() {
                    if s.duration.is_zero() {
                        errs.push(FieldError::new(
                            format!("load.stages[{i}].duration"),
                            "must be greater than zero",
                        ));
                    }
                }
                if stages.iter().all(|s| s.target == 0) && *start_vus == 0 {
                    errs.push(FieldError::new(
                        "load.stages",
                        "at least one stage must have target users greater than zero",
                    ));
                }
            }
            Load::Open {
                start_rate,
                stages,
                max_vus,
            } => {
                if stages.is_empty() {
                    errs.push(FieldError::new(
                        "load.stages",
                        "at least one stage is required",
                    ));
                }
                if !(start_rate.is_finite() && *start_rate >= 0.0) {
                    errs.push(FieldError::new("load.start_rate", "must be zero or more"));
                }
                for (i, s) in stages.iter().enumerate() {
                    if s.duration.is_zero() {
                        errs.push(FieldError::new(
                            format!("load.stages[{i}].duration"),
                            "must be greater than zero",
                        ));
                    }
                    if !(s.target.is_finite() && s.target >= 0.0) {
                        errs.push(FieldError::new(
                            format!("load.stages[{i}].target"),
                            "must be zero or more",
                        ));
                    }
                }
                if stages.iter().all(|s| s.target <= 0.0) && *start_rate <= 0.0 {
                    errs.push(FieldError::new(
                        "load.stages",
                        "at least one stage must have a rate greater than zero",
                    ));
                }
                if *max_vus == 0 {
                    errs.push(FieldError::new("load.max_vus", "must be greater than zero"));
                }
            }
        }
        if self.request_timeout.is_zero() {
            errs.push(FieldError::new(
                "request_timeout",
                "must be greater than zero",
            ));
        }
        if self.workers == Some(0) {
            errs.push(FieldError::new("workers", "must be greater than zero"));
        }
        if self.scenario.requests.is_empty() {
            errs.push(FieldError::new(
                "scenario.requests",
                "at least one request is required",
            ));
        }
        if self.scenario.order == Order::Weighted
            && !self.scenario.requests.is_empty()
            && self.scenario.requests.iter().all(|r| r.weight == 0)
        {
            errs.push(FieldError::new("scenario.requests", "all weights are zero"));
        }
        if let Some(ThinkTime::Range { min, max }) = self.scenario.think_time {
            if min > max {
                errs.push(FieldError::new(
                    "scenario.think_time",
                    "min is greater than max",
                ));
            }
        }
        for (i, r) in self.scenario.requests.iter().enumerate() {
            crate::scenario::validate_request(i, r, &mut errs);
        }
        if let Some(d) = &self.scenario.data {
            if d.path.is_none() && d.rows.is_none() {
                errs.push(FieldError::new("scenario.data", "needs a path or rows"));
            }
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            if let Err(e) = crate::threshold::Threshold::parse(t) {
                errs.push(FieldError::new(format!("thresholds[{i}]"), e.to_string()));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { errors: errs })
        }
    }

    /// Splits the load over `n` agents so that the parts add up to this plan:
    /// users (and `max_vus`) are shared out as evenly as integers allow,
    /// rates are divided exactly. Returns fewer than `n` plans when there are
    /// fewer users than agents; every part keeps the scenario, timeouts and
    /// thresholds (which the merged result, not each part, should be judged by).
    pub fn split(&self, n: usize) -> Vec<LoadProfile> {
        let n = n.max(1);
        let parts = (self.max_vus().max(1) as usize).min(n);
        (0..parts)
            .map(|i| {
                let mut p = self.clone();
                p.load = self.load.share(i, parts);
                p
            })
            .collect()
    }
}

/// Part `i` of `total` of `value` when shared as evenly as integers allow.
pub(crate) fn share(value: u64, i: usize, total: usize) -> u64 {
    let t = total as u64;
    value / t + u64::from((i as u64) < value % t)
}

impl Load {
    /// The `i`-th of `parts` shares of this load.
    pub(crate) fn share(&self, i: usize, parts: usize) -> Load {
        match self {
            Load::Closed { start_vus, stages } => Load::Closed {
                start_vus: share(*start_vus, i, parts),
                stages: stages
                    .iter()
                    .map(|s| Stage {
                        duration: s.duration,
                        target: share(s.target, i, parts),
                    })
                    .collect(),
            },
            Load::Open {
                start_rate,
                stages,
                max_vus,
            } => Load::Open {
                start_rate: start_rate / parts as f64,
                stages: stages
                    .iter()
                    .map(|s| RateStage {
                        duration: s.duration,
                        target: s.target / parts as f64,
                    })
                    .collect(),
                max_vus: share(*max_vus, i, parts).max(1),
            },
        }
    }
}

/// A piecewise-linear schedule over active (unpaused) time.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    start: f64,
    /// (end offset in seconds, target at that end)
    points: Vec<(f64, f64)>,
}

impl Schedule {
    pub(crate) fn of(load: &Load) -> Schedule {
        let (start, stages): (f64, Vec<(Duration, f64)>) = match load {
            Load::Closed { start_vus, stages } => (
                *start_vus as f64,
                stages
                    .iter()
                    .map(|s| (s.duration, s.target as f64))
                    .collect(),
            ),
            Load::Open {
                start_rate, stages, ..
            } => (
                *start_rate,
                stages.iter().map(|s| (s.duration, s.target)).collect(),
            ),
        };
        let mut t = 0.0;
        let points = stages
            .into_iter()
            .map(|(d, target)| {
                t += d.as_secs_f64();
                (t, target)
            })
            .collect();
        Schedule { start, points }
    }

    pub(crate) fn total(&self) -> f64 {
        self.points.last().map(|p| p.0).unwrap_or(0.0)
    }

    /// Target at `t` seconds of active time.
    pub(crate) fn at(&self, t: f64) -> f64 {
        let mut prev_t = 0.0;
        let mut prev_v = self.start;
        for &(end, v) in &self.points {
            if t < end {
                let span = end - prev_t;
                let frac = if span > 0.0 { (t - prev_t) / span } else { 1.0 };
                return prev_v + (v - prev_v) * frac.clamp(0.0, 1.0);
            }
            prev_t = end;
            prev_v = v;
        }
        prev_v
    }

    /// The time at which the area under the schedule from `t` reaches
    /// `area` (for a rate schedule: when `area` more arrivals are due), or
    /// `None` past the end.
    pub(crate) fn advance(&self, t: f64, mut area: f64) -> Option<f64> {
        if area <= 0.0 {
            return (t < self.total()).then_some(t);
        }
        let mut prev_t = 0.0;
        let mut prev_v = self.start;
        for &(end, v) in &self.points {
            if end <= t {
                prev_t = end;
                prev_v = v;
                continue;
            }
            let a = t.max(prev_t);
            let span = end - prev_t;
            let slope = if span > 0.0 { (v - prev_v) / span } else { 0.0 };
            let ra = prev_v + slope * (a - prev_t);
            let seg_area = (end - a) * (ra + v) / 2.0;
            if seg_area >= area && seg_area > 0.0 {
                // Root of ra·x + slope/2·x² = area, in the form that stays
                // exact when the slope is tiny or zero.
                let disc = (ra * ra + 2.0 * slope * area).max(0.0);
                let x = 2.0 * area / (ra + disc.sqrt());
                return Some((a + x).min(end));
            }
            area -= seg_area;
            prev_t = end;
            prev_v = v;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_interpolates() {
        let load = Load::Closed {
            start_vus: 0,
            stages: vec![
                Stage {
                    duration: Duration::from_secs(10),
                    target: 100,
                },
                Stage {
                    duration: Duration::from_secs(10),
                    target: 100,
                },
                Stage {
                    duration: Duration::from_secs(5),
                    target: 0,
                },
            ],
        };
        let s = Schedule::of(&load);
        assert_eq!(s.total(), 25.0);
        assert_eq!(s.at(0.0), 0.0);
        assert_eq!(s.at(5.0), 50.0);
        assert_eq!(s.at(15.0), 100.0);
        assert_eq!(s.at(22.5), 50.0);
        assert_eq!(s.at(30.0), 0.0);
        // Constant 100/s: one arrival every 10 ms.
        let rate = Load::Open {
            start_rate: 100.0,
            stages: vec![RateStage {
                duration: Duration::from_secs(2),
                target: 100.0,
            }],
            max_vus: 10,
        };
        let r = Schedule::of(&rate);
        assert!((r.advance(0.0, 1.0).unwrap() - 0.01).abs() < 1e-12);
        assert!(r.advance(1.995, 1.0).is_none());
        // Ramp 0→100/s over 10 s: 125 arrivals by t = 5 s.
        let ramp = Load::Open {
            start_rate: 0.0,
            stages: vec![RateStage {
                duration: Duration::from_secs(10),
                target: 100.0,
            }],
            max_vus: 10,
        };
        let r = Schedule::of(&ramp);
        assert!((r.advance(0.0, 125.0).unwrap() - 5.0).abs() < 1e-9);
    }

    #[test]
    fn split_adds_up() {
        let p = LoadProfile::closed("http://127.0.0.1:1/", 10, Duration::from_secs(5));
        let parts = p.split(3);
        assert_eq!(parts.len(), 3);
        let total: u64 = parts.iter().map(|p| p.max_vus()).sum();
        assert_eq!(total, 10);
        let p = LoadProfile::closed("http://127.0.0.1:1/", 2, Duration::from_secs(5));
        assert_eq!(p.split(5).len(), 2);
        let p = LoadProfile::open("http://127.0.0.1:1/", 300.0, Duration::from_secs(5), 10);
        let parts = p.split(4);
        let rate: f64 = parts
            .iter()
            .map(|p| match &p.load {
                Load::Open { stages, .. } => stages[0].target,
                _ => 0.0,
            })
            .sum();
        assert!((rate - 300.0).abs() < 1e-9);
    }
}
