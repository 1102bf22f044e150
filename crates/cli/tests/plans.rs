//! Plans end to end: the DAG engine, templates, fan-out, retries, groups
//! and reservations, cancellation, failover, results and reports.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const DAG: &str = r#"
name: dag
parameters:
  who: {type: string, default: world}
steps:
  - id: hello
    plugin: linux_system
    method: run_shell
    params: {command: echo, args: "hello {{ params.who }}"}
    outputs:
      said: "{{ result.stdout_tail }}"
      code: "{{ result.exit_code }}"
  - id: again
    plugin: linux_system
    method: run_shell
    depends_on: [hello]
    params: {command: echo, args: "prev={{ steps.hello.outputs.said }} code={{ steps.hello.outputs.code }}"}
  - id: never
    plugin: linux_system
    method: run_shell
    depends_on: [hello]
    when: "{{ params.who }} == nobody"
    params: {command: "false"}
  - id: tolerated
    plugin: linux_system
    method: run_shell
    continue_on_failure: true
    params: {command: sh, args: "-c 'echo tolerated failure; exit 4'"}
  - id: after-tolerated
    plugin: linux_system
    method: run_shell
    depends_on: [tolerated]
    params: {command: "true"}
  - id: fatal
    plugin: linux_system
    method: run_shell
    params: {command: sh, args: "-c 'echo boom >&2; exit 7'"}
  - id: after-fatal
    plugin: linux_system
    method: run_shell
    depends_on: [fatal]
    params: {command: "true"}
  - id: known-broken
    plugin: linux_system
    method: run_shell
    xfail: "bug 42: exits 1 on this platform"
    params: {command: "false"}
  - id: fixed-meanwhile
    plugin: linux_system
    method: run_shell
    xfail: "bug 43"
    params: {command: "true"}
"#;

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    &run["steps"][id]
}

/// The case named `name` among a suite's `cases`.
fn case<'a>(cases: &'a [Value], name: &str) -> &'a Value {
    cases
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// `testbed` with no server: an embedded platform, no stored login.
fn embedded(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_remove("TESTBED_SERVER")
        .env("TESTBED_CONFIG_DIR", dir.join("no-login"))
        .env("TESTBED_LOG", "warn");
    cmd
}

/// `testbed` talking to `p`.
fn against(p: &Platform) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env("TESTBED_SERVER", &p.url)
        .env("TESTBED_TOKEN", &p.token)
        .env("TESTBED_LOG", "warn");
    cmd
}

#[tokio::test]
async fn dag_with_outputs_conditions_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 2, &[]).await;
    let id = p.start_run(DAG, json!({"who": "Ann"})).await;
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "hello")["status"], "passed");
    // Captured stdout loses its trailing newline, as with shell `$(…)`.
    assert_eq!(step(&run, "hello")["outputs"]["said"], "hello Ann");
    assert_eq!(step(&run, "again")["status"], "passed");
    let again_task = step_task(&run, "again");
    // `args` is split with shell-word rules, so the newline separates words.
    assert_eq!(p.log(&again_task).await, "prev=hello Ann code=0\n");
    assert_eq!(step(&run, "never")["status"], "skipped");
    assert!(step(&run, "never")["reason"]
        .as_str()
        .unwrap()
        .contains("is false"));
    assert_eq!(step(&run, "tolerated")["status"], "failed");
    assert_eq!(
        step(&run, "after-tolerated")["status"],
        "passed",
        "continue_on_failure lets dependents run"
    );
    assert_eq!(step(&run, "fatal")["status"], "failed");
    assert_eq!(step(&run, "after-fatal")["status"], "skipped");
    assert!(step(&run, "after-fatal")["reason"]
        .as_str()
        .unwrap()
        .contains("dependency `fatal`"));

    // The report, in every format, from the API.
    let report = run["report_id"].as_str().unwrap();
    let (s, body) = p.get(&format!("/api/reports/{report}")).await;
    assert_eq!(s, 200);
    let cases = body["suites"][0]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    let kb = case(cases, "known-broken");
    assert_eq!(kb["outcome"], "xfail");
    assert!(kb["message"].as_str().unwrap().contains("bug 42"));
    assert_eq!(case(cases, "fixed-meanwhile")["outcome"], "xpass");
    let fatal = case(cases, "fatal");
    assert_eq!(fatal["outcome"], "fail");
    assert!(fatal["output"].as_str().unwrap().contains("boom"));
    assert!(fatal["log_url"]
        .as_str()
        .unwrap()
        .starts_with("/api/tasks/"));
    let (_, junit) = p
        .get_text(&format!("/api/reports/{report}?format=junit"))
        .await;
    assert!(junit.contains("<failure"), "{junit}");
    let xml = dir.path().join("r.xml");
    std::fs::write(&xml, &junit).unwrap();
    let xsd =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../report/tests/fixtures/junit.xsd");
    let st = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&xsd)
        .arg(&xml)
        .status()
        .expect("xmllint (libxml2-utils) — run scripts/test, which installs it");
    assert!(st.success(), "JUnit report does not validate:\n{junit}");
    let (_, tap) = p
        .get_text(&format!("/api/reports/{report}?format=tap"))
        .await;
    assert!(tap.contains("not ok") && tap.contains("# SKIP"), "{tap}");
    let (_, html) = p
        .get_text(&format!("/api/reports/{report}?format=html"))
        .await;
    assert!(html.contains("<svg") && html.contains("fatal"));
    let (_, summary) = p
        .get_text(&format!("/api/reports/{report}?format=summary"))
        .await;
    assert!(summary.contains("Result: FAIL"), "{summary}");
    let (s, _) = p.get(&format!("/api/reports/{report}?format=pdf")).await;
    assert_eq!(s, 422);
    // The cases a page at a time, in order, filtered by outcome and name.
    let (s, page) = p
        .get(&format!("/api/reports/{report}/cases?page_size=4"))
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["total"], 9);
    assert_eq!(page["results"].as_array().unwrap().len(), 4);
    assert_eq!(page["results"][0]["number"], 1);
    assert_eq!(page["results"][0]["name"], cases[0]["name"]);
    let (_, last) = p
        .get(&format!("/api/reports/{report}/cases?page=3&page_size=4"))
        .await;
    assert_eq!(last["results"].as_array().unwrap().len(), 1);
    assert_eq!(last["results"][0]["number"], 9);
    let (_, failing) = p
        .get(&format!("/api/reports/{report}/cases?outcome=problems"))
        .await;
    let failing = failing["results"].as_array().unwrap();
    assert!(failing
        .iter()
        .all(|c| c["outcome"] == "fail" || c["outcome"] == "error"));
    let fatal = case(failing, "fatal");
    assert!(fatal["output"].as_str().unwrap().contains("boom"));
    let (_, named) = p.get(&format!("/api/reports/{report}/cases?q=FATAL")).await;
    assert_eq!(named["total"], 2, "{named}");
    let (s, bad) = p
        .get(&format!("/api/reports/{report}/cases?outcome=broken"))
        .await;
    assert_eq!(s, 422, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("outcome"), "{bad}");
    let (s, list) = p.get("/api/reports?page_size=5").await;
    assert_eq!(s, 200);
    assert_eq!(list["total"], 1);
    // A finished run can be deleted.
    p.delete_and_check_gone(&format!("/api/runs/{id}")).await;
}

#[tokio::test]
async fn known_broken_failures_do_not_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let plan = "name: kb\nsteps:\n  - id: broken\n    plugin: linux_system\n    method: run_shell\n    xfail: flaky on this kernel\n    params: {command: \"false\"}\n  - id: fine\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n";
    let id = p.start_run(plan, json!({})).await;
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "passed", "{run}");
    let (_, summary) = p
        .get_text(&format!(
            "/api/reports/{}?format=summary",
            run["report_id"].as_str().unwrap()
        ))
        .await;
    assert!(summary.contains("Xfailed=1"), "{summary}");
}

#[tokio::test]
async fn bad_plans_are_refused_with_every_problem_located() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let bad = "name: bad\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    depends_on: [c]\n    params: {command: ls}\n  - id: b\n    plugin: nosuch\n    method: x\n    depends_on: [ghost]\n  - id: c\n    plugin: linux_system\n    method: run_shel\n    depends_on: [a]\n  - id: d\n    plugin: linux_system\n    method: run_shell\n    params: {command: 5}\n";
    // Static problems first: cycle and unknown step, with line:column.
    let (s, b) = p.post("/api/runs", json!({"plan": bad})).await;
    assert_eq!(s, 422, "{b}");
    let fields = detail_lines(&b);
    assert_some_line_has(&fields, &["depends_on[0] (line 11, column 18)", "ghost"]);
    assert_some_line_has(&fields, &["dependency cycle"]);

    // Once the DAG is sound, plugins, methods and parameters are checked.
    let bad2 = "name: bad2\nsteps:\n  - id: b\n    plugin: nosuch\n    method: x\n  - id: c\n    plugin: linux_system\n    method: run_shel\n  - id: d\n    plugin: linux_system\n    method: run_shell\n    params: {command: 5}\n  - id: e\n    plugin: linux_system\n    method: run_shell\n    params: {command: echo, args: \"{{ params.missing }}\"}\n";
    let (s, b) = p.post("/api/runs", json!({"plan": bad2})).await;
    assert_eq!(s, 422, "{b}");
    let text = b["error"].as_str().unwrap();
    assert!(text.contains("params.missing"), "{text}");
    let bad3 = "name: bad3\nsteps:\n  - id: b\n    plugin: nosuch\n    method: x\n  - id: c\n    plugin: linux_system\n    method: run_shel\n  - id: d\n    plugin: linux_system\n    method: run_shell\n    params: {command: 5}\n";
    let (s, b) = p.post("/api/runs", json!({"plan": bad3})).await;
    assert_eq!(s, 422, "{b}");
    let fields = detail_lines(&b);
    assert_some_line_has(&fields, &["steps[0].plugin (line 4", "linux_system"]);
    assert_some_line_has(&fields, &["steps[1].method (line 8", "run_shell"]);
    assert_some_line_has(&fields, &["steps[2].params.command"]);

    // Stored plans are checked the same way, and nothing is created.
    let (s, b) = p.send_yaml(Method::POST, "/api/plans", bad3).await;
    assert_eq!(s, 422, "{b}");
    let (_, plans) = p.get("/api/plans").await;
    assert_eq!(plans["total"], 0);
    let (_, runs) = p.get("/api/runs").await;
    assert_eq!(runs["total"], 0);
    // Wrong parameter types and unknown parameters.
    let ok = "name: ok\nparameters:\n  n: {type: integer}\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: echo, args: \"{{ params.n }}\"}\n";
    let (s, b) = p
        .post(
            "/api/runs",
            json!({"plan": ok, "params": {"n": "x", "zz": 1}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["details"].as_array().unwrap().len(), 2, "{b}");
    let (s, _) = p.post("/api/runs", json!({"plan": ok})).await;
    assert_eq!(s, 422, "a required parameter is missing");
}

#[tokio::test]
async fn stored_plan_crud_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let smoke = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plans/smoke.yaml"),
    )
    .unwrap();
    let (s, plan) = p.send_yaml(Method::POST, "/api/plans", smoke.clone()).await;
    assert_eq!(s, 201, "{plan}");
    let plan_id = plan["id"].as_str().unwrap();
    let (_, list) = p.get("/api/plans?q=smo").await;
    assert_eq!(list["total"], 1);
    let (s, run) = p
        .post(
            "/api/runs",
            json!({"plan_id": plan_id, "params": {"who": "crud"}}),
        )
        .await;
    assert_eq!(s, 201, "{run}");
    let run = p
        .wait_run(run["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(run["status"], "passed", "{run}");
    let (_, runs) = p
        .get(&format!("/api/runs?plan_id={plan_id}&status=passed"))
        .await;
    assert_eq!(runs["total"], 1);
    let (s, b) = p
        .send_yaml(
            Method::PUT,
            &format!("/api/plans/{plan_id}"),
            smoke.replace("name: smoke", "name: smoke2"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, got) = p.get(&format!("/api/plans/{plan_id}")).await;
    assert_eq!(got["name"], "smoke2");
    p.delete_and_check_gone(&format!("/api/plans/{plan_id}"))
        .await;
}

#[tokio::test]
async fn testcases_environments_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let (s, b) = p
        .post("/api/environments", json!({"name": "staging", "variables": {"GREETING": "hi from staging"}, "selector": {"agent": "local-1"}}))
        .await;
    assert_eq!(s, 201, "{b}");
    // Created, then refused as a duplicate name, then as a bad name.
    for (testcase, status) in [
        (
            json!({"name": "greet", "steps": ["say the greeting"], "expected_result": "the greeting is printed",
                   "plugin": "linux_system", "method": "run_shell",
                   "parameters": {"command": "echo", "args": "{{ env.GREETING }}"}, "tags": ["smoke"]}),
            201,
        ),
        (json!({"name": "greet", "plugin": "x", "method": "y"}), 409),
        (
            json!({"name": "bad name!", "plugin": "x", "method": "y"}),
            422,
        ),
    ] {
        let (s, b) = p.post("/api/testcases", testcase).await;
        assert_eq!(s, status, "{b}");
    }
    let (_, l) = p.get("/api/testcases?tag=smoke").await;
    assert_eq!(l["total"], 1);

    let plan = "name: cases\nenvironment: staging\nsteps:\n  - id: greet\n    testcase: greet\n";
    let id = p.start_run(plan, json!({})).await;
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "passed", "{run}");
    let task = step_task(&run, "greet");
    assert_eq!(p.log(&task).await, "hi from staging\n");
    let (s, r) = p.get("/api/results/greet/staging").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "pass");
    assert_eq!(r["run_id"], id.as_str());
    let (_, rs) = p.get("/api/results?environment=staging").await;
    assert_eq!(rs["total"], 1);
    let (_, rs) = p.get("/api/results?testcase=greet&status=pass").await;
    assert_eq!(rs["total"], 1, "{rs}");
    assert_eq!(rs["results"][0]["environment"], "staging", "{rs}");
    // A test case's results are its own, not those of names it begins.
    let (_, rs) = p.get("/api/results?testcase=gree").await;
    assert_eq!(rs["total"], 0, "{rs}");
    let (_, rs) = p.get("/api/results?page=2").await;
    assert_eq!(
        (rs["total"].as_u64(), rs["results"].as_array().map(Vec::len)),
        (Some(1), Some(0)),
        "{rs}"
    );

    // A plan naming a missing test case or environment is refused.
    let (s, _) = p
        .post(
            "/api/runs",
            json!({"plan": "name: x\nsteps:\n  - id: a\n    testcase: nope\n"}),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = p
        .post("/api/runs", json!({"plan": plan, "environment": "nowhere"}))
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn fan_out_retries_and_pending_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &[]).await;
    let _agents: Vec<Proc> = [
        ("x86-a", "arch=x86_64"),
        ("x86-b", "arch=x86_64"),
        ("arm-c", "arch=arm64"),
    ]
    .into_iter()
    .map(|(name, labels)| agent(&p.url, name, &dir.path().join(name), &["--labels", labels]))
    .collect();
    p.wait_agents(3).await;
    let flag = dir.path().join("flag");
    let plan = format!(
        "name: matrix\npending_timeout: 2s\nwait_for_agents: true\nsteps:\n  - id: each\n    plugin: linux_system\n    method: run_shell\n    target: {{each: {{labels: {{arch: x86_64}}}}}}\n    params: {{command: echo, args: \"on {{{{ agent.name }}}}\"}}\n  - id: flaky\n    plugin: linux_system\n    method: run_shell\n    retries: 2\n    params: {{command: sh, args: \"-c 'test -f {f} || {{ touch {f}; exit 1; }}'\"}}\n  - id: nowhere\n    plugin: linux_system\n    method: run_shell\n    target: {{labels: {{arch: sparc}}}}\n    params: {{command: \"true\"}}\n",
        f = flag.display()
    );
    let id = p.start_run(&plan, json!({})).await;
    // Visible reason while no agent matches.
    p.wait_run_until(&id, Duration::from_secs(10), |r| {
        r["steps"]["nowhere"]["reason"].as_str().is_some_and(|s| {
            s.starts_with("waiting for an agent with labels arch=sparc") || s.contains("gave up")
        })
    })
    .await;
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    let each = step(&run, "each")["instances"].as_array().unwrap();
    let mut agents: Vec<&str> = each
        .iter()
        .map(|i| i["agent_name"].as_str().unwrap())
        .collect();
    agents.sort();
    assert_eq!(agents, ["x86-a", "x86-b"]);
    for i in each {
        let t = i["task_id"].as_str().unwrap();
        assert_eq!(
            p.log(t).await,
            format!("on {}\n", i["agent_name"].as_str().unwrap())
        );
    }
    let flaky = step(&run, "flaky");
    assert_eq!(flaky["status"], "passed", "{run}");
    assert_eq!(flaky["instances"][0]["attempt"], 2);
    assert_eq!(
        flaky["instances"][0]["previous"].as_array().unwrap().len(),
        1
    );
    assert_eq!(step(&run, "nowhere")["status"], "error");
    assert!(step(&run, "nowhere")["reason"]
        .as_str()
        .unwrap()
        .contains("gave up"));
    assert_eq!(run["status"], "failed");
}

#[tokio::test]
async fn lost_task_is_retried_on_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &["--lease-ttl", "2"]).await;
    let mut a = agent(&p.url, "ga", &dir.path().join("a"), &["--groups", "pool"]);
    let mut b = agent(&p.url, "gb", &dir.path().join("b"), &["--groups", "pool"]);
    p.wait_agents(2).await;
    let (s, _) = p
        .post(
            "/api/groups",
            json!({"name": "pool", "description": "two agents"}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, g) = p.get("/api/groups/pool").await;
    assert_eq!(g["agents"].as_array().unwrap().len(), 2, "{g}");
    let plan = "name: survive\nsteps:\n  - id: work\n    plugin: linux_system\n    method: run_shell\n    target: {group: pool}\n    retries: 1\n    params: {command: sh, args: \"-c 'sleep 3; echo finished'\"}\n";
    let id = p.start_run(plan, json!({})).await;
    let run = p
        .wait_run_until(&id, Duration::from_secs(10), |r| {
            r["steps"]["work"]["instances"][0]["agent_name"].is_string()
        })
        .await;
    let first = run["steps"]["work"]["instances"][0]["agent_name"]
        .as_str()
        .unwrap()
        .to_string();
    let task = step_task(&run, "work");
    p.wait_status(&task, "running", Duration::from_secs(10))
        .await;
    if first == "ga" {
        a.kill9()
    } else {
        b.kill9()
    }
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "passed", "{run}");
    let inst = &run["steps"]["work"]["instances"][0];
    assert_ne!(
        inst["agent_name"].as_str().unwrap(),
        first,
        "retried elsewhere"
    );
    assert_eq!(inst["attempt"], 2);
    assert_eq!(p.task(&task).await["status"], "lost");
}

#[tokio::test]
async fn reserved_group_takes_no_other_work() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let (s, _) = p.post("/api/groups", json!({"name": "lab"})).await;
    assert_eq!(s, 201);
    let (s, b) = p
        .call(Method::PUT, "/api/groups/lab/agents/local-1", None)
        .await;
    assert_eq!(s, 200, "{b}");
    let owner = "name: owner\nreserve: lab\nsteps:\n  - id: hold\n    plugin: linux_system\n    method: run_shell\n    target: {group: lab}\n    params: {command: sleep, args: \"2\"}\n";
    let other = "name: other\nsteps:\n  - id: want\n    plugin: linux_system\n    method: run_shell\n    target: {group: lab}\n    params: {command: echo, args: later}\n";
    let first = p.start_run(owner, json!({})).await;
    p.wait_step(&first, "hold", "running").await;
    let (_, g) = p.get("/api/groups/lab").await;
    assert_eq!(g["reserved_by"], first.as_str());
    let second = p.start_run(other, json!({})).await;
    let waiting = p
        .wait_run_until(&second, Duration::from_secs(10), |r| {
            r["steps"]["want"]["reason"].as_str().is_some()
        })
        .await;
    assert_eq!(waiting["steps"]["want"]["status"], "pending");
    let reason = waiting["steps"]["want"]["reason"].as_str().unwrap();
    for part in [
        "waiting for an agent with group=lab",
        "another run reserved",
    ] {
        assert!(reason.contains(part), "{waiting}");
    }
    // Nor does a one-off task land there: it waits, queued, saying why.
    let (s, b) = p
        .post("/v2.1/testcases", json!({"plugin": "linux_system", "host": "local-1", "method": "run_shell", "parameters": {"command": "echo", "args": "after the reservation"}}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "queued", "{b}");
    let one_off = b["task_id"].as_str().unwrap().to_string();
    let t = p.task(&one_off).await;
    assert_eq!(t["status"], "queued", "{t}");
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("group `lab` is reserved by run") && reason.contains(first.as_str()),
        "{t}"
    );
    // It does not start while the reservation lasts.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(p.task(&one_off).await["status"], "queued");
    // A held task can be cancelled like any queued one.
    let dropped = p
        .run(
            "linux_system",
            "local-1",
            "run_shell",
            json!({"command": "true"}),
        )
        .await;
    let (s, b) = p
        .post(&format!("/api/tasks/{dropped}/cancel"), json!({}))
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["status"], "cancelled", "{b}");
    // Once the owner ends, the other run proceeds and the one-off task runs.
    let done = p.wait_run(&first, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "passed");
    let (_, g) = p.get("/api/groups/lab").await;
    assert!(g["reserved_by"].is_null(), "{g}");
    let later = p.wait_run(&second, Duration::from_secs(20)).await;
    assert_eq!(later["status"], "passed", "{later}");
    let t = p.wait_succeeded(&one_off, Duration::from_secs(20)).await;
    assert!(t["reason"].is_null(), "{t}");
    assert_eq!(p.log(&one_off).await, "after the reservation\n");
}

#[tokio::test]
async fn cancelling_a_run_stops_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let plan = "name: long\nsteps:\n  - id: slow\n    plugin: linux_system\n    method: run_shell\n    params: {command: sleep, args: \"60\"}\n  - id: next\n    plugin: linux_system\n    method: run_shell\n    depends_on: [slow]\n    params: {command: \"true\"}\n";
    let id = p.start_run(plan, json!({})).await;
    let run = p.wait_step(&id, "slow", "running").await;
    let task = step_task(&run, "slow");
    p.wait_status(&task, "running", Duration::from_secs(10))
        .await;
    let started = Instant::now();
    let (s, _) = p.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 202);
    let run = p.wait_run(&id, Duration::from_secs(15)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(p.task(&task).await["status"], "cancelled");
    assert_eq!(step(&run, "next")["status"], "cancelled");
    let (s, _) = p.post(&format!("/api/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn run_survives_a_killed_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Platform::server_in(dir.path(), &[]).await;
    let _a = agent(&p.url, "steady", &dir.path().join("a"), &[]);
    p.wait_agents(1).await;
    let out = dir.path().join("out.txt");
    let plan = format!(
        "name: durable\nsteps:\n  - id: first\n    plugin: linux_system\n    method: run_shell\n    params: {{command: sh, args: \"-c 'sleep 2; echo first >> {o}'\"}}\n  - id: second\n    plugin: linux_system\n    method: run_shell\n    depends_on: [first]\n    params: {{command: sh, args: \"-c 'echo second >> {o}'\"}}\n",
        o = out.display()
    );
    let id = p.start_run(&plan, json!({})).await;
    p.wait_step(&id, "first", "running").await;
    p.kill_and_restart_in(dir.path(), &[]).await;
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "passed", "{run}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "first\nsecond\n",
        "each step ran exactly once"
    );
}

#[tokio::test]
async fn cli_run_embedded_and_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, "name: cli\nparameters:\n  code: {type: integer, default: 0}\nsteps:\n  - id: one\n    plugin: linux_system\n    method: run_shell\n    params: {command: sh, args: \"-c 'echo from-cli; exit {{ params.code }}'\"}\n").unwrap();
    let junit = dir.path().join("junit.xml");
    let json_out = dir.path().join("report.json");
    // No TESTBED_SERVER: an embedded platform runs it.
    let o = embedded(dir.path())
        .arg("run")
        .arg(&plan)
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Result: PASS"));
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("<testcase"));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_eq!(r["suites"][0]["cases"][0]["outcome"], "pass");
    // A failing test → exit 1, and the failing step's log is shown.
    let o = embedded(dir.path())
        .arg("run")
        .arg(&plan)
        .args(["-p", "code=3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("from-cli") && err.contains("one failed"),
        "{err}"
    );
    // A bad plan → exit 2 with file:line:column.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\nsteps:\n  - id: a\n    plugin: p\n    method: m\n    depends_on: [zz]\n",
    )
    .unwrap();
    let o = embedded(dir.path()).arg("run").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:6:18: steps[0].depends_on[0]"),
        "{err}"
    );

    // With TESTBED_SERVER the same plan goes to that server.
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;
    let o = against(&p).arg("run").arg(&plan).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, runs) = p.get("/api/runs").await;
    assert_eq!(runs["total"], 1);
    // `testbed runs ls` and `report show` against it.
    let o = against(&p).args(["runs", "ls"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("cli"));
    let report = runs["results"][0]["report_id"].as_str().unwrap();
    let o = against(&p)
        .args(["report", "show", report, "--format", "tap"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ok 1 - one"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Offline conversion of a report file.
    let o = Command::new(bin())
        .args(["report", "convert"])
        .arg(&json_out)
        .args(["--to", "summary"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("Result: PASS"));
}

#[tokio::test]
async fn a_kit_across_a_fleet_is_a_matrix_and_runs_compare() {
    let dir = tempfile::tempdir().unwrap();
    let kit = dir.path().join("kit");
    std::fs::create_dir_all(&kit).unwrap();
    let script = kit.join("01-feature.t");
    std::fs::write(
        &script,
        "print \"1..2\\nok 1 - connects\\nok 2 - lists domains\\n\";\n",
    )
    .unwrap();
    std::fs::write(
        kit.join("02-stable.t"),
        "print \"1..1\\nok 1 - stable\\n\";\n",
    )
    .unwrap();
    let (p, plan) = Platform::kit_on_two_agents(&dir.path().join("data"), &kit).await;
    let first = p.run_plan(&plan, json!({}), Duration::from_secs(60)).await;
    assert_eq!(first["status"], "passed", "{first}");
    let r1 = first["report_id"].as_str().unwrap().to_string();
    let (_, report) = p.get(&format!("/api/reports/{r1}")).await;
    let mut matrix: Vec<String> = report["suites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["platform"].is_string())
        .map(|s| {
            format!(
                "{}@{}",
                s["name"].as_str().unwrap(),
                s["platform"].as_str().unwrap()
            )
        })
        .collect();
    matrix.sort();
    assert_eq!(
        matrix,
        [
            "01-feature.t@local-1",
            "01-feature.t@local-2",
            "02-stable.t@local-1",
            "02-stable.t@local-2"
        ]
    );

    // The feature breaks; the next run is compared with the first.
    std::fs::write(
        &script,
        "print \"1..2\\nok 1 - connects\\nnot ok 2 - lists domains\\n\";\n",
    )
    .unwrap();
    let second = p.run_plan(&plan, json!({}), Duration::from_secs(60)).await;
    assert_eq!(second["status"], "failed");
    let r2 = second["report_id"].as_str().unwrap();
    let (s, cmp) = p.get(&format!("/api/reports/{r1}/compare/{r2}")).await;
    assert_eq!(s, 200, "{cmp}");
    let regressions: Vec<String> = cmp["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["suite"], c["case"]))
        .collect();
    assert_some_line_has(&regressions, &["local-1", "lists domains"]);
    assert_some_line_has(&regressions, &["local-2", "lists domains"]);
    assert!(!regressions.iter().any(|r| r.contains("stable")), "{cmp}");
    let (_, text) = p
        .get_text(&format!("/api/reports/{r1}/compare/{r2}?format=text"))
        .await;
    assert!(text.to_lowercase().contains("regression"), "{text}");
}
