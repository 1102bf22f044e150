//! JUnit: Testbed writes it (it reads none) from untrusted test output, so the
//! target drives that path — TAP text into a report, the report as JUnit XML —
//! and requires the XML to be well-formed. Reports also arrive as JSON from
//! agents: those are parsed and rendered the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quick_xml::events::Event;
use quick_xml::Reader;
use testbed_report::Report;
use testbed_tap::{Parser, ScriptExit};

fn well_formed(xml: &str) {
    let mut r = Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    loop {
        match r.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Text(t)) => {
                if let Err(e) = t.decode() {
                    panic!("undecodable text {e}: {xml}");
                }
            }
            Ok(_) => {}
            Err(e) => panic!("JUnit output is not well-formed XML ({e}): {xml}"),
        }
    }
    assert!(
        !xml.chars().any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')),
        "JUnit output holds characters XML 1.0 forbids: {xml:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if data.first() == Some(&b'{') {
        if let Ok(report) = testbed_report::from_json(&text) {
            if let Ok(xml) = testbed_report::to_junit(&report) {
                well_formed(&xml);
            }
            let _ = testbed_report::to_tap(&report);
            let _ = testbed_report::to_html(&report);
        }
        return;
    }
    let suite = Parser::parse_str(&text).into_suite("fuzz <&\"'>", &ScriptExit::Code(0));
    let mut report = Report::new("fuzz", "fuzz", chrono::DateTime::UNIX_EPOCH);
    report.suites.push(suite);
    if let Ok(xml) = testbed_report::to_junit(&report) {
        well_formed(&xml);
    }
});
