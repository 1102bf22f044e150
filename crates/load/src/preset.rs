//! Seed-001 performance-plan configs (`concurrent_users`, `ramp_up_time`,
//! `hold_time`, `test_type`, `target_url`, `request_timeout`) and the
//! `test_type` presets that turn them into a [`LoadProfile`].
//!
//! Presets, with U = `concurrent_users`, R = `ramp_up_time`, H = `hold_time`
//! (a ramp of zero means "start at full load"; steps inside a preset take
//! R, or 1 s when R is zero):
//!
//! | test_type | shape | default H |
//! | --- | --- | --- |
//! | `load` | ramp 0→U over R, hold U for H | 60 s |
//! | `stress` | ramp to U, hold H/3; step to 1.5U, hold H/3; step to 2U, hold H/3; ramp down to 0 | 60 s |
//! | `spike` | ramp to U, hold 0.4H; jump to 5U in 1 s, hold 0.2H; drop to U in 1 s, hold 0.4H | 60 s |
//! | `soak` | ramp to U, hold H, ramp down to 0 over R | 4 h |
//!
//! With `arrival_rate` set the same shapes apply to the rate (open model)
//! and `max_vus` (default U × the shape's peak factor) bounds the pool.
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, FieldError};
use crate::plan::{Load, LoadProfile, Order, Protocol, RateStage, RequestSpec, Scenario, Stage};

/// The seed's `test_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestType {
    Load,
    Stress,
    Spike,
    Soak,
}

impl TestType {
    pub fn parse(s: &str) -> Option<TestType> {
        match s {
            "load" => Some(TestType::Load),
            "stress" => Some(TestType::Stress),
            "spike" => Some(TestType::Spike),
            "soak" => Some(TestType::Soak),
            _ => None,
        }
    }

    /// Hold time used when the config gives none.
    pub fn default_hold(self) -> Duration {
        match self {
            TestType::Soak => Duration::from_secs(4 * 3600),
            _ => Duration::from_secs(60),
        }
    }

    /// Highest multiple of the base load the shape reaches.
    pub fn peak_factor(self) -> f64 {
        match self {
            TestType::Stress => 2.0,
            TestType::Spike => 5.0,
            _ => 1.0,
        }
    }

    /// (start factor, [(duration, target factor)]) for base ramp `r`, hold `h`.
    fn shape(self, r: Duration, h: Duration) -> (f64, Vec<(Duration, f64)>) {
        let step = if r.is_zero() {
            Duration::from_secs(1)
        } else {
            r
        };
        let one = Duration::from_secs(1);
        let mut stages = Vec::new();
        let start = if r.is_zero() { 1.0 } else { 0.0 };
        if !r.is_zero() {
            stages.push((r, 1.0));
        }
        match self {
            TestType::Load => stages.push((h, 1.0)),
            TestType::Stress => {
                let third = h / 3;
                stages.push((third, 1.0));
                stages.push((step, 1.5));
                stages.push((third, 1.5));
                stages.push((step, 2.0));
                stages.push((h - third * 2, 2.0));
                stages.push((step, 0.0));
            }
            TestType::Spike => {
                let outer = h.mul_f64(0.4);
                stages.push((outer, 1.0));
                stages.push((one, 5.0));
                stages.push((h - outer * 2, 5.0));
                stages.push((one, 1.0));
                stages.push((outer, 1.0));
            }
            TestType::Soak => {
                stages.push((h, 1.0));
                if !r.is_zero() {
                    stages.push((r, 0.0));
                }
            }
        }
        stages.retain(|(d, _)| !d.is_zero());
        (start, stages)
    }
}

/// A seed-001 `config` object plus optional richer fields. Unknown fields
/// (such as the server's `agents`) are kept in `extra` and ignored here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedConfig {
    pub concurrent_users: Option<i64>,
    /// Seconds.
    pub ramp_up_time: Option<i64>,
    /// Seconds.
    pub hold_time: Option<i64>,
    pub test_type: Option<String>,
    pub target_url: Option<String>,
    /// Milliseconds.
    pub request_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Explicit closed-model stages; replace the preset shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<Stage>>,
    /// Iterations per second: switches to the open model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_rate: Option<f64>,
    /// Explicit open-model stages; replace the preset shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_stages: Option<Vec<RateStage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vus: Option<i64>,
    /// A full scenario; replaces `target_url`/`method`/`headers`/`body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<Scenario>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl SeedConfig {
    /// Reads a JSON `config`, naming every field of the wrong type.
    pub fn from_json(value: &serde_json::Value) -> Result<SeedConfig, ConfigError> {
        let Some(map) = value.as_object() else {
            return Err(ConfigError::single("config", "must be an object"));
        };
        let mut errs = Vec::new();
        let mut cfg = SeedConfig::default();
        fn take<T: DeserializeOwned>(
            map: &serde_json::Map<String, serde_json::Value>,
            key: &str,
            what: &str,
            errs: &mut Vec<FieldError>,
        ) -> Option<T> {
            match map.get(key) {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => match serde_json::from_value::<T>(v.clone()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errs.push(FieldError::new(key, format!("must be {what} ({e})")));
                        None
                    }
                },
            }
        }
        cfg.concurrent_users = take(map, "concurrent_users", "an integer", &mut errs);
        cfg.ramp_up_time = take(map, "ramp_up_time", "an integer (seconds)", &mut errs);
        cfg.hold_time = take(map, "hold_time", "an integer (seconds)", &mut errs);
        cfg.test_type = take(map, "test_type", "a string", &mut errs);
        cfg.target_url = take(map, "target_url", "a string", &mut errs);
        cfg.request_timeout = take(map, "request_timeout", "an integer (ms)", &mut errs);
        cfg.method = take(map, "method", "a string", &mut errs);
        cfg.headers = take(map, "headers", "an object of strings", &mut errs);
        cfg.body = take(map, "body", "a string", &mut errs);
        cfg.stages = take(map, "stages", "a list of {duration, target}", &mut errs);
        cfg.arrival_rate = take(map, "arrival_rate", "a number", &mut errs);
        cfg.rate_stages = take(
            map,
            "rate_stages",
            "a list of {duration, target}",
            &mut errs,
        );
        cfg.max_vus = take(map, "max_vus", "an integer", &mut errs);
        cfg.scenario = take(map, "scenario", "a scenario object", &mut errs);
        cfg.thresholds =
            take(map, "thresholds", "a list of strings", &mut errs).unwrap_or_default();
        cfg.protocol = take(map, "protocol", "auto, http1 or http2", &mut errs);
        cfg.insecure = take(map, "insecure", "a boolean", &mut errs);
        const KNOWN: &[&str] = &[
            "concurrent_users",
            "ramp_up_time",
            "hold_time",
            "test_type",
            "target_url",
            "request_timeout",
            "method",
            "headers",
            "body",
            "stages",
            "arrival_rate",
            "rate_stages",
            "max_vus",
            "scenario",
            "thresholds",
            "protocol",
            "insecure",
        ];
        for (k, v) in map {
            if !KNOWN.contains(&k.as_str()) {
                cfg.extra.insert(k.clone(), v.clone());
            }
        }
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { errors: errs })
        }
    }

    /// Validates every field (naming each bad one) and builds the plan.
    pub fn to_plan(&self) -> Result<LoadProfile, ConfigError> {
        let mut errs = Vec::new();
        let test_type = match self.test_type.as_deref() {
            None => Some(TestType::Load),
            Some(s) => {
                let t = TestType::parse(s);
                if t.is_none() {
                    errs.push(FieldError::new(
                        "test_type",
                        format!("unknown test type {s:?} (expected load, stress, spike or soak)"),
                    ));
                }
                t
            }
        };
        let users = match self.concurrent_users {
            None if self.arrival_rate.is_none() && self.stages.is_none() => {
                errs.push(FieldError::new("concurrent_users", "is required"));
                None
            }
            None => None,
            Some(u) if u <= 0 => {
                errs.push(FieldError::new(
                    "concurrent_users",
                    "must be greater than zero",
                ));
                None
            }
            Some(u) => Some(u as u64),
        };
        let ramp = match self.ramp_up_time {
            Some(r) if r < 0 => {
                errs.push(FieldError::new("ramp_up_time", "must not be negative"));
                Duration::ZERO
            }
            Some(r) => Duration::from_secs(r as u64),
            None => Duration::ZERO,
        };
        let hold = match self.hold_time {
            Some(h) if h <= 0 => {
                errs.push(FieldError::new("hold_time", "must be greater than zero"));
                None
            }
            Some(h) => Some(Duration::from_secs(h as u64)),
            None => None,
        };
        let timeout = match self.request_timeout {
            Some(t) if t <= 0 => {
                errs.push(FieldError::new(
                    "request_timeout",
                    "must be greater than zero",
                ));
                Duration::from_secs(30)
            }
            Some(t) => Duration::from_millis(t as u64),
            None => Duration::from_secs(30),
        };
        if let Some(r) = self.arrival_rate {
            if !(r.is_finite() && r > 0.0) {
                errs.push(FieldError::new("arrival_rate", "must be greater than zero"));
            }
        }
        if let Some(m) = self.max_vus {
            if m <= 0 {
                errs.push(FieldError::new("max_vus", "must be greater than zero"));
            }
        }
        let scenario = match (&self.scenario, &self.target_url) {
            (Some(s), _) => Some(s.clone()),
            (None, None) => {
                errs.push(FieldError::new("target_url", "is required"));
                None
            }
            (None, Some(url)) => {
                if let Err(e) = check_url(url) {
                    errs.push(FieldError::new("target_url", e));
                }
                let mut r = RequestSpec::get(url.clone());
                if let Some(m) = &self.method {
                    r.method = m.clone();
                }
                if let Some(h) = &self.headers {
                    r.headers = h.clone();
                }
                r.body = self.body.clone();
                Some(Scenario {
                    requests: vec![r],
                    order: Order::Weighted,
                    think_time: None,
                    data: None,
                })
            }
        };
        if !errs.is_empty() {
            return Err(ConfigError { errors: errs });
        }
        let (Some(test_type), Some(scenario)) = (test_type, scenario) else {
            return Err(ConfigError::single("config", "incomplete"));
        };
        let hold = hold.unwrap_or_else(|| test_type.default_hold());
        let (start, shape) = test_type.shape(ramp, hold);
        let load = if self.arrival_rate.is_some() || self.rate_stages.is_some() {
            let rate = self.arrival_rate.unwrap_or(0.0);
            let (start_rate, stages) = match &self.rate_stages {
                Some(st) => (0.0, st.clone()),
                None => (
                    start * rate,
                    shape
                        .iter()
                        .map(|&(duration, f)| RateStage {
                            duration,
                            target: f * rate,
                        })
                        .collect(),
                ),
            };
            let max_vus = match (self.max_vus, users) {
                (Some(m), _) => m as u64,
                (None, Some(u)) => (u as f64 * test_type.peak_factor()).ceil() as u64,
                (None, None) => 100,
            };
            Load::Open {
                start_rate,
                stages,
                max_vus,
            }
        } else {
            match &self.stages {
                Some(st) => Load::Closed {
                    start_vus: 0,
                    stages: st.clone(),
                },
                None => {
                    let u = users.unwrap_or(1) as f64;
                    Load::Closed {
                        start_vus: (start * u).round() as u64,
                        stages: shape
                            .iter()
                            .map(|&(duration, f)| Stage {
                                duration,
                                target: (f * u).round() as u64,
                            })
                            .collect(),
                    }
                }
            }
        };
        let plan = LoadProfile {
            scenario,
            load,
            request_timeout: timeout,
            thresholds: self.thresholds.clone(),
            protocol: self.protocol.unwrap_or_default(),
            insecure: self.insecure.unwrap_or(false),
            workers: None,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// An absolute http(s) URL with a host (templates allowed in path/query).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("invalid URL {url:?}: scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL {url:?}: missing host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_example_is_a_stress_plan() {
        let cfg = SeedConfig::from_json(&json!({
            "concurrent_users": 100, "ramp_up_time": 30, "hold_time": 300,
            "test_type": "stress", "target_url": "http://example.com/api",
            "request_timeout": 5000, "agents": 2
        }))
        .unwrap();
        assert_eq!(cfg.extra.get("agents"), Some(&json!(2)));
        let plan = cfg.to_plan().unwrap();
        assert_eq!(plan.max_vus(), 200);
        assert_eq!(plan.request_timeout, Duration::from_millis(5000));
        assert_eq!(
            plan.duration(),
            Duration::from_secs(30 + 300 + 30 + 30 + 30)
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let err = SeedConfig::from_json(&json!({
            "concurrent_users": 0, "ramp_up_time": -1, "hold_time": 0,
            "test_type": "chaos", "target_url": "not a url", "request_timeout": -5
        }))
        .unwrap()
        .to_plan()
        .unwrap_err();
        for f in [
            "concurrent_users",
            "ramp_up_time",
            "hold_time",
            "test_type",
            "target_url",
            "request_timeout",
        ] {
            assert!(err.names(f), "{f} not named in {err}");
        }
        let err = SeedConfig::from_json(&json!({"concurrent_users": "many"})).unwrap_err();
        assert!(err.names("concurrent_users"));
    }

    #[test]
    fn presets_have_documented_peaks() {
        for (t, peak) in [("load", 10), ("stress", 20), ("spike", 50), ("soak", 10)] {
            let plan = SeedConfig::from_json(&json!({
                "concurrent_users": 10, "ramp_up_time": 5, "hold_time": 60,
                "test_type": t, "target_url": "http://127.0.0.1:1/"
            }))
            .unwrap()
            .to_plan()
            .unwrap();
            assert_eq!(plan.max_vus(), peak, "{t}");
        }
    }
}
