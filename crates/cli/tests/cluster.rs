//! Server replicas on a real etcd cluster.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn two_replicas_serve_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(1, dir.path());
    let blobs = dir.path().join("blobs");
    let a = Platform::server(
        &etcd.spec(),
        &blobs,
        &format!("127.0.0.1:{}", free_port()),
        &[],
    )
    .await;
    let b = Platform::server(
        &etcd.spec(),
        &blobs,
        &format!("127.0.0.1:{}", free_port()),
        &[],
    )
    .await;
    assert_eq!(a.join_token, b.join_token);

    // The agent holds a session with replica A; the task goes in through B.
    let _agent = agent(&a.url, "etcd-agent", &dir.path().join("agent"), &[]);
    a.wait_agents(1).await;
    let detail = b.wait_agents(1).await;
    assert_eq!(
        detail.as_object().unwrap().values().next().unwrap()["name"],
        "etcd-agent"
    );

    let task = b
        .run(
            "linux_system",
            "etcd-agent",
            "run_shell",
            json!({"command": "echo", "args": "through replica b"}),
        )
        .await;
    let t = b.wait_task(&task, Duration::from_secs(20)).await;
    assert_eq!(t["status"], "succeeded", "{t}");
    assert_eq!(b.log(&task).await, "through replica b\n");
    assert_eq!(a.log(&task).await, "through replica b\n");
    // A token from one replica works on the other.
    let (s, _) = post_as(&b.http, &b.url, &a.token, "/v2.1/testcases", json!({"plugin": "linux_system", "host": "etcd-agent", "method": "run_shell", "parameters": {"command": "true"}})).await;
    assert_eq!(s, 201);
    // Users live in the store: created on A, logging in on B.
    a.user("shared", "viewer").await;
    login(&b.http, &b.url, "shared", "password-123").await;
}

#[tokio::test]
async fn one_etcd_member_down_does_not_stop_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(3, dir.path());
    let p = Platform::server(
        &etcd.spec(),
        &dir.path().join("blobs"),
        &format!("127.0.0.1:{}", free_port()),
        &[],
    )
    .await;
    let _agent = agent(&p.url, "steady", &dir.path().join("agent"), &[]);
    p.wait_agents(1).await;

    // The first endpoint the server knows goes away.
    etcd.stop(0);
    for i in 0..3 {
        let task = p
            .run(
                "linux_system",
                "steady",
                "run_shell",
                json!({"command": "echo", "args": format!("round {i}")}),
            )
            .await;
        let t = p.wait_task(&task, Duration::from_secs(30)).await;
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(p.log(&task).await, format!("round {i}\n"));
    }
    // The agent's lease is still kept alive through the remaining members.
    tokio::time::sleep(Duration::from_secs(12)).await;
    p.wait_agents(1).await;
}

#[tokio::test]
async fn controller_fails_over_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(1, dir.path());
    let blobs = dir.path().join("blobs");
    let ttl = ["--lease-ttl", "3"];
    let mut a = Platform::server(
        &etcd.spec(),
        &blobs,
        &format!("127.0.0.1:{}", free_port()),
        &ttl,
    )
    .await;
    // A leads; B stands by and holds the agent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = a.get("/healthz").await;
        if h["controller_leader"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "A never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Platform::server(
        &etcd.spec(),
        &blobs,
        &format!("127.0.0.1:{}", free_port()),
        &ttl,
    )
    .await;
    let (_, hb) = b.get("/healthz").await;
    assert_eq!(hb["controller_leader"], false);
    let _agent = agent(&b.url, "worker", &dir.path().join("agent"), &[]);
    b.wait_agents(1).await;

    let out = dir.path().join("out.txt");
    let plan = format!(
        "name: failover\nsteps:\n  - id: first\n    plugin: linux_system\n    method: run_shell\n    params: {{command: sh, args: \"-c 'sleep 3; echo first >> {o}'\"}}\n  - id: second\n    plugin: linux_system\n    method: run_shell\n    depends_on: [first]\n    params: {{command: sh, args: \"-c 'echo second >> {o}'\"}}\n",
        o = out.display()
    );
    let id = b.start_run(&plan, json!({})).await;
    b.wait_run_until(&id, Duration::from_secs(10), |r| {
        r["steps"]["first"]["status"] == "running"
    })
    .await;
    a.proc.kill9();
    // B takes over within the lease TTL and finishes the run.
    let run = b.wait_run(&id, Duration::from_secs(40)).await;
    assert_eq!(run["status"], "passed", "{run}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "first\nsecond\n");
    let (_, hb) = b.get("/healthz").await;
    assert_eq!(hb["controller_leader"], true);
}
