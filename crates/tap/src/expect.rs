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
use testbed_report::{Case, Outcome, Report, Suite};

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

    fn selects(&self, case: &Case) -> bool {
        match self.selector() {
            None => true,
            Some(sel) if !sel.is_empty() && sel.bytes().all(|b| b.is_ascii_digit()) => {
                case.properties.get("tap.number").map(String::as_str) == Some(sel)
            }
            Some(sel) => {
                case.name == sel
                    || case.properties.get("tap.description").map(String::as_str) == Some(sel)
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
        let labels = report_labels(report);
        let entries: Vec<&Broken> = self
            .broken
            .iter()
            .filter(|b| b.applies_to(&labels))
            .collect();
        let mut changed = 0;
        for suite in &mut report.suites {
            let name = suite.name.clone();
            let mut masked = 0;
            for entry in entries.iter().filter(|e| e.script() == name) {
                masked += apply_entry(entry, suite);
            }
            if masked > 0 {
                masked += explain_exit_status(suite);
            }
            changed += masked;
        }
        changed
    }
}

/// Test::More and friends exit with the number of failed tests, so masking
/// every failing test point must also mask the non-zero exit status they
/// caused; any other script-level problem (bad plan, bail out, timeout) stays.
fn explain_exit_status(suite: &mut Suite) -> usize {
    let points_fail = suite
        .cases
        .iter()
        .any(|c| c.name != SCRIPT_CASE && c.outcome.is_failure());
    let points_xfail = suite
        .cases
        .iter()
        .any(|c| c.name != SCRIPT_CASE && c.outcome == Outcome::Xfail);
    if points_fail || !points_xfail {
        return 0;
    }
    let Some(script) = suite.cases.iter_mut().find(|c| {
        c.name == SCRIPT_CASE
            && c.outcome == Outcome::Fail
            && c.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Non-zero exit status: ") && !m.contains(';'))
    }) else {
        return 0;
    };
    script.outcome = Outcome::Xfail;
    let was = script.message.take().unwrap_or_default();
    script.message = Some(format!("{was}, from known-broken tests"));
    1
}

fn apply_entry(entry: &Broken, suite: &mut Suite) -> usize {
    let mut changed = 0;
    let mut any_failed = false;
    for case in suite.cases.iter_mut().filter(|c| entry.selects(c)) {
        match case.outcome {
            Outcome::Fail | Outcome::Error => {
                any_failed = true;
                let was = case.message.take();
                case.message = Some(match was {
                    Some(m) => format!("{}; failed with: {m}", entry.why()),
                    None => entry.why(),
                });
                case.outcome = Outcome::Xfail;
                changed += 1;
            }
            // A whole-script entry flags the script, not every passing point.
            Outcome::Pass if entry.selector().is_some() => {
                case.outcome = Outcome::Xpass;
                case.message = Some(format!("{}; but it passed", entry.why()));
                changed += 1;
            }
            Outcome::Xfail => any_failed = true,
            _ => {}
        }
    }
    if entry.selector().is_none() && !any_failed && suite.skip_reason().is_none() {
        let mut case = Case::new(SCRIPT_CASE, Outcome::Xpass);
        case.message = Some(format!("{}; but it passed", entry.why()));
        suite.cases.push(case);
        changed += 1;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

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
pub fn problems(report: &Report) -> Vec<Problem> {
    report
        .suites
        .iter()
        .flat_map(|s| {
            s.cases
                .iter()
                .filter(|c| c.outcome.is_failure())
                .map(move |c| Problem {
                    script: s.display_name(),
                    test: c.name.clone(),
                    outcome: c.outcome,
                    message: c.message.clone().unwrap_or_default(),
                })
        })
        .collect()
}

/// Known-broken tests that passed: expectations that have gone stale.
pub fn stale(report: &Report) -> Vec<Problem> {
    report
        .suites
        .iter()
        .flat_map(|s| {
            s.cases
                .iter()
                .filter(|c| c.outcome == Outcome::Xpass)
                .map(move |c| Problem {
                    script: s.display_name(),
                    test: c.name.clone(),
                    outcome: c.outcome,
                    message: c.message.clone().unwrap_or_default(),
                })
        })
        .collect()
}
