//! The canonical JSON form: round trips, errors with positions, compatibility.

use crate::common;

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

/// A report large enough for the HTML's list form: bare passes, failures with
/// detail, a skip, durations on a few, a second suite.
fn big_report() -> Report {
    let mut r = Report::new("big", "big kit", common::t(0));
    let mut a = testbed_report::Suite::new("a.t");
    for i in 0..6_000u64 {
        let outcome = match i {
            17 | 4_000 => Outcome::Fail,
            18 => Outcome::Skip,
            19 => Outcome::Xpass,
            _ => Outcome::Pass,
        };
        let mut c = testbed_report::Case::new(format!("case {i} <b>"), outcome);
        if outcome == Outcome::Fail {
            c.message = Some(format!("boom {i}"));
        }
        if i % 1_000 == 3 {
            c.duration_ms = i;
        }
        a.cases.push(c);
    }
    let mut b = testbed_report::Suite::new("b.t");
    b.cases
        .push(testbed_report::Case::new("only", Outcome::Pass));
    r.suites = vec![a, b];
    r
}

#[test]
fn compact_form_renders_the_same_in_every_format() {
    for report in [
        common::rich_report(),
        common::one_failing_suite(),
        Report::new("e", "empty", common::t(0)),
        big_report(),
    ] {
        let compact = testbed_report::CompactReport::new(report.clone());
        assert_eq!(compact.summary(), report.summary());
        for format in testbed_report::Format::ALL {
            let mut a = Vec::new();
            let mut b = Vec::new();
            format.write(&report, &mut a).unwrap();
            format.write(&compact, &mut b).unwrap();
            assert!(a == b, "{format} of {} differs", report.name);
        }
        assert_eq!(compact.into_report(), report);
    }
}

#[test]
fn streaming_reader_reads_old_and_new_forms_and_compressed() {
    for report in [common::rich_report(), big_report()] {
        let new = to_json(&report);
        let old = serde_json::to_string_pretty(&report).unwrap();
        for text in [&new, &old] {
            let read = testbed_report::read_compact(text.as_bytes()).unwrap();
            assert_eq!(read.into_report(), report);
        }
        let stored = testbed_report::to_stored(&report).unwrap();
        assert!(stored.len() < new.len());
        let read = testbed_report::read_stored(&stored).unwrap();
        assert_eq!(read.into_report(), report);
        assert_eq!(
            testbed_report::read_stored(new.as_bytes()).unwrap(),
            testbed_report::CompactReport::new(report.clone())
        );
    }
    // Errors as from_json: the position, the kind, the version.
    let err =
        testbed_report::read_compact(&b"{\n  \"kind\": \"report\",\n  \"v\": }"[..]).unwrap_err();
    assert!(matches!(err, ReportError::Json { line: 3, .. }), "{err}");
    let err = testbed_report::read_compact(
        &br#"{"kind":"plan","v":1,"id":"x","name":"n","created_at":"2024-05-01T12:00:00Z"}"#[..],
    )
    .unwrap_err();
    assert!(matches!(err, ReportError::WrongKind(_)), "{err}");
    let err =
        testbed_report::read_compact(&br#"{"kind":"report","v":1,"id":"x"}"#[..]).unwrap_err();
    assert!(err.to_string().contains("name"), "{err}");
}

#[test]
fn a_bare_pass_costs_its_name_plus_thirty_bytes() {
    let mut r = Report::new("r", "k", common::t(0));
    let mut s = testbed_report::Suite::new("s");
    s.cases = (0..1000)
        .map(|i| testbed_report::Case::new(format!("case {i:06}"), Outcome::Pass))
        .collect();
    r.suites.push(s);
    let one = to_json(&r).len();
    r.suites[0].cases.extend(
        (1000..2000).map(|i| testbed_report::Case::new(format!("case {i:06}"), Outcome::Pass)),
    );
    let two = to_json(&r).len();
    // "case 001000" is 11 bytes: {"name":"…","outcome":"pass"}, plus ",\n".
    assert_eq!((two - one) / 1000, 11 + 30);
}

/// The streaming reader's cases (read into the compact list without a record
/// each) agree with the derived reader of `from_json`: any field order, escaped
/// names, unknown fields and nulls read the same; a duplicate or missing field
/// is an error in both. `compact_from_value` (task results) reads the same.
#[test]
fn streaming_cases_read_as_from_json_does() {
    let doc = |cases: &str| {
        format!(
            r#"{{"kind":"report","v":1,"id":"x","name":"n","created_at":"2024-05-01T12:00:00Z","suites":[{{"name":"s","cases":[{cases}]}}]}}"#
        )
    };
    let good = doc(concat!(
        r#"{"outcome":"pass","name":"late name"},"#,
        r#"{"name":"esc \"q\" \u00e9\n","outcome":"pass","extra":[1,{"a":2}]},"#,
        r#"{"name":"n","outcome":"fail","message":null,"duration_ms":5,"attempts":2},"#,
        r#"{"duration_ms":0,"name":"zero","outcome":"pass","agent":null},"#,
        r#"{"name":"with props","outcome":"pass","properties":{"k":"v"}},"#,
        r#"{"name":"","outcome":"skip","message":"why"}"#
    ));
    let whole = testbed_report::from_json(&good).unwrap();
    let compact = testbed_report::read_compact(good.as_bytes()).unwrap();
    assert_eq!(compact.clone().into_report(), whole);
    let value: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert_eq!(
        testbed_report::json::compact_from_value(&value).unwrap(),
        compact
    );
    assert_eq!(whole.suites[0].cases[1].name, "esc \"q\" é\n");
    // Bare passes are kept as names only; the rest whole.
    assert_eq!(compact.lists[0].whole().count(), 3);
    for bad in [
        r#"{"name":"a","name":"b","outcome":"pass"}"#,
        r#"{"name":"a","outcome":"pass","duration_ms":1,"duration_ms":2}"#,
        r#"{"outcome":"pass"}"#,
        r#"{"name":"a"}"#,
        r#"{"name":"a","outcome":"maybe"}"#,
        r#"{"name":7,"outcome":"pass"}"#,
    ] {
        let text = doc(bad);
        // The message, not the column: the two readers (a slice, a stream)
        // may place the same error a byte apart.
        let message = |e: ReportError| match e {
            ReportError::Json { message, line, .. } => (line, message),
            other => panic!("{bad}: {other}"),
        };
        let a = message(testbed_report::from_json(&text).unwrap_err());
        let b = message(testbed_report::read_compact(text.as_bytes()).unwrap_err());
        assert_eq!(a, b, "{bad}");
    }
}

/// Suites copied a line at a time from a stored report into another being
/// written read back as the suites themselves (escaped names, a message
/// quoting the stored form's own markers, an empty suite, fields of each
/// suite edited), counted as they went; a stored report cut short at any
/// line, or that is not in the one-case-a-line form, is an error.
#[test]
fn suites_copied_from_a_stored_report_read_back_whole() {
    let created = chrono::DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut task = Report::new("t", "kit", created);
    let mut a = testbed_report::Suite::new("a.t");
    a.cases = (1..=50)
        .map(|i| testbed_report::Case::new(format!("case \"{i}\"\n"), Outcome::Pass))
        .collect();
    let mut odd = testbed_report::Case::new("odd", Outcome::Fail);
    odd.message = Some("said ,\"cases\":[ and ]},\n]}]}".into());
    odd.duration_ms = 7;
    a.cases.insert(10, odd);
    a.cases
        .push(testbed_report::Case::new("last", Outcome::Skip));
    task.suites.push(a);
    task.suites.push(testbed_report::Suite::new("empty.t"));
    let mut b = testbed_report::Suite::new("b.t");
    b.cases
        .push(testbed_report::Case::new("only", Outcome::Pass));
    task.suites.push(b);
    let stored = testbed_report::to_stored(&task).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&stored[..]), &mut plain).unwrap();

    let mut run = Report::new("r", "plan", created);
    let mut own = testbed_report::Suite::new("plan");
    own.cases
        .push(testbed_report::Case::new("step", Outcome::Pass));
    run.suites.push(own);
    let mut out = Vec::new();
    testbed_report::write_json_open(&run, &mut out).unwrap();
    let copied = testbed_report::copy_suites(&plain[..], &mut out, 1, &mut |s| {
        s.platform = Some("agent-1".into());
    })
    .unwrap();
    testbed_report::close_json(&mut out).unwrap();
    assert_eq!(copied.suites, 3);
    assert_eq!(
        (
            copied.summary.total,
            copied.summary.failed,
            copied.summary.skipped
        ),
        (53, 1, 1)
    );
    assert!(!copied.summary.ok);
    let back = testbed_report::from_json(std::str::from_utf8(&out).unwrap()).unwrap();
    assert_eq!(back.suites.len(), 4);
    for (got, want) in back.suites[1..].iter().zip(&task.suites) {
        assert_eq!(got.platform.as_deref(), Some("agent-1"));
        assert_eq!((&got.name, &got.cases), (&want.name, &want.cases));
    }
    // Into a document with no suites yet.
    let mut out = Vec::new();
    testbed_report::write_json_open(&Report::new("r", "plan", created), &mut out).unwrap();
    testbed_report::copy_suites(&plain[..], &mut out, 0, &mut |_| {}).unwrap();
    testbed_report::close_json(&mut out).unwrap();
    let back = testbed_report::from_json(std::str::from_utf8(&out).unwrap()).unwrap();
    assert_eq!(back.suites, task.suites);

    // Cut short after any whole line, or mid-line: never read as whole.
    let ends: Vec<usize> = plain
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    for &cut in ends[..ends.len() - 1].iter().chain([&(plain.len() / 2)]) {
        let r = testbed_report::copy_suites(&plain[..cut], &mut Vec::new(), 0, &mut |_| {});
        assert!(r.is_err(), "cut at {cut} of {}: {r:?}", plain.len());
    }
    // The compressed form as it streams: whole, and cut short anywhere
    // (mid-stream, or only its gzip trailer missing).
    let copied =
        testbed_report::copy_stored_suites(&stored[..], &mut Vec::new(), 0, &mut |_| {}).unwrap();
    assert_eq!(copied.summary.total, 53);
    for cut in [stored.len() / 2, stored.len() - 8, stored.len() - 1] {
        let r = testbed_report::copy_stored_suites(&stored[..cut], &mut Vec::new(), 0, &mut |_| {});
        assert!(r.is_err(), "cut at {cut} of {}: {r:?}", stored.len());
    }
    // Pretty-printed JSON is a report, but not in the form copied here.
    let pretty = serde_json::to_string_pretty(&task).unwrap();
    assert!(
        testbed_report::copy_suites(pretty.as_bytes(), &mut Vec::new(), 0, &mut |_| {}).is_err()
    );
}
