// The body of every fuzz target, one function each. Included (not a crate)
// by the fuzz targets and by crates/cli/tests/fuzz_corpus.rs, which replays
// the seeds and every input that once crashed a target as a regular test.
// Each panics when a property is broken; "no panic, no hang" is the rest.

use quick_xml::events::Event;
use quick_xml::Reader;
use testbed_core::protocol::{AgentMessage, ServerMessage};
use testbed_report::Report;
use testbed_tap::{Parser, ScriptExit};

/// The targets, by name, as `scripts/fuzz` and the corpus directories call them.
pub const TARGETS: [&str; 6] = [
    "plan",
    "api_suite",
    "postman",
    "tap",
    "junit",
    "agent_message",
];

/// Runs target `name` on one input.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "plan" => plan(data),
        "api_suite" => api_suite(data),
        "postman" => postman(data),
        "tap" => tap(data),
        "junit" => junit(data),
        "agent_message" => agent_message(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Plans as posted to `/api/plans`: the bounded YAML loader, then the checks.
pub fn plan(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        yaml_limits_hold(text);
        if let Err(mut problems) = testbed_core::plan::parse(text) {
            testbed_core::plan::locate(text, &mut problems);
        }
    }
}

/// The loader's pre-scan (yaml-rust2) and the real parse (serde_norway, on
/// libyaml) are different parsers: whatever passes the pre-scan must really
/// be as small as it said once serde_norway has built it. Small limits, so
/// the fuzzer reaches them with small inputs.
fn yaml_limits_hold(text: &str) {
    use testbed_core::yaml::{check, Limits};
    let limits = Limits {
        max_bytes: 16 * 1024,
        max_depth: 12,
        max_aliases: 40,
        max_nodes: 400,
        max_scalar_bytes: 2048,
    };
    if check(text, &limits).is_err() {
        return;
    }
    let Ok(v) = serde_norway::from_str::<serde_json::Value>(text) else {
        return;
    };
    // (nodes, depth, string bytes) of the built value; keys count as nodes.
    fn size(v: &serde_json::Value, depth: usize) -> (u64, usize, u64) {
        match v {
            serde_json::Value::Array(a) => a.iter().fold((1, depth + 1, 0), |acc, x| {
                let (n, d, b) = size(x, depth + 1);
                (acc.0 + n, acc.1.max(d), acc.2 + b)
            }),
            serde_json::Value::Object(m) => m.iter().fold((1, depth + 1, 0), |acc, (k, x)| {
                let (n, d, b) = size(x, depth + 1);
                (acc.0 + n + 1, acc.1.max(d), acc.2 + b + k.len() as u64)
            }),
            serde_json::Value::String(s) => (1, depth, s.len() as u64),
            _ => (1, depth, 0),
        }
    }
    let (nodes, depth, bytes) = size(&v, 0);
    assert!(
        nodes <= limits.max_nodes,
        "pre-scan passed, value has {nodes} nodes: {text:?}"
    );
    assert!(
        depth <= limits.max_depth,
        "pre-scan passed, value is {depth} deep: {text:?}"
    );
    assert!(
        bytes <= limits.max_scalar_bytes,
        "pre-scan passed, value has {bytes} bytes of text: {text:?}"
    );
}

/// API test suites (YAML), as an agent receives them in a plan step.
pub fn api_suite(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        // A directory that does not exist: relative side files are not read.
        let _ =
            testbed_apitest::suite::parse(text, std::path::Path::new("/nonexistent/suite.yaml"));
    }
}

/// Postman collections (JSON): shape checks and problem location.
pub fn postman(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = testbed_apitest::postman::collection::load(text);
    }
}

/// TAP output of a test kit (with YAML diagnostics), whole and fed in chunks
/// as the harness reads it from a pipe.
pub fn tap(data: &[u8]) {
    let whole = Parser::parse_str(&String::from_utf8_lossy(data));
    let _ = whole.is_ok();
    let mut p = Parser::new();
    // The first byte picks a chunk size, so chunk boundaries are fuzzed too.
    let (size, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => (1, data),
    };
    for chunk in rest.chunks(size) {
        p.push(chunk);
    }
    let _ = p.finish().into_suite("fuzz", &ScriptExit::Code(1));
}

/// JUnit: Testbed writes it (it reads none) from untrusted test output, so
/// this drives that path — TAP text into a report, the report as JUnit XML —
/// and requires well-formed XML. Reports also arrive as JSON from agents
/// (input starting with `{`): parsed and rendered the same way.
pub fn junit(data: &[u8]) {
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
}

fn well_formed(xml: &str) {
    let mut r = Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    loop {
        match r.read_event() {
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("JUnit output is not well-formed XML ({e}): {xml}"),
        }
    }
    let forbidden = |c: char| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}');
    assert!(
        !xml.chars().any(forbidden),
        "JUnit output holds characters XML 1.0 forbids: {xml:?}"
    );
}

/// Agent protocol messages (JSON over the WebSocket), both directions:
/// whatever parses must serialize and parse back equal.
pub fn agent_message(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<AgentMessage>(data) {
        let again = serde_json::to_vec(&m).expect("an agent message serializes");
        let back =
            serde_json::from_slice::<AgentMessage>(&again).expect("an agent message parses back");
        assert_eq!(m, back, "an agent message round-trips");
    }
    if let Ok(m) = serde_json::from_slice::<ServerMessage>(data) {
        let again = serde_json::to_vec(&m).expect("a server message serializes");
        let back =
            serde_json::from_slice::<ServerMessage>(&again).expect("a server message parses back");
        assert_eq!(m, back, "a server message round-trips");
    }
}
