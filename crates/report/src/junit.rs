//! JUnit XML, the format CI dashboards (Jenkins' JUnit plugin, GitLab's test
//! reports) read.
//!
//! Mapping from the model:
//!
//! | model | JUnit |
//! | --- | --- |
//! | report | `<testsuites name tests failures errors time>` (no `skipped`: the Jenkins xUnit plugin's schema refuses it there; the suites carry it) |
//! | suite | `<testsuite name id tests failures errors skipped time [timestamp] [hostname]>`; the name is [`Suite::display_name`], so a matrix run's platforms stay apart, and the platform is also the `hostname` |
//! | report and suite properties, platform | `<properties>` of each suite (a suite's value wins) |
//! | suite diagnostics | the suite's `<system-out>` |
//! | case | `<testcase name classname [time]>` (`time` only when the case has a duration: a passing case is `<testcase name=".." classname=".."/>`), `classname` being the suite's display name with `.` replaced by `_` (Jenkins splits a class name at its last dot into package and class, which would turn `t/basic.t` into class `t`) |
//! | `fail` / `error` | `<failure>` / `<error>`, `message` = first line of the message, body = the whole message |
//! | `skip` | `<skipped message="reason"/>` |
//! | `xfail` | `<skipped message="expected failure: reason"/>`: JUnit has no expected failure, and a skip is what dashboards show as "not run, not broken" |
//! | `xpass` | a passing testcase whose `<system-out>` starts with a note that it was expected to fail: it did not break anything, yet the stale expectation should be visible |
//! | output, agent, attempts, log and artifact links | the case's `<system-out>` |
//!
//! Times are seconds with three decimals; timestamps are UTC in the zone-less form
//! Ant writes (`2024-05-01T12:00:00`), which every consumer parses. Text is cleaned
//! of characters XML 1.0 forbids and of terminal escape sequences, then escaped;
//! line breaks in attributes are written as character references so they survive
//! attribute-value normalization.
//!
//! The output validates against the Jenkins xUnit plugin's `junit-10.xsd`
//! (vendored under `tests/schemas/`) and the project's stricter schema.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;

use chrono::{DateTime, Utc};
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use quick_xml::Writer;

use crate::model::{Case, Outcome, Report, Suite};
use crate::text::{clean, first_line, one_line, secs};
use crate::view::{self, View};
use crate::ReportError;

type XmlWriter<'a> = Writer<&'a mut dyn io::Write>;

/// The report as a JUnit XML document.
///
/// Returns `Err` only if quick-xml's writer fails, which it does not when writing
/// to memory; the `Result` is there because its API is built on `io::Write`.
pub fn to_junit(report: &Report) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    write_junit(report, &mut bytes)?;
    // Only `&str` went in, so this is UTF-8; stay lossy rather than fail if not.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Writes any [`View`] of a report as a JUnit XML document, case by case.
pub fn write_junit<V: View>(v: &V, w: &mut dyn io::Write) -> io::Result<()> {
    let mut xw = Writer::new_with_indent(w, b' ', 2);
    write_report(&mut xw, v)?;
    xw.into_inner().write_all(b"\n")
}

fn write_report<V: View>(w: &mut XmlWriter<'_>, v: &V) -> io::Result<()> {
    let report = v.head();
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let sum = view::summary(v);
    let mut root = BytesStart::new("testsuites");
    attr(&mut root, "name", &report.name);
    attr(&mut root, "tests", &sum.total.to_string());
    attr(&mut root, "failures", &sum.failed.to_string());
    attr(&mut root, "errors", &sum.errors.to_string());
    // No `skipped` here: the Jenkins xUnit plugin's JUnit schema has none on
    // <testsuites> and refuses the whole file over it. Each <testsuite>
    // carries its own, which is what GitLab and Jenkins' JUnit plugin read.
    attr(&mut root, "time", &secs(sum.duration_ms));
    if report.suites.is_empty() {
        w.write_event(Event::Empty(root))?;
        return Ok(());
    }
    w.write_event(Event::Start(root))?;
    for (index, suite) in report.suites.iter().enumerate() {
        write_suite(w, v, index, suite)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    Ok(())
}

fn write_suite<V: View>(
    w: &mut XmlWriter<'_>,
    v: &V,
    index: usize,
    suite: &Suite,
) -> io::Result<()> {
    let report = v.head();
    let sum = view::suite_summary(v, index);
    let display = suite.display_name();
    let mut start = BytesStart::new("testsuite");
    attr(&mut start, "name", &display);
    attr(&mut start, "id", &index.to_string());
    if let Some(platform) = suite.platform.as_deref().filter(|p| !p.is_empty()) {
        attr(&mut start, "hostname", platform);
    }
    if let Some(t) = suite.started_at {
        attr(&mut start, "timestamp", &timestamp(t));
    }
    attr(&mut start, "tests", &sum.total.to_string());
    attr(&mut start, "failures", &sum.failed.to_string());
    attr(&mut start, "errors", &sum.errors.to_string());
    attr(
        &mut start,
        "skipped",
        &(sum.skipped + sum.xfailed).to_string(),
    );
    attr(&mut start, "time", &secs(sum.duration_ms));

    let mut properties: BTreeMap<&str, &str> = report
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    properties.extend(
        suite
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if let Some(platform) = suite.platform.as_deref() {
        properties.insert("platform", platform);
    }
    let diagnostics = suite.diagnostics.join("\n");

    if properties.is_empty() && v.case_count(index) == 0 && diagnostics.is_empty() {
        return w.write_event(Event::Empty(start));
    }
    w.write_event(Event::Start(start))?;
    // The schema wants at least one <property> inside <properties>.
    if !properties.is_empty() {
        w.write_event(Event::Start(BytesStart::new("properties")))?;
        for (name, value) in properties {
            let mut p = BytesStart::new("property");
            attr(&mut p, "name", name);
            attr(&mut p, "value", value);
            w.write_event(Event::Empty(p))?;
        }
        w.write_event(Event::End(BytesEnd::new("properties")))?;
    }
    let classname = display.replace('.', "_");
    for i in 0..v.case_count(index) {
        if v.is_bare(index, i) {
            let mut start = BytesStart::new("testcase");
            attr(&mut start, "name", &one_line(v.case_name(index, i)));
            attr(&mut start, "classname", &classname);
            w.write_event(Event::Empty(start))?;
        } else {
            write_case(w, &classname, &v.case(index, i))?;
        }
    }
    if !diagnostics.is_empty() {
        text_element(w, "system-out", &diagnostics)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))
}

fn write_case(w: &mut XmlWriter<'_>, classname: &str, case: &Case) -> io::Result<()> {
    let mut start = BytesStart::new("testcase");
    attr(&mut start, "name", &one_line(&case.name));
    attr(&mut start, "classname", classname);
    // Optional in both schemas, and 13 bytes of nothing on each of a million
    // passing cases: a case without a measured duration goes without.
    if case.duration_ms > 0 {
        attr(&mut start, "time", &secs(case.duration_ms));
    }

    let message = case.message.as_deref().unwrap_or("");
    let out = system_out(case);
    let has_child = matches!(
        case.outcome,
        Outcome::Fail | Outcome::Error | Outcome::Skip | Outcome::Xfail
    ) || !out.is_empty();
    if !has_child {
        return w.write_event(Event::Empty(start));
    }
    w.write_event(Event::Start(start))?;
    match case.outcome {
        Outcome::Fail | Outcome::Error => {
            let (tag, kind) = if case.outcome == Outcome::Fail {
                ("failure", "failure")
            } else {
                ("error", "error")
            };
            let mut el = BytesStart::new(tag);
            if !message.is_empty() {
                attr(&mut el, "message", first_line(&clean(message)));
            }
            attr(&mut el, "type", kind);
            if message.is_empty() {
                w.write_event(Event::Empty(el))?;
            } else {
                w.write_event(Event::Start(el))?;
                w.write_event(Event::Text(text(message)))?;
                w.write_event(Event::End(BytesEnd::new(tag)))?;
            }
        }
        Outcome::Skip | Outcome::Xfail => {
            let mut el = BytesStart::new("skipped");
            let reason = one_line(message);
            let shown = match (case.outcome, reason.is_empty()) {
                (Outcome::Xfail, true) => "expected failure".to_string(),
                (Outcome::Xfail, false) => format!("expected failure: {reason}"),
                _ => reason,
            };
            if !shown.is_empty() {
                attr(&mut el, "message", &shown);
            }
            w.write_event(Event::Empty(el))?;
        }
        Outcome::Pass | Outcome::Xpass => {}
    }
    if !out.is_empty() {
        text_element(w, "system-out", &out)?;
    }
    w.write_event(Event::End(BytesEnd::new("testcase")))
}

/// What goes to a case's `<system-out>`: notes the JUnit schema has no place for,
/// then the output excerpt.
fn system_out(case: &Case) -> String {
    let mut notes = Vec::new();
    if case.outcome == Outcome::Xpass {
        let reason = one_line(case.message.as_deref().unwrap_or(""));
        notes.push(if reason.is_empty() {
            "unexpected pass (xpass): this test is expected to fail but passed".to_string()
        } else {
            format!("unexpected pass (xpass): this test is expected to fail ({reason}) but passed")
        });
    }
    if case.attempts > 1 {
        notes.push(format!("attempts: {}", case.attempts));
    }
    if let Some(agent) = &case.agent {
        notes.push(format!("agent: {agent}"));
    }
    if let Some(url) = &case.log_url {
        notes.push(format!("log: {url}"));
    }
    for link in &case.artifacts {
        notes.push(format!("artifact {}: {}", link.name, link.url));
    }
    let mut out = notes.join("\n");
    if let Some(output) = case.output.as_deref().filter(|o| !o.is_empty()) {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(output);
    }
    out
}

fn text_element(w: &mut XmlWriter<'_>, tag: &str, content: &str) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(tag)))?;
    w.write_event(Event::Text(text(content)))?;
    w.write_event(Event::End(BytesEnd::new(tag)))
}

fn text(content: &str) -> BytesText<'static> {
    BytesText::from_escaped(escape(content, false))
}

/// Adds an attribute, escaped by us: quick-xml's own escaping leaves line breaks
/// and tabs as they are, and parsers turn those into spaces in attribute values.
fn attr(el: &mut BytesStart<'_>, name: &str, value: &str) {
    el.push_attribute(Attribute {
        key: QName(name.as_bytes()),
        value: Cow::Owned(escape(value, true).into_bytes()),
    });
}

fn escape(raw: &str, in_attribute: bool) -> String {
    let cleaned = clean(raw);
    let mut out = String::with_capacity(cleaned.len());
    for c in cleaned.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if in_attribute => out.push_str("&quot;"),
            // Parsers turn a literal CR (or CRLF) into LF; a reference survives.
            '\r' => out.push_str("&#13;"),
            '\n' if in_attribute => out.push_str("&#10;"),
            '\t' if in_attribute => out.push_str("&#9;"),
            _ => out.push(c),
        }
    }
    out
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}
