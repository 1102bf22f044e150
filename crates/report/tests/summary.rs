//! The `prove`-like plain summary.

use crate::common;

use testbed_report::{to_summary, Outcome, Report, Suite};

#[test]
fn one_failing_suite_reads_like_prove() {
    let text = to_summary(&common::one_failing_suite());
    let expected = "\
t/a.t .... ok
t/bbb.t .. Failed 2/5 subtests

Test Summary Report
-------------------
t/bbb.t (Tests: 5 Failed: 2)
  Failed tests:  3, 5
    3 - three: got 1, expected 2
    5 - five (error): timed out
Files=2, Tests=7, 3.500 wallclock secs
Passed=4, Failed=1, Errors=1, Skipped=0, Xfailed=1, Xpassed=0
Result: FAIL
";
    assert_eq!(text, expected);
}

#[test]
fn rich_report_lines() {
    let text = to_summary(&common::rich_report());
    for line in [
        "t/basic.t [linux-x86_64] ..... Failed 2/6 subtests",
        "t/network.t [linux-aarch64] .. ok",
        "t/empty.t .................... skipped: no tests",
        "t/iscsi.t .................... skipped: no iscsi-server",
        "t/basic.t [linux-x86_64] (Tests: 6 Failed: 2)",
        "  Failed tests:  2, 3",
        "    2 - lists domains: expected 3 domains, got 2",
        "    3 - <script>alert('x')</script> (error): agent lost: connection reset",
        "  TODO passed:   6",
        "  Diagnostic:    unknown line: garbagehere",
        "Files=4, Tests=9, 30.000 wallclock secs",
        "Passed=3, Failed=1, Errors=1, Skipped=2, Xfailed=1, Xpassed=1",
        "Result: FAIL",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("All tests successful"));
}

#[test]
fn passing_run() {
    let mut report = Report::new("p", "green", common::t(0));
    let mut suite = Suite::new("t/ok.t");
    suite.cases = vec![
        common::case("a", Outcome::Pass, 10),
        common::case("b", Outcome::Xfail, 10),
        common::case("c", Outcome::Skip, 0),
    ];
    report.suites.push(suite);
    let text = to_summary(&report);
    assert_eq!(
        text,
        "t/ok.t .. ok\nAll tests successful.\nFiles=1, Tests=3, 0.020 wallclock secs\n\
         Passed=1, Failed=0, Errors=0, Skipped=1, Xfailed=1, Xpassed=0\nResult: PASS\n"
    );
}

#[test]
fn xpass_is_reported_but_passes() {
    let mut report = Report::new("p", "stale", common::t(0));
    let mut suite = Suite::new("t/x.t");
    suite.cases = vec![common::case("fixed", Outcome::Xpass, 1)];
    report.suites.push(suite);
    let text = to_summary(&report);
    assert!(text.contains("t/x.t .. ok\n"), "{text}");
    assert!(text.contains("Test Summary Report"), "{text}");
    assert!(text.contains("  TODO passed:   1\n"), "{text}");
    assert!(text.ends_with("Result: PASS\n"), "{text}");
}

#[test]
fn empty_report() {
    let text = to_summary(&Report::new("e", "empty", common::t(0)));
    assert!(
        text.contains("Files=0, Tests=0, 0.000 wallclock secs"),
        "{text}"
    );
    assert!(text.ends_with("Result: PASS\n"), "{text}");
}
