//! Known-broken expectations: which tests are expected to fail on which
//! platforms, and why.
//!
//! The file is TOML, a list of `[[broken]]` entries:
//!
//! ```toml
//! [[broken]]
//! test = "domain/050-transient-lifecycle.t"   # a whole script
//! reason = "hangs on shutdown"
//!
//! [[broken]]
//! test = "storage/100-iscsi.t#3"              # test point number 3
//! platform = { driver = "qemu", os = ["debian", "ubuntu"] }
//! reason = "needs multipath"
//! issue = "https://example.com/issues/42"
//!
//! [[broken]]
//! test = "net/200-bridge.t#bridge comes up"   # a test point by description
//! reason = "flaky on CI"
//! ```
//!
//! `platform` matches the platform labels of the report (from the kit
//! configuration's `[labels]`); each key must equal the label, or be one of a list.
//! Without `platform` the entry holds on every platform.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use testbed_report::view::View;
use testbed_report::{Case, CaseList, CompactReport, Outcome, Report};

use crate::config::{parse_toml, ConfigError};
use crate::parser::SCRIPT_CASE;

/// Report properties holding the platform labels are named `label.<key>`.
pub const LABEL_PREFIX: &str = "label.";

/// A parsed expectations file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub broken: Vec<Broken>,
}

/// One known-broken entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broken {
    /// `script`, `script#N` or `script#description`.
    pub test: String,
    #[serde(default)]
    pub platform: BTreeMap<String, OneOrMany>,
    pub reason: String,
    #[serde(default)]
    pub issue: Option<String>,
}

/// A label matcher: one value or any of several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn matches(&self, value: &str) -> bool {
        match self {
            OneOrMany::One(v) => v == value,
            OneOrMany::Many(vs) => vs.iter().any(|v| v == value),
        }
    }
}

impl Broken {
    fn script(&self) -> &str {
        self.test.split_once('#').map_or(&self.test, |(s, _)| s)
    }

    fn selector(&self) -> Option<&str> {
        self.test.split_once('#').map(|(_, t)| t)
    }

    /// Whether the entry holds on a platform with these labels.
    pub fn applies_to(&self, labels: &BTreeMap<String, String>) -> bool {
        self.platform
            .iter()
            .all(|(k, m)| labels.get(k).is_some_and(|v| m.matches(v)))
    }

    /// Whether the entry names case `i` of a suite: by its TAP number (the
    /// `tap.number` property when the script numbered out of sequence, else
    /// its position), its name or its description.
    fn selects(&self, list: &CaseList, i: usize, whole: Option<&Case>) -> bool {
        match self.selector() {
            None => true,
            Some(sel) if !sel.is_empty() && sel.bytes().all(|b| b.is_ascii_digit()) => {
                match whole {
                    Some(c) => match c.properties.get("tap.number") {
                        Some(n) => n == sel,
                        None => c.name != SCRIPT_CASE && (i + 1).to_string() == sel,
                    },
                    None => (i + 1).to_string() == sel,
                }
            }
            Some(sel) => {
                list.name(i) == sel
                    || whole.is_some_and(|c| {
                        c.properties.get("tap.description").map(String::as_str) == Some(sel)
                    })
            }
        }
    }

    fn why(&self) -> String {
        match &self.issue {
            Some(i) => format!("known broken: {} ({i})", self.reason),
            None => format!("known broken: {}", self.reason),
        }
    }
}

/// The platform labels recorded in a report's properties.
pub fn report_labels(report: &Report) -> BTreeMap<String, String> {
    report
        .properties
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(LABEL_PREFIX)
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}

impl Expectations {
    pub fn load(path: &Path) -> Result<Expectations, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Expectations, ConfigError> {
        parse_toml(path, text)
    }

    /// Turns expected failures into `xfail` and known-broken tests that pass
    /// into `xpass`, using the report's platform labels. Returns how many cases
    /// changed.
    pub fn apply(&self, report: &mut Report) -> usize {
        let created = report.created_at;
        let mut compact =
            CompactReport::new(std::mem::replace(report, Report::new("", "", created)));
        let changed = self.apply_compact(&mut compact);
        *report = compact.into_report();
        changed
    }

    /// [`Expectations::apply`] on a report in compact form.
    pub fn apply_compact(&self, report: &mut CompactReport) -> usize {
        let labels = report_labels(&report.head);
        let entries: Vec<&Broken> = self
            .broken
            .iter()
            .filter(|b| b.applies_to(&labels))
            .collect();
        let mut changed = 0;
        for (suite, list) in report.head.suites.iter().zip(report.lists.iter_mut()) {
            let mut masked = 0;
            for entry in entries.iter().filter(|e| e.script() == suite.name) {
                masked += apply_entry(entry, list);
            }
            if masked > 0 {
                masked += explain_exit_status(list);
            }
            changed += masked;
        }
        changed
    }
}

/// Test::More and friends exit with the number of failed tests, so masking
/// every failing test point must also mask the non-zero exit status they
/// caused; any other script-level problem (bad plan, bail out, timeout) stays.
fn explain_exit_status(list: &mut CaseList) -> usize {
    // Bare cases are passes: only the whole ones can fail.
    let points_fail = list
        .whole()
        .any(|(_, c)| c.name != SCRIPT_CASE && c.outcome.is_failure());
    let points_xfail = list
        .whole()
        .any(|(_, c)| c.name != SCRIPT_CASE && c.outcome == Outcome::Xfail);
    if points_fail || !points_xfail {
        return 0;
    }
    let Some(i) = list.whole().find_map(|(i, c)| {
        (c.name == SCRIPT_CASE
            && c.outcome == Outcome::Fail
            && c.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Non-zero exit status: ") && !m.contains(';')))
        .then_some(i)
    }) else {
        return 0;
    };
    let mut script = list.get(i).into_owned();
    script.outcome = Outcome::Xfail;
    let was = script.message.take().unwrap_or_default();
    script.message = Some(format!("{was}, from known-broken tests"));
    list.set(i, script);
    1
}

fn apply_entry(entry: &Broken, list: &mut CaseList) -> usize {
    let mut changed = 0;
    let mut any_failed = false;
    // A whole-script entry changes failures only, and bare cases are passes.
    let candidates: Vec<usize> = if entry.selector().is_none() {
        list.whole().map(|(i, _)| i).collect()
    } else {
        let whole: std::collections::HashMap<usize, &Case> = list.whole().collect();
        (0..list.len())
            .filter(|&i| entry.selects(list, i, whole.get(&i).copied()))
            .collect()
    };
    for i in candidates {
        let mut case = list.get(i).into_owned();
        match case.outcome {
            Outcome::Fail | Outcome::Error => {
                any_failed = true;
                let was = case.message.take();
                case.message = Some(match was {
                    Some(m) => format!("{}; failed with: {m}", entry.why()),
                    None => entry.why(),
                });
                case.outcome = Outcome::Xfail;
                list.set(i, case);
                changed += 1;
            }
            // A whole-script entry flags the script, not every passing point.
            Outcome::Pass if entry.selector().is_some() => {
                case.outcome = Outcome::Xpass;
                case.message = Some(format!("{}; but it passed", entry.why()));
                list.set(i, case);
                changed += 1;
            }
            Outcome::Xfail => any_failed = true,
            _ => {}
        }
    }
    if entry.selector().is_none() && !any_failed && !all_skipped(list) {
        let mut case = Case::new(SCRIPT_CASE, Outcome::Xpass);
        case.message = Some(format!("{}; but it passed", entry.why()));
        list.push(case);
        changed += 1;
    }
    changed
}

/// Whether the suite was skipped as a whole ([`testbed_report::Suite::skip_reason`]).
fn all_skipped(list: &CaseList) -> bool {
    !list.is_empty() && (0..list.len()).all(|i| list.outcome(i) == Outcome::Skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use testbed_report::Suite;

    fn case(n: u32, desc: &str, outcome: Outcome) -> Case {
        let mut c = Case::new(format!("{n} - {desc}"), outcome);
        c.properties.insert("tap.number".into(), n.to_string());
        c.properties.insert("tap.description".into(), desc.into());
        c
    }

    fn report() -> Report {
        let mut r = Report::new("r", "kit", Utc::now());
        r.properties.insert("label.driver".into(), "qemu".into());
        r.properties.insert("label.os".into(), "debian".into());
        let mut a = Suite::new("a.t");
        a.cases = vec![case(1, "one", Outcome::Pass), case(2, "two", Outcome::Fail)];
        let mut b = Suite::new("b.t");
        b.cases = vec![case(1, "one", Outcome::Pass)];
        let mut c = Suite::new("c.t");
        c.cases = vec![
            case(1, "x", Outcome::Fail),
            Case::new(SCRIPT_CASE, Outcome::Fail),
        ];
        r.suites = vec![a, b, c];
        r
    }

    #[test]
    fn masks_by_number_description_and_script() {
        let text = r#"
[[broken]]
test = "a.t#2"
platform = { driver = "qemu", os = ["debian", "fedora"] }
reason = "bug 1"
issue = "https://x/1"

[[broken]]
test = "b.t#one"
reason = "was broken"

[[broken]]
test = "c.t"
reason = "all broken"

[[broken]]
test = "a.t#1"
platform = { driver = "xen" }
reason = "not this platform"
"#;
        let exp = Expectations::parse(Path::new("k.toml"), text).unwrap();
        let mut r = report();
        assert_eq!(exp.apply(&mut r), 4);
        assert_eq!(r.suites[0].cases[0].outcome, Outcome::Pass);
        assert_eq!(r.suites[0].cases[1].outcome, Outcome::Xfail);
        assert!(r.suites[0].cases[1]
            .message
            .as_deref()
            .unwrap()
            .contains("https://x/1"));
        assert_eq!(r.suites[1].cases[0].outcome, Outcome::Xpass);
        assert!(r.suites[2]
            .cases
            .iter()
            .all(|c| c.outcome == Outcome::Xfail));
        assert!(r.summary().ok);
    }

    #[test]
    fn exit_status_of_masked_failures_is_masked() {
        let exp = Expectations::parse(
            Path::new("k"),
            "[[broken]]\ntest = \"a.t#two\"\nreason = \"r\"\n",
        )
        .unwrap();
        let mut r = report();
        let mut script = Case::new(SCRIPT_CASE, Outcome::Fail);
        script.message = Some("Non-zero exit status: 1".into());
        r.suites[0].cases.push(script);
        exp.apply(&mut r);
        assert_eq!(r.suites[0].cases[2].outcome, Outcome::Xfail);
        // A bad plan is not explained by known-broken points.
        let mut r = report();
        let mut script = Case::new(SCRIPT_CASE, Outcome::Fail);
        script.message = Some("Bad plan.; Non-zero exit status: 255".into());
        r.suites[0].cases.push(script);
        exp.apply(&mut r);
        assert_eq!(r.suites[0].cases[2].outcome, Outcome::Fail);
    }

    #[test]
    fn whole_script_that_passes_is_xpass() {
        let exp = Expectations::parse(
            Path::new("k"),
            "[[broken]]\ntest = \"b.t\"\nreason = \"r\"\n",
        )
        .unwrap();
        let mut r = report();
        exp.apply(&mut r);
        assert_eq!(r.suites[1].cases.last().unwrap().outcome, Outcome::Xpass);
    }

    #[test]
    fn unknown_key_is_rejected_with_position() {
        let err = Expectations::parse(
            Path::new("k.toml"),
            "[[broken]]\ntest = \"a.t\"\nreason = \"r\"\nbug = 3\n",
        )
        .unwrap_err();
        match err {
            ConfigError::Syntax { line, .. } => assert_eq!(line, 4, "{err}"),
            e => panic!("{e}"),
        }
        let err = Expectations::parse(Path::new("k.toml"), "[[broken]\n").unwrap_err();
        assert!(err.to_string().starts_with("k.toml:1:"), "{err}");
    }
}

/// A failure left after masking the known broken: something to fix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub script: String,
    pub test: String,
    pub outcome: Outcome,
    pub message: String,
}

/// Every failing case of a (masked) report.
pub fn problems(report: &impl View) -> Vec<Problem> {
    matching(report, Outcome::is_failure)
}

/// Known-broken tests that passed: expectations that have gone stale.
pub fn stale(report: &impl View) -> Vec<Problem> {
    matching(report, |o| o == Outcome::Xpass)
}

fn matching(report: &impl View, keep: impl Fn(Outcome) -> bool) -> Vec<Problem> {
    let mut out = Vec::new();
    for (s, suite) in report.head().suites.iter().enumerate() {
        for i in 0..report.case_count(s) {
            if keep(report.case_outcome(s, i)) {
                let c = report.case(s, i);
                out.push(Problem {
                    script: suite.display_name(),
                    test: c.name.clone(),
                    outcome: c.outcome,
                    message: c.message.clone().unwrap_or_default(),
                });
            }
        }
    }
    out
}
