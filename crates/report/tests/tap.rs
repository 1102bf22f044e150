//! TAP 13: what Perl's own `TAP::Parser` (the parser behind `prove`) reads from the
//! rendered stream.

use crate::common;

use std::collections::BTreeMap;

use testbed_report::{to_tap, Outcome, Report, Suite};

/// Parses `tap` with `TAP::Parser` and returns its verdict as `key => value`;
/// `yaml` holds the `message` of every YAML block, joined by `|`.
fn perl_parse(tap: &str) -> BTreeMap<String, String> {
    const SCRIPT: &str = r#"
        use strict; use warnings;
        local $/; open my $fh, '<:raw', $ARGV[0] or die $!; my $tap = <$fh>;
        my $p = TAP::Parser->new({ tap => $tap });
        my (@yaml, @unknown, @descriptions);
        while (my $r = $p->next) {
            if ($r->is_yaml) {
                my $d = $r->data;
                die "YAML is not a mapping\n" unless ref $d eq 'HASH';
                my $m = defined $d->{message} ? $d->{message} : '';
                $m =~ s/\n/\\n/g;
                push @yaml, $m . (defined $d->{output} ? '+output' : '');
            }
            push @unknown, $r->as_string if $r->is_unknown;
            push @descriptions, $r->description if $r->is_test;
        }
        printf "%s=%s\n", $_->[0], $_->[1] for (
            [version => $p->version],
            [planned => $p->tests_planned // ''],
            [run => $p->tests_run],
            [passed => scalar $p->passed],
            [failed => scalar $p->failed],
            [todo => scalar $p->todo],
            [todo_passed => scalar $p->todo_passed],
            [skipped => scalar $p->skipped],
            [skip_all => $p->skip_all // ''],
            [good_plan => $p->is_good_plan ? 1 : 0],
            [parse_errors => join(' | ', $p->parse_errors)],
            [yaml => join('|', @yaml)],
            [unknown => scalar @unknown],
            [descriptions => join('|', @descriptions)],
        );
    "#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.tap");
    std::fs::write(&file, tap).unwrap();
    let out = common::run(
        "perl",
        &["-MTAP::Parser", "-e", SCRIPT, file.to_str().unwrap()],
        "perl with TAP::Parser is needed",
    );
    assert!(
        out.status.success(),
        "TAP::Parser died: {}\n--- TAP ---\n{tap}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(m: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    m.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {key} in {m:?}"))
}

fn assert_counts(m: &BTreeMap<String, String>, expected: [(&str, &str); 7], tap: &str) {
    for (key, value) in expected {
        assert_eq!(get(m, key), value, "{key} in {m:?}\n--- TAP ---\n{tap}");
    }
    assert_eq!(get(m, "parse_errors"), "", "--- TAP ---\n{tap}");
    assert_eq!(get(m, "good_plan"), "1");
    assert_eq!(get(m, "version"), "13");
}

#[test]
fn flat_stream_counts_match() {
    let tap = to_tap(&common::single_suite());
    assert!(tap.starts_with("TAP version 13\n"));
    assert!(!tap.contains("Subtest"), "one suite is written flat");
    let m = perl_parse(&tap);
    // pass, fail, error, skip, xfail (not ok # TODO), xpass (ok # TODO)
    assert_counts(
        &m,
        [
            ("planned", "6"),
            ("run", "6"),
            ("passed", "4"), // pass, skip, xfail and xpass are "ok" to TAP
            ("failed", "2"),
            ("todo", "2"),
            ("todo_passed", "1"),
            ("skipped", "1"),
        ],
        &tap,
    );
    assert_eq!(get(&m, "unknown"), "0", "{tap}");
    // The failure's YAML carries the multi-line message and the output; the error's too.
    assert_eq!(
        get(&m, "yaml"),
        "expected 3 domains, got 2\\n  at t/basic.t line 12\\n\\nblank line above\\n+output|agent lost: connection reset"
    );
    // `#` in a name is escaped, so it is not read as a directive.
    let first = get(&m, "descriptions").split('|').next().unwrap();
    assert_eq!(
        first,
        r#"- connects <ok> & "quoted" 'single' \# not a directive"#
    );
}

#[test]
fn flat_stream_lines() {
    let tap = to_tap(&common::single_suite());
    for line in [
        "1..6",
        "ok 1 - connects <ok> & \"quoted\" 'single' \\# not a directive",
        "not ok 2 - lists domains",
        "  outcome: \"fail\"",
        "  duration_ms: 800",
        "  agent: \"agent-1\"",
        "  attempts: 2",
        "not ok 3 - <script>alert('x')</script>",
        "ok 4 - needs iscsi # SKIP no iscsi-server configured",
        "not ok 5 - known broken # TODO bug #123: hangs on ARM",
        "ok 6 - fixed upstream # TODO bug #99",
    ] {
        assert!(tap.lines().any(|l| l == line), "missing {line:?} in\n{tap}");
    }
    assert!(!tap.chars().any(|c| c.is_control() && c != '\n'), "{tap:?}");
}

#[test]
fn subtests_per_suite() {
    let report = common::rich_report();
    let tap = to_tap(&report);
    let m = perl_parse(&tap);
    // One parent test point per suite: basic fails; network passes; the empty and
    // the skipped suites are skipped.
    assert_counts(
        &m,
        [
            ("planned", "4"),
            ("run", "4"),
            ("passed", "3"),
            ("failed", "1"),
            ("todo", "0"),
            ("todo_passed", "0"),
            ("skipped", "2"),
        ],
        &tap,
    );
    for line in [
        "    # Subtest: t/basic.t [linux-x86_64]",
        "not ok 1 - t/basic.t [linux-x86_64]",
        "ok 2 - t/network.t [linux-aarch64]",
        "ok 3 - t/empty.t # SKIP no tests",
        "    1..0 # SKIP no tests",
        "ok 4 - t/iscsi.t # SKIP no iscsi-server",
    ] {
        assert!(tap.lines().any(|l| l == line), "missing {line:?} in\n{tap}");
    }

    // Each subtest, taken out and un-indented, is a valid TAP stream of its own.
    let blocks = subtests(&tap);
    assert_eq!(blocks.len(), 4);
    let basic = perl_parse(&blocks[0]);
    assert_counts(
        &basic,
        [
            ("planned", "6"),
            ("run", "6"),
            ("passed", "4"),
            ("failed", "2"),
            ("todo", "2"),
            ("todo_passed", "1"),
            ("skipped", "1"),
        ],
        &blocks[0],
    );
    let network = perl_parse(&blocks[1]);
    assert_counts(
        &network,
        [
            ("planned", "2"),
            ("run", "2"),
            ("passed", "2"),
            ("failed", "0"),
            ("todo", "0"),
            ("todo_passed", "0"),
            ("skipped", "0"),
        ],
        &blocks[1],
    );
    let empty = perl_parse(&blocks[2]);
    assert_eq!(get(&empty, "skip_all"), "no tests");
    assert_eq!(get(&empty, "parse_errors"), "");
}

/// The subtests of a stream, each un-indented and headed by a version line.
fn subtests(tap: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in tap.lines() {
        if line.starts_with("    # Subtest: ") {
            current = Some("TAP version 13\n".to_string());
        } else if let Some(indented) = line.strip_prefix("    ") {
            if let Some(block) = current.as_mut() {
                block.push_str(indented);
                block.push('\n');
            }
        } else if line.starts_with("ok ") || line.starts_with("not ok ") {
            if let Some(block) = current.take() {
                blocks.push(block);
            }
        }
    }
    blocks
}

#[test]
fn empty_report_is_a_skip_all() {
    let tap = to_tap(&Report::new("e", "empty", common::t(0)));
    let m = perl_parse(&tap);
    assert_eq!(get(&m, "skip_all"), "no tests");
    assert_eq!(get(&m, "parse_errors"), "");
    let mut one_empty = Report::new("e", "empty", common::t(0));
    one_empty.suites.push(Suite::new("nothing"));
    let m = perl_parse(&to_tap(&one_empty));
    assert_eq!(get(&m, "skip_all"), "no tests");
}

#[test]
fn awkward_text_in_yaml_survives() {
    let mut report = Report::new("y", "yaml", common::t(0));
    let mut suite = Suite::new("s");
    let texts = [
        "plain",
        "with \"quotes\" and \\ backslash: and # hash",
        "  starts with spaces\nthen more",
        "multi\n\n\nline with blank lines\n  indented\n...\n---\nend",
        "tabs\tinside\nand\r\nCRLF",
        "",
        "trailing newline\n",
        "unicode ✓ ünïcödé",
    ];
    for (i, text) in texts.iter().enumerate() {
        let mut c = common::case(&format!("case {i}"), Outcome::Fail, 1);
        c.message = Some(text.to_string());
        c.output = Some(common::binary_output());
        suite.cases.push(c);
    }
    report.suites.push(suite);
    let tap = to_tap(&report);
    let m = perl_parse(&tap);
    assert_eq!(get(&m, "parse_errors"), "", "{tap}");
    assert_eq!(get(&m, "failed"), texts.len().to_string());
    assert_eq!(get(&m, "unknown"), "0", "{tap}");
    let messages: Vec<&str> = get(&m, "yaml").split('|').collect();
    assert_eq!(messages.len(), texts.len(), "{tap}");
    assert_eq!(messages[0], "plain+output");
    assert_eq!(
        messages[1],
        "with \"quotes\" and \\ backslash: and # hash+output"
    );
    assert_eq!(messages[2], "  starts with spaces\\nthen more+output");
    assert!(
        messages[3]
            .starts_with("multi\\n\\n\\nline with blank lines\\n  indented\\n...\\n---\\nend"),
        "{}",
        messages[3]
    );
    assert_eq!(messages[7], "unicode ✓ ünïcödé+output");
}
