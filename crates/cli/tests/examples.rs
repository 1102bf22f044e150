//! Every file under `examples/` is run, the way its header comment says, and
//! does what the comment promises. The tests use the documentation sandbox
//! (tests/common/docs.rs): a copy of `examples/`, the built `testbed` on the
//! `PATH`, and its own network namespace, so the examples' `127.0.0.1:8774`
//! is the `testbed up` started here.

use crate::harness;

use std::path::Path;
use std::time::Duration;

use harness::{Ran, Sandbox};
use serde_json::Value;

const PASSWORD: &str = "examples-secret-1";
const JOIN_TOKEN: &str = "examples-join-token";

/// What each test below covers; `every_example_is_run` checks that every
/// file under examples/ is listed here (a directory covers its files).
const COVERED: [&str; 10] = [
    "examples/plans/smoke.yaml",
    "examples/plans/build-and-test.yaml",
    "examples/plans/demo-repo",
    "examples/api/testbed-smoke.yaml",
    "examples/api/postman",
    "examples/perf/healthz.yaml",
    "examples/plugins/echo.py",
    "examples/agent.toml",
    "examples/tck",
    "examples/cni",
];

fn files(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).expect("read examples/") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else {
            let rel = p
                .strip_prefix(harness::repo_root())
                .expect("under the repo");
            out.push(rel.display().to_string());
        }
    }
}

#[test]
fn every_example_is_run() {
    let mut all = Vec::new();
    files(&harness::repo_root().join("examples"), &mut all);
    let uncovered: Vec<&String> = all
        .iter()
        .filter(|f| {
            !COVERED
                .iter()
                .any(|c| f.as_str() == *c || f.starts_with(&format!("{c}/")))
        })
        .collect();
    assert!(
        uncovered.is_empty(),
        "examples without a test in tests/examples.rs: {uncovered:?}"
    );
    for c in COVERED {
        assert!(harness::repo_root().join(c).exists(), "{c} is gone");
    }
}

/// The commands of an example's header comment: lines `#   CMD`, with `\`
/// continuations (`#     more`) joined, trailing `# notes` kept (bash
/// ignores them).
fn usage(example: &str) -> Vec<String> {
    let text = std::fs::read_to_string(harness::repo_root().join(example)).expect("example");
    let mut out: Vec<String> = Vec::new();
    let mut continued = false;
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some(cmd) = line.strip_prefix("#   ") else {
            continued = false;
            continue;
        };
        if continued {
            let last = out.last_mut().expect("continued line");
            last.push('\n');
            last.push_str(cmd);
        } else {
            out.push(cmd.trim_start().to_string());
        }
        continued = cmd.trim_end().ends_with('\\');
    }
    out
}

fn must(sb: &mut Sandbox, code: &str) -> Ran {
    let r = sb.sh(code, Duration::from_secs(180));
    assert_eq!(
        r.code,
        Some(0),
        "{code}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        harness::tail(&r.stdout, 60),
        harness::tail(&r.stderr, 60),
        sb.background_output()
    );
    r
}

/// `testbed up` on 127.0.0.1:8774 with `args`, logged in.
fn up(sb: &mut Sandbox, args: &str, agents: u32) {
    must(
        sb,
        &format!("export TESTBED_ADMIN_PASSWORD={PASSWORD} TESTBED_JOIN_TOKEN={JOIN_TOKEN}"),
    );
    let ready = format!("\"agents_connected\":{agents}");
    sb.background(
        0,
        &format!("testbed up --data-dir up-data {args}"),
        Some(("http://127.0.0.1:8774/healthz", Some(&ready))),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", sb.background_output()));
    must(
        sb,
        "echo \"$TESTBED_ADMIN_PASSWORD\" | testbed login --password-stdin",
    );
}

fn json_file(sb: &Sandbox, name: &str) -> Value {
    let text = std::fs::read_to_string(sb.work.join(name)).expect(name);
    serde_json::from_str(&text).expect("json")
}

/// Outcomes of a report's cases, by case name.
fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["suites"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["cases"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn plans_run_as_their_comments_say() {
    let mut sb = Sandbox::new("examples/plans");
    let smoke = usage("examples/plans/smoke.yaml");
    assert_eq!(smoke, ["testbed run examples/plans/smoke.yaml -p who=you"]);
    let build = usage("examples/plans/build-and-test.yaml");
    assert_eq!(build.len(), 3, "{build:?}");
    // The comment's `up`, with the labels the test step targets.
    let up_args = build[0]
        .strip_prefix("testbed up ")
        .and_then(|a| a.split('#').next())
        .expect("the comment starts testbed up")
        .trim()
        .to_string();
    assert!(up_args.contains("--agent-labels arch=x86_64"), "{up_args}");
    up(&mut sb, &up_args, 2);

    // smoke: three steps, the third repeats what the first said.
    let r = must(&mut sb, &format!("{} --json smoke.json", smoke[0]));
    assert!(r.stdout.contains("Result: PASS"), "{}", r.stdout);
    let cases = outcomes(&json_file(&sb, "smoke.json"));
    assert_eq!(cases.len(), 3, "{cases:?}");
    assert!(cases.iter().all(|(_, o)| o == "pass"), "{cases:?}");
    let r = must(
        &mut sb,
        "testbed runs logs $(testbed runs ls --json | jq -r '.[0].id')",
    );
    assert!(
        r.stdout.contains("the first step said: hello you"),
        "{}",
        r.stdout
    );

    // build-and-test: the demo project, built once, tested on both labelled
    // agents, then the conditional step.
    must(&mut sb, &build[1]);
    let r = must(&mut sb, &format!("{} --json build.json", build[2]));
    assert!(
        r.stdout.contains("Result: PASS"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let cases = outcomes(&json_file(&sb, "build.json"));
    assert_eq!(cases.len(), 4, "build, test on 2 agents, notify: {cases:?}");
    assert!(cases.iter().all(|(_, o)| o == "pass"), "{cases:?}");
    let r = must(
        &mut sb,
        "testbed runs logs $(testbed runs ls --json | jq -r '.[0].id')",
    );
    assert!(r.stdout.contains("tests passed on"), "{}", r.stdout);
    assert!(r.stdout.contains("all tests passed for "), "{}", r.stdout);

    // Its comment's `--agent-labels` matters: on agents without the label
    // the plan is refused before it starts, naming the step and the label.
    sb.stop_backgrounds();
    must(&mut sb, "rm -rf up-data");
    up(&mut sb, "--agents 1", 1);
    let r = sb.sh(&build[2], Duration::from_secs(90));
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("steps[1].target") && r.stderr.contains("arch=x86_64"),
        "{}",
        r.stderr
    );
}

#[test]
fn api_examples_pass_against_testbed() {
    let mut sb = Sandbox::new("examples/api");
    up(&mut sb, "", 1);
    // The whole folder, as the README runs it: every suite and collection.
    let r = must(
        &mut sb,
        "testbed api run examples/api --var password=\"$TESTBED_ADMIN_PASSWORD\" --json api.json",
    );
    let cases = outcomes(&json_file(&sb, "api.json"));
    assert!(cases.len() >= 14, "{cases:?}");
    // Nothing skipped: the smoke suite found the password and the server.
    assert!(
        cases.iter().all(|(_, o)| o == "pass"),
        "{cases:?}\n{}",
        r.stdout
    );
    for name in ["healthy", "agents are listed", "who am I › it is me"] {
        assert!(cases.iter().any(|(n, _)| n == name), "{name}: {cases:?}");
    }

    // Each file as its own comment says.
    let smoke =
        std::fs::read_to_string(harness::repo_root().join("examples/api/testbed-smoke.yaml"))
            .expect("smoke");
    assert!(
        smoke.contains("TESTBED_ADMIN_PASSWORD=… testbed api run examples/api/testbed-smoke.yaml")
    );
    let r = must(&mut sb, "testbed api run examples/api/testbed-smoke.yaml");
    assert!(r.stdout.contains("Passed=4"), "{}", r.stdout);

    let postman = Path::new("examples/api/postman");
    let mut commands = Vec::new();
    for name in [
        "testbed-api.postman_collection.json",
        "public-endpoints.postman_collection.json",
    ] {
        let c: Value = serde_json::from_str(
            &std::fs::read_to_string(harness::repo_root().join(postman).join(name)).expect(name),
        )
        .expect("collection");
        let description = c["info"]["description"].as_str().unwrap_or_default();
        let cmd = description
            .lines()
            .find(|l| l.trim_start().starts_with("testbed api run"))
            .unwrap_or_else(|| panic!("{name}: no command in its description"))
            .trim()
            .to_string();
        commands.push(cmd);
    }
    let r = must(&mut sb, &commands[0]);
    assert!(r.stdout.contains("Passed=9"), "{}", r.stdout);
    let r = must(&mut sb, &commands[1]);
    // One iteration per row of the CSV: two anonymous 200s, two 401s with
    // an error body.
    assert!(r.stdout.contains("Iteration 4/4"), "{}", r.stdout);
    assert!(r.stdout.contains("Passed=6"), "{}", r.stdout);

    // With the wrong password the collection fails: it checks something.
    let r = sb.sh(
        "testbed api run examples/api/postman/testbed-api.postman_collection.json --var password=wrong",
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}", r.stdout);
}

#[test]
fn perf_example_loads_the_local_server() {
    let mut sb = Sandbox::new("examples/perf");
    up(&mut sb, "", 1);
    let cmd = usage("examples/perf/healthz.yaml");
    assert_eq!(cmd.len(), 1, "{cmd:?}");
    let r = must(
        &mut sb,
        &format!("{} --json", cmd[0].split('#').next().unwrap_or_default()),
    );
    let report: Value = serde_json::from_str(&r.stdout).expect("--json report");
    assert_eq!(report["status"], "completed", "{report}");
    assert!(
        report["summary"]["total_requests"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert_eq!(report["passed"], true, "thresholds: {report}");
    assert_eq!(report["summary"]["error_count"], 0, "{report}");
}

#[test]
fn echo_plugin_runs_on_an_agent() {
    let mut sb = Sandbox::new("examples/plugins");
    // Copied into the agent's plugin directory, as its docstring says.
    must(
        &mut sb,
        "mkdir -p plugins && cp examples/plugins/echo.py plugins/",
    );
    up(&mut sb, "--plugin-dir plugins", 1);
    let r = must(
        &mut sb,
        "testbed exec --host local-1 --plugin echo --method echo --params '{\"message\": \"hi there\", \"repeat\": 3}'",
    );
    assert_eq!(r.stdout.matches("hi there").count(), 3, "{}", r.stdout);
    let r = sb.sh(
        "testbed exec --host local-1 --plugin echo --method fail --params '{}'",
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("fail: giving up") || r.stderr.contains("fail: giving up"));
    // The schema is enforced before the plugin runs.
    let r = sb.sh(
        "testbed exec --host local-1 --plugin echo --method echo --params '{\"repeat\": 3}'",
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("message"), "{}", r.stderr);
}

#[test]
fn agent_config_example_registers_an_agent() {
    let mut sb = Sandbox::new("examples/agent.toml");
    let text =
        std::fs::read_to_string(harness::repo_root().join("examples/agent.toml")).expect("toml");
    assert!(text.starts_with("# testbed agent --config examples/agent.toml"));
    up(&mut sb, "--agents 0", 0);
    // Filled in as its comments say: the join token from the environment,
    // and directories this user can write.
    must(
        &mut sb,
        "sed -e 's/^token = .*/token = \"\"/' -e 's#^plugin_dir = .*#plugin_dir = \"plugins\"#' \
         -e 's#^state_dir = .*#state_dir = \"agent-state\"#' examples/agent.toml > agent.toml && mkdir -p plugins",
    );
    // TESTBED_JOIN_TOKEN is exported (by `up` above), as the example allows.
    sb.background(
        0,
        "testbed agent --config agent.toml",
        Some((
            "http://127.0.0.1:8774/healthz",
            Some("\"agents_connected\":1"),
        )),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", sb.background_output()));
    let r = must(&mut sb, "testbed agents ls --json");
    let agents: Value = serde_json::from_str(&r.stdout).expect("agents --json");
    let a = agents
        .as_array()
        .and_then(|l| l.iter().find(|a| a["name"] == "kvm-01"))
        .unwrap_or_else(|| panic!("no kvm-01: {agents}"));
    assert_eq!(a["host"], "10.0.0.21", "{a}");
    assert_eq!(a["labels"]["arch"], "x86_64", "{a}");
    assert_eq!(a["labels"]["hv"], "kvm", "{a}");
    assert!(a.to_string().contains("lab-a"), "{a}");
    // It serves tasks with the plugins the example lists.
    let r = must(&mut sb, "testbed exec --host kvm-01 -- echo from kvm-01");
    assert!(r.stdout.contains("from kvm-01"), "{}", r.stdout);
}

#[test]
fn tck_kits_run_as_documented() {
    let mut sb = Sandbox::new("examples/tck");
    let r = sb.sh(
        "testbed tck run examples/tck/perl --config examples/tck/perl/kit.toml \
         --expect examples/tck/perl/known-broken.toml --json perl.json -j 4",
        Duration::from_secs(120),
    );
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("07-needs-iscsi.t .. skipped: no iscsi-server configured"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Bail out! hypervisor connection lost"),
        "{}",
        r.stdout
    );
    let mut kits = vec![
        ("examples/tck/python", "test_basic.py", 2),
        ("examples/tck/node", "run-node.sh", 2),
    ];
    // pytest-tap comes from PyPI (scripts/test installs it; tests/tck.rs
    // requires it); this test runs that kit when it is there.
    if sb
        .sh("python3 -c 'import pytest_tap'", Duration::from_secs(30))
        .code
        == Some(0)
    {
        kits.push(("examples/tck/pytest", "10-pytest-tap.py", 1));
    }
    // Each kit passes some tests and fails one on purpose.
    for (kit, script, passed) in kits {
        let r = sb.sh(&format!("testbed tck run {kit}"), Duration::from_secs(120));
        assert_eq!(r.code, Some(1), "{kit}: {}", r.stdout);
        assert!(r.stdout.contains(script), "{kit}: {}", r.stdout);
        assert!(
            r.stdout.contains(&format!("Passed={passed}, Failed=")),
            "{kit}: {}",
            r.stdout
        );
    }
    let r = sb.sh(
        "testbed tck run examples/tck/bad --timeout 3s",
        Duration::from_secs(120),
    );
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.stdout.contains("timed out after 3s"), "{}", r.stdout);
    assert!(r.stdout.contains("malformed.sh"), "{}", r.stdout);
    assert!(r.stdout.contains("garbage.sh"), "{}", r.stdout);
}

#[test]
fn cni_example_gives_two_namespaces_a_network() {
    let mut sb = Sandbox::new("examples/cni");
    let suite = usage("examples/cni/two-namespaces.yaml");
    assert_eq!(
        suite,
        ["testbed api run examples/cni/two-namespaces.yaml"],
        "{suite:?}"
    );
    let r = must(&mut sb, &format!("{} --json cni.json", suite[0]));
    assert!(r.stdout.contains("Passed=3,"), "{}", r.stdout);
    let cases = outcomes(&json_file(&sb, "cni.json"));
    assert!(
        cases
            .iter()
            .any(|(n, o)| n == "red pings blue" && o == "pass"),
        "{cases:?}"
    );
    // The suite removed its namespaces, whatever their names were.
    let r = must(&mut sb, "ip netns list");
    assert!(!r.stdout.contains("tb-host-"), "{}", r.stdout);

    // The same suite as a plan step on `testbed up`'s agent.
    let plan = usage("examples/cni/plan.yaml");
    assert_eq!(plan, ["testbed run examples/cni/plan.yaml"], "{plan:?}");
    up(&mut sb, "", 1);
    let r = must(&mut sb, &format!("{} --json plan.json", plan[0]));
    assert!(r.stdout.contains("Result: PASS"), "{}", r.stdout);
    let cases = outcomes(&json_file(&sb, "plan.json"));
    assert!(
        cases
            .iter()
            .any(|(n, o)| n.contains("red pings blue") && o == "pass"),
        "{cases:?}"
    );
}
