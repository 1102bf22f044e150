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

use std::borrow::Cow;
use std::io;

use crate::model::{Case, Outcome, Report};
use crate::text::{clean, first_line, one_line, render_to_string, secs, Out};
use crate::view::{self, View};

/// The report as a `prove`-like summary.
pub fn to_summary(report: &Report) -> String {
    render_to_string(|w| write_summary(report, w))
}

/// Writes the `prove`-like summary of any [`View`] of a report.
pub fn write_summary<V: View>(v: &V, w: &mut dyn io::Write) -> io::Result<()> {
    let mut out = Out::new(w);
    let report = v.head();
    let names: Vec<String> = report
        .suites
        .iter()
        .map(|s| one_line(&s.display_name()))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (s, name) in names.iter().enumerate() {
        let dots = ".".repeat(width - name.chars().count() + 2);
        out.push_str(&format!("{name} {dots} {}\n", status(v, s)));
    }

    let listed: Vec<usize> = (0..names.len())
        .filter(|&s| {
            view::suite_is_failure(v, s)
                || (0..v.case_count(s)).any(|i| v.case_outcome(s, i) == Outcome::Xpass)
                || !report.suites[s].diagnostics.is_empty()
        })
        .collect();
    let cancelled = report.cancelled();
    if listed.is_empty() && cancelled {
        out.push_str("Run cancelled before it finished.\n");
    } else if listed.is_empty() {
        out.push_str("All tests successful.\n");
    } else {
        out.push_str("\nTest Summary Report\n-------------------\n");
        for s in listed {
            problems(&mut out, &names[s], v, s);
        }
    }

    let sum = view::summary(v);
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
    out.push_str(&format!("Result: {}\n", view::verdict(v)));
    out.finish()
}

fn status<V: View>(v: &V, s: usize) -> String {
    if v.case_count(s) == 0 {
        return "skipped: no tests".to_string();
    }
    if let Some(reason) = view::skip_reason(v, s) {
        let reason = one_line(&reason);
        return if reason.is_empty() {
            "skipped".to_string()
        } else {
            format!("skipped: {reason}")
        };
    }
    let sum = view::suite_summary(v, s);
    if sum.ok {
        "ok".to_string()
    } else {
        format!("Failed {}/{} subtests", sum.failed + sum.errors, sum.total)
    }
}

fn problems<V: View>(out: &mut Out<'_>, name: &str, v: &V, s: usize) {
    let sum = view::suite_summary(v, s);
    let failing = numbered(v, s, |o| o.is_failure());
    let xpassed = numbered(v, s, |o| o == Outcome::Xpass);
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
    for diagnostic in &v.head().suites[s].diagnostics {
        out.push_str(&format!("  Diagnostic:    {}\n", one_line(diagnostic)));
    }
}

fn numbered<V: View>(
    v: &V,
    s: usize,
    keep: impl Fn(Outcome) -> bool,
) -> Vec<(usize, Cow<'_, Case>)> {
    (0..v.case_count(s))
        .filter(|&i| keep(v.case_outcome(s, i)))
        .map(|i| (i + 1, v.case(s, i)))
        .collect()
}

fn numbers(cases: &[(usize, Cow<'_, Case>)]) -> String {
    cases
        .iter()
        .map(|(n, _)| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
