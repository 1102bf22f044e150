//! The seed-002 API, auth and errors, logs, cancel and plugins, against a
//! real `testbed up` process.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn seed_002_slaves_and_testcases() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 2, &[]).await;

    let detail = p.wait_agents(2).await;
    let map = detail.as_object().unwrap();
    let mut names = Vec::new();
    for (uuid, s) in map {
        assert!(uuid.parse::<uuid::Uuid>().is_ok(), "key is a uuid: {uuid}");
        assert_eq!(
            s["compute_node_type"],
            "api,build_server,linux_system,load,tap"
        );
        assert_eq!(
            s["compute_node_method"]["linux_system"]["run_shell"],
            "parameters is dict. command key is linux cmd. args key is parameters of linux cmd"
        );
        assert!(s["compute_node_method"]["build_server"]["build"].is_string());
        assert!(s["host"].is_string() && s["id"].is_u64());
        assert_eq!(s["status"], "online");
        assert!(s["labels"].is_object() && s["groups"].is_array());
        assert!(s.get("uuid").is_none(), "detail entries are keyed by uuid");
        names.push(s["name"].as_str().unwrap().to_string());
    }
    names.sort();
    assert_eq!(names, ["local-1", "local-2"]);

    // One slave by numeric id and by uuid.
    let (uuid, first) = map.iter().next().unwrap();
    let id = first["id"].as_u64().unwrap();
    let (s, by_id) = p.get(&format!("/v2.1/slaves/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(by_id["uuid"], uuid.as_str());
    let (s, by_uuid) = p.get(&format!("/v2.1/slaves/{uuid}")).await;
    assert_eq!(s, 200);
    assert_eq!(by_uuid["id"], id);
    let (s, err) = p.get("/v2.1/slaves/999").await;
    assert_eq!(s, 404);
    assert!(err["error"].is_string());

    // The seed's test case, verbatim but for the host.
    std::fs::write(dir.path().join("marker-file.txt"), "x").unwrap();
    let task = p
        .run_shell("local-1", "ls", &format!("-alt {}", dir.path().display()))
        .await;
    let t = p.wait_succeeded(&task, Duration::from_secs(30)).await;
    assert_eq!(t["exit_code"], 0);
    assert_eq!(t["agent_name"], "local-1");
    assert!(t["started_at"].is_string() && t["finished_at"].is_string());
    assert!(t["duration_ms"].is_i64());
    assert!(t["result"]["stdout_tail"]
        .as_str()
        .unwrap()
        .contains("marker-file.txt"));
    assert!(p.log(&task).await.contains("marker-file.txt"));

    // Host matches an agent's host too; a failing command is `failed` with its code.
    let host = first["host"].as_str().unwrap();
    let task = p.run_shell(host, "sh", "-c 'echo oops >&2; exit 3'").await;
    let t = p.wait_task(&task, Duration::from_secs(30)).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(t["exit_code"], 3);
    assert!(p.log(&task).await.contains("oops"));

    // system_information returns structured facts.
    let task = p
        .run("linux_system", "local-2", "system_information", json!({}))
        .await;
    let t = p.wait_succeeded(&task, Duration::from_secs(30)).await;
    assert!(t["result"]["hostname"].is_string(), "{t}");

    // Task list paginates.
    let (s, page) = p.get("/api/tasks?page=1&page_size=2").await;
    assert_eq!(s, 200);
    assert_eq!(page["total"], 3);
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn least_loaded_agent_runs_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 2, &[]).await;
    let detail = p.wait_agents(2).await;
    let host = detail.as_object().unwrap().values().next().unwrap()["host"]
        .as_str()
        .unwrap()
        .to_string();
    // Both agents share the host; two long tasks must land on different agents.
    let a = p.run_shell(&host, "sleep", "3").await;
    let b = p.run_shell(&host, "sleep", "3").await;
    let (ta, tb) = (p.task(&a).await, p.task(&b).await);
    assert_ne!(
        ta["agent_uuid"], tb["agent_uuid"],
        "both tasks went to one agent"
    );
}

#[tokio::test]
async fn auth_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let http = reqwest::Client::new();

    // Open endpoints.
    let r = http.get(format!("{}/healthz", p.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, spec) = status_and_json(http.get(format!("{}/api/openapi.json", p.url))).await;
    assert_eq!(s, 200, "{spec}");
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v2.1/slaves/detail",
        "/v2.1/slaves/{id}",
        "/v2.1/testcases",
        "/api/auth/login",
        "/api/tasks/{id}",
        "/api/tasks/{id}/log",
        "/api/tasks/{id}/cancel",
        "/ws/tasks/{id}/log",
        "/api/agents",
        "/api/users",
        "/healthz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "openapi lacks {path}");
    }

    // No token, a bad token, an expired-looking token.
    let (s, body) = status_and_json(http.get(format!("{}/v2.1/slaves/detail", p.url))).await;
    assert_eq!(s, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let r = http
        .get(format!("{}/api/tasks", p.url))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Malformed JSON → 400; wrong shape → 422 naming the field.
    let r = http
        .post(format!("{}/v2.1/testcases", p.url))
        .bearer_auth(&p.token)
        .header("content-type", "application/json")
        .body("{\"plugin\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    let (s, b) = p
        .post(
            "/v2.1/testcases",
            json!({"plugin": "linux_system", "method": "run_shell"}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"].as_str().unwrap().contains("host"), "{b}");

    // Unknown plugin / method / host: 422 listing what exists.
    let (s, b) = p
        .post(
            "/v2.1/testcases",
            json!({"plugin": "nope", "host": "local-1", "method": "run_shell", "parameters": {}}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(b["details"][0]["field"], "/plugin");
    assert!(b["error"].as_str().unwrap().contains("linux_system"), "{b}");
    let (s, b) = p
        .post("/v2.1/testcases", json!({"plugin": "linux_system", "host": "local-1", "method": "nope", "parameters": {}}))
        .await;
    assert_eq!(s, 422);
    assert!(b["error"].as_str().unwrap().contains("run_shell"), "{b}");
    let (s, b) = p
        .post("/v2.1/testcases", json!({"plugin": "linux_system", "host": "no-such-host", "method": "run_shell", "parameters": {"command": "ls"}}))
        .await;
    assert_eq!(s, 422);
    assert_eq!(b["details"][0]["field"], "/host");
    assert!(b["error"].as_str().unwrap().contains("live hosts"), "{b}");

    // Parameters that fail the schema: 422 naming each field.
    let (s, b) = p
        .post("/v2.1/testcases", json!({"plugin": "linux_system", "host": "local-1", "method": "run_shell", "parameters": {"command": 5, "bogus": 1}}))
        .await;
    assert_eq!(s, 422, "{b}");
    let fields: Vec<&str> = b["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"/parameters/command"), "{b}");
    let (s, b) = p
        .post("/v2.1/testcases", json!({"plugin": "linux_system", "host": "local-1", "method": "run_shell", "parameters": {}}))
        .await;
    assert_eq!(s, 422);
    assert_eq!(b["details"][0]["field"], "/parameters/command", "{b}");

    // A viewer may read but not run; an operator may run.
    let viewer = p.user("vera", "viewer").await;
    let (s, _) = post_as(&http, &p.url, &viewer, "/v2.1/testcases", json!({"plugin": "linux_system", "host": "local-1", "method": "run_shell", "parameters": {"command": "true"}})).await;
    assert_eq!(s, 403);
    let r = http
        .get(format!("{}/v2.1/slaves/detail", p.url))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = post_as(
        &http,
        &p.url,
        &viewer,
        "/api/users",
        json!({"username": "x", "password": "password-1", "role": "admin"}),
    )
    .await;
    assert_eq!(s, 403);
    let operator = p.user("otto", "operator").await;
    let (s, b) = post_as(&http, &p.url, &operator, "/v2.1/testcases", json!({"plugin": "linux_system", "host": "local-1", "method": "run_shell", "parameters": {"command": "true"}})).await;
    assert_eq!(s, 201, "{b}");
    // Duplicate user → 409.
    let (s, _) = p
        .post(
            "/api/users",
            json!({"username": "otto", "password": "password-123", "role": "viewer"}),
        )
        .await;
    assert_eq!(s, 409);

    // An oversized body → 413. On a client of its own: the server closes
    // the connection whose body it did not read, and a pooled client may
    // not notice before its next request (the logins below).
    let big = "x".repeat(2 * 1024 * 1024);
    let r = reqwest::Client::new()
        .post(format!("{}/v2.1/testcases", p.url))
        .bearer_auth(&p.token)
        .json(&json!({"plugin": "linux_system", "host": "local-1", "method": "run_shell", "parameters": {"command": big}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    // Unknown endpoint → JSON 404.
    let (s, b) = p.get("/api/nothing-here").await;
    assert_eq!(s, 404);
    assert!(b["error"].is_string());

    // Wrong passwords are rate limited.
    let mut last = 0;
    for _ in 0..12 {
        let r = http
            .post(format!("{}/api/auth/login", p.url))
            .json(&json!({"username": "admin", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        assert!(last == 401 || last == 429);
    }
    assert_eq!(last, 429);
}

#[tokio::test]
async fn live_log_then_stored_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let task = p
        .run_shell(
            "local-1",
            "sh",
            "-c 'for i in 1 2 3 4; do echo line$i; sleep 0.5; done'",
        )
        .await;
    // Readable while it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = p.get_text(&format!("/api/tasks/{task}/log")).await;
        let status = p.task(&task).await["status"].clone();
        if text.contains("line1") {
            assert_eq!(status, "running", "log should be readable before the end");
            break;
        }
        assert!(Instant::now() < deadline, "no live log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Followed live over the WebSocket to the end.
    let (text, reason) = follow_ws(&p.url, &p.token, &task).await;
    assert_eq!(text, "line1\nline2\nline3\nline4\n");
    assert_eq!(reason, "succeeded");
    // And stored after.
    assert_eq!(p.log(&task).await, "line1\nline2\nline3\nline4\n");
    let (_, tail) = p.get_text(&format!("/api/tasks/{task}/log?offset=6")).await;
    assert_eq!(tail, "line2\nline3\nline4\n");
    // A browser-style token in the query works too.
    let (text2, _) = follow_ws(&p.url, &p.token, &task).await;
    assert_eq!(text2, text);
}

#[tokio::test]
async fn cancel_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let task = p
        .run_shell("local-1", "sh", &shell_quote(&["-c", &script]))
        .await;
    p.wait_status(&task, "running", Duration::from_secs(10))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let (s, b) = p
        .post(&format!("/api/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(s, 202, "{b}");
    let t = p.wait_task(&task, Duration::from_secs(15)).await;
    assert_eq!(t["status"], "cancelled", "{t}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cancelling again: it already ended.
    let (s, _) = p
        .post(&format!("/api/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn exec_plugin_on_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/echo.py");
    std::fs::copy(&src, plugins.join("echo.py")).unwrap();
    let p = Platform::up(dir.path(), 1, &["--plugin-dir", plugins.to_str().unwrap()]).await;
    let detail = p.wait_agents(1).await;
    let slave = detail.as_object().unwrap().values().next().unwrap();
    assert!(
        slave["compute_node_method"]["echo"]["echo"].is_string(),
        "{slave}"
    );

    let task = p
        .run(
            "echo",
            "local-1",
            "echo",
            json!({"message": "hi there", "repeat": 3}),
        )
        .await;
    let t = p.wait_succeeded(&task, Duration::from_secs(30)).await;
    assert_eq!(t["result"]["repeat"], 3);
    assert_eq!(p.log(&task).await.matches("hi there").count(), 3);

    // The plugin's own schema is enforced by the server.
    let (s, b) = p
        .post("/v2.1/testcases", json!({"plugin": "echo", "host": "local-1", "method": "echo", "parameters": {"message": "x", "repeat": 1000}}))
        .await;
    assert_eq!(s, 422);
    assert_eq!(b["details"][0]["field"], "/parameters/repeat", "{b}");

    let task = p.run("echo", "local-1", "fail", json!({})).await;
    let t = p.wait_task(&task, Duration::from_secs(30)).await;
    assert_eq!(t["status"], "failed", "{t}");
}

#[tokio::test]
async fn build_collects_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(
        repo.join("build.sh"),
        "#!/bin/sh\nmkdir -p out\necho \"version one\" > out/app.txt\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "v1"]);
    git(&["tag", "v1"]);
    std::fs::write(
        repo.join("build.sh"),
        "#!/bin/sh\nmkdir -p out\necho \"version two\" > out/app.txt\n",
    )
    .unwrap();
    git(&["commit", "-qam", "v2"]);

    let p = Platform::up(dir.path().join("data").as_path(), 1, &[]).await;
    let task = p
        .run(
            "build_server",
            "local-1",
            "build",
            json!({"repo": repo.display().to_string(), "ref": "v1", "command": "sh build.sh", "artifacts": {"app": "out/app.txt"}}),
        )
        .await;
    let t = p.wait_succeeded(&task, Duration::from_secs(60)).await;
    let artifacts = t["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{t}");
    let (s, body) = p.get_text(artifacts[0]["url"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(body, "version one\n");
}

fn shell_quote(args: &[&str]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn heartbeats_carry_system_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &["--lease-ttl", "3"]).await;
    // Heartbeats come every TTL/3 = 1 s and carry sysinfo figures.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, agents) = p.get("/api/agents").await;
        let m = &agents[0]["metrics"];
        if m["memory_total_bytes"].as_u64().unwrap_or(0) > 0
            && agents[0]["heartbeat_at"].is_string()
        {
            assert!(m["memory_used_bytes"].as_u64().unwrap() > 0, "{m}");
            assert!(m["cpu_percent"].as_f64().unwrap() >= 0.0);
            assert!(m.get("network_rx_bytes").is_some() && m.get("network_tx_bytes").is_some());
            break;
        }
        assert!(Instant::now() < deadline, "no metrics: {agents}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
