//! The result model every report is rendered from: a [`Report`] of [`Suite`]s of
//! [`Case`]s, each case with an [`Outcome`], and the counts a [`Summary`] derives
//! from them.
//!
//! The JSON form of these types (see [`crate::json`]) is the canonical, stored form
//! of a report; every other format is rendered from it.
//!
//! # Compatibility of the JSON form
//!
//! Everything but the identifying fields (`kind`, `v`, `id`, `name`, `created_at` on
//! a report, `name` on a suite, `name` and `outcome` on a case) may be missing and
//! then takes its default, and unknown fields are ignored. Adding a field is
//! therefore not a breaking change and keeps `v` at 1; `v` only moves for a change
//! that old readers would misread.
//!
//! # Outcomes and what fails a run
//!
//! `fail` and `error` fail a run. `xfail` (a known-broken test failed, as expected)
//! does not. `xpass` (a known-broken test passed) does not fail the run either: the
//! test itself is fine, only its expectation is stale, and failing every run until
//! someone edits the expectations file would punish the fix. It is counted in
//! [`Summary::xpassed`] and shown by every renderer so that the stale expectation
//! gets noticed.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The value of [`Report::kind`].
pub const REPORT_KIND: &str = "report";
/// The version of the JSON form this crate writes and reads.
pub const REPORT_VERSION: u32 = 1;
/// The [`Report::properties`] key saying how a run ended when it did not run
/// to its end: `cancelled` (Ctrl-C, SIGTERM, `testbed runs cancel`). Steps a
/// cancel stopped are `skip` cases, so without it a cancelled run would read
/// as a pass.
pub const RUN_STATUS_PROPERTY: &str = "run_status";

/// The results of one run of a plan or a kit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// Always `"report"`, so a stored document says what it is.
    pub kind: String,
    /// Version of this JSON form; see [`REPORT_VERSION`].
    pub v: u32,
    pub id: String,
    /// Name of the plan or kit that was run.
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Run id, environment, parameters, platform labels and the like.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub suites: Vec<Suite>,
}

/// A group of cases: a plan's step group, or one TAP script of a kit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Suite {
    /// The step group, or the script's path relative to the kit.
    pub name: String,
    /// The agent or platform this suite ran on, for matrix runs (tests × platforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub cases: Vec<Case>,
    /// Notes about the suite as a whole: TAP parse diagnostics, a bail-out reason…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
}

/// One test: a plan step, a test case, or one TAP test point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Case {
    pub name: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub duration_ms: u64,
    /// Failure message, skip reason, or the todo / known-broken reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// An excerpt of the output; producers bound its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// How many times the case ran; more than 1 when it was retried.
    #[serde(default = "one")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// A named link, e.g. to an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Link {
    pub name: String,
    pub url: String,
}

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// The case could not be judged: infrastructure trouble, a crash, a timeout.
    Error,
    Skip,
    /// Failed, and was expected to (known broken, or a TAP `# TODO`).
    Xfail,
    /// Passed although it was expected to fail.
    Xpass,
}

impl Outcome {
    /// Every outcome, in the order reports list their counts.
    pub const ALL: [Outcome; 6] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Error,
        Outcome::Skip,
        Outcome::Xfail,
        Outcome::Xpass,
    ];

    /// Whether this outcome fails the run: `fail` and `error` only (see the module
    /// docs for why `xpass` does not).
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Fail | Outcome::Error)
    }

    /// The name used in JSON and in rendered reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Skip => "skip",
            Outcome::Xfail => "xfail",
            Outcome::Xpass => "xpass",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of a report or a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
    pub xfailed: usize,
    pub xpassed: usize,
    pub duration_ms: u64,
    /// No case failed and none had an error. An empty report is ok.
    pub ok: bool,
}

impl Summary {
    /// Counted as the views count (`crate::view`), so a report in memory and
    /// one read back compact give the same figures.
    fn of<'a>(cases: impl IntoIterator<Item = &'a Case>, duration_ms: u64) -> Summary {
        let mut s = crate::view::empty_summary(duration_ms);
        for case in cases {
            crate::view::add(&mut s, case.outcome);
        }
        s.ok = s.failed == 0 && s.errors == 0;
        s
    }

    /// The count for one outcome.
    pub fn count(&self, outcome: Outcome) -> usize {
        match outcome {
            Outcome::Pass => self.passed,
            Outcome::Fail => self.failed,
            Outcome::Error => self.errors,
            Outcome::Skip => self.skipped,
            Outcome::Xfail => self.xfailed,
            Outcome::Xpass => self.xpassed,
        }
    }
}

impl Report {
    /// An empty report of the current kind and version.
    pub fn new(id: impl Into<String>, name: impl Into<String>, created_at: DateTime<Utc>) -> Self {
        Report {
            kind: REPORT_KIND.to_string(),
            v: REPORT_VERSION,
            id: id.into(),
            name: name.into(),
            created_at,
            started_at: None,
            finished_at: None,
            properties: BTreeMap::new(),
            suites: Vec::new(),
        }
    }

    /// The run was cancelled before it finished ([`RUN_STATUS_PROPERTY`]):
    /// whatever its cases say, it is not a pass.
    pub fn cancelled(&self) -> bool {
        self.properties
            .get(RUN_STATUS_PROPERTY)
            .is_some_and(|s| s == "cancelled")
    }

    /// The one-word result every rendering shows: `PASS`, `FAIL`, or
    /// `CANCELLED` for a run stopped before it finished.
    pub fn verdict(&self) -> &'static str {
        if self.cancelled() {
            "CANCELLED"
        } else if self.summary().ok {
            "PASS"
        } else {
            "FAIL"
        }
    }

    /// Counts over every case of every suite, with [`Report::duration_ms`].
    pub fn summary(&self) -> Summary {
        let mut s = Summary::of(
            self.suites.iter().flat_map(|s| s.cases.iter()),
            self.duration_ms(),
        );
        // A run stopped half-way is not a pass, whatever ran before the stop.
        if self.cancelled() {
            s.ok = false;
        }
        s
    }

    /// Wall-clock duration: `finished_at - started_at` when both are known; else
    /// the span the suites' start times and durations cover; else the sum of the
    /// suites' durations (suites with no start time are taken to have run one after
    /// the other).
    pub fn duration_ms(&self) -> u64 {
        if let (Some(start), Some(end)) = (self.started_at, self.finished_at) {
            return millis_between(start, end);
        }
        let starts: Vec<(DateTime<Utc>, u64)> = self
            .suites
            .iter()
            .filter_map(|s| s.started_at.map(|t| (t, s.effective_duration_ms())))
            .collect();
        if !starts.is_empty() && starts.len() == self.suites.len() {
            let first = starts.iter().map(|(t, _)| *t).min();
            let last_end = starts.iter().map(|(t, d)| add_ms(*t, *d)).max();
            if let (Some(first), Some(last_end)) = (first, last_end) {
                return millis_between(first, last_end);
            }
        }
        self.suites.iter().map(Suite::effective_duration_ms).sum()
    }

    /// When the run started as far as the report knows: `started_at`, else the
    /// earliest start of a suite or case, else `created_at`.
    pub fn start_time(&self) -> DateTime<Utc> {
        self.started_at
            .or_else(|| {
                self.suites
                    .iter()
                    .flat_map(|s| {
                        s.started_at
                            .into_iter()
                            .chain(s.cases.iter().filter_map(|c| c.started_at))
                    })
                    .min()
            })
            .unwrap_or(self.created_at)
    }
}

impl Suite {
    /// An empty suite.
    pub fn new(name: impl Into<String>) -> Self {
        Suite {
            name: name.into(),
            ..Suite::default()
        }
    }

    /// Counts over the suite's cases; `duration_ms` is the suite's own duration or,
    /// when that was not recorded (0), the sum of its cases'.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.cases, self.effective_duration_ms())
    }

    fn effective_duration_ms(&self) -> u64 {
        if self.duration_ms > 0 {
            self.duration_ms
        } else {
            self.cases.iter().map(|c| c.duration_ms).sum()
        }
    }

    /// The name with the platform appended as `name [platform]`, so that the rows
    /// of a matrix run (same suite, several platforms) stay apart.
    pub fn display_name(&self) -> String {
        match &self.platform {
            Some(p) if !p.is_empty() => format!("{} [{}]", self.name, p),
            _ => self.name.clone(),
        }
    }

    /// `Some(reason)` when the suite was skipped as a whole, i.e. it has cases and
    /// all of them were skipped (a TAP `1..0 # SKIP reason` becomes one skipped
    /// case); the reason is the first case's message, or `""`.
    pub fn skip_reason(&self) -> Option<&str> {
        if !self.cases.is_empty() && self.cases.iter().all(|c| c.outcome == Outcome::Skip) {
            Some(
                self.cases
                    .iter()
                    .find_map(|c| c.message.as_deref())
                    .unwrap_or(""),
            )
        } else {
            None
        }
    }

    /// Whether any case failed or had an error.
    pub fn is_failure(&self) -> bool {
        self.cases.iter().any(|c| c.outcome.is_failure())
    }
}

impl Case {
    /// A case with the given outcome, run once, and nothing else recorded.
    pub fn new(name: impl Into<String>, outcome: Outcome) -> Self {
        Case {
            name: name.into(),
            outcome,
            duration_ms: 0,
            message: None,
            output: None,
            log_url: None,
            artifacts: Vec::new(),
            started_at: None,
            agent: None,
            attempts: 1,
            properties: BTreeMap::new(),
        }
    }
}

fn millis_between(start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
    u64::try_from((end - start).num_milliseconds()).unwrap_or(0)
}

/// `t + ms`, saturating at `t` where chrono would overflow (absurd durations from a
/// corrupt report must not panic a renderer).
pub(crate) fn add_ms(t: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::TimeDelta::try_milliseconds)
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(t)
}
