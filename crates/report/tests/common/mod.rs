//! Reports shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use testbed_report::{Case, Link, Outcome, Report, Suite};

pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_714_564_800 + secs, 0).unwrap()
}

pub fn case(name: &str, outcome: Outcome, ms: u64) -> Case {
    let mut c = Case::new(name, outcome);
    c.duration_ms = ms;
    c
}

/// Output a test printed as raw bytes: control characters, a terminal colour and
/// invalid UTF-8, converted lossily as a producer would.
pub fn binary_output() -> String {
    let bytes: &[u8] =
        b"line one\n\x00\x01\x02bin\x07ary\x1b[31mred\x1b[0m\xff\xfe\x80end\r\n\x0b\x0c\x7f";
    String::from_utf8_lossy(bytes).into_owned()
}

/// A report with every outcome, names that need escaping in every format, binary
/// output, links, an empty suite, a skipped suite, platforms and properties.
pub fn rich_report() -> Report {
    let mut report = Report::new("r-42", "nightly <plan> & \"kit\" 'x'", t(0));
    report.started_at = Some(t(1));
    report.finished_at = Some(t(31));
    report.properties = BTreeMap::from([
        ("run".to_string(), "42".to_string()),
        (
            "environment".to_string(),
            "lab <a> & \"b\"\nsecond line".to_string(),
        ),
    ]);

    let mut basic = Suite::new("t/basic.t");
    basic.platform = Some("linux-x86_64".into());
    basic.started_at = Some(t(1));
    basic.duration_ms = 4_000;
    basic.properties = BTreeMap::from([("driver".to_string(), "qemu".to_string())]);
    let mut pass = case(
        "connects <ok> & \"quoted\" 'single' # not a directive",
        Outcome::Pass,
        1_200,
    );
    pass.started_at = Some(t(1));
    pass.agent = Some("agent-1".into());
    let mut fail = case("lists domains", Outcome::Fail, 800);
    fail.started_at = Some(t(2));
    fail.message =
        Some("expected 3 domains, got 2\n  at t/basic.t line 12\n\nblank line above".into());
    fail.output = Some(binary_output());
    fail.log_url = Some("logs/basic.txt".into());
    fail.artifacts = vec![
        Link {
            name: "core dump".into(),
            url: "https://blobs.example/core?a=1&b=2".into(),
        },
        Link {
            name: "evil".into(),
            url: "javascript:alert(1)".into(),
        },
    ];
    fail.agent = Some("agent-1".into());
    fail.attempts = 2;
    let mut error = case("<script>alert('x')</script>", Outcome::Error, 50);
    error.started_at = Some(t(3));
    error.message = Some("agent lost: connection reset".into());
    let mut skip = case("needs iscsi", Outcome::Skip, 0);
    skip.message = Some("no iscsi-server configured".into());
    let mut xfail = case("known broken", Outcome::Xfail, 30);
    xfail.message = Some("bug #123: hangs on ARM".into());
    xfail.output = Some("    leading spaces\nsecond".into());
    let mut xpass = case("fixed upstream", Outcome::Xpass, 20);
    xpass.message = Some("bug #99".into());
    basic.cases = vec![pass, fail, error, skip, xfail, xpass];
    basic.diagnostics = vec!["unknown line: garbage\u{1}here".into()];

    let mut network = Suite::new("t/network.t");
    network.platform = Some("linux-aarch64".into());
    network.started_at = Some(t(6));
    network.duration_ms = 2_000;
    network.cases = vec![
        case("ping", Outcome::Pass, 500),
        case("resolve", Outcome::Pass, 700),
    ];

    let empty = Suite::new("t/empty.t");

    let mut skipped = Suite::new("t/iscsi.t");
    let mut all = case("t/iscsi.t", Outcome::Skip, 0);
    all.message = Some("no iscsi-server".into());
    skipped.cases = vec![all];

    report.suites = vec![basic, network, empty, skipped];
    report
}

/// One failing suite among passing ones, with no start times.
pub fn one_failing_suite() -> Report {
    let mut report = Report::new("r-7", "smoke", t(0));
    let mut a = Suite::new("t/a.t");
    a.duration_ms = 1_000;
    a.cases = vec![
        case("one", Outcome::Pass, 400),
        case("two", Outcome::Pass, 600),
    ];
    let mut b = Suite::new("t/bbb.t");
    b.duration_ms = 2_500;
    let mut bad = case("three", Outcome::Fail, 1_000);
    bad.message = Some("got 1, expected 2".into());
    let mut worse = case("five", Outcome::Error, 500);
    worse.message = Some("timed out".into());
    b.cases = vec![
        case("one", Outcome::Pass, 500),
        case("two", Outcome::Pass, 500),
        bad,
        case("four", Outcome::Xfail, 0),
        worse,
    ];
    report.suites = vec![a, b];
    report
}

/// A single suite, for the flat TAP form.
pub fn single_suite() -> Report {
    let mut report = rich_report();
    report.suites.truncate(1);
    report
}

/// Runs `program args`, failing the test with `hint` when the program is missing.
pub fn run(program: &str, args: &[&str], hint: &str) -> std::process::Output {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed: {hint}")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}
