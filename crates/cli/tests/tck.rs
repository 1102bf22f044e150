//! End-to-end tests of `testbed tck` against real TAP producers: Perl's
//! Test::More (judged against `prove` itself), Python, Node's test runner, and
//! deliberately bad scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testbed_report::{Outcome, Report, Suite};

const SCRIPT: &str = "(script)";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tck")
}

fn testbed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .env("TESTBED_LOG", "error")
        .output()
        .expect("running testbed")
}

/// A path as a command-line argument.
fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `tck run` with `args` plus `--json`, returning the exit code, the report
/// and the printed output.
fn run_kit(args: &[&str]) -> (i32, Report, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let mut all = vec!["tck", "run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", arg(&json)]);
    let out = testbed(&all);
    if let Ok(meta) = std::fs::metadata(&json) {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o644,
            "a report is readable by all"
        );
    }
    let report = testbed_report::from_json(
        &std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("no JSON report ({e}); output:\n{}", text(&out))),
    )
    .unwrap();
    (out.status.code().unwrap_or(-1), report, text(&out))
}

fn suite<'a>(r: &'a Report, name: &str) -> &'a Suite {
    r.suites.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no suite {name} in {:?}",
            r.suites.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

fn outcome(s: &Suite, case: &str) -> Outcome {
    s.cases
        .iter()
        .find(|c| c.name == case)
        .unwrap_or_else(|| panic!("no case {case:?} in {}: {:?}", s.name, s.cases))
        .outcome
}

fn points(s: &Suite) -> impl Iterator<Item = &testbed_report::Case> {
    s.cases.iter().filter(|c| c.name != SCRIPT)
}

/// What `prove -v` says about a directory: Files, Tests, failing scripts with
/// their failed-test counts, and skipped test points plus skipped files.
struct Prove {
    files: usize,
    tests: usize,
    failing: BTreeMap<String, usize>,
    skips: usize,
}

fn prove(dir: &Path) -> Prove {
    let out = Command::new("prove")
        .arg("-v")
        .arg(".")
        .current_dir(dir)
        .output()
        .expect("prove must be installed (it comes with perl)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let totals = stdout
        .lines()
        .find(|l| l.starts_with("Files="))
        .unwrap_or_else(|| panic!("no Files= line:\n{stdout}"));
    let num = |key: &str| -> usize {
        let rest = &totals[totals.find(key).unwrap() + key.len()..];
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let mut failing = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_report = false;
    for line in stdout.lines() {
        if line.starts_with("Test Summary Report") {
            in_report = true;
            continue;
        }
        if !in_report {
            continue;
        }
        if let Some(idx) = line.find(" (Wstat: ") {
            let name = line[..idx].trim().trim_start_matches("./").to_string();
            let wstat: usize = line[idx + 9..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
            let failed: usize = line
                .rsplit("Failed: ")
                .next()
                .unwrap()
                .trim_end_matches(')')
                .parse()
                .unwrap();
            if wstat != 0 || failed > 0 {
                failing.insert(name.clone(), failed);
            }
            current = Some(name);
        } else if line.contains("Parse errors:") {
            if let Some(name) = &current {
                failing.entry(name.clone()).or_insert(0);
            }
        }
    }
    let skips = stdout
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.starts_with("ok ") && l.contains("# skip")) || l.contains(".. skipped:")
        })
        .count();
    Prove {
        files: num("Files="),
        tests: num("Tests="),
        failing,
        skips,
    }
}

#[test]
fn perl_counts_match_prove() {
    let dir = examples().join("perl");
    let p = prove(&dir);
    let (code, report, out) = run_kit(&[arg(&dir)]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(report.suites.len(), p.files, "{out}");
    let tests: usize = report.suites.iter().map(|s| points(s).count()).sum();
    assert_eq!(tests, p.tests, "Tests= differs from prove\n{out}");
    let failing: BTreeMap<String, usize> = report
        .suites
        .iter()
        .filter(|s| s.is_failure())
        .map(|s| {
            let n = points(s).filter(|c| c.outcome.is_failure()).count();
            (s.name.clone(), n)
        })
        .collect();
    assert_eq!(
        failing, p.failing,
        "failing scripts differ from prove\n{out}"
    );
    let skips = report
        .suites
        .iter()
        .flat_map(|s| s.cases.iter())
        .filter(|c| c.outcome == Outcome::Skip)
        .count();
    assert_eq!(skips, p.skips, "skips differ from prove\n{out}");
    let passes = report
        .suites
        .iter()
        .flat_map(points)
        .filter(|c| c.outcome == Outcome::Pass)
        .count();
    // 01:3, 02:2, 03:1, 04:1, 06:2, 08:1 (no kit config), 99:1
    assert_eq!(passes, 11, "{out}");

    let todo = suite(&report, "03-skip-todo.t");
    assert_eq!(outcome(todo, "hot-unplug disk"), Outcome::Xfail);
    assert_eq!(outcome(todo, "hot-unplug nic"), Outcome::Xpass);
    let skipped = &todo.cases[1];
    assert_eq!(skipped.outcome, Outcome::Skip);
    assert_eq!(
        skipped.message.as_deref(),
        Some("no bridge support on this host")
    );
    let dies = suite(&report, "06-dies.t");
    let msg = dies.cases.last().unwrap().message.clone().unwrap();
    assert!(
        msg.contains("planned 4 tests but ran 2") && msg.contains("255"),
        "{msg}"
    );
    let bail = suite(&report, "99-bail-out.t");
    assert!(bail
        .cases
        .last()
        .unwrap()
        .message
        .as_deref()
        .unwrap()
        .contains("hypervisor connection lost"));
    let sub = suite(&report, "04-subtests.t");
    assert_eq!(outcome(sub, "storage pool lifecycle"), Outcome::Pass);
    assert_eq!(outcome(sub, "volume upload"), Outcome::Fail);
    assert!(out.contains("Files=8"), "{out}");
}

#[test]
fn kit_config_resources_and_env() {
    let dir = examples().join("perl");
    let cfg = dir.join("kit.toml");
    let (_, report, out) = run_kit(&[
        arg(&dir.join("07-needs-iscsi.t")),
        arg(&dir.join("08-env.t")),
        "--config",
        arg(&cfg),
    ]);
    let iscsi = suite(&report, "07-needs-iscsi.t");
    assert_eq!(
        iscsi.skip_reason(),
        Some("no iscsi-server configured"),
        "{out}"
    );
    assert!(!suite(&report, "08-env.t").is_failure(), "{out}");
    assert_eq!(
        report.properties.get("platform").map(String::as_str),
        Some("test:///default")
    );
    assert_eq!(
        report.properties.get("label.driver").map(String::as_str),
        Some("test")
    );
    assert!(out.contains("skipped: no iscsi-server configured"), "{out}");

    // With the resource configured the same script runs its test.
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit.toml");
    std::fs::write(
        &kit,
        "platform = \"test:///default\"\n[resources]\niscsi-server = \"10.0.0.9\"\n",
    )
    .unwrap();
    std::fs::copy(dir.join("07-needs-iscsi.t"), tmp.path().join("iscsi.t")).unwrap();
    let (code, report, out) = run_kit(&[arg(tmp.path()), "--config", arg(&kit)]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        outcome(suite(&report, "iscsi.t"), "log in to 10.0.0.9"),
        Outcome::Pass
    );
}

#[test]
fn python_scripts_run_through_python3() {
    let (code, report, out) = run_kit(&[arg(&examples().join("python"))]);
    assert_eq!(code, 1, "{out}");
    let s = suite(&report, "test_basic.py");
    assert!(
        s.properties["command"].starts_with("python3 "),
        "{:?}",
        s.properties
    );
    let got: Vec<Outcome> = s.cases.iter().map(|c| c.outcome).collect();
    use Outcome::*;
    assert_eq!(got, vec![Pass, Fail, Skip, Xfail, Pass], "{out}");
    assert_eq!(s.cases[4].name, "interpreter python3");
}

#[test]
fn node_test_runner() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "this test needs Node.js (`node` on PATH) for its built-in TAP test runner"
    );
    let (code, report, out) = run_kit(&[arg(&examples().join("node"))]);
    assert_eq!(code, 1, "{out}");
    let s = suite(&report, "run-node.sh");
    assert_eq!(outcome(s, "adds"), Outcome::Pass);
    assert_eq!(outcome(s, "compares states"), Outcome::Fail);
    assert_eq!(outcome(s, "skipped"), Outcome::Skip);
    assert_eq!(outcome(s, "todo"), Outcome::Xfail);
    assert_eq!(outcome(s, "group"), Outcome::Pass);
    let failed = s
        .cases
        .iter()
        .find(|c| c.name == "compares states")
        .unwrap();
    assert!(
        failed
            .message
            .as_deref()
            .unwrap()
            .contains("strictly equal"),
        "{failed:?}"
    );
    assert!(s.diagnostics.is_empty(), "{:?}", s.diagnostics);
}

#[test]
fn known_broken_turns_failures_into_xfail_and_fixed_into_xpass() {
    let dir = examples().join("perl");
    let (code, report, out) = run_kit(&[
        arg(&dir.join("01-pass.t")),
        arg(&dir.join("02-fail.t")),
        "--config",
        arg(&dir.join("kit.toml")),
        "--expect",
        arg(&dir.join("known-broken.toml")),
    ]);
    assert_eq!(code, 0, "masked failures must not fail the run\n{out}");
    let fail = suite(&report, "02-fail.t");
    let broken = fail
        .cases
        .iter()
        .find(|c| c.name == "domain state after destroy")
        .unwrap();
    assert_eq!(broken.outcome, Outcome::Xfail);
    assert!(broken
        .message
        .as_deref()
        .unwrap()
        .contains("https://example.com/issues/17"));
    assert_eq!(
        outcome(suite(&report, "01-pass.t"), "arithmetic works"),
        Outcome::Xpass
    );
    assert!(out.contains("TODO passed"), "{out}");
}

#[test]
fn problems_exit_codes() {
    let dir = examples().join("perl");
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("r.json");
    let out = testbed(&[
        "tck",
        "run",
        arg(&dir.join("02-fail.t")),
        arg(&dir.join("06-dies.t")),
        "--config",
        arg(&dir.join("kit.toml")),
        "--json",
        arg(&json),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let expect = dir.join("known-broken.toml");
    let out = testbed(&["tck", "problems", arg(&json), "--expect", arg(&expect)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("06-dies.t"), "{t}");
    assert!(
        !t.contains("02-fail.t ::"),
        "02-fail.t is known broken:\n{t}"
    );

    // Only the known-broken script left: nothing to fix.
    let out = testbed(&[
        "tck",
        "run",
        arg(&dir.join("02-fail.t")),
        "--config",
        arg(&dir.join("kit.toml")),
        "--json",
        arg(&json),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = testbed(&["tck", "problems", arg(&json), "--expect", arg(&expect)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = testbed(&["tck", "problems", arg(&json), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["script"], "02-fail.t");
    let out = testbed(&["tck", "problems", arg(&json)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("02-fail.t :: domain state after destroy"),
        "{}",
        text(&out)
    );
}

fn write_script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn compare_detects_regression_and_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    std::fs::create_dir(&kit).unwrap();
    let a = tmp.path().join("a.json");
    let b = tmp.path().join("b.json");
    write_script(
        &kit,
        "s.sh",
        "echo 1..3; echo ok 1 - stable; echo ok 2 - breaks; echo not ok 3 - gets fixed\n",
    );
    run_kit_to(&kit, &a);
    write_script(
        &kit,
        "s.sh",
        "echo 1..3; echo ok 1 - stable; echo not ok 2 - breaks; echo ok 3 - gets fixed\n",
    );
    write_script(&kit, "t.sh", "echo 1..1; echo ok 1 - brand new\n");
    run_kit_to(&kit, &b);
    let out = testbed(&["tck", "compare", arg(&a), arg(&b)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("Regressions (1)") && t.contains("s.sh :: breaks  pass -> fail"),
        "{t}"
    );
    assert!(
        t.contains("Fixes (1)") && t.contains("s.sh :: gets fixed  fail -> pass"),
        "{t}"
    );
    assert!(
        t.contains("New tests (1)") && t.contains("t.sh :: brand new"),
        "{t}"
    );

    let out = testbed(&["tck", "compare", arg(&b), arg(&a), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["regressions"].as_array().unwrap().len(), 1);
    assert_eq!(v["removed"][0]["case"], "brand new");
    let out = testbed(&["tck", "compare", arg(&a), arg(&a), "--format", "html"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<html>"));
}

fn run_kit_to(kit: &Path, json: &Path) {
    let out = testbed(&["tck", "run", arg(kit), "--json", arg(json)]);
    assert!(json.exists(), "{}", text(&out));
}

#[test]
fn malformed_tap_becomes_diagnostics() {
    let bad = examples().join("bad/malformed.sh");
    let (code, report, out) = run_kit(&[arg(&bad)]);
    assert_eq!(code, 1, "numbering gaps fail a script, as in prove\n{out}");
    let s = suite(&report, "malformed.sh");
    let d = s.diagnostics.join("\n");
    assert!(d.contains("unrecognised line: \"this is not TAP\""), "{d}");
    assert!(d.contains("out of sequence"), "{d}");
    assert!(d.contains("invalid YAML"), "{d}");
}

#[test]
fn fifty_megabytes_of_garbage_complete() {
    let bad = examples().join("bad/garbage.sh");
    let started = Instant::now();
    let (_, report, out) = run_kit(&[arg(&bad), "--timeout", "120s"]);
    let s = suite(&report, "garbage.sh");
    assert_eq!(outcome(s, "before the garbage"), Outcome::Pass, "{out}");
    assert!(s.diagnostics.len() < 20, "{:?}", s.diagnostics);
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn timeout_kills_the_script_and_its_children() {
    let bad = examples().join("bad/sleeps.sh");
    let started = Instant::now();
    let (code, report, out) = run_kit(&[arg(&bad), "--timeout", "1s"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(code, 1, "{out}");
    let script = suite(&report, "sleeps.sh").cases.last().unwrap().clone();
    assert_eq!(script.outcome, Outcome::Error);
    assert!(script.message.unwrap().contains("timed out after 1s"));
}

#[test]
fn parallel_jobs_and_report_files() {
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    std::fs::create_dir_all(kit.join("sub")).unwrap();
    for i in 0..4 {
        write_script(
            &kit.join("sub"),
            &format!("s{i}.sh"),
            "sleep 1; echo 1..1; echo ok 1\n",
        );
    }
    write_script(
        &kit,
        "fails.sh",
        "echo 1..1; echo not ok 1 - nope; exit 1\n",
    );
    let junit = tmp.path().join("r.xml");
    let tap = tmp.path().join("r.tap");
    let html = tmp.path().join("r.html");
    let started = Instant::now();
    let (code, report, out) = run_kit(&[
        arg(&kit),
        "-j",
        "4",
        "--verbose",
        "--junit",
        arg(&junit),
        "--tap",
        arg(&tap),
        "--html",
        arg(&html),
    ]);
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "-j 4 did not run in parallel"
    );
    assert_eq!(code, 1);
    let names: Vec<&str> = report.suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fails.sh",
            "sub/s0.sh",
            "sub/s1.sh",
            "sub/s2.sh",
            "sub/s3.sh"
        ]
    );
    assert!(out.contains("# --- sub/s2.sh\n1..1\nok 1\n"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("name=\"fails.sh\"") && xml.contains("(script)"),
        "{xml}"
    );
    assert!(std::fs::read_to_string(&tap).unwrap().contains("not ok"));
    assert!(std::fs::read_to_string(&html).unwrap().contains("fails.sh"));
}

#[test]
fn usage_errors_exit_2() {
    let out = testbed(&["tck", "run"]);
    assert_eq!(out.status.code(), Some(2));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("kit.toml");
    std::fs::write(&cfg, "platform = \"x\"\nresource = 1\n").unwrap();
    let out = testbed(&["tck", "run", arg(tmp.path()), "--config", arg(&cfg)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("kit.toml:2:1"), "{}", text(&out));
    let exp = tmp.path().join("known.toml");
    std::fs::write(
        &exp,
        "[[broken]]\ntest = \"a.t\"\nreason = \"r\"\nplatfrom = {}\n",
    )
    .unwrap();
    let out = testbed(&["tck", "problems", arg(&cfg), "--expect", arg(&exp)]);
    assert_eq!(out.status.code(), Some(2));
    let out = testbed(&["tck", "run", "/nonexistent/kit"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// TAP produced by the `pytest-tap` plugin (PyPI; scripts/test installs it).
#[test]
fn pytest_tap_output_is_judged() {
    let has = std::process::Command::new("python3")
        .args(["-c", "import pytest_tap"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has,
        "pytest-tap is missing: run scripts/test, which installs it"
    );
    let kit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tck/pytest");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["tck", "run"])
        .arg(&kit)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let outcomes: Vec<&str> = r["suites"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"pass") && outcomes.contains(&"fail") && outcomes.contains(&"skip"),
        "{outcomes:?}"
    );
}

/// 200,000 test points from a real Perl producer through the real binary: the
/// compact path keeps counts, verdict and every failure's detail; the JSON,
/// JUnit and HTML files are valid, hold the failures, and a passing case costs
/// a bounded number of bytes in each; `problems`, `compare` and `report
/// convert` read the JSON back to the same results.
#[test]
fn two_hundred_thousand_points_stream_through_every_format() {
    const N: usize = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let kit = dir.path().join("kit");
    std::fs::create_dir(&kit).unwrap();
    std::fs::write(
        kit.join("big.t"),
        format!(
            r#"print "TAP version 13\n1..{N}\n";
for my $i (1 .. {N}) {{
  if ($i == 1000 || $i == 150000) {{
    print "not ok $i - case $i\n  ---\n  message: boom $i\n  ...\n";
  }} elsif ($i == 5) {{
    print "ok $i - case $i # SKIP not here\n";
  }} else {{
    print "ok $i - case $i\n";
  }}
}}
"#
        ),
    )
    .unwrap();
    let p = |name: &str| arg(&dir.path().join(name)).to_string();
    let kit_s = arg(&kit);
    let out = testbed(&[
        "tck",
        "run",
        kit_s,
        "--json",
        &p("r.json"),
        "--junit",
        &p("r.xml"),
        "--html",
        &p("r.html"),
        "--tap",
        &p("r.tap"),
    ]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("Failed tests:  1000, 150000"), "{shown}");
    assert!(shown.contains(&format!("Files=1, Tests={N},")), "{shown}");
    assert!(
        shown.contains("Passed=199997, Failed=2, Errors=0, Skipped=1, Xfailed=0, Xpassed=0"),
        "{shown}"
    );

    // JSON: the same report whether read whole or as it streams.
    let json = std::fs::read_to_string(p("r.json")).unwrap();
    let report = testbed_report::from_json(&json).unwrap();
    let compact = testbed_report::read_compact(std::fs::File::open(p("r.json")).unwrap()).unwrap();
    assert_eq!(compact.clone().into_report(), report);
    let sum = report.summary();
    assert_eq!(
        (sum.total, sum.passed, sum.failed, sum.skipped),
        (N, N - 3, 2, 1)
    );
    let cases = &report.suites[0].cases;
    assert_eq!(cases[999].name, "case 1000");
    assert_eq!(cases[999].outcome, Outcome::Fail);
    assert_eq!(cases[999].message.as_deref(), Some("boom 1000"));
    assert!(cases[999].output.as_deref().unwrap().contains("boom 1000"));
    assert_eq!(cases[4].outcome, Outcome::Skip);
    assert_eq!(cases[4].message.as_deref(), Some("not here"));
    assert_eq!(cases[N - 1].name, format!("case {N}"));
    // `{"name":"case 123456","outcome":"pass"},` and its newline: the name plus 30.
    let per_case = json.len() as f64 / N as f64;
    assert!(per_case < 42.0, "{per_case:.1} bytes per case in the JSON");

    // JUnit: well-formed, one testcase per point, the failures with their message.
    let junit = std::fs::read_to_string(p("r.xml")).unwrap();
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as ET\n\
             r = ET.parse(sys.argv[1]).getroot()\n\
             cs = r.iter('testcase')\n\
             n = 0\n\
             fails = []\n\
             for c in cs:\n\
             \x20   n += 1\n\
             \x20   for f in c.findall('failure'): fails.append(c.get('name') + ': ' + f.get('message'))\n\
             print(n, r.get('tests'), r.get('failures'), '|'.join(fails))",
            &p("r.xml"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        format!("{N} {N} 2 case 1000: boom 1000|case 150000: boom 150000"),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    // `    <testcase name="case 123456" classname="big_t"/>` and its newline:
    // no `time` on a case without a duration (65 bytes a case with it).
    let per_case = junit.len() as f64 / N as f64;
    assert!(per_case < 54.0, "{per_case:.1} bytes per case in the JUnit");

    // HTML: the failures as cards, no row per case, every case in the embedded data.
    let html = std::fs::read_to_string(p("r.html")).unwrap();
    let failures = html.find("<section id=\"failures\">").unwrap();
    assert!(html[failures..].contains("boom 150000"));
    assert!(!html.contains("<tr data-outcome"), "one table row per case");
    let start = html
        .find("<script type=\"application/json\" id=\"case-data\">")
        .unwrap();
    let body = &html[start..];
    let body = &body[body.find('>').unwrap() + 1..body.find("</script>").unwrap()];
    let data: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(data[0]["c"].as_array().unwrap().len(), N);
    let letters = data[0]["o"].as_str().unwrap();
    assert_eq!(letters.len(), N);
    assert_eq!(&letters[998..1001], "pfp");
    assert_eq!(&letters[4..5], "s");
    let per_case = html.len() as f64 / N as f64;
    assert!(per_case < 20.0, "{per_case:.1} bytes per case in the HTML");

    // TAP: read back, the same counts.
    let tap = std::fs::read_to_string(p("r.tap")).unwrap();
    assert_eq!(tap.lines().filter(|l| l.starts_with("not ok ")).count(), 2);
    assert!(tap.contains(&format!("\n1..{N}\n")));

    // problems, compare and convert on the file.
    let problems = testbed(&["tck", "problems", &p("r.json"), "--json"]);
    assert_eq!(problems.status.code(), Some(1));
    let listed: serde_json::Value = serde_json::from_slice(&problems.stdout).unwrap();
    assert_eq!(listed["problems"].as_array().unwrap().len(), 2);
    assert_eq!(listed["problems"][1]["message"], "boom 150000");
    std::fs::copy(p("r.json"), p("r2.json")).unwrap();
    let compared = testbed(&["tck", "compare", &p("r.json"), &p("r2.json")]);
    assert_eq!(compared.status.code(), Some(0), "{}", text(&compared));
    assert!(text(&compared).contains("Regressions=0, Fixes=0, New=0, Removed=0"));
    for (to, file) in [("junit", "r.xml"), ("html", "r.html"), ("json", "r.json")] {
        let converted = p(&format!("c.{to}"));
        let out = testbed(&[
            "report",
            "convert",
            &p("r.json"),
            "--to",
            to,
            "-o",
            &converted,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            std::fs::read(&converted).unwrap() == std::fs::read(p(file)).unwrap(),
            "convert --to {to} differs from what tck run wrote"
        );
    }
}

/// Peak resident memory of a process since the last [`reset_peak`], in KiB
/// (`VmHWM` of `/proc/PID/status`).
pub(crate) fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Starts a new peak-memory measurement: `VmHWM` falls to the current RSS.
pub(crate) fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// Stores a report of `n` passing cases in one suite, `big.t`, but for
/// `case 777`, which fails with "boom 777", on `p` (`testbed up` over `data`):
/// a one-step plan's run, whose stored report
/// (`DATA_DIR/blobs/reports/ID.json`, gzip-compressed JSON) is then replaced.
/// A kit of that size run through the `tap` plugin is the honest way in (see
/// [`a_plan_step_with_a_kit_too_large_for_a_message_reports_every_case`]);
/// writing the stored report directly is quicker for tests that only read
/// it. Returns the report's id.
async fn store_large_report(p: &crate::common::Platform, data: &Path, n: usize) -> String {
    let plan = "name: big\nsteps:\n  - id: hello\n    plugin: linux_system\n    method: run_shell\n    params: {command: echo, args: hi}\n";
    let run = p.start_run(plan, serde_json::json!({})).await;
    let run = p.wait_run(&run, Duration::from_secs(60)).await;
    let id = run["report_id"].as_str().expect("report id").to_string();
    let blob = data.join("blobs/reports").join(format!("{id}.json"));
    assert!(blob.is_file(), "no stored report at {}", blob.display());
    let mut big = Report::new(id.clone(), "big", chrono::Utc::now());
    let mut suite = Suite::new("big.t");
    suite.cases = (1..=n)
        .map(|i| {
            let mut c = testbed_report::Case::new(
                format!("case {i}"),
                if i == 777 {
                    Outcome::Fail
                } else {
                    Outcome::Pass
                },
            );
            if i == 777 {
                c.message = Some("boom 777".into());
            }
            c
        })
        .collect();
    big.suites.push(suite);
    std::fs::write(&blob, testbed_report::to_stored(&big).unwrap()).unwrap();
    id
}

/// A stored report of 200,000 cases downloaded from the real server in every
/// format, and compared with itself: the server renders as the client reads,
/// so its peak memory grows by far less than the rendered size (rendering a
/// body whole costs at least its size, twice while the buffer grows). Also
/// checks the bodies are complete and the counts right. The report gets into
/// the store through [`store_large_report`].
#[tokio::test]
async fn server_streams_a_large_report_in_bounded_memory() {
    const N: usize = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = crate::common::Platform::up(&data, 1, &[]).await;
    let id = store_large_report(&p, &data, N).await;
    let pid = p.proc.child.as_ref().expect("server process").id();

    let download = |path: String| {
        let (http, url, token) = (p.http.clone(), p.url.clone(), p.token.clone());
        async move {
            let mut resp = http
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            // Kept whole here (the test's memory, not the server's), to check it.
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.unwrap() {
                body.extend_from_slice(&chunk);
            }
            body
        }
    };
    let mut total = 0usize;
    let mut grown = Vec::new();
    for format in ["json", "junit", "tap", "html", "summary"] {
        reset_peak(pid);
        let before = peak_kib(pid);
        let body = download(format!("/api/reports/{id}?format={format}")).await;
        grown.push((format, peak_kib(pid).saturating_sub(before), body.len()));
        total += body.len();
        match format {
            "json" => {
                let r = testbed_report::read_compact(&body[..]).unwrap();
                let s = r.summary();
                assert_eq!((s.total, s.failed), (N, 1), "{s:?}");
            }
            "tap" => {
                let text = String::from_utf8(body).unwrap();
                assert_eq!(text.lines().filter(|l| l.starts_with("ok ")).count(), N - 1);
                assert!(text.contains("not ok 777 - case 777"));
            }
            "html" => assert!(body.ends_with(b"</html>\n")),
            "junit" => assert!(body.ends_with(b"</testsuites>\n")),
            _ => {}
        }
    }
    reset_peak(pid);
    let before = peak_kib(pid);
    let compared = download(format!("/api/reports/{id}/compare/{id}?format=text")).await;
    grown.push((
        "compare",
        peak_kib(pid).saturating_sub(before),
        compared.len(),
    ));
    let compared = String::from_utf8(compared).unwrap();
    assert!(compared.contains("Result: OK"), "{compared}");
    // The stored report in compact form (names and offsets, about 15 bytes a
    // case: 3 MB here) and a few 64 KiB chunks; twice that for compare, which
    // reads two. Rendering a body whole takes more than the largest one (seen
    // failing so: 11.8 MB for the 8.1 MB JSON; the later formats reuse what the
    // allocator kept from it, so the first download is the telling one).
    let largest = grown.iter().map(|g| g.2).max().unwrap_or(0);
    eprintln!("server peak growth per download (format, KiB, body bytes): {grown:?}");
    for (format, kib, _) in &grown {
        assert!(
            *kib < 16 * 1024 && (*kib as usize * 1024) < largest,
            "downloading {format} grew the server's peak by {kib} KiB (bodies: {grown:?}, {total} bytes in all)"
        );
    }
}

/// `testbed ARGS` as a client of `p`, with its peak resident memory
/// ([`crate::common::testbed_measured`]).
fn client_measured(
    p: &crate::common::Platform,
    cfg: &Path,
    args: &[&str],
) -> (Output, Option<u64>) {
    crate::common::testbed_measured(|c| {
        c.args(args)
            .env("TESTBED_SERVER", &p.url)
            .env("TESTBED_TOKEN", &p.token)
            .env("TESTBED_CONFIG_DIR", cfg)
            .env("TESTBED_LOG", "error");
    })
}

/// `testbed run` concludes a run whose plan step ran a kit of 80,000 test
/// points (one failing) against a real server: the summary and the JSON
/// report give the counts, and the client's peak memory grows from 1,000
/// points to 80,000 by far less than the report costs as `Case` records (it
/// used to read the report whole, as text and then a `Case` a point: about
/// 25 MB more at 80,000). 80,000 keeps the task's result under the agent
/// message limit.
#[tokio::test]
async fn testbed_run_concludes_a_large_run_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    let p = crate::common::Platform::up(&dir.path().join("data"), 1, &[]).await;
    let mut measured = Vec::new();
    for n in [1_000usize, 80_000] {
        let kit = dir.path().join(format!("kit-{n}.pl"));
        std::fs::write(
            &kit,
            format!(
                "#!/usr/bin/perl\nprint \"1..{n}\\n\";\nfor my $i (1..{n}) {{ print $i == 777 ? \"not ok $i - case $i\\n\" : \"ok $i - case $i\\n\" }}\n"
            ),
        )
        .unwrap();
        let plan = dir.path().join(format!("plan-{n}.yaml"));
        std::fs::write(
            &plan,
            format!(
                "name: big-{n}\nsteps:\n  - id: kit\n    plugin: tap\n    method: run\n    params: {{path: \"{}\"}}\n",
                kit.display()
            ),
        )
        .unwrap();
        let json = dir.path().join(format!("report-{n}.json"));
        let (out, peak) = client_measured(&p, &cfg, &["run", arg(&plan), "--json", arg(&json)]);
        let said = text(&out);
        // One point fails, so the step and the run fail.
        assert_eq!(out.status.code(), Some(1), "{said}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The step's own case and the kit's points.
        assert!(
            stdout.contains(&format!("Tests={}", n + 1)),
            "{n}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("Passed={}, Failed=2,", n - 1)),
            "{n}: {stdout}"
        );
        let report = testbed_report::read_compact(std::fs::File::open(&json).unwrap()).unwrap();
        let sum = report.summary();
        assert_eq!((sum.total, sum.failed), (n + 1, 2), "{n}");
        assert!(
            report
                .lists
                .iter()
                .flat_map(|l| l.whole())
                .any(|(_, c)| c.name == "case 777" && c.outcome == Outcome::Fail),
            "{n}: the failing point is in the report"
        );
        measured.push((n, peak, std::fs::metadata(&json).unwrap().len() / 1024));
    }
    eprintln!("testbed run peak RSS (points, KiB, JSON KiB): {measured:?}");
    let (Some(small), Some(large)) = (measured[0].1, measured[1].1) else {
        panic!("no peak memory from /usr/bin/time -f %M (scripts/test installs GNU time)");
    };
    // The compact form costs about 15 bytes a passing point (1.2 MB at
    // 80,000); the report read whole cost about 300 (text, then a `Case`).
    let grown = large.saturating_sub(small);
    assert!(
        grown < 8 * 1024,
        "testbed run's peak grew by {grown} KiB from 1,000 to 80,000 points: the report is \
         held whole ({measured:?})"
    );
}

/// `tck problems`, `tck compare` and `report convert` given a stored report's
/// id (or a prefix of it) say what they say of the same report as a local
/// file, and download it to a temporary file read as it streams. So what the
/// client's peak memory costs by id over reading the local file (the HTTP
/// client, TLS roots, the download's chunks) is the same for a report of
/// 200,000 cases (an 8 MB body) as for one of 1,000: before, the whole body
/// was held, twice over while it became a `String`. A report that is not
/// stored is an error naming it and the server's answer.
#[tokio::test]
async fn stored_reports_stream_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("cfg");
    let p = crate::common::Platform::up(&data, 1, &[]).await;
    // (cases, peaks (what, by id KiB, of the file KiB), body KiB)
    let mut measured = Vec::new();
    for n in [1_000, 200_000] {
        let id = store_large_report(&p, &data, n).await;
        let (status, body) = p.get_text(&format!("/api/reports/{id}?format=json")).await;
        assert_eq!(status, 200, "{body}");
        let local = dir.path().join(format!("local-{n}.json"));
        std::fs::write(&local, &body).unwrap();
        let body_kib = body.len() as u64 / 1024;
        drop(body);
        let cases: [(&str, Vec<&str>, Vec<&str>, i32); 4] = [
            (
                "problems",
                vec!["tck", "problems", &id],
                vec!["tck", "problems", arg(&local)],
                1,
            ),
            (
                "compare",
                vec!["tck", "compare", &id, &id],
                vec!["tck", "compare", arg(&local), arg(&local)],
                0,
            ),
            (
                "convert",
                vec!["report", "convert", &id, "--to", "tap"],
                vec!["report", "convert", arg(&local), "--to", "tap"],
                0,
            ),
            // A unique prefix of the id, as `report show` takes.
            (
                "problems (prefix)",
                vec!["tck", "problems", &id[..8]],
                vec!["tck", "problems", arg(&local)],
                1,
            ),
        ];
        let mut peaks = Vec::new();
        for (what, stored, file, code) in &cases {
            let (by_id, id_peak) = client_measured(&p, &cfg, stored);
            let (by_file, file_peak) = client_measured(&p, &cfg, file);
            assert_eq!(
                by_file.status.code(),
                Some(*code),
                "{what} of the file: {}",
                text(&by_file)
            );
            assert_eq!(
                by_id.status.code(),
                Some(*code),
                "{what} by id: {}",
                text(&by_id)
            );
            assert!(
                by_id.stdout == by_file.stdout,
                "{what}: by id and of the file differ:\n{}\n---\n{}",
                text(&by_id),
                text(&by_file)
            );
            if *what == "problems" {
                let said = String::from_utf8_lossy(&by_id.stdout);
                assert!(said.contains("big.t :: case 777 [fail] boom 777"), "{said}");
                assert!(said.contains("\n1 problem(s) to fix"), "{said}");
            }
            if *what == "convert" {
                let tap = String::from_utf8_lossy(&by_id.stdout);
                assert_eq!(tap.lines().filter(|l| l.starts_with("ok ")).count(), n - 1);
            }
            peaks.push((*what, id_peak, file_peak));
        }
        measured.push((n, peaks, body_kib));
    }
    eprintln!(
        "client peak RSS (cases, [(what, by id KiB, of the file KiB)], body KiB): {measured:?}"
    );
    let (small, large) = (&measured[0], &measured[1]);
    let body_kib = large.2;
    for ((what, small_id, small_file), (_, large_id, large_file)) in small.1.iter().zip(&large.1) {
        let (Some(small_id), Some(small_file), Some(large_id), Some(large_file)) =
            (small_id, small_file, large_id, large_file)
        else {
            panic!("no peak memory from /usr/bin/time -f %M (scripts/test installs GNU time)");
        };
        let (small_cost, large_cost) = (
            small_id.saturating_sub(*small_file),
            large_id.saturating_sub(*large_file),
        );
        // A download held in memory costs at least its body (the old code
        // held it twice, and compare makes two); buffers in flight on a busy
        // machine can reach half of it, so the bound is one body.
        assert!(
            large_cost < small_cost + body_kib,
            "{what} by id cost {large_cost} KiB more than of the file for {body_kib} KiB of \
             JSON, {small_cost} KiB for a small report: the download is held in memory \
             ({measured:?})"
        );
    }

    // Not stored: the id and the server's answer.
    let missing = "00000000-0000-4000-8000-000000000000";
    let (out, _) = client_measured(&p, &cfg, &["tck", "problems", missing]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains(&format!("stored report {missing}")), "{said}");
    assert!(said.contains("(404)"), "{said}");
}

/// A plan step running a kit whose report is far too large for one agent
/// message (250,000 test points, about 9 MB of JSON against the 4 MiB limit):
/// the agent uploads the report as a compressed blob and the task's result
/// carries only its size and counts; the step passes and the run's report
/// holds every case, the last one and a skip among them included. Before,
/// the task ended in error with the report kept as an artifact. The server is
/// a process of its own (the agent apart): taking in the upload and copying
/// it into the run's report grows its peak memory by less than half the
/// report's JSON, so it never held the report, not even as names in the
/// compact form.
#[tokio::test]
async fn a_plan_step_with_a_kit_too_large_for_a_message_reports_every_case() {
    const N: usize = 250_000;
    let dir = tempfile::tempdir().unwrap();
    let p = crate::common::Platform::server_in(dir.path(), &[]).await;
    let agent = crate::common::agent(
        &p.url,
        "kit-1",
        &dir.path().join("agent"),
        &["--plugins", "linux_system,tap"],
    );
    agent.wait_line("connected to", Duration::from_secs(30));
    let kit = dir.path().join("huge.pl");
    std::fs::write(
        &kit,
        format!(
            "#!/usr/bin/perl\nprint \"1..{N}\\n\";\n\
             for (1..{N}) {{ print $_ == 777 ? \"ok $_ # SKIP not here\\n\" : \"ok $_ - case $_\\n\" }}\n"
        ),
    )
    .unwrap();
    let plan = format!(
        "name: huge\nsteps:\n  - id: kit\n    plugin: tap\n    method: run\n    params: {{path: \"{}\"}}\n",
        kit.display()
    );
    let server = p.proc.child.as_ref().expect("server process").id();
    let agent_pid = agent.child.as_ref().expect("agent process").id();
    reset_peak(server);
    let before = peak_kib(server);
    let started = Instant::now();
    let run = p
        .run_plan(&plan, serde_json::json!({}), Duration::from_secs(300))
        .await;
    let took = started.elapsed();
    let grown_kib = peak_kib(server).saturating_sub(before);
    assert_eq!(run["status"], "passed", "{run}");

    // The result refers to the blob; the report is not in it.
    let task = run["steps"]["kit"]["instances"][0]["task_id"]
        .as_str()
        .expect("task id")
        .to_string();
    let t = p.task(&task).await;
    let result = &t["result"];
    assert!(result.get("report").is_none(), "{result}");
    assert_eq!(result["report_blob"]["summary"]["total"], N, "{result}");
    let blob = dir
        .path()
        .join("blobs/tasks")
        .join(&task)
        .join("report.json.gz");
    assert_eq!(
        std::fs::metadata(&blob).expect("the report blob").len(),
        result["report_blob"]["bytes"].as_u64().unwrap()
    );

    let id = run["report_id"].as_str().expect("report id");
    let (status, json) = p.get_text(&format!("/api/reports/{id}?format=json")).await;
    assert_eq!(status, 200);
    let report = testbed_report::read_compact(json.as_bytes()).unwrap();
    let s = report.summary();
    // The plan's own case (the step) and the kit's.
    assert_eq!(
        (s.total, s.passed, s.skipped, s.failed, s.errors),
        (N + 1, N, 1, 0, 0),
        "{s:?}"
    );
    let k = (0..report.head.suites.len())
        .find(|&i| report.head.suites[i].platform.as_deref() == Some("kit-1"))
        .expect("the kit's suite, on its agent");
    assert_eq!(report.head.suites[k].name, "huge.pl");
    assert_eq!(report.lists[k].len(), N);
    assert_eq!(report.lists[k].name(N - 1), format!("case {N}"));
    assert_eq!(report.lists[k].outcome(776), Outcome::Skip);
    eprintln!(
        "{N} cases in a plan step: {took:?}; server peak grew {grown_kib} KiB for {} bytes of \
         report JSON ({} bytes compressed); agent peak {} KiB",
        json.len(),
        result["report_blob"]["bytes"],
        peak_kib(agent_pid)
    );
    // Streamed, the upload and the copy into the run's report hold a few
    // buffers and the compressed parts being uploaded (2.7 MB seen here);
    // the kit's report read into the compact form (names and offsets) cost
    // 8 MB, as JSON values far more.
    assert!(
        (grown_kib as usize) * 1024 < json.len() / 2,
        "taking in the kit's report grew the server's peak by {grown_kib} KiB, over half the \
         {} bytes of the report's JSON: it was held whole",
        json.len()
    );
}

/// An agent killed (SIGKILL) halfway through uploading a large report: the
/// upload goes through a proxy that passes on the request's head and the
/// first 32 KiB of its body, then holds the connection until the agent is
/// dead and drops it, so the server sees a body cut short. The server keeps
/// nothing under the report's name, the agent never sent a result, and the
/// task is `lost` once the lease runs out: the step and the run fail and the
/// run's report counts none of the kit's cases, never part of them as a pass.
/// (Multi-threaded: the proxy runs while the test waits on the agent's output.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_upload_leaves_no_report_and_its_task_is_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const N: usize = 250_000;
    let dir = tempfile::tempdir().unwrap();
    // A lease short enough to see the task lost soon, long enough that the
    // agent, busy with the kit on a loaded machine, keeps it until killed.
    let p = crate::common::Platform::server_in(dir.path(), &["--lease-ttl", "8"]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let upstream = p
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (cut_tx, mut cut_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, cut_tx, held) = (upstream.clone(), cut_tx.clone(), held.clone());
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                // The head of a connection's first request says what it is for.
                let mut head = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                let end = loop {
                    let n = client.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                };
                let line = String::from_utf8_lossy(
                    &head[..head.iter().position(|b| *b == b'\r').unwrap_or(0)],
                )
                .into_owned();
                let report = line
                    .strip_prefix("PUT /api/agent/tasks/")
                    .and_then(|rest| rest.strip_suffix("/report HTTP/1.1"));
                let Some(task) = report.map(str::to_string) else {
                    let _ = server.write_all(&head).await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                };
                while head.len() < end + 32 * 1024 {
                    let n = client.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                server
                    .write_all(&head[..head.len().min(end + 32 * 1024)])
                    .await
                    .unwrap();
                let _ = cut_tx.send(task);
                held.notified().await;
                // Dropping both ends: the server's request ends mid-body.
            });
        }
    });
    let mut agent = crate::common::agent(
        &proxy,
        "kit-1",
        &dir.path().join("agent"),
        &["--plugins", "linux_system,tap"],
    );
    agent.wait_line("connected to", Duration::from_secs(30));
    let kit = dir.path().join("huge.pl");
    std::fs::write(
        &kit,
        format!("#!/usr/bin/perl\nprint \"1..{N}\\n\"; print \"ok $_ - case $_\\n\" for 1..{N};\n"),
    )
    .unwrap();
    let plan = format!(
        "name: huge\nsteps:\n  - id: kit\n    plugin: tap\n    method: run\n    params: {{path: \"{}\"}}\n",
        kit.display()
    );
    let run = p.start_run(&plan, serde_json::json!({})).await;
    let Ok(Some(task)) = tokio::time::timeout(Duration::from_secs(120), cut_rx.recv()).await else {
        panic!(
            "the agent sent no report upload within 120 s; the run: {}",
            p.run_state(&run).await
        );
    };
    agent.kill9();
    release.notify_one();

    let t = p.wait_status(&task, "lost", Duration::from_secs(60)).await;
    assert!(t["result"].is_null(), "{t}");
    let blob = dir
        .path()
        .join("blobs/tasks")
        .join(&task)
        .join("report.json.gz");
    let run = p.wait_run(&run, Duration::from_secs(60)).await;
    assert_ne!(run["status"], "passed", "{run}");
    assert!(
        !blob.exists(),
        "a report cut short is kept at {}",
        blob.display()
    );
    let id = run["report_id"].as_str().expect("report id");
    let (status, json) = p.get_text(&format!("/api/reports/{id}?format=json")).await;
    assert_eq!(status, 200);
    let report = testbed_report::read_compact(json.as_bytes()).unwrap();
    let s = report.summary();
    assert_eq!((s.total, s.passed), (1, 0), "{s:?}");
    assert!(!s.ok);
}
