//! Prometheus `/metrics` on a real `testbed up`: what it counts after real
//! work (dispatch latency, queue depths, reconcile passes, live load
//! figures included), that labels are route templates (never ids), who may
//! read it (the metrics token, a separate address, or nobody), and — when Debian's
//! `prometheus` is installed — that a real Prometheus scrapes it with a
//! bearer-token file and answers queries about it.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

/// One sample of the exposition: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the OpenMetrics / Prometheus text format, strictly enough that a
/// malformed line fails the test: `name{k="v",…} value` or `name value`,
/// comments `# HELP|TYPE|UNIT|EOF`.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT "]
                    .iter()
                    .any(|p| comment.starts_with(p))
                    || comment == "EOF",
                "unexpected comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (name, parse_labels(body, line))
            }
            None => (series, BTreeMap::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in: {line}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in: {line}"),
            }
        };
        labels.insert(key.to_string(), value);
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    labels
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

/// Does `s` contain something shaped like a UUID (8-4-4-4-12 hex)?
fn has_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    let shape = [8, 4, 4, 4, 12];
    (0..b.len()).any(|start| {
        let mut i = start;
        for (n, len) in shape.iter().enumerate() {
            if n > 0 {
                if b.get(i) != Some(&b'-') {
                    return false;
                }
                i += 1;
            }
            for _ in 0..*len {
                if !b.get(i).is_some_and(u8::is_ascii_hexdigit) {
                    return false;
                }
                i += 1;
            }
        }
        true
    })
}

async fn scrape(url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("GET /metrics");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, r.text().await.unwrap_or_default())
}

fn token_file(dir: &Path) -> String {
    let path = dir.join("metrics.token");
    std::fs::write(&path, format!("{METRICS_TOKEN}\n")).expect("write token");
    path.display().to_string()
}

/// `testbed up` with `agents` local agents and `/metrics` behind the
/// metrics token: the directory of its data and token file, the file, it.
async fn up_with_token(agents: u32) -> (tempfile::TempDir, String, Platform) {
    let dir = tempfile::tempdir().unwrap();
    let token_path = token_file(dir.path());
    let p = Platform::up(
        &dir.path().join("data"),
        agents,
        &["--metrics-token-file", &token_path],
    )
    .await;
    (dir, token_path, p)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_real_work_by_route_template() {
    let (_dir, _, p) = up_with_token(1).await;

    // Who may read it: the metrics token only.
    let (status, _, body) = scrape(&p.url, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = scrape(&p.url, Some("wrong-token-0123456789")).await;
    assert_eq!(status, 401, "{body}");
    // A user's session is not the metrics token either.
    let (status, _, body) = scrape(&p.url, Some(&p.token)).await;
    assert_eq!(status, 401, "{body}");

    let (status, ctype, body) = scrape(&p.url, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let before = parse(&body);
    let unauthorized_before = value(
        &before,
        "testbed_http_requests_total",
        &[("route", "/metrics"), ("status", "401")],
    );
    assert_eq!(unauthorized_before, 3.0, "three refused scrapes");

    // Real work: a task that succeeds, its record read by id, a wrong
    // login, a path no route matches.
    let id = p.run_shell("local-1", "echo", "metrics").await;
    p.wait_succeeded(&id, Duration::from_secs(60)).await;
    let (s, _) = p.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(s, 200);
    let (s, _) = p.get(&format!("/api/tasks/{id}/log")).await;
    assert_eq!(s, 200);
    let r = p
        .http
        .post(format!("{}/api/auth/login", p.url))
        .json(&json!({"username": "admin", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, _) = p.get(&format!("/no/such/{id}")).await;
    assert_eq!(s, 404);
    // A plan run of two steps.
    let plan = "name: m\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: b\n    plugin: linux_system\n    method: run_shell\n    depends_on: [a]\n    params: {command: \"true\"}\n";
    let run = p.start_run(plan, json!({})).await;
    let done = p.wait_run(&run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "passed", "{done}");

    // A log follower open while we scrape: one task_log session.
    let sleeper = p.run_shell("local-1", "sleep", "60").await;
    p.wait_status(&sleeper, "running", Duration::from_secs(60))
        .await;
    let ws_url = format!(
        "{}/ws/tasks/{sleeper}/log",
        p.url.replacen("http://", "ws://", 1)
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)
            .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", p.token).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws");

    // Task counts are read from the store at scrape time, at most once a
    // second: scrape until the running task shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (body, after) = loop {
        let (status, _, body) = scrape(&p.url, Some(METRICS_TOKEN)).await;
        assert_eq!(status, 200);
        let after = parse(&body);
        if value(&after, "testbed_tasks", &[("status", "running")]) == 1.0 {
            break (body, after);
        }
        assert!(
            Instant::now() < deadline,
            "the running task never counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Counters moved.
    assert_eq!(
        value(
            &after,
            "testbed_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v2.1/testcases"),
                ("status", "201")
            ],
        ),
        2.0,
        "{body}"
    );
    // Polled by wait_task and read once more: one series for every id.
    assert!(
        value(
            &after,
            "testbed_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/tasks/{id}"),
                ("status", "200")
            ],
        ) >= 2.0,
        "{body}"
    );
    assert!(
        find(
            &after,
            "testbed_http_requests_total",
            &[("route", "/api/tasks/{id}/log"), ("status", "200")],
        )
        .is_some(),
        "{body}"
    );
    // Series that moved at least once.
    for (name, labels) in [
        (
            "testbed_http_requests_total",
            &[("route", "unmatched"), ("status", "404")][..],
        ),
        (
            "testbed_http_requests_total",
            &[("route", "/metrics"), ("status", "200")],
        ),
        (
            "testbed_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/api/tasks/{id}")],
        ),
        (
            "testbed_http_request_duration_seconds_bucket",
            &[("route", "/api/tasks/{id}"), ("le", "+Inf")],
        ),
        ("testbed_tasks", &[("status", "succeeded")]),
        ("testbed_login_failures_total", &[("reason", "credentials")]),
    ] {
        assert!(
            value(&after, name, labels) >= 1.0,
            "{name}{labels:?}: {body}"
        );
    }
    // Gauges at what this test left behind.
    for (name, labels, want) in [
        ("testbed_tasks", &[("status", "running")][..], 1.0),
        ("testbed_runs", &[("status", "passed")], 1.0),
        ("testbed_run_steps", &[("status", "passed")], 2.0),
        ("testbed_runs", &[("status", "failed")], 0.0),
        ("testbed_agents_connected", &[], 1.0),
        ("testbed_controller_leader", &[], 1.0),
        ("testbed_websocket_sessions", &[("kind", "task_log")], 1.0),
    ] {
        assert_eq!(
            value(&after, name, labels),
            want,
            "{name}{labels:?}: {body}"
        );
    }
    // A task is created and settled in transactions, read with get/range.
    for op in ["get", "range", "txn"] {
        assert!(
            value(
                &after,
                "testbed_store_operation_duration_seconds_count",
                &[("operation", op)],
            ) > value(
                &before,
                "testbed_store_operation_duration_seconds_count",
                &[("operation", op)],
            ),
            "store {op} did not move: {body}"
        );
        assert_eq!(
            value(&after, "testbed_store_errors_total", &[("operation", op)]),
            0.0
        );
    }
    // Process metrics, as the client libraries name them.
    let pid = p.proc.child.as_ref().unwrap().id();
    let rss = value(&after, "process_resident_memory_bytes", &[]);
    assert!(rss > 1e6, "{rss}");
    assert!(
        (rss / 1024.0 - rss_kib(pid) as f64).abs() < rss_kib(pid) as f64 * 0.5,
        "resident memory {rss} B is not this process's ({} KiB)",
        rss_kib(pid)
    );
    assert!(value(&after, "process_cpu_seconds_total", &[]) > 0.0);
    assert!(value(&after, "process_open_fds", &[]) > 3.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value(&after, "process_start_time_seconds", &[]);
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "{start} vs {now}"
    );

    // Bounded cardinality: every route label is a template or `unmatched`,
    // and no label anywhere carries an id.
    for s in &after {
        if let Some(route) = s.labels.get("route") {
            assert!(
                route == "unmatched" || route.starts_with('/'),
                "route label {route:?}"
            );
        }
        for v in s.labels.values() {
            assert!(!has_uuid(v), "an id in a label: {s:?}");
        }
    }
    assert!(!body.contains(&id) && !body.contains(&sleeper));

    // The session closed is a session no longer counted.
    drop(ws);
    let (s, _) = p
        .post(&format!("/api/tasks/{sleeper}/cancel"), json!({}))
        .await;
    assert_eq!(s, 202, "cancel");
    scrape_until(
        &p.url,
        Some(METRICS_TOKEN),
        "the closed session uncounted",
        |s| value(s, "testbed_websocket_sessions", &[("kind", "task_log")]) == 0.0,
    )
    .await;

    // /metrics is not an API operation: not in the OpenAPI document.
    let (s, spec) = p.get("/api/openapi.json").await;
    assert_eq!(s, 200);
    assert!(spec["paths"].get("/metrics").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_unconfigured_is_404_and_listen_address_is_open() {
    let dir = tempfile::tempdir().unwrap();
    // Neither a token nor an address: there is no /metrics, even for an admin.
    let p = Platform::up(&dir.path().join("a"), 0, &[]).await;
    let (status, _, body) = scrape(&p.url, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = scrape(&p.url, Some(&p.token)).await;
    assert_eq!(status, 404, "{body}");
    let err: Value = serde_json::from_str(&body).expect("JSON error");
    assert!(err["error"].as_str().unwrap_or("").contains("/metrics"));
    drop(p);

    // A separate address: open there, absent on the API port.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let p = Platform::up(&dir.path().join("b"), 1, &["--metrics-listen", &listen]).await;
    let (status, _, _) = scrape(&p.url, None).await;
    assert_eq!(status, 404);
    let metrics_url = format!("http://{listen}");
    let (status, ctype, body) = scrape(&metrics_url, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let samples = parse(&body);
    assert_eq!(value(&samples, "testbed_agents_connected", &[]), 1.0);
    // The agent's session is an API request like any other.
    assert_eq!(
        value(
            &samples,
            "testbed_http_requests_total",
            &[("route", "/ws/agent"), ("status", "101")],
        ),
        1.0,
        "{body}"
    );
    // That address serves nothing else.
    let r = reqwest::get(format!("{metrics_url}/api/openapi.json"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn bad_metrics_settings_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.args(["up", "--agents", "0", "--data-dir"])
            .arg(dir.path().join("d"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(args)
            .env_remove("TESTBED_METRICS_TOKEN");
        if let Some(t) = env {
            cmd.env("TESTBED_METRICS_TOKEN", t);
        }
        let out = cmd.output().expect("run testbed up");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let missing = dir.path().join("no-such-file");
    let (code, err) = run(&["--metrics-token-file", missing.to_str().unwrap()], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--metrics-token-file") && err.contains("no-such-file"),
        "{err}"
    );

    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let (code, err) = run(&["--metrics-token-file", short.to_str().unwrap()], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least 16 characters"), "{err}");

    let (code, err) = run(&[], Some("short"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TESTBED_METRICS_TOKEN"), "{err}");

    let good = dir.path().join("good");
    std::fs::write(&good, METRICS_TOKEN).unwrap();
    let (code, err) = run(
        &["--metrics-token-file", good.to_str().unwrap()],
        Some(METRICS_TOKEN),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("both set"), "{err}");

    let (code, err) = run(&["--metrics-listen", "127.0.0.1:not-a-port"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--metrics-listen 127.0.0.1:not-a-port"),
        "{err}"
    );

    // The agent's own address likewise stops its start, naming the setting.
    let out = Command::new(bin())
        .args(["agent", "--server", "http://127.0.0.1:1", "--state-dir"])
        .arg(dir.path().join("agent"))
        .args(["--metrics-listen", "127.0.0.1:not-a-port"])
        .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN)
        .output()
        .expect("run testbed agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("metrics_listen 127.0.0.1:not-a-port"), "{err}");
}

/// A real Prometheus (Debian's `prometheus`) scrapes the server with a
/// bearer-token file; its query API then answers about our series.
#[tokio::test(flavor = "multi_thread")]
async fn real_prometheus_scrapes_and_queries() {
    let Some(prometheus) = which("prometheus") else {
        eprintln!(
            "SKIP real_prometheus_scrapes_and_queries: no `prometheus` on PATH \
             (Debian's prometheus package; scripts/test installs it)"
        );
        return;
    };
    let (dir, token_path, p) = up_with_token(1).await;
    let target = p.url.trim_start_matches("http://").to_string();
    // A separate agent process with its own /metrics, scraped as a second job.
    let agent_target = format!("127.0.0.1:{}", free_port());
    let _agent = agent(
        &p.url,
        "scraped",
        &dir.path().join("agent"),
        &[
            "--plugins",
            "linux_system",
            "--metrics-listen",
            &agent_target,
        ],
    );
    p.wait_agents(2).await;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: testbed\n    authorization:\n      \
             type: Bearer\n      credentials_file: {token_path}\n    \
             static_configs:\n      - targets: ['{target}']\n\
             \x20 - job_name: agent\n    static_configs:\n      - targets: ['{agent_target}']\n"
        ),
    )
    .unwrap();
    let prom_listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom_listen}"));
    let _prom = Proc::spawn("prometheus", cmd);

    let http = reqwest::Client::new();
    let query = |q: &'static str| {
        let http = http.clone();
        let url = format!("http://{prom_listen}/api/v1/query");
        async move {
            let r = http.get(url).query(&[("query", q)]).send().await.ok()?;
            r.json::<Value>().await.ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let result = loop {
        if let Some(v) =
            query("testbed_http_requests_total{route=\"/metrics\",status=\"200\"}").await
        {
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never stored a scrape of {target}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let series = &result["data"]["result"][0];
    assert_eq!(series["metric"]["job"], "testbed", "{result}");
    assert_eq!(series["metric"]["method"], "GET", "{result}");
    let scraped: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
    assert!(scraped >= 1.0, "{result}");

    // The target is healthy: every scrape parsed, none refused.
    let targets: Value = http
        .get(format!("http://{prom_listen}/api/v1/targets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let active = &targets["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{targets}");
    assert_eq!(active["lastError"], "", "{targets}");
    // Server-side gauges and process metrics arrive too.
    let v = query("testbed_agents_connected").await.expect("query");
    assert_eq!(v["data"]["result"][0]["value"][1], "2", "{v}");
    // The agent's own series: connected, and the task it ran counted by
    // plugin and status (a failing one too), with its duration.
    let ok = p
        .run(
            "linux_system",
            "scraped",
            "run_shell",
            json!({"command": "true"}),
        )
        .await;
    let bad = p
        .run(
            "linux_system",
            "scraped",
            "run_shell",
            json!({"command": "false"}),
        )
        .await;
    assert_eq!(
        p.wait_task(&ok, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    assert_eq!(
        p.wait_task(&bad, Duration::from_secs(60)).await["status"],
        "failed"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = query(
            "sum by (status) (testbed_agent_tasks_finished_total{job=\"agent\",plugin=\"linux_system\"})",
        )
        .await
        .expect("query");
        let by_status: BTreeMap<String, String> = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["metric"]["status"].as_str().unwrap_or("").to_string(),
                    r["value"][1].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if by_status.get("succeeded").map(String::as_str) == Some("1")
            && by_status.get("failed").map(String::as_str) == Some("1")
        {
            assert_eq!(by_status.get("error").map(String::as_str), Some("0"), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "agent counts never arrived: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v = query("testbed_agent_connected{job=\"agent\"}")
        .await
        .expect("query");
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
    // The server saw both tasks dispatched, each once; the agent's queue
    // is empty again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = query("testbed_dispatch_latency_seconds_count{job=\"testbed\"}")
            .await
            .expect("query");
        if v["data"]["result"][0]["value"][1] == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dispatches never reached Prometheus: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v = query("testbed_agent_tasks_queued{job=\"agent\"}")
        .await
        .expect("query");
    assert_eq!(v["data"]["result"][0]["value"][1], "0", "{v}");
    let v =
        query("testbed_agent_task_duration_seconds_count{job=\"agent\",plugin=\"linux_system\"}")
            .await
            .expect("query");
    assert_eq!(v["data"]["result"][0]["value"][1], "2", "{v}");
    let v = query("process_resident_memory_bytes").await.expect("query");
    assert!(
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|b| b > 1e6),
        "{v}"
    );
}

#[test]
fn parser_rejects_what_prometheus_would() {
    let ok = parse("# HELP a_total x.\n# TYPE a counter\na_total{r=\"/x/{id}\",s=\"2\\\"0\"} 3\nb 1.5\n# EOF\n");
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].labels["r"], "/x/{id}");
    assert_eq!(ok[0].labels["s"], "2\"0");
    assert!(std::panic::catch_unwind(|| parse("a{r=\"x} 1\n")).is_err());
    assert!(std::panic::catch_unwind(|| parse("a b\n")).is_err());
    assert!(has_uuid("/api/tasks/0c6f3a4e-1b2c-4d5e-8f90-1234567890ab"));
    assert!(!has_uuid("/api/tasks/{id}"));
}

/// `testbed load --out prometheus-rw=URL` into a real Prometheus (Debian's
/// `prometheus` with its remote-write receiver on): the series come back
/// from its query API with the run's own figures.
#[tokio::test(flavor = "multi_thread")]
async fn load_windows_reach_a_real_prometheus_by_remote_write() {
    let Some(prometheus) = which("prometheus") else {
        eprintln!(
            "SKIP load_windows_reach_a_real_prometheus_by_remote_write: no `prometheus` on PATH"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let prom_listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom_listen}"))
        .arg("--web.enable-remote-write-receiver");
    let _prom = Proc::spawn("prometheus", cmd);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("http://{prom_listen}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "Prometheus never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (target, _) = serve();
    let write_url = format!("http://{prom_listen}/api/v1/write");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args([
                "load",
                &target,
                "-c",
                "2",
                "-d",
                "3s",
                "--json",
                "--tag",
                "testid=rw-test",
            ])
            .arg("--out")
            .arg(format!("prometheus-rw={write_url}"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let windows = report["series"].as_array().unwrap().len();
    assert!(
        stderr.contains(&format!("{windows} window(s) written")),
        "{stderr}"
    );

    let query = |q: String| {
        let http = http.clone();
        let url = format!("http://{prom_listen}/api/v1/query");
        async move {
            let r = http.get(url).query(&[("query", q)]).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    // The cumulative counter's last sample is the run's total.
    let v = query("testbed_load_requests_total{testid=\"rw-test\"}".into()).await;
    let series = &v["data"]["result"][0];
    assert_eq!(series["metric"]["job"], "testbed_load", "{v}");
    let total: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(
        total,
        report["summary"]["requests"].as_f64().unwrap(),
        "{v}"
    );
    // One sample per window.
    let v =
        query("count_over_time(testbed_load_requests_total{testid=\"rw-test\"}[5m])".into()).await;
    assert_eq!(
        v["data"]["result"][0]["value"][1],
        windows.to_string(),
        "{v}"
    );
    // Latency quantiles in seconds, ordered.
    let v = query("testbed_load_latency_seconds{testid=\"rw-test\"}".into()).await;
    let mut q: BTreeMap<String, f64> = BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        q.insert(
            s["metric"]["quantile"].as_str().unwrap().to_string(),
            s["value"][1].as_str().unwrap().parse().unwrap(),
        );
    }
    assert_eq!(q.len(), 5, "{v}");
    assert!(
        q["0.5"] > 0.0 && q["0.5"] <= q["0.99"] && q["0.99"] <= q["1"],
        "{q:?}"
    );
    // Seconds, where the run's own report says milliseconds: within the
    // report's range of per-second figures (not a time limit: a busy
    // machine answers slowly, in either unit alike).
    let points = report["series"].as_array().unwrap();
    let ms = |field: &'static str| {
        points
            .iter()
            .filter(|p| p["requests"].as_u64() > Some(0))
            .map(move |p| p[field].as_f64().unwrap())
    };
    // The report rounds to 0.01 ms: 10 µs of slack either way.
    let slowest = ms("max_ms").fold(0.0, f64::max) / 1000.0 + 1e-5;
    let fastest_median = ms("p50_ms").fold(f64::INFINITY, f64::min) / 1000.0 - 1e-5;
    assert!(
        q["1"] <= slowest * 1.01 && q["0.5"] >= fastest_median * 0.99,
        "{q:?} against the report's {fastest_median} s to {slowest} s"
    );
}

/// `--log-format json` (or TESTBED_LOG_FORMAT=json): every diagnostic of
/// the server and the agent is one JSON object per line, fields included.
#[tokio::test]
async fn json_logs_for_server_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &["--log-format", "json"]).await;
    let mut cmd = Command::new(bin());
    cmd.args([
        "agent",
        "--server",
        &p.url,
        "--name",
        "json-agent",
        "--state-dir",
    ])
    .arg(dir.path().join("agent"))
    .env("TESTBED_JOIN_TOKEN", JOIN_TOKEN)
    .env("TESTBED_LOG_FORMAT", "json");
    let agent = Proc::spawn("agent", cmd);
    p.wait_agents(1).await;
    let task = p
        .run(
            "linux_system",
            "json-agent",
            "run_shell",
            json!({"command": "true"}),
        )
        .await;
    p.wait_task(&task, Duration::from_secs(20)).await;
    for (proc, needle) in [(&p.proc, "this replica leads"), (&agent, "json-agent")] {
        let line = proc.wait_line(needle, Duration::from_secs(20));
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", proc.name));
        assert!(v["timestamp"].as_str().is_some(), "{line}");
        assert!(
            matches!(v["level"].as_str(), Some("INFO" | "WARN" | "DEBUG")),
            "{line}"
        );
        assert!(v["message"].as_str().is_some(), "{line}");
        assert!(
            v["target"].as_str().unwrap().starts_with("testbed"),
            "{line}"
        );
    }
    // Every diagnostic seen so far is JSON (stdout's banner aside).
    for line in p.proc.lines.try_iter().chain(agent.lines.try_iter()) {
        if line.starts_with('{') {
            serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
    let out = Command::new(bin())
        .args(["server", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("text, json"),
        "{err}"
    );
}

/// Scrapes `url` (with `token`) until `ready` holds of the samples; the
/// samples then. Gauges read from the store are up to a second behind.
async fn scrape_until(
    url: &str,
    token: Option<&str>,
    what: &str,
    ready: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, body) = scrape(url, token).await;
        assert_eq!(status, 200, "{body}");
        let samples = parse(&body);
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "never {what}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Dispatch latency after real tasks on a real agent, the queues while
/// three tasks wait behind an agent's single slot (on the server and on the
/// agent's own `/metrics`), and the reconcile passes of a plan run.
#[tokio::test(flavor = "multi_thread")]
async fn dispatch_queues_and_reconcile_follow_real_work() {
    let (dir, _, p) = up_with_token(0).await;
    let agent_url = format!("http://127.0.0.1:{}", free_port());
    let _agent = agent(
        &p.url,
        "narrow",
        &dir.path().join("agent"),
        &[
            "--plugins",
            "linux_system",
            "--capacity",
            "1",
            "--metrics-listen",
            agent_url.trim_start_matches("http://"),
        ],
    );
    p.wait_agents(1).await;
    let token = Some(METRICS_TOKEN);

    // Every new family is there from the first scrape, at 0.
    let (_, _, body) = scrape(&p.url, token).await;
    let first = parse(&body);
    for (name, labels) in [
        ("testbed_dispatch_latency_seconds_count", vec![]),
        ("testbed_agent_queue_depth_max", vec![]),
        ("testbed_agents_with_queued_tasks", vec![]),
        ("testbed_reconcile_errors_total", vec![("pass", "run")]),
        (
            "testbed_reconcile_errors_total",
            vec![("pass", "lost_sweep")],
        ),
        ("testbed_load_executions_running", vec![]),
        ("testbed_load_virtual_users", vec![]),
        ("testbed_load_requests_per_second", vec![]),
        ("testbed_load_errors_per_second", vec![]),
        ("testbed_load_latency_p99_seconds", vec![]),
    ] {
        assert_eq!(value(&first, name, &labels), 0.0, "{name}: {body}");
    }
    let (_, _, body) = scrape(&agent_url, None).await;
    let agent_first = parse(&body);
    assert_eq!(value(&agent_first, "testbed_agent_tasks_queued", &[]), 0.0);
    assert_eq!(
        value(
            &agent_first,
            "testbed_agent_task_queue_wait_seconds_count",
            &[]
        ),
        0.0
    );

    // One task on the real agent: one dispatch observed.
    let id = p
        .run(
            "linux_system",
            "narrow",
            "run_shell",
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(
        p.wait_task(&id, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    let (_, _, body) = scrape(&p.url, token).await;
    let after = parse(&body);
    assert_eq!(
        value(&after, "testbed_dispatch_latency_seconds_count", &[]),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &after,
            "testbed_dispatch_latency_seconds_bucket",
            &[("le", "+Inf")]
        ),
        1.0,
        "{body}"
    );

    // Three sleepers on one slot: one runs, two wait.
    let mut sleepers = Vec::new();
    for _ in 0..3 {
        sleepers.push(p.run_shell("narrow", "sleep", "60").await);
    }
    p.wait_status(&sleepers[0], "running", Duration::from_secs(60))
        .await;
    let queued = scrape_until(&p.url, token, "two tasks queued", |s| {
        value(s, "testbed_tasks", &[("status", "queued")]) == 2.0
    })
    .await;
    assert_eq!(value(&queued, "testbed_agent_queue_depth_max", &[]), 2.0);
    assert_eq!(value(&queued, "testbed_agents_with_queued_tasks", &[]), 1.0);
    assert_eq!(
        value(&queued, "testbed_tasks", &[("status", "running")]),
        1.0
    );
    assert_eq!(
        value(&queued, "testbed_dispatch_latency_seconds_count", &[]),
        4.0,
        "each task is dispatched once, queued or not"
    );
    // The agent holds them too: its own queue depth.
    let on_agent = scrape_until(&agent_url, None, "the agent's queue at 2", |s| {
        value(s, "testbed_agent_tasks_queued", &[]) == 2.0
    })
    .await;
    assert_eq!(value(&on_agent, "testbed_agent_tasks_running", &[]), 1.0);
    // No ids in any label, on either side.
    for s in queued.iter().chain(&on_agent) {
        for v in s.labels.values() {
            assert!(!has_uuid(v), "an id in a label: {s:?}");
        }
    }

    // Cancelled — the waiting ones first, so neither takes the slot the
    // running one frees — the queues empty; the two never got a slot.
    for id in sleepers.iter().rev() {
        let (s, _) = p.post(&format!("/api/tasks/{id}/cancel"), json!({})).await;
        assert_eq!(s, 202);
        p.wait_status(id, "cancelled", Duration::from_secs(60))
            .await;
    }
    let drained = scrape_until(&p.url, token, "the queues empty", |s| {
        value(s, "testbed_tasks", &[("status", "queued")]) == 0.0
    })
    .await;
    assert_eq!(value(&drained, "testbed_agent_queue_depth_max", &[]), 0.0);
    assert_eq!(
        value(&drained, "testbed_agents_with_queued_tasks", &[]),
        0.0
    );
    let on_agent = scrape_until(&agent_url, None, "the agent idle", |s| {
        value(s, "testbed_agent_tasks_running", &[]) == 0.0
    })
    .await;
    assert_eq!(value(&on_agent, "testbed_agent_tasks_queued", &[]), 0.0);
    assert_eq!(
        value(
            &on_agent,
            "testbed_agent_task_queue_wait_seconds_count",
            &[]
        ),
        2.0,
        "the first task and the first sleeper got a slot"
    );

    // A plan run: the engine's per-run passes are timed, none failed.
    let before = scrape_until(&p.url, token, "a scrape", |_| true).await;
    let runs = |s: &[Sample]| {
        value(
            s,
            "testbed_reconcile_duration_seconds_count",
            &[("pass", "run")],
        )
    };
    let plan = "name: r\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: b\n    plugin: linux_system\n    method: run_shell\n    depends_on: [a]\n    params: {command: \"true\"}\n";
    let run = p.start_run(plan, json!({})).await;
    let done = p.wait_run(&run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "passed", "{done}");
    let (_, _, body) = scrape(&p.url, token).await;
    let after = parse(&body);
    // At least: the start, each step's end.
    assert!(runs(&after) >= runs(&before) + 3.0, "{body}");
    for pass in ["run", "engine_sweep", "lost_sweep"] {
        assert!(
            value(
                &after,
                "testbed_reconcile_duration_seconds_count",
                &[("pass", pass)]
            ) >= 1.0,
            "{pass}: {body}"
        );
        assert_eq!(
            value(&after, "testbed_reconcile_errors_total", &[("pass", pass)]),
            0.0,
            "{pass}: {body}"
        );
    }
    // Its two steps were dispatched like any task.
    assert_eq!(
        value(&after, "testbed_dispatch_latency_seconds_count", &[]),
        6.0,
        "{body}"
    );
}

/// The live load gauges while a real performance execution runs on a real
/// agent, and back at 0 once it ended.
#[tokio::test(flavor = "multi_thread")]
async fn load_gauges_follow_a_running_execution() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let p = Platform::up(&dir.path().join("data"), 1, &["--metrics-listen", &listen]).await;
    let url = format!("http://{listen}");
    let (target, count) = serve();
    let plan = p
        .perf_plan(
            "gauged",
            json!({"concurrent_users": 2, "ramp_up_time": 0, "hold_time": 4,
                "test_type": "load", "target_url": target, "request_timeout": 2000}),
        )
        .await;
    let id = plan["id"].as_u64().unwrap();
    p.start_perf(id).await;

    let live = scrape_until(&url, None, "a running execution", |s| {
        value(s, "testbed_load_requests_per_second", &[]) > 0.0
    })
    .await;
    assert_eq!(value(&live, "testbed_load_executions_running", &[]), 1.0);
    let vus = value(&live, "testbed_load_virtual_users", &[]);
    assert!((1.0..=2.0).contains(&vus), "{vus} virtual users of 2");
    assert_eq!(value(&live, "testbed_load_errors_per_second", &[]), 0.0);
    let (p50, p99) = (
        value(&live, "testbed_load_latency_p50_seconds", &[]),
        value(&live, "testbed_load_latency_p99_seconds", &[]),
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    // Answered requests, so within the 2 s request timeout.
    assert!(p99 < 2.0, "p99 {p99}");

    // Ended: the report exists, the gauges are back at 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, plan) = p.get(&format!("/api/performance/plans/{id}/")).await;
        if plan["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {plan}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(count.load(std::sync::atomic::Ordering::SeqCst) > 0);
    let idle = scrape_until(&url, None, "the load gauges at 0", |s| {
        value(s, "testbed_load_executions_running", &[]) == 0.0
    })
    .await;
    for name in [
        "testbed_load_virtual_users",
        "testbed_load_requests_per_second",
        "testbed_load_errors_per_second",
        "testbed_load_latency_p50_seconds",
        "testbed_load_latency_p95_seconds",
        "testbed_load_latency_p99_seconds",
    ] {
        assert_eq!(value(&idle, name, &[]), 0.0, "{name}");
    }
}
