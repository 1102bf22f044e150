//! The seed-001 performance API end to end: a real `testbed up` with load
//! agents driving a small HTTP/1.1 server inside the test, whose own request
//! counter is the ground truth for the reports.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{serve, Platform};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn send(
    p: &Platform,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = p
        .http
        .request(method, format!("{}{path}", p.url))
        .bearer_auth(&p.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn new_project(p: &Platform) -> u64 {
    let (s, b) = p
        .post("/api/projects", json!({"name": "shop", "description": "d"}))
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_u64().unwrap()
}

async fn plan(p: &Platform, project: u64, name: &str, config: Value) -> u64 {
    let (s, b) = p
        .post(
            "/api/performance/plans/",
            json!({"name": name, "project_id": project, "config": config}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "created");
    b["id"].as_u64().unwrap()
}

/// Waits for the plan's `n`-th report and returns its detail.
async fn report(p: &Platform, plan: u64, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, b) = p
            .get(&format!("/api/performance/reports/?plan_id={plan}"))
            .await;
        assert_eq!(s, 200, "{b}");
        if b["total"].as_u64().unwrap() as usize >= n {
            let id = b["results"][0]["id"].as_u64().unwrap();
            let (s, r) = p.get(&format!("/api/performance/reports/{id}/")).await;
            assert_eq!(s, 200, "{r}");
            return r;
        }
        assert!(Instant::now() < deadline, "no report for plan {plan}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_runs_live_metrics_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let (url, count) = serve();
    let project = new_project(&p).await;

    // Bad input: each field named.
    let (s, b) = p
        .post(
            "/api/performance/plans/",
            json!({"name": "bad", "project_id": project, "config": {
                "concurrent_users": 0, "ramp_up_time": 1, "hold_time": -3,
                "test_type": "chaos", "target_url": "not a url"}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let err = b["error"].as_str().unwrap();
    for f in ["target_url", "concurrent_users", "test_type", "hold_time"] {
        assert!(err.contains(f), "{f} not named in {err}");
    }
    let (s, b) = p
        .post(
            "/api/performance/plans/",
            json!({"name": "x", "project_id": 9999, "config": {"concurrent_users": 1, "target_url": url}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"].as_str().unwrap().contains("project_id"), "{b}");
    let (s, _) = p.get("/api/performance/plans/").await;
    assert_eq!(s, 400);

    // Projects have full CRUD.
    let other = new_project(&p).await;
    let (s, b) = send(
        &p,
        reqwest::Method::PUT,
        &format!("/api/projects/{other}"),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "renamed");
    let (s, b) = p.get("/api/projects?page=1&page_size=10").await;
    assert_eq!(s, 200);
    assert_eq!(b["total"], 2);
    let (s, b) = send(
        &p,
        reqwest::Method::DELETE,
        &format!("/api/projects/{other}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = p.get(&format!("/api/projects/{other}")).await;
    assert_eq!(s, 404);

    // Agents chosen by labels: none match here.
    let nowhere = plan(
        &p,
        project,
        "nowhere",
        json!({"concurrent_users": 1, "hold_time": 1, "target_url": url,
            "agents": {"labels": {"zone": "nowhere"}}}),
    )
    .await;
    let (s, b) = p
        .post(
            &format!("/api/performance/plans/{nowhere}/start/"),
            json!({}),
        )
        .await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(
        p.get(&format!("/api/performance/plans/{nowhere}/")).await.1["status"],
        "created"
    );
    let (s, _) = send(
        &p,
        reqwest::Method::DELETE,
        &format!("/api/performance/plans/{nowhere}/"),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // A complete run, followed live.
    let config = json!({"concurrent_users": 2, "ramp_up_time": 1, "hold_time": 3,
        "test_type": "load", "target_url": url, "request_timeout": 2000});
    let id = plan(&p, project, "steady", config.clone()).await;
    let (s, b) = p
        .get(&format!(
            "/api/performance/plans/?project_id={project}&page=1&page_size=10"
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["total"], 1);
    assert_eq!(b["results"][0]["id"], id);
    let (s, b) = send(
        &p,
        reqwest::Method::PUT,
        &format!("/api/performance/plans/{id}/"),
        Some(json!({"name": "steady-2", "config": config})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "steady-2");

    let started = p.start_perf(id).await;
    assert_eq!(started["status"], "running");
    let (s, b) = p
        .post(&format!("/api/performance/plans/{id}/start/"), json!({}))
        .await;
    assert_eq!(s, 409, "{b}");
    let exec = started["execution_id"].as_str().unwrap().to_string();
    let ws_url = started["websocket_url"].as_str().unwrap();
    assert!(
        ws_url.starts_with("ws://") && ws_url.contains(&format!("/ws/performance/{exec}/?token="))
    );

    // The URL works as given (a browser cannot set headers).
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut busy_seconds = 0;
    let mut finished = None;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("websocket went quiet")
    {
        match msg.unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("metrics") => {
                        assert!(v["data"]["system_metrics"]["cpu"].is_number(), "{v}");
                        if v["data"]["requests_per_second"].as_f64().unwrap() > 0.0 {
                            busy_seconds += 1;
                        }
                    }
                    Some("finished") => finished = Some(v),
                    _ => panic!("unexpected message {v}"),
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(busy_seconds >= 2, "only {busy_seconds} busy seconds");
    let finished = finished.expect("no finished message");
    assert_eq!(finished["status"], "completed", "{finished}");

    let r = report(&p, id, 1).await;
    let total = r["summary"]["total_requests"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(total, count.load(Ordering::SeqCst), "{r}");
    assert_eq!(finished["summary"]["total_requests"], total);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["summary"]["success_rate"], 100.0);
    for q in ["p50", "p90", "p95", "p99"] {
        assert!(
            r["metrics"]["response_times"]["percentiles"][q]
                .as_f64()
                .unwrap()
                > 0.0,
            "{q}: {r}"
        );
    }
    assert!(!r["metrics"]["response_times"]["timestamps"]
        .as_array()
        .unwrap()
        .is_empty());
    let (s, m) = p
        .get(&format!(
            "/api/performance/metrics/{exec}/?metric_type=throughput"
        ))
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["metrics"]["throughput"]["total_requests"], total);
    assert!(m["metrics"].get("system").is_none());
    let (s, m) = p
        .get(&format!("/api/performance/metrics/{exec}/?time_range=2"))
        .await;
    assert_eq!(s, 200, "{m}");
    assert!(
        m["metrics"]["response_time"]["p95"].as_f64().unwrap() > 0.0,
        "{m}"
    );

    // Pause holds new requests; resume continues; stop still reports.
    let long = plan(
        &p,
        project,
        "long",
        json!({"concurrent_users": 2, "ramp_up_time": 0, "hold_time": 30,
            "test_type": "load", "target_url": url}),
    )
    .await;
    let (s, _) = p
        .post(&format!("/api/performance/plans/{long}/pause/"), json!({}))
        .await;
    assert_eq!(s, 409);
    p.start_perf(long).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = count.load(Ordering::SeqCst);
    let (s, b) = p
        .post(&format!("/api/performance/plans/{long}/pause/"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "paused");
    assert!(b["pause_time"].is_string());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let paused_at = count.load(Ordering::SeqCst);
    assert!(paused_at > before, "no load before the pause");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        paused_at,
        "requests while paused"
    );
    let (s, _) = p
        .post(&format!("/api/performance/plans/{long}/pause/"), json!({}))
        .await;
    assert_eq!(s, 409);
    let (s, b) = p
        .post(&format!("/api/performance/plans/{long}/resume/"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "running");
    assert!(b["resume_time"].is_string());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        count.load(Ordering::SeqCst) > paused_at,
        "no load after resume"
    );
    let (s, b) = p
        .post(&format!("/api/performance/plans/{long}/stop/"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "stopped");
    assert!(b["stop_time"].is_string());
    let (s, _) = p
        .post(&format!("/api/performance/plans/{long}/stop/"), json!({}))
        .await;
    assert_eq!(s, 409);
    let r = report(&p, long, 1).await;
    assert_eq!(r["status"], "stopped", "{r}");
    assert!(r["summary"]["total_requests"].as_u64().unwrap() > 0);
    // Well short of the 30 s hold.
    let secs = r["metrics"]["response_times"]["timestamps"]
        .as_array()
        .unwrap()
        .len();
    assert!(secs < 15, "{secs} seconds");

    // A target that refuses connections: classified errors, no crash.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = plan(
        &p,
        project,
        "refused",
        json!({"concurrent_users": 1, "hold_time": 1, "target_url": format!("http://127.0.0.1:{port}/")}),
    )
    .await;
    p.start_perf(refused).await;
    let r = report(&p, refused, 1).await;
    let labels = r["metrics"]["errors"]["labels"].as_array().unwrap();
    assert!(labels.contains(&json!("Connection Error")), "{r}");
    assert!(r["summary"]["error_count"].as_u64().unwrap() > 0);

    // Deletes answer with a message, and what they delete is gone.
    let rid = r["id"].as_u64().unwrap();
    for path in [
        format!("/api/performance/reports/{rid}/"),
        format!("/api/performance/plans/{refused}/"),
    ] {
        let (s, b) = send(&p, reqwest::Method::DELETE, &path, None).await;
        assert_eq!(s, 200, "DELETE {path}: {b}");
        assert!(b["message"].is_string(), "DELETE {path}: {b}");
        let (s, _) = p.get(&path).await;
        assert_eq!(s, 404, "GET {path} after its DELETE");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_split_across_agents() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 2, &[]).await;
    let (url, count) = serve();
    let project = new_project(&p).await;
    let id = plan(
        &p,
        project,
        "wide",
        json!({"concurrent_users": 4, "ramp_up_time": 1, "hold_time": 2,
            "test_type": "load", "target_url": url, "agents": 2}),
    )
    .await;
    p.start_perf(id).await;
    let r = report(&p, id, 1).await;
    let total = r["summary"]["total_requests"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(total, count.load(Ordering::SeqCst), "{r}");
    let agents = r["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{r}");
    assert_ne!(agents[0], agents[1]);

    // Each agent's task ran and their counts add up to the total.
    let (s, tasks) = p.get("/api/tasks?page_size=100").await;
    assert_eq!(s, 200);
    let load: Vec<&Value> = tasks["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["plugin"] == "load")
        .collect();
    assert_eq!(load.len(), 2, "{tasks}");
    let mut sum = 0;
    for t in &load {
        let (_, full) = p
            .get(&format!("/api/tasks/{}", t["id"].as_str().unwrap()))
            .await;
        assert_eq!(full["status"], "succeeded", "{full}");
        let n = full["result"]["requests"].as_u64().unwrap();
        assert!(n > 0, "{full}");
        sum += n;
    }
    assert_eq!(sum, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_load_agent_is_recorded_and_the_rest_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &["--lease-ttl", "2"]).await;
    let mut doomed = common::agent(
        &p.url,
        "doomed",
        &dir.path().join("doomed"),
        &["--plugins", "load"],
    );
    p.wait_agents(2).await;
    let (url, count) = serve();
    let project = new_project(&p).await;
    let id = plan(
        &p,
        project,
        "survive",
        json!({"concurrent_users": 2, "hold_time": 8, "target_url": url, "agents": 2}),
    )
    .await;
    p.start_perf(id).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    doomed.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_kill = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        count.load(Ordering::SeqCst) > after_kill,
        "load stopped with the agent"
    );

    let r = report(&p, id, 1).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["lost_agents"], json!(["doomed"]), "{r}");
    assert_eq!(r["agents"].as_array().unwrap().len(), 2, "{r}");
    let total = r["summary"]["total_requests"].as_u64().unwrap();
    // The survivor's share exactly, plus what the lost agent reported live.
    assert!(total > 0 && total <= count.load(Ordering::SeqCst), "{r}");
    // The survivor's windows span its whole hold (the agent was killed at
    // 3 s of 8). The span, not the count of windows: on a starved machine a
    // second may pass without a window of its own.
    let stamps: Vec<u64> = r["metrics"]["response_times"]["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let span = stamps.last().unwrap_or(&0) - stamps.first().unwrap_or(&0);
    assert!(span >= 6, "the survivor ran its whole hold: {stamps:?} {r}");
}
