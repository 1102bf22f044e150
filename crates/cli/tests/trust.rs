//! Trust, as an attacker and a revoked user would try it: tokens follow the
//! user record, operators act on their own things, names in paths cannot
//! reach other keys, a login flood neither locks the admin out nor eats the
//! server's memory, secrets on disk are private.

use crate::common;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn shell(cmd: &str) -> Value {
    json!({"plugin": "linux_system", "host": "local-1", "method": "run_shell",
           "parameters": {"command": "sh", "args": format!("-c '{cmd}'")}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_loses_access_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    use reqwest::Method;

    // Demoted: the role in the record counts, not the one in the token.
    let olga = p.user("olga", "operator").await;
    let (s, b) = post_as(&p.http, &p.url, &olga, "/v2.1/testcases", shell("true")).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = p
        .call_as(
            Method::PUT,
            "/api/users/olga",
            &p.token,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!((s, b["role"].as_str()), (200, Some("viewer")), "{b}");
    let (s, b) = post_as(&p.http, &p.url, &olga, "/v2.1/testcases", shell("true")).await;
    assert_eq!(s, 403, "a demoted operator still runs commands: {b}");
    let (s, _) = p.call_as(Method::GET, "/api/tasks", &olga, None).await;
    assert_eq!(s, 200, "a viewer still reads");

    // Deleted: refused at once.
    let (s, _) = p
        .call_as(Method::DELETE, "/api/users/olga", &p.token, None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = p.call_as(Method::GET, "/api/tasks", &olga, None).await;
    assert_eq!(s, 401, "a deleted user's token still works: {b}");
    assert!(
        b["error"].as_str().unwrap().contains("no longer exists"),
        "{b}"
    );
    // A user of the same name created later does not revive old tokens.
    let (s, _) = p
        .post(
            "/api/users",
            json!({"username": "olga", "password": "password-456", "role": "admin"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = p.call_as(Method::GET, "/api/users", &olga, None).await;
    assert_eq!(s, 401, "a recreated user's old token carries the new role");

    // Logout ends every session of the user.
    let lena1 = p.user("lena", "operator").await;
    let lena2 = login(&p.http, &p.url, "lena", "password-123").await;
    let (s, _) = p
        .call_as(Method::POST, "/api/auth/logout", &lena1, None)
        .await;
    assert_eq!(s, 204);
    for t in [&lena1, &lena2] {
        let (s, b) = p.call_as(Method::GET, "/api/auth/me", t, None).await;
        assert_eq!(s, 401, "{b}");
        assert!(b["error"].as_str().unwrap().contains("revoked"), "{b}");
    }
    // A new password (set by the user) also ends old sessions.
    let lena3 = login(&p.http, &p.url, "lena", "password-123").await;
    let (s, b) = p
        .call_as(
            Method::PUT,
            "/api/users/lena",
            &lena3,
            Some(json!({"password": "another-pass-9"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = p.call_as(Method::GET, "/api/auth/me", &lena3, None).await;
    assert_eq!(s, 401);
    let lena4 = login(&p.http, &p.url, "lena", "another-pass-9").await;
    // …but a user cannot promote themself.
    let (s, b) = p
        .call_as(
            Method::PUT,
            "/api/users/lena",
            &lena4,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    // The admin can end someone's sessions.
    let (s, _) = p
        .call_as(Method::POST, "/api/users/lena/revoke", &p.token, None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = p.call_as(Method::GET, "/api/auth/me", &lena4, None).await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_change_only_their_own_tasks_runs_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    use reqwest::Method;
    let ann = p.user("ann", "operator").await;
    let bob = p.user("bob", "operator").await;

    // Tasks.
    let (s, b) = post_as(&p.http, &p.url, &ann, "/v2.1/testcases", shell("sleep 30")).await;
    assert_eq!(s, 201, "{b}");
    let task = b["task_id"].as_str().unwrap().to_string();
    let cancel = format!("/api/tasks/{task}/cancel");
    let (s, b) = p.call_as(Method::POST, &cancel, &bob, None).await;
    assert_eq!(s, 403, "bob cancelled ann's task: {b}");
    assert!(b["error"].as_str().unwrap().contains("ann"), "{b}");
    let (s, b) = p.call_as(Method::POST, &cancel, &ann, None).await;
    assert_eq!(s, 202, "{b}");

    // Plans.
    let yaml = "name: mine\nsteps:\n  - id: a\n    plugin: linux_system\n    method: run_shell\n    params: {command: sleep, args: '30'}\n";
    let (s, plan) = p
        .send_yaml_as(reqwest::Method::POST, "/api/plans", &ann, yaml)
        .await;
    assert_eq!(s, 201, "{plan}");
    let plan_id = plan["id"].as_str().unwrap().to_string();
    let (s, _) = p
        .call_as(Method::DELETE, &format!("/api/plans/{plan_id}"), &bob, None)
        .await;
    assert_eq!(s, 403);

    // Runs: bob may start ann's stored plan (his run), not stop hers.
    let (s, run) = post_as(
        &p.http,
        &p.url,
        &ann,
        "/api/runs",
        json!({"plan_id": plan_id}),
    )
    .await;
    assert_eq!(s, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    let (s, _) = p
        .call_as(
            Method::POST,
            &format!("/api/runs/{run_id}/cancel"),
            &bob,
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, b) = p
        .call_as(
            Method::POST,
            &format!("/api/runs/{run_id}/cancel"),
            &p.token,
            None,
        )
        .await;
    assert_eq!(s, 202, "an admin acts on everyone's runs: {b}");
    let (s, _) = p
        .call_as(
            Method::DELETE,
            &format!("/api/plans/{plan_id}"),
            &p.token,
            None,
        )
        .await;
    assert_eq!(s, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_in_paths_cannot_reach_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 0, &[]).await;
    use reqwest::Method;
    let (s, _) = p.post("/api/groups", json!({"name": "victim"})).await;
    assert_eq!(s, 201);
    for path in [
        "/api/groups/victim%2Flock",
        "/api/groups/victim%2flock",
        "/api/testcases/..%2Fusers%2Fadmin",
        "/api/environments/a%00b",
        "/api/testcases/a%5Cb",
    ] {
        for m in [Method::GET, Method::DELETE, Method::PUT] {
            let (s, b) = p.call_as(m.clone(), path, &p.token, Some(json!({}))).await;
            assert_eq!(s, 400, "{m} {path}: {b}");
            assert!(b["error"].as_str().unwrap().contains("path segment"), "{b}");
        }
    }
    let (s, _) = p.get("/api/groups/victim").await;
    assert_eq!(s, 200, "the group survived");

    // A name the path guard would refuse cannot be created either: every
    // stored thing stays reachable by its URL (schemathesis found `.`).
    for (path, body) in [
        ("/api/groups", json!({"name": "."})),
        ("/api/environments", json!({"name": ".."})),
        (
            "/api/testcases",
            json!({"name": ".", "plugin": "linux_system", "method": "run_shell"}),
        ),
        (
            "/api/testcases",
            json!({"name": "-rf", "plugin": "linux_system", "method": "run_shell"}),
        ),
        (
            "/api/users",
            json!({"username": ".", "password": "long-enough", "role": "viewer"}),
        ),
    ] {
        let (s, b) = p.post(path, body).await;
        assert_eq!(s, 422, "POST {path}: {b}");
        assert!(
            b.to_string().contains("starting with a letter or digit"),
            "{b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_urls_are_for_websockets_only_and_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 1, &[]).await;
    let task = p.run_shell("local-1", "echo", "hi").await;
    p.wait_task(&task, Duration::from_secs(30)).await;

    // A session token in the query of an ordinary endpoint is not a login.
    let r = p
        .http
        .get(format!("{}/api/tasks?token={}", p.url, p.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A stream token opens its own stream and nothing else.
    let ws_path = format!("/ws/tasks/{task}/log");
    let (s, b) = p
        .post("/api/auth/stream-token", json!({"path": ws_path}))
        .await;
    assert_eq!(s, 200, "{b}");
    let stream = b["token"].as_str().unwrap().to_string();
    assert!(b["expires_in"].as_u64().unwrap() <= 600);
    let (s, _) = p
        .call_as(reqwest::Method::GET, "/api/tasks", &stream, None)
        .await;
    assert_eq!(s, 401, "a stream token works as a session token");
    let ws = format!(
        "{}{ws_path}?token={stream}",
        p.url.replacen("http://", "ws://", 1)
    );
    let (_ws, _) = tokio_tungstenite::connect_async(ws)
        .await
        .expect("stream token opens its stream");
    // A session token may not travel in a URL, even to a stream.
    let leaky = format!(
        "{}{ws_path}?token={}",
        p.url.replacen("http://", "ws://", 1),
        p.token
    );
    assert!(tokio_tungstenite::connect_async(leaky).await.is_err());
    let other = format!(
        "{}/ws/tasks/{}/log?token={stream}",
        p.url.replacen("http://", "ws://", 1),
        uuid_like()
    );
    assert!(tokio_tungstenite::connect_async(other).await.is_err());
    let (s, b) = p
        .post("/api/auth/stream-token", json!({"path": "/api/tasks"}))
        .await;
    assert_eq!(s, 422, "{b}");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_learn_little_and_every_error_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 0, &[]).await;
    let h: Value = p.healthz().await;
    assert_eq!(h["store"], "redb", "{h}");
    let dir_name = dir.path().to_string_lossy().to_string();
    assert!(
        !h.to_string().contains(&dir_name),
        "healthz shows the data path: {h}"
    );

    // Too large a plan: 413 as JSON.
    let (s, b) = p
        .send_yaml(
            reqwest::Method::POST,
            "/api/plans",
            vec![b'#'; 2 * 1024 * 1024],
        )
        .await;
    assert_eq!(s, 413);
    // The body is `Null` unless it is JSON.
    assert!(b["error"].is_string(), "{b}");

    // Not a WebSocket upgrade: 400 as JSON. (A new connection: the server
    // closes the one whose oversized body it did not read, and a pooled
    // client may not notice in time.)
    let r = reqwest::Client::new()
        .get(format!("{}/ws/tasks/{}/log", p.url, uuid_like()))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let b: Value = r.json().await.expect("WebSocket rejection as JSON");
    assert!(b["error"].is_string(), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_flood_is_bounded_and_does_not_lock_the_admin_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(dir.path(), 0, &[]).await;
    let pid = p.proc.child.as_ref().unwrap().id();
    let before = rss_kib(pid);

    // 240 concurrent wrong passwords for `admin` from four loopback addresses.
    let mut flood = Vec::new();
    for i in 0..240 {
        let ip: IpAddr = format!("127.0.0.{}", 2 + i % 4).parse().unwrap();
        let client = reqwest::Client::builder()
            .local_address(ip)
            .build()
            .unwrap();
        let url = format!("{}/api/auth/login", p.url);
        flood.push(tokio::spawn(status_and_json(client.post(url).json(
            &json!({"username": "admin", "password": format!("guess-{i}")}),
        ))));
    }
    // The server stays responsive meanwhile.
    let started = Instant::now();
    let r = p
        .http
        .get(format!("{}/healthz", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "healthz took {:?}",
        started.elapsed()
    );

    let mut checked = 0;
    for f in flood {
        let (status, body) = f.await.unwrap();
        match status {
            401 => checked += 1,
            429 => assert!(body["error"].as_str().unwrap().contains("retry"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // At most ten guesses per address were ever checked.
    assert!(checked <= 40, "{checked} password checks for 240 guesses");
    let grown_mb = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(
        grown_mb < 300,
        "memory grew by {grown_mb} MB under a login flood"
    );

    // The real admin, from another address, is not locked out.
    let token = login(&p.http, &p.url, "admin", ADMIN_PASSWORD).await;
    assert!(!token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_on_disk_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = Platform::up(&data, 0, &[]).await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data dir left open to other users");
    assert_eq!(
        mode(&data.join("testbed.redb")),
        0o600,
        "store readable by other users"
    );
    drop(p);
}
