//! The self-contained HTML report.

use crate::common;

use testbed_report::{to_html, Outcome, Report, Suite};

#[test]
fn is_self_contained() {
    let html = to_html(&common::rich_report()).to_lowercase();
    assert!(html.starts_with("<!doctype html>"));
    for external in [
        "<script src",
        "<link",
        "http://",
        "src=",
        "@import",
        "url(",
        "<iframe",
        "<img",
    ] {
        assert!(!html.contains(external), "found {external:?}");
    }
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the inline filter script"
    );
    assert!(html.contains("<style>"));
}

#[test]
fn escapes_everything() {
    let html = to_html(&common::rich_report());
    // The test named `<script>alert('x')</script>` shows as text.
    assert!(!html.contains("<script>alert"), "unescaped name");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("nightly &lt;plan&gt; &amp; &quot;kit&quot; &#39;x&#39;"));
    assert!(html.contains("connects &lt;ok&gt; &amp; &quot;quoted&quot;"));
    // Control bytes and terminal colours are gone; invalid UTF-8 is U+FFFD.
    assert!(
        !html
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
        "control characters left"
    );
    assert!(html.contains("binaryred"));
    // Links: relative and https ones are links, `javascript:` is not.
    assert!(html.contains("<a href=\"logs/basic.txt\">log</a>"));
    assert!(html.contains("<a href=\"https://blobs.example/core?a=1&amp;b=2\">core dump</a>"));
    assert!(!html.contains("href=\"javascript"));
    assert!(html.contains("evil: <code>javascript:alert(1)</code>"));
}

#[test]
fn failures_come_first() {
    let html = to_html(&common::rich_report());
    let failures = html
        .find("<section id=\"failures\">")
        .expect("failures section");
    let results = html
        .find("<section id=\"results\">")
        .expect("results section");
    assert!(failures < results);
    // The failing case is shown before any passing case is.
    let fail = html.find("lists domains").unwrap();
    let error = html.find("&lt;script&gt;alert").unwrap();
    let pass = html.find("connects &lt;ok&gt;").unwrap();
    let other_pass = html.find("resolve").unwrap();
    assert!(fail < pass && error < pass && fail < other_pass);
    // With its message, its output excerpt in <pre>, and its links.
    let section = &html[failures..results];
    assert!(section
        .contains("<pre class=\"message\">expected 3 domains, got 2\n  at t/basic.t line 12"));
    assert!(section.contains("<pre class=\"output\">line one\n"));
    assert!(section.contains("href=\"logs/basic.txt\""));
    assert!(section.contains("Failures (2)"));
    // Unexpected passes are listed after the failures, not among them.
    let xpass = html.find("<section id=\"xpass\">").unwrap();
    assert!(failures < xpass && xpass < results);
}

#[test]
fn header_shows_result_and_counts() {
    let html = to_html(&common::rich_report());
    assert!(html.contains("<header class=\"fail\">"));
    assert!(html.contains("<span class=\"verdict\">FAIL</span>"));
    assert!(html.contains("<li class=\"o-pass\"><b>3</b> passed</li>"));
    assert!(html.contains("<li class=\"o-fail\"><b>1</b> failed</li>"));
    assert!(html.contains("<li class=\"o-error\"><b>1</b> error</li>"));
    assert!(html.contains("<li class=\"o-xpass\"><b>1</b> unexpected pass</li>"));
    assert!(html.contains("<b>9</b> total"));
    assert!(html.contains("created 2024-05-01 12:00:00 UTC"));
}

#[test]
fn timeline_is_inline_svg_positioned_by_start() {
    let html = to_html(&common::rich_report());
    let svg_at = html.find("<svg").expect("inline svg");
    let svg = &html[svg_at..html[svg_at..].find("</svg>").unwrap() + svg_at];
    assert_eq!(svg.matches("<rect").count(), 9, "one bar per case");
    // "lists domains" started 1 s after the report (of a 6.5 s span): x = 230 + 760 * 1/6.5.
    assert!(
        svg.contains("lists domains — fail, 0.800 s, from +1.000 s"),
        "{svg}"
    );
}

#[test]
fn timeline_is_sequential_without_start_times() {
    let html = to_html(&common::one_failing_suite());
    assert!(html.contains("<svg"));
    // a.t: one (0.4 s), two (0.6 s); bbb.t follows at 1.0 s.
    assert!(
        html.contains("two — pass, 0.600 s, from +0.400 s"),
        "{html}"
    );
    assert!(html.contains("one — pass, 0.500 s, from +1.000 s"));
    assert!(html.contains("five — error, 0.500 s, from +3.000 s"));
}

#[test]
fn large_reports_bound_the_timeline() {
    let mut report = Report::new("big", "big", common::t(0));
    let mut suite = Suite::new("s");
    suite.cases = (0..2_000u64)
        .map(|i| common::case(&format!("c{i}"), Outcome::Pass, i))
        .collect();
    report.suites.push(suite);
    let html = to_html(&report);
    assert_eq!(html.matches("<rect").count(), 400);
    assert!(html.contains("Showing the 400 longest of 2000 cases."));
    assert!(html.contains("c1999 — pass"));
    assert!(!html.contains("c5 — pass"));
}

#[test]
fn passing_and_empty_reports_render() {
    let empty = to_html(&Report::new("e", "empty", common::t(0)));
    assert!(empty.contains("This report has no suites."));
    assert!(empty.contains("<header class=\"pass\">"));
    assert!(!empty.contains("id=\"failures\""));
    assert!(!empty.contains("<svg"), "no cases, no timeline");
}

#[test]
fn large_reports_list_cases_from_embedded_data_not_rows() {
    let mut report = Report::new("big", "big", common::t(0));
    let mut suite = Suite::new("s");
    suite.cases = (0..6_000u64)
        .map(|i| {
            let outcome = if i == 10 {
                Outcome::Fail
            } else {
                Outcome::Pass
            };
            common::case(&format!("c{i}"), outcome, 0)
        })
        .collect();
    suite.cases[20].name = "</script><script>alert(1)</script>".into();
    report.suites.push(suite);
    let html = to_html(&report);
    assert!(!html.contains("<tr data-outcome"), "no row per case");
    // The failure in full, first.
    let failures = html.find("<section id=\"failures\">").unwrap();
    assert!(html[failures..].contains("c10"));
    // Every case in the data, which no name can break out of.
    assert!(!html.contains("<script>alert"), "unescaped name");
    let start = html
        .find("<script type=\"application/json\" id=\"case-data\">")
        .unwrap();
    let data = &html[start..];
    let data = &data[data.find('>').unwrap() + 1..data.find("</script>").unwrap()];
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(data[0]["s"], "s");
    assert_eq!(data[0]["c"].as_array().unwrap().len(), 6_000);
    assert_eq!(data[0]["c"][20], "</script><script>alert(1)</script>");
    assert_eq!(&data[0]["o"].as_str().unwrap()[9..12], "pfp");
}
