//! Each type read from JSON shaped as the server sends it, and written back
//! unchanged: a renamed or dropped field fails here before a client sees it.
//!
//! What seed 002 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-002-compute-nodes-and-test-cases.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::*;

/// Decodes `v` as `T` and encodes it again; the JSON must come back equal.
fn round_trip<T: Serialize + DeserializeOwned>(v: Value) -> T {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", std::any::type_name::<T>()));
    // Through text, as the server sends it: `to_value` would widen an f32
    // (an agent's CPU percent) to f64 digits the server never writes.
    let text = serde_json::to_string(&typed).expect("encodes");
    let back: Value = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, v, "{} changed on the way", std::any::type_name::<T>());
    typed
}

const UUID_A: &str = "3f2a61f4-9c1e-4a57-b0a4-6f0ad1b9c001";
const UUID_B: &str = "8d0c4e52-1b7a-4c1e-9f3a-2e5b6c7d8e02";
const UUID_C: &str = "c4d5e6f7-0a1b-4c2d-8e3f-405162738493";
const AT: &str = "2026-12-03T20:08:17.123456Z";

fn task() -> Value {
    json!({
        "kind": "task", "v": 1, "id": UUID_A,
        "plugin": "linux_system", "method": "run_shell",
        "parameters": {"command": "ls", "args": "-alt"},
        "host": "node-1", "agent_uuid": UUID_B, "agent_name": "node-1",
        "status": "succeeded", "exit_code": 0,
        "result": {"stdout": "total 0\n", "exit_code": 0}, "error": null,
        "created_by": "admin", "created_at": AT, "started_at": AT, "finished_at": AT,
        "cancel_requested": false,
        "artifacts": [{"name": "out.txt", "size": 12, "url": format!("/api/tasks/{UUID_A}/artifacts/out.txt")}],
        "log_bytes": 9,
        "run": {"run_id": UUID_C, "step": "build", "instance": 0, "attempt": 1}
    })
}

#[test]
fn tasks_as_sent() {
    let req: tasks::SubmitRequest = round_trip(json!({
        "plugin": "linux_system", "host": "node-1", "method": "run_shell",
        "parameters": {"command": "ls", "args": "-alt"}
    }));
    assert_eq!(req.method, "run_shell");
    // Seed 002: `parameters` may be left out.
    let bare: tasks::SubmitRequest =
        serde_json::from_value(json!({"plugin": "p", "host": "h", "method": "m"})).unwrap();
    assert_eq!(bare.parameters, json!({}));
    let unknown = serde_json::from_value::<tasks::SubmitRequest>(
        json!({"plugin": "p", "host": "h", "method": "m", "params": {}}),
    );
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown field `params`"));

    let s: tasks::Submitted = round_trip(json!({
        "task_id": UUID_A, "status": "queued", "agent_uuid": UUID_B, "agent_name": "node-1",
        "url": format!("/api/tasks/{UUID_A}"),
        "log_url": format!("/api/tasks/{UUID_A}/log"),
        "log_ws": format!("/ws/tasks/{UUID_A}/log")
    }));
    assert_eq!(s.agent_name, "node-1");

    let mut view = task();
    view["duration_ms"] = json!(1500);
    view["log_url"] = json!(format!("/api/tasks/{UUID_A}/log"));
    let v: tasks::TaskView = round_trip(view.clone());
    assert_eq!(v.task.exit_code, Some(0));
    round_trip::<tasks::TaskPage>(
        json!({"total": 1, "page": 1, "page_size": 20, "results": [view]}),
    );
}

#[test]
fn errors_as_sent() {
    let e: error::ErrorBody = round_trip(json!({
        "error": "invalid request",
        "details": [{"field": "/parameters/command", "message": "missing parameter `command`"}]
    }));
    assert_eq!(e.details[0].field, "/parameters/command");
    // Only a 422 has details.
    let e: error::ErrorBody = round_trip(json!({"error": "no task 3f2a (404)"}));
    assert!(e.details.is_empty());
}

#[test]
fn a_missing_field_is_named() {
    let mut v = task();
    v.as_object_mut().unwrap().remove("status");
    v["duration_ms"] = json!(null);
    v["log_url"] = json!("/api/tasks/x/log");
    let e = serde_json::from_value::<tasks::TaskView>(v).unwrap_err();
    assert!(e.to_string().contains("missing field `status`"), "{e}");
}

#[test]
fn agents_as_sent() {
    let plugins = json!([{"name": "linux_system", "methods": [
        {"name": "run_shell", "description": "Run a command", "schema": {"type": "object"}}
    ]}]);
    let a: agents::AgentInfo = round_trip(json!({
        "uuid": UUID_B, "id": 1, "name": "node-1", "host": "node-1",
        "labels": {"os": "linux"}, "groups": ["ci"], "status": "online",
        "plugins": plugins, "capacity": 4, "outstanding": 0, "running": 0,
        "metrics": {"cpu_percent": 3.5, "memory_used_bytes": 1073741824u64,
                    "memory_total_bytes": 8589934592u64, "network_rx_bytes": 10,
                    "network_tx_bytes": 20, "load_average_1m": 0.25},
        "heartbeat_at": AT, "replica": "r1", "version": "0.1.0", "root": false,
        "run_as": null, "registered_at": AT, "last_seen_at": AT
    }));
    assert_eq!(a.plugins[0].methods[0].name, "run_shell");
    let detail = json!({UUID_B: {
        "compute_node_method": {"linux_system": {"run_shell": "Run a command"}},
        "compute_node_type": "linux_system", "host": "node-1", "id": 1,
        "name": "node-1", "labels": {}, "groups": [], "status": "offline"
    }});
    let d: std::collections::BTreeMap<String, agents::Slave> = round_trip(detail);
    assert!(d[UUID_B].uuid.is_none());
}

#[test]
fn auth_as_sent() {
    round_trip::<auth::LoginRequest>(json!({"username": "admin", "password": "secret123"}));
    round_trip::<auth::LoginResponse>(json!({
        "token": "eyJ…", "token_type": "Bearer", "expires_in": 43200,
        "username": "admin", "role": "admin"
    }));
    round_trip::<auth::SessionView>(json!({"username": "ann", "role": "viewer", "expires_in": 60}));
    round_trip::<auth::StreamTokenRequest>(json!({"path": "/ws/tasks/x/log"}));
    round_trip::<auth::StreamTokenResponse>(json!({"token": "t", "expires_in": 60}));
    round_trip::<auth::UserView>(json!({"username": "ann", "role": "operator", "created_at": AT}));
    round_trip::<auth::CreateUser>(
        json!({"username": "ann", "password": "longenough", "role": "viewer"}),
    );
    round_trip::<auth::UpdateUser>(json!({"role": "admin", "password": null}));
    round_trip::<meta::Health>(json!({
        "status": "ok", "store": "embedded", "revision": 42, "replica": "r1",
        "agents_connected": 1, "controller_leader": true, "controller_loops_ok": true,
        "controller_loops_failing": []
    }));
}

#[test]
fn runs_and_reports_as_sent() {
    let r: runs::CreateRun =
        round_trip(json!({"plan": "name: p\nsteps: []\n", "params": {"n": 3}}));
    assert!(r.plan_id.is_none());
    round_trip::<runs::CreateRun>(
        json!({"plan_id": UUID_C, "params": {}, "environment": "staging"}),
    );
    let summary = json!({
        "id": UUID_C, "plan_name": "smoke", "plan_id": null, "status": "passed",
        "created_by": "admin", "created_at": AT, "finished_at": AT, "report_id": UUID_A
    });
    let page: page::Page<runs::RunSummary> =
        round_trip(json!({"total": 1, "page": 1, "page_size": 50, "results": [summary]}));
    assert_eq!(page.results[0].status, runs::RunStatus::Passed);
    let report = json!({
        "id": UUID_A, "name": "smoke", "run_id": UUID_C, "created_at": AT,
        "total": 3, "passed": 2, "failed": 1, "errors": 0, "skipped": 0,
        "xfailed": 0, "xpassed": 0, "duration_ms": 1234, "ok": false
    });
    round_trip::<page::Page<reports::ReportRecord>>(
        json!({"total": 1, "page": 1, "page_size": 20, "results": [report]}),
    );
    let row: reports::CaseRow = serde_json::from_value(json!({
        "suite": "smoke [linux]", "number": 2, "name": "t2", "outcome": "fail"
    }))
    .expect("a case row");
    assert_eq!((row.number, row.case.name.as_str()), (2, "t2"));
}

#[test]
fn resources_and_projects_as_sent() {
    round_trip::<resources::GroupView>(json!({
        "name": "ci", "description": null, "created_at": AT,
        "agents": [{"uuid": UUID_B, "id": 1, "name": "node-1", "online": true}],
        "reserved_by": null
    }));
    round_trip::<projects::Project>(json!({
        "id": 1, "name": "web", "description": "", "created_at": AT, "updated_at": AT
    }));
    round_trip::<projects::ProjectInput>(json!({"name": "web", "description": "shop"}));
    round_trip::<projects::Message>(json!({"message": "project 1 deleted"}));
}

#[test]
fn performance_as_sent() {
    let config = json!({"concurrent_users": 10, "ramp_up_time": 1, "hold_time": 5,
        "test_type": "load", "target_url": "http://127.0.0.1:8080/", "request_timeout": 1000});
    let t: performance::LoadTest = round_trip(json!({
        "id": 7, "name": "home page", "description": "", "project_id": 1, "config": config,
        "status": "completed", "created_at": AT, "updated_at": AT,
        "last_execution": "exec-7-1", "created_by": "admin"
    }));
    assert_eq!(t.status, performance::PerfStatus::Completed);
    round_trip::<performance::LoadTestInput>(json!({
        "name": "home page", "description": null, "project_id": 1, "config": config
    }));
    round_trip::<page::Page<performance::LoadTestItem>>(
        json!({"total": 1, "page": 1, "page_size": 20,
        "results": [{"id": 7, "name": "home page", "description": "", "project_id": 1,
                     "status": "created", "created_at": AT}]}),
    );
    let e: performance::Execution = round_trip(json!({
        "execution_id": "exec-7-1", "plan_id": 7, "status": "running", "start_time": AT,
        "load_start_ms": 1796328497123u64, "stop_time": null, "pause_time": null,
        "resume_time": null, "end_time": null,
        "tasks": [{"task_id": UUID_A, "agent_uuid": UUID_B, "agent_name": "node-1"}],
        "lost_agents": [], "report_id": null, "created_by": "admin"
    }));
    assert!(e.is_active());
    round_trip::<performance::StartResponse>(json!({"execution_id": "exec-7-1",
        "status": "running", "start_time": AT, "websocket_url": "/ws/performance/exec-7-1/"}));
    round_trip::<performance::StopResponse>(json!({"execution_id": "exec-7-1",
        "status": "stopped", "stop_time": AT}));
    round_trip::<performance::PauseResponse>(json!({"execution_id": "exec-7-1",
        "status": "paused", "pause_time": AT}));
    round_trip::<performance::ResumeResponse>(json!({"execution_id": "exec-7-1",
        "status": "running", "resume_time": AT}));
    let summary = json!({"total_requests": 1000, "success_rate": 99.5,
        "avg_response_time": 12.25, "error_count": 5});
    let r: performance::PerfReport = round_trip(json!({
        "id": 3, "plan_id": 7, "execution_id": "exec-7-1", "start_time": AT, "end_time": AT,
        "status": "completed", "summary": summary,
        "metrics": {
            "response_times": {"timestamps": [1, 2], "values": [11.5, 13.0],
                "percentiles": {"p50": 11.0, "p90": 20.0, "p95": 25.0, "p99": 40.0}},
            "errors": {"labels": ["timeout"], "values": [5]},
            "system_metrics": {"cpu": [10.0, 12.0], "memory": [40.0, 41.0], "network": [0.0, 1.5],
                "agents": {"node-1": {"cpu": [10.0, null], "memory": [40.0, null]}}}
        },
        "agents": ["node-1"], "lost_agents": [],
        "thresholds": [{"expr": "p(95)<500", "observed": 25.0, "passed": true}],
        "passed": true
    }));
    assert!(r.thresholds[0].passed);
    round_trip::<performance::ReportItem>(json!({
        "id": 3, "plan_id": 7, "execution_id": "exec-7-1", "start_time": AT, "end_time": AT,
        "status": "stopped", "summary": summary
    }));
}

#[test]
fn the_document_names_every_schema() {
    let doc = serde_json::to_value(Schemas::openapi()).expect("encodes");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "ErrorBody",
        "Health",
        "LoginRequest",
        "LoginResponse",
        "UserView",
        "AgentInfo",
        "Slave",
        "SubmitRequest",
        "Submitted",
        "TaskView",
        "TaskPage",
        "CreateRun",
        "RunSummary",
        "CaseRow",
        "GroupView",
        "Project",
        "PerfStatus",
        "LoadTest",
        "LoadTestInput",
        "Execution",
        "StartResponse",
        "StopResponse",
        "PauseResponse",
        "ResumeResponse",
        "PerfReport",
        "ThresholdOutcome",
        "ReportItem",
    ] {
        assert!(schemas.contains_key(name), "no schema `{name}`");
    }
    // The seed's field names, as documented.
    let submit = &schemas["SubmitRequest"]["properties"];
    for field in ["plugin", "host", "method", "parameters"] {
        assert!(submit.get(field).is_some(), "SubmitRequest lacks `{field}`");
    }
    let slave = &schemas["Slave"]["properties"];
    assert!(slave.get("compute_node_method").is_some());
}

/// Answers of a real server (`testbed up --agents 1`, after `testbed exec`,
/// `testbed run examples/plans/smoke.yaml` and `testbed perf run
/// examples/perf/healthz.yaml`), saved with curl: each must decode into its
/// type and encode back to the same JSON.
#[test]
fn real_answers_round_trip() {
    use std::collections::BTreeMap;
    fn answer(text: &str) -> Value {
        serde_json::from_str(text).expect("saved answers are JSON")
    }
    macro_rules! check {
        ($file:literal, $ty:ty) => {
            round_trip::<$ty>(answer(include_str!(concat!("answers/", $file))))
        };
    }
    let agents = check!("agents.json", Vec<agents::AgentInfo>);
    assert!(agents[0].plugins.iter().any(|p| p.name == "linux_system"));
    check!("slaves_detail.json", BTreeMap<String, agents::Slave>);
    let slave = check!("slave.json", agents::Slave);
    assert!(slave.uuid.is_some());
    check!("task.json", tasks::TaskView);
    check!("tasks_page.json", tasks::TaskPage);
    check!("healthz.json", meta::Health);
    check!("me.json", auth::UserView);
    let run = check!("run.json", runs::Run);
    assert_eq!(run.spec.steps.len(), run.steps.len());
    check!("runs_page.json", page::Page<runs::RunSummary>);
    check!("reports_page.json", page::Page<reports::ReportRecord>);
    check!("report_cases.json", page::Page<reports::CaseRow>);
    check!("projects_page.json", page::Page<projects::Project>);
    check!(
        "load_tests_page.json",
        page::Page<performance::LoadTestItem>
    );
    check!("load_test.json", performance::LoadTest);
    check!(
        "perf_reports_page.json",
        page::Page<performance::ReportItem>
    );
    let report = check!("perf_report.json", performance::PerfReport);
    assert_eq!(report.thresholds.len(), 2);
}
