//! JUnit XML: valid against the schema (checked by the real `xmllint`), and what a
//! consumer reads back is what the model said.

use crate::common;

use std::path::Path;

use quick_xml::escape::unescape;
use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use testbed_report::{to_junit, Outcome, Report, Suite};

/// The project's own schema: the structure CI tools enforce plus stricter
/// value types (integer counts, decimal seconds, xs:dateTime timestamps).
const XSD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/junit.xsd");
/// The Jenkins xUnit plugin's JUnit schema, vendored verbatim (see
/// tests/schemas/README.md): one nobody on this project wrote, and the one
/// that plugin refuses files with.
const JENKINS_XUNIT_XSD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/schemas/jenkins-xunit-junit-10.xsd"
);

/// `xmllint --schema` over `xml`: whether it passed, and xmllint's words.
fn xmllint(xsd: &str, xml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.xml");
    std::fs::write(&file, xml).unwrap();
    let out = common::run(
        "xmllint",
        &["--noout", "--schema", xsd, file.to_str().unwrap()],
        "install Debian's libxml2-utils (scripts/test installs it before running the tests)",
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Validates `xml` against both schemas, failing the test with xmllint's words.
fn assert_valid(xml: &str) {
    for xsd in [XSD, JENKINS_XUNIT_XSD] {
        let (ok, words) = xmllint(xsd, xml);
        assert!(
            ok,
            "xmllint rejected the report against {xsd}:\n{words}\n--- report ---\n{xml}"
        );
    }
}

#[test]
fn both_schemas_refuse_skipped_on_testsuites() {
    // The attribute the writer once put on the root: a schema that let it
    // through would not be checking what Jenkins xUnit checks.
    let xml = "<?xml version=\"1.0\"?>\n<testsuites name=\"r\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"1\" time=\"0.001\"><testsuite name=\"s\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"1\" time=\"0.001\"><testcase name=\"c\" classname=\"s\" time=\"0.001\"><skipped message=\"m\"/></testcase></testsuite></testsuites>\n";
    for xsd in [XSD, JENKINS_XUNIT_XSD] {
        let (ok, words) = xmllint(xsd, xml);
        assert!(!ok, "{xsd} accepted skipped on <testsuites>");
        assert!(words.contains("skipped"), "{words}");
        // Without it, the same document is valid.
        let (ok, words) = xmllint(xsd, &xml.replacen(" skipped=\"1\"", "", 1));
        assert!(ok, "{xsd}: {words}");
    }
}

/// An element as a consumer sees it: name, unescaped attributes, unescaped text.
#[derive(Debug, Default, Clone)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    fn all(&self, name: &str) -> Vec<&Element> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
}

fn parse(xml: &str) -> Element {
    let mut reader = Reader::from_str(xml);
    let mut stack = vec![Element::default()];
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => stack.push(element(&e)),
            Event::Empty(e) => {
                let el = element(&e);
                stack.last_mut().unwrap().children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(el);
            }
            Event::Text(t) => {
                let text = t.xml_content(XmlVersion::Implicit1_0).unwrap();
                stack.last_mut().unwrap().text.push_str(&text);
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => unescape(&format!("&{};", r.decode().unwrap()))
                        .unwrap()
                        .into_owned(),
                };
                stack.last_mut().unwrap().text.push_str(&text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut root = stack.pop().unwrap();
    assert_eq!(root.children.len(), 1);
    root.children.remove(0)
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> Element {
    Element {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        attrs: e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.normalized_value(XmlVersion::Implicit1_0)
                        .unwrap()
                        .into_owned(),
                )
            })
            .collect(),
        ..Element::default()
    }
}

#[test]
fn rich_report_is_valid_junit() {
    assert_valid(&to_junit(&common::rich_report()).unwrap());
}

#[test]
fn empty_reports_and_suites_are_valid() {
    let mut report = Report::new("e", "empty", common::t(0));
    assert_valid(&to_junit(&report).unwrap());
    report.suites.push(Suite::new("nothing"));
    let xml = to_junit(&report).unwrap();
    assert_valid(&xml);
    let root = parse(&xml);
    assert_eq!(root.all("testsuite").len(), 1);
    assert_eq!(root.all("testsuite")[0].attr("tests"), Some("0"));
}

#[test]
fn each_outcome_alone_is_valid() {
    for outcome in Outcome::ALL {
        for message in [None, Some("why <not>")] {
            let mut report = Report::new("o", "one", common::t(0));
            let mut suite = Suite::new("s");
            let mut c = common::case("c", outcome, 1);
            c.message = message.map(str::to_string);
            suite.cases.push(c);
            report.suites.push(suite);
            assert_valid(&to_junit(&report).unwrap());
        }
    }
}

#[test]
fn counts_and_structure() {
    let report = common::rich_report();
    let root = parse(&to_junit(&report).unwrap());
    assert_eq!(root.name, "testsuites");
    assert_eq!(root.attr("name"), Some(report.name.as_str()));
    assert_eq!(root.attr("tests"), Some("9"));
    assert_eq!(root.attr("failures"), Some("1"));
    assert_eq!(root.attr("errors"), Some("1"));
    // Skips are counted per suite only: the Jenkins xUnit schema has no
    // `skipped` on <testsuites> (consumers add up the suites' counts).
    assert_eq!(root.attr("skipped"), None);
    let skipped: usize = root
        .all("testsuite")
        .iter()
        .map(|s| s.attr("skipped").unwrap().parse::<usize>().unwrap())
        .sum();
    // skip + xfail (basic), skip (iscsi)
    assert_eq!(skipped, 3);
    assert_eq!(root.attr("time"), Some("30.000"));

    let suites = root.all("testsuite");
    assert_eq!(suites.len(), 4);
    let basic = suites[0];
    assert_eq!(basic.attr("name"), Some("t/basic.t [linux-x86_64]"));
    assert_eq!(basic.attr("hostname"), Some("linux-x86_64"));
    assert_eq!(basic.attr("id"), Some("0"));
    assert_eq!(basic.attr("timestamp"), Some("2024-05-01T12:00:01"));
    assert_eq!(
        [
            basic.attr("tests"),
            basic.attr("failures"),
            basic.attr("errors"),
            basic.attr("skipped")
        ],
        [Some("6"), Some("1"), Some("1"), Some("2")]
    );
    assert_eq!(basic.attr("time"), Some("4.000"));
    let props: Vec<(&str, &str)> = basic
        .child("properties")
        .unwrap()
        .all("property")
        .iter()
        .map(|p| (p.attr("name").unwrap(), p.attr("value").unwrap()))
        .collect();
    assert_eq!(
        props,
        [
            ("driver", "qemu"),
            ("environment", "lab <a> & \"b\"\nsecond line"),
            ("platform", "linux-x86_64"),
            ("run", "42"),
        ]
    );
    assert!(basic
        .child("system-out")
        .unwrap()
        .text
        .contains("unknown line: garbagehere"));

    let cases = basic.all("testcase");
    assert_eq!(cases.len(), 6);
    assert_eq!(
        cases[0].attr("name"),
        Some("connects <ok> & \"quoted\" 'single' # not a directive")
    );
    assert_eq!(cases[0].attr("classname"), Some("t/basic_t [linux-x86_64]"));
    assert_eq!(cases[0].attr("time"), Some("1.200"));
    assert!(cases[0].child("failure").is_none() && cases[0].child("skipped").is_none());

    let failure = cases[1].child("failure").unwrap();
    assert_eq!(failure.attr("message"), Some("expected 3 domains, got 2"));
    assert_eq!(failure.attr("type"), Some("failure"));
    assert!(failure
        .text
        .contains("at t/basic.t line 12\n\nblank line above"));
    let out = &cases[1].child("system-out").unwrap().text;
    assert!(out.contains("attempts: 2"));
    assert!(out.contains("log: logs/basic.txt"));
    assert!(out.contains("artifact core dump: https://blobs.example/core?a=1&b=2"));
    assert!(out.contains("line one\n"));
    assert!(
        out.contains("binaryred"),
        "control bytes and colours stripped: {out:?}"
    );
    assert!(
        out.contains('\u{fffd}'),
        "invalid UTF-8 shows as replacement characters"
    );
    assert!(
        !out.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
        "{out:?}"
    );

    assert_eq!(cases[2].attr("name"), Some("<script>alert('x')</script>"));
    let error = cases[2].child("error").unwrap();
    assert_eq!(error.attr("message"), Some("agent lost: connection reset"));
    assert_eq!(error.attr("type"), Some("error"));

    assert_eq!(
        cases[3].child("skipped").unwrap().attr("message"),
        Some("no iscsi-server configured")
    );
    assert_eq!(
        cases[4].child("skipped").unwrap().attr("message"),
        Some("expected failure: bug #123: hangs on ARM")
    );
    assert!(cases[5].child("skipped").is_none() && cases[5].child("failure").is_none());
    assert!(cases[5]
        .child("system-out")
        .unwrap()
        .text
        .starts_with("unexpected pass (xpass)"));

    let empty = suites[2];
    assert_eq!(empty.attr("tests"), Some("0"));
    assert!(empty.all("testcase").is_empty());
    assert!(empty.attr("hostname").is_none());
}

#[test]
fn no_illegal_characters_reach_the_document() {
    let xml = to_junit(&common::rich_report()).unwrap();
    assert!(!xml
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')));
    assert!(
        !xml.contains('\r'),
        "carriage returns are written as references"
    );
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    // Well-formed for a strict parser too (xmllint without the schema).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.xml");
    std::fs::write(&file, &xml).unwrap();
    let out = common::run(
        "xmllint",
        &["--noout", file.to_str().unwrap()],
        "install libxml2-utils (see scripts/test)",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(XSD).exists());
}
