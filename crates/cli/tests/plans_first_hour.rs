//! A new user's first hour with plans (issue 11): labelled local agents from
//! `testbed up`, targets that can never match refused at submit, pending
//! steps that say what they wait for and for how long, templates that trim
//! captured stdout and offer `trim`/`join`/`json`, and `each: all`.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Posts a run of an inline plan; the status and body.
async fn submit(p: &Platform, yaml: &str) -> (u16, Value) {
    p.post("/api/runs", json!({"plan": yaml, "params": {}}))
        .await
}

/// The 422's error entries as `field: message` lines.
fn problems(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("{}: {}", e["field"].as_str().unwrap_or(""), e["message"]))
                .collect()
        })
        .unwrap_or_else(|| vec![body.to_string()])
}

fn one_step(extra_top: &str, target: &str) -> String {
    format!(
        "name: nowhere\n{extra_top}steps:\n  - id: build\n    plugin: linux_system\n    method: run_shell\n    target: {target}\n    params: {{command: \"true\"}}\n"
    )
}

const TEMPLATES: &str = r#"
name: first-hour
steps:
  - id: token
    plugin: linux_system
    method: run_shell
    target: {labels: {arch: x86_64, os: linux}}
    params: {command: echo, args: token-abc}
    outputs: {tok: "{{ result.stdout_tail }}"}
  - id: padded
    plugin: linux_system
    method: run_shell
    target: {group: lab-b}
    params: {command: printf, args: ["  padded  "]}
    outputs: {raw: "{{ result.stdout_tail }}"}
  - id: everywhere
    plugin: linux_system
    method: run_shell
    target: {each: all}
    params: {command: echo, args: ["{{ agent.name }}"]}
    outputs: {name: "{{ result.stdout_tail }}"}
  - id: use
    plugin: linux_system
    method: run_shell
    depends_on: [token, padded, everywhere]
    params:
      command: printf
      args:
        - "%s|"
        - "--token={{ steps.token.outputs.tok }}"
        - "{{ steps.padded.outputs.raw | trim }}"
        - "{{ steps.everywhere.outputs.name | join(',') }}"
        - "{{ steps.everywhere.outputs.name | json }}"
        - "hosts={{ steps.everywhere.outputs.name }}"
"#;

#[tokio::test]
async fn labelled_local_agents_targets_templates_and_each_all() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(
        dir.path(),
        2,
        &[
            "--agent-labels",
            "arch=x86_64,os=linux",
            "--agent-groups",
            "lab-a,lab-b",
        ],
    )
    .await;

    // The local agents carry what `up` was given.
    let (s, agents) = p.get("/api/agents").await;
    assert_eq!(s, 200, "{agents}");
    let text = agents.to_string();
    assert!(text.contains(r#""arch":"x86_64""#), "{agents}");
    assert!(text.contains("lab-b"), "{agents}");

    let id = p.start_run(TEMPLATES, json!({})).await;
    let run = p.wait_run(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "passed", "{run}");
    // Captured stdout drops one trailing newline, like shell `$(…)`.
    assert_eq!(
        run["steps"]["token"]["outputs"]["tok"], "token-abc",
        "{run}"
    );
    assert_eq!(run["steps"]["padded"]["outputs"]["raw"], "  padded  ");
    // `each: all` ran once on every live agent.
    let names: Vec<String> = run["steps"]["everywhere"]["outputs"]["name"]
        .as_array()
        .unwrap_or_else(|| panic!("a list per agent: {run}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["local-1", "local-2"], "{run}");
    let mut ran_on: Vec<&str> = run["steps"]["everywhere"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["agent_name"].as_str().unwrap())
        .collect();
    ran_on.sort();
    assert_eq!(ran_on, ["local-1", "local-2"]);
    // One argv element each, exactly as documented.
    let task = run["steps"]["use"]["instances"][0]["task_id"]
        .as_str()
        .unwrap();
    let expected = format!(
        "--token=token-abc|padded|{joined}|{json}|hosts={words}|",
        joined = names.join(","),
        json = serde_json::to_string(&names).unwrap(),
        words = names.join(" ")
    );
    assert_eq!(p.log(task).await, expected);

    // A filter nobody has is refused before anything runs, located.
    let typo = TEMPLATES.replace("| trim }}", "| strip }}");
    let (s, b) = submit(&p, &typo).await;
    assert_eq!(s, 422, "{b}");
    let ps = problems(&b);
    assert!(
        ps.iter().any(|e| e.starts_with("steps[3].params (line ")
            && e.contains("unknown filter `strip`")
            && e.contains("trim, join, json")),
        "{ps:#?}"
    );
}

#[tokio::test]
async fn unmatchable_targets_are_refused_and_waiting_ones_count_down() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &["--agent-labels", "arch=x86_64"]).await;

    // Each kind of selector nobody registered is a 422 naming step and field.
    for (target, names) in [
        ("{labels: {arch: sparc}}", "labels arch=x86_64"),
        ("{group: nosuchgroup}", "no groups"),
        ("nosuchhost", "names local-1"),
        ("{host: nosuchhost}", "hosts "),
        ("{each: {labels: {gpu: a100}}}", "labels arch=x86_64"),
    ] {
        let (s, b) = submit(&p, &one_step("", target)).await;
        assert_eq!(s, 422, "target {target}: {b}");
        let ps = problems(&b);
        assert!(
            ps.iter().any(|e| e.starts_with("steps[0].target (line 6")
                && e.contains("step `build`")
                && e.contains("no registered agent matches")
                && e.contains(names)
                && e.contains("wait_for_agents: true")),
            "target {target}: {ps:#?}"
        );
        // Storing such a plan is refused the same way.
        let (s, b) = p
            .send_yaml(reqwest::Method::POST, "/api/plans", one_step("", target))
            .await;
        assert_eq!(s, 422, "stored plan with target {target}: {b}");
    }
    // `testbed run` says the same, at the plan file's line and column, exit 2.
    let file = dir.path().join("nowhere.yaml");
    std::fs::write(&file, one_step("", "{labels: {arch: sparc}}")).unwrap();
    let o = p
        .cli(&dir.path().join("cli-config"))
        .arg("run")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nowhere.yaml:6:13: steps[0].target: step `build`: no registered agent matches labels arch=sparc"),
        "{err}"
    );
    // A target that matches is accepted as before.
    let ok = p
        .start_run(&one_step("", "{labels: {arch: x86_64}}"), json!({}))
        .await;
    assert_eq!(
        p.wait_run(&ok, Duration::from_secs(30)).await["status"],
        "passed"
    );

    // Told to wait, the plan is accepted and the step says what it waits
    // for, how long it has waited and for how long it will.
    let waiting = one_step(
        "wait_for_agents: true\npending_timeout: 2m\n",
        "{labels: {arch: sparc}}",
    );
    let (s, b) = submit(&p, &waiting).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let prefix =
        "waiting for an agent with labels arch=sparc that carries linux_system.run_shell (";
    let reason = |r: &Value| {
        r["steps"]["build"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let first = p
        .wait_run_until(&id, Duration::from_secs(20), |r| {
            reason(r).starts_with(prefix)
        })
        .await;
    assert_eq!(first["steps"]["build"]["status"], "pending", "{first}");
    assert!(reason(&first).ends_with(" s of 120 s)"), "{first}");
    // The count goes up while it waits.
    let later = p
        .wait_run_until(&id, Duration::from_secs(20), |r| {
            let text = reason(r);
            let waited = text
                .strip_prefix(prefix)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok());
            waited.is_some_and(|n| n >= 2)
        })
        .await;
    assert_eq!(later["steps"]["build"]["status"], "pending", "{later}");
    let (s, b) = p.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 202, "{b}");
    let done = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "cancelled", "{done}");
}

#[test]
fn up_documents_and_checks_its_agent_flags() {
    let help = Command::new(bin()).args(["up", "--help"]).output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--agent-labels", "--agent-groups", "--run-as"] {
        assert!(
            text.contains(flag),
            "{flag} missing from up --help:\n{text}"
        );
    }
    assert!(text.contains("--agent-labels arch=x86_64"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            vec!["--agent-labels", "arch"],
            "--agent-labels: label `arch` is not key=value",
        ),
        (
            vec!["--run-as", "no-such-user-for-testbed"],
            "--run-as: no such user: no-such-user-for-testbed",
        ),
    ] {
        let out = Command::new(bin())
            .args(["up", "--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .args(&args)
            .env("TESTBED_ADMIN_PASSWORD", "first-hour-password")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn up_run_as_drops_the_tasks_privileges() {
    if !nix::unistd::geteuid().is_root() {
        // Only root can switch users; CI runs as root, where this is checked.
        eprintln!("not root: --run-as cannot switch users here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &["--run-as", "nobody"]).await;
    let plan = "name: who\nsteps:\n  - id: who\n    plugin: linux_system\n    method: run_shell\n    params: {command: id, args: [\"-un\"], cwd: /}\n";
    let id = p.start_run(plan, json!({})).await;
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "passed", "{run}");
    let task = run["steps"]["who"]["instances"][0]["task_id"]
        .as_str()
        .unwrap();
    assert_eq!(p.log(task).await, "nobody\n");
}

#[tokio::test]
async fn junit_of_a_run_validates_against_jenkins_xunit_schema() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;
    let plan = dir.path().join("mixed.yaml");
    std::fs::write(
        &plan,
        "name: mixed\nsteps:\n  - id: ok\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: never\n    plugin: linux_system\n    method: run_shell\n    when: \"no\"\n    params: {command: \"true\"}\n  - id: known\n    plugin: linux_system\n    method: run_shell\n    xfail: \"bug 1\"\n    params: {command: \"false\"}\n",
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let o = p
        .cli(&dir.path().join("cli-config"))
        .arg("run")
        .arg(&plan)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let xml = std::fs::read_to_string(&junit).unwrap();
    // Skips are on the suite (GitLab, Jenkins' JUnit plugin), not the root.
    let root = xml.lines().find(|l| l.contains("<testsuites")).unwrap();
    assert!(!root.contains("skipped="), "{root}");
    let suite = xml.lines().find(|l| l.contains("<testsuite ")).unwrap();
    assert!(suite.contains(r#"skipped="2""#), "{xml}");
    let xsd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../report/tests/schemas/jenkins-xunit-junit-10.xsd");
    let check = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(&junit)
        .output()
        .expect("xmllint (Debian's libxml2-utils; scripts/test installs it)");
    assert!(
        check.status.success(),
        "{}\n{xml}",
        String::from_utf8_lossy(&check.stderr)
    );
}
