//! A plain-text summary in the style of Perl's `prove`, for terminals and CI logs.
//!
//! ```text
//! t/basic.t ...... ok
//! t/network.t .... Failed 2/10 subtests
//! t/iscsi.t ...... skipped: no iscsi-server configured
//!
//! Test Summary Report
//! -------------------
//! t/network.t (Tests: 10 Failed: 2)
//!   Failed tests:  3, 7
//!     3 - ping gateway: timed out after 5 s
//!     7 - resolve name (error): agent lost
//! Files=3, Tests=21, 12.400 wallclock secs
//! Passed=18, Failed=1, Errors=1, Skipped=1, Xfailed=0, Xpassed=0
//! Result: FAIL
//! ```
//!
//! A report marked cancelled ([`Report::cancelled`]) ends `Result: CANCELLED`,
//! never PASS, whatever its cases say.
//!
//! Case numbers are positions in the suite counted from 1, as in the TAP rendering.
//! A suite is listed in the Test Summary Report when a case failed or had an
//! error, passed unexpectedly (`TODO passed`, which like `prove` does not fail the
//! run) or when it has diagnostics. A suite without cases is shown as skipped.

use crate::model::{Outcome, Report, Suite};
use crate::text::{clean, first_line, one_line, secs};

/// The report as a `prove`-like summary.
pub fn to_summary(report: &Report) -> String {
    let names: Vec<String> = report
        .suites
        .iter()
        .map(|s| one_line(&s.display_name()))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (suite, name) in report.suites.iter().zip(&names) {
        let dots = ".".repeat(width - name.chars().count() + 2);
        out.push_str(&format!("{name} {dots} {}\n", status(suite)));
    }

    let listed: Vec<(&Suite, &String)> = report
        .suites
        .iter()
        .zip(&names)
        .filter(|(s, _)| {
            s.is_failure()
                || s.cases.iter().any(|c| c.outcome == Outcome::Xpass)
                || !s.diagnostics.is_empty()
        })
        .collect();
    let cancelled = report.cancelled();
    if listed.is_empty() && cancelled {
        out.push_str("Run cancelled before it finished.\n");
    } else if listed.is_empty() {
        out.push_str("All tests successful.\n");
    } else {
        out.push_str("\nTest Summary Report\n-------------------\n");
        for (suite, name) in listed {
            problems(&mut out, name, suite);
        }
    }

    let sum = report.summary();
    out.push_str(&format!(
        "Files={}, Tests={}, {} wallclock secs\n",
        report.suites.len(),
        sum.total,
        secs(sum.duration_ms)
    ));
    out.push_str(&format!(
        "Passed={}, Failed={}, Errors={}, Skipped={}, Xfailed={}, Xpassed={}\n",
        sum.passed, sum.failed, sum.errors, sum.skipped, sum.xfailed, sum.xpassed
    ));
    // A cancelled run is neither a pass nor a test failure.
    out.push_str(&format!("Result: {}\n", report.verdict()));
    out
}

fn status(suite: &Suite) -> String {
    if suite.cases.is_empty() {
        return "skipped: no tests".to_string();
    }
    if let Some(reason) = suite.skip_reason() {
        let reason = one_line(reason);
        return if reason.is_empty() {
            "skipped".to_string()
        } else {
            format!("skipped: {reason}")
        };
    }
    let sum = suite.summary();
    if sum.ok {
        "ok".to_string()
    } else {
        format!("Failed {}/{} subtests", sum.failed + sum.errors, sum.total)
    }
}

fn problems(out: &mut String, name: &str, suite: &Suite) {
    let sum = suite.summary();
    let failing: Vec<(usize, &crate::Case)> = numbered(suite, |o| o.is_failure());
    let xpassed: Vec<(usize, &crate::Case)> = numbered(suite, |o| o == Outcome::Xpass);
    out.push_str(&format!(
        "{name} (Tests: {} Failed: {})\n",
        sum.total,
        failing.len()
    ));
    if !failing.is_empty() {
        out.push_str(&format!("  Failed tests:  {}\n", numbers(&failing)));
        for (n, case) in &failing {
            let kind = if case.outcome == Outcome::Error {
                " (error)"
            } else {
                ""
            };
            let message = case
                .message
                .as_deref()
                .map(|m| one_line(first_line(&clean(m))))
                .unwrap_or_default();
            let sep = if message.is_empty() { "" } else { ": " };
            out.push_str(&format!(
                "    {n} - {}{kind}{sep}{message}\n",
                one_line(&case.name)
            ));
        }
    }
    if !xpassed.is_empty() {
        out.push_str(&format!("  TODO passed:   {}\n", numbers(&xpassed)));
    }
    for diagnostic in &suite.diagnostics {
        out.push_str(&format!("  Diagnostic:    {}\n", one_line(diagnostic)));
    }
}

fn numbered(suite: &Suite, keep: impl Fn(Outcome) -> bool) -> Vec<(usize, &crate::Case)> {
    suite
        .cases
        .iter()
        .enumerate()
        .filter(|(_, c)| keep(c.outcome))
        .map(|(i, c)| (i + 1, c))
        .collect()
}

fn numbers(cases: &[(usize, &crate::Case)]) -> String {
    cases
        .iter()
        .map(|(n, _)| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
