//! Summary semantics and the model's helpers.

use crate::common;

use std::str::FromStr;

use testbed_report::{Case, Format, Outcome, Report, Suite};

fn report_of(outcomes: &[Outcome]) -> Report {
    let mut report = Report::new("r", "r", common::t(0));
    let mut suite = Suite::new("s");
    suite.cases = outcomes.iter().map(|o| Case::new(o.as_str(), *o)).collect();
    report.suites.push(suite);
    report
}

#[test]
fn xfail_does_not_fail() {
    let s = report_of(&[Outcome::Pass, Outcome::Xfail, Outcome::Skip]).summary();
    assert!(s.ok);
    assert_eq!((s.total, s.passed, s.xfailed, s.skipped), (3, 1, 1, 1));
}

#[test]
fn xpass_is_counted_but_does_not_fail() {
    let s = report_of(&[Outcome::Pass, Outcome::Xpass]).summary();
    assert!(s.ok);
    assert_eq!(s.xpassed, 1);
    assert_eq!(s.passed, 1, "an xpass is not counted as a plain pass");
}

#[test]
fn fail_and_error_fail() {
    let s = report_of(&[Outcome::Pass, Outcome::Error]).summary();
    assert!(!s.ok);
    assert_eq!((s.errors, s.failed), (1, 0));
    let s = report_of(&[Outcome::Fail]).summary();
    assert!(!s.ok);
    assert_eq!(s.failed, 1);
    assert!(
        Report::new("e", "e", common::t(0)).summary().ok,
        "an empty report is ok"
    );
}

#[test]
fn is_failure_per_outcome() {
    let failing: Vec<Outcome> = Outcome::ALL
        .into_iter()
        .filter(|o| o.is_failure())
        .collect();
    assert_eq!(failing, [Outcome::Fail, Outcome::Error]);
    for o in Outcome::ALL {
        let s = report_of(&[o]).summary();
        assert_eq!(s.count(o), 1);
        assert_eq!(s.ok, !o.is_failure(), "{o}");
        assert_eq!(report_of(&[o]).suites[0].is_failure(), o.is_failure());
    }
}

#[test]
fn suite_and_report_summaries_agree() {
    let report = common::rich_report();
    let total: usize = report.suites.iter().map(|s| s.summary().total).sum();
    assert_eq!(report.summary().total, total);
    let basic = report.suites[0].summary();
    assert_eq!(
        (
            basic.total,
            basic.passed,
            basic.failed,
            basic.errors,
            basic.skipped,
            basic.xfailed,
            basic.xpassed,
            basic.ok
        ),
        (6, 1, 1, 1, 1, 1, 1, false)
    );
    assert_eq!(basic.duration_ms, 4_000);
}

#[test]
fn durations() {
    // Both report times known: the wall clock between them.
    assert_eq!(common::rich_report().duration_ms(), 30_000);
    // No times at all: suites one after the other; a suite without its own
    // duration counts its cases'.
    let mut report = common::one_failing_suite();
    assert_eq!(report.duration_ms(), 3_500);
    report.suites[1].duration_ms = 0;
    assert_eq!(report.suites[1].summary().duration_ms, 2_500);
    // Suites with start times: the span they cover (they overlapped here).
    report.suites[0].started_at = Some(common::t(10));
    report.suites[1].started_at = Some(common::t(10));
    assert_eq!(report.duration_ms(), 2_500);
    report.suites[1].started_at = Some(common::t(12));
    assert_eq!(report.duration_ms(), 4_500);
    assert_eq!(report.summary().duration_ms, 4_500);
    // Finished before started (clock trouble) is zero, not a panic.
    report.started_at = Some(common::t(5));
    report.finished_at = Some(common::t(4));
    assert_eq!(report.duration_ms(), 0);
    // Absurd durations do not overflow.
    report.started_at = None;
    report.suites[0].duration_ms = u64::MAX;
    let _ = report.duration_ms();
}

#[test]
fn start_time_and_display_name() {
    let mut report = common::one_failing_suite();
    assert_eq!(report.start_time(), report.created_at);
    report.suites[1].cases[0].started_at = Some(common::t(7));
    assert_eq!(report.start_time(), common::t(7));
    report.started_at = Some(common::t(3));
    assert_eq!(report.start_time(), common::t(3));

    let mut suite = Suite::new("t/a.t");
    assert_eq!(suite.display_name(), "t/a.t");
    suite.platform = Some("fedora-40".into());
    assert_eq!(suite.display_name(), "t/a.t [fedora-40]");
}

#[test]
fn skip_reason_only_when_all_cases_skipped() {
    let mut suite = Suite::new("s");
    assert_eq!(suite.skip_reason(), None, "empty is not skipped");
    let mut c = Case::new("all", Outcome::Skip);
    c.message = Some("no nfs".into());
    suite.cases.push(c);
    assert_eq!(suite.skip_reason(), Some("no nfs"));
    suite.cases.push(Case::new("x", Outcome::Pass));
    assert_eq!(suite.skip_reason(), None);
}

#[test]
fn formats_by_name() {
    for f in Format::ALL {
        assert_eq!(Format::from_str(f.name()).unwrap(), f);
        let rendered = f.render(&common::one_failing_suite()).unwrap();
        assert!(!rendered.is_empty());
    }
    assert_eq!(Format::from_str("XML").unwrap(), Format::Junit);
    assert_eq!(Format::from_str("text").unwrap(), Format::Summary);
    assert!(Format::from_str("pdf")
        .unwrap_err()
        .to_string()
        .contains("pdf"));
    assert_eq!(Format::Html.content_type(), "text/html; charset=utf-8");
    assert_eq!(Format::Junit.extension(), "xml");
}

#[test]
fn openapi_schemas() {
    use testbed_report::{Link, Summary};
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(components(schemas(Report, Suite, Case, Link, Outcome, Summary)))]
    struct Api;

    let doc = serde_json::to_value(Api::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Outcome"]["enum"],
        serde_json::json!(["pass", "fail", "error", "skip", "xfail", "xpass"])
    );
    let required: Vec<&str> = schemas["Report"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["kind", "v", "id", "name", "created_at"]);
    assert_eq!(
        schemas["Report"]["properties"]["created_at"]["format"],
        "date-time"
    );
    let case_required = schemas["Case"]["required"].as_array().unwrap();
    assert_eq!(case_required.len(), 2, "{case_required:?}");
    assert!(schemas["Summary"]["properties"]["ok"].is_object());
}
