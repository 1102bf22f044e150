//! The canonical JSON form: round trips, errors with positions, compatibility.

mod common;

use testbed_report::{from_json, to_json, Outcome, Report, ReportError};

#[test]
fn round_trip_is_lossless() {
    for report in [
        common::rich_report(),
        common::one_failing_suite(),
        Report::new("e", "empty", common::t(0)),
    ] {
        let text = to_json(&report);
        let back = from_json(&text).unwrap();
        assert_eq!(back, report);
        // Canonical: rendering again gives the same text.
        assert_eq!(to_json(&back), text);
    }
}

#[test]
fn json_uses_lowercase_outcomes_and_leaves_out_absent_fields() {
    let text = to_json(&common::one_failing_suite());
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["kind"], "report");
    assert_eq!(value["v"], 1);
    let case = &value["suites"][1]["cases"][2];
    assert_eq!(case["outcome"], "fail");
    assert_eq!(case["message"], "got 1, expected 2");
    assert_eq!(case["attempts"], 1);
    assert!(case.get("output").is_none());
    assert!(case.get("artifacts").is_none());
    assert!(value.get("started_at").is_none());
}

#[test]
fn syntax_error_names_line_and_column() {
    let text = "{\n  \"kind\": \"report\",\n  \"v\": 1,\n  \"id\": oops\n}";
    let err = from_json(text).unwrap_err();
    match &err {
        ReportError::Json { line, column, .. } => assert_eq!((*line, *column), (4, 9)),
        other => panic!("unexpected error {other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.contains("4:9"), "{shown}");
    assert!(!shown.contains("at line"), "position given once: {shown}");
}

#[test]
fn shape_error_names_line_and_column() {
    let mut value: serde_json::Value =
        serde_json::from_str(&to_json(&common::one_failing_suite())).unwrap();
    value["suites"][0]["cases"][0]["outcome"] = "exploded".into();
    let text = serde_json::to_string_pretty(&value).unwrap();
    let err = from_json(&text).unwrap_err();
    let ReportError::Json {
        line,
        column,
        message,
    } = &err
    else {
        panic!("unexpected error {err:?}");
    };
    let bad_line = text.lines().position(|l| l.contains("exploded")).unwrap() + 1;
    assert_eq!(*line, bad_line);
    assert!(*column > 0);
    assert!(message.contains("exploded"), "{message}");
}

#[test]
fn missing_required_field_is_an_error() {
    let err = from_json(r#"{"kind":"report","v":1,"id":"x","created_at":"2024-05-01T12:00:00Z"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("name"), "{err}");
}

#[test]
fn other_kinds_and_versions_are_refused() {
    let err = from_json(
        r#"{"kind":"run","v":1,"id":"x","name":"n","created_at":"2024-05-01T12:00:00Z"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, ReportError::WrongKind(ref k) if k == "run"),
        "{err:?}"
    );
    let err = from_json(
        r#"{"kind":"report","v":2,"id":"x","name":"n","created_at":"2024-05-01T12:00:00Z"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn minimal_documents_take_defaults_and_unknown_fields_are_ignored() {
    let text = r#"{
        "kind": "report", "v": 1, "id": "x", "name": "n",
        "created_at": "2024-05-01T12:00:00Z",
        "added_in_a_later_release": {"anything": true},
        "suites": [{"name": "s", "cases": [{"name": "c", "outcome": "xpass", "new_field": 1}]}]
    }"#;
    let report = from_json(text).unwrap();
    let suite = &report.suites[0];
    assert_eq!(suite.duration_ms, 0);
    assert!(suite.platform.is_none() && suite.diagnostics.is_empty());
    let case = &suite.cases[0];
    assert_eq!(case.outcome, Outcome::Xpass);
    assert_eq!(case.attempts, 1);
    assert!(case.message.is_none() && case.artifacts.is_empty() && case.properties.is_empty());
}
