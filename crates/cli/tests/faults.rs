//! Faults: agents and servers killed with SIGKILL, restarts on the same
//! data, clean shutdown.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn killed_agent_vanishes_and_its_task_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &["--lease-ttl", "2"]).await;
    let mut a = agent(&p.url, "doomed", &dir.path().join("agent"), &[]);
    p.wait_agents(1).await;
    let task = p.run_shell("doomed", "sleep", "60").await;
    p.wait_status(&task, "running", Duration::from_secs(10))
        .await;

    a.kill9();
    let killed = Instant::now();
    p.wait_agents(0).await;
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "agent still listed {:?} after kill",
        killed.elapsed()
    );
    let t = p.wait_status(&task, "lost", Duration::from_secs(5)).await;
    assert!(t["error"].as_str().unwrap().contains("heartbeat"), "{t}");
    // Still known, as offline.
    let (_, agents) = p.get("/api/agents").await;
    assert_eq!(agents[0]["status"], "offline");
    // Nothing to run on now: the host is known but offline.
    let (s, b) = p
        .post("/v2.1/testcases", json!({"plugin": "linux_system", "host": "doomed", "method": "run_shell", "parameters": {"command": "true"}}))
        .await;
    assert_eq!(s, 409, "{b}");
}

#[tokio::test]
async fn server_killed_mid_task_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Platform::server_in(dir.path(), &[]).await;
    let _a = agent(&p.url, "survivor", &dir.path().join("agent"), &[]);
    p.wait_agents(1).await;

    let done = p.run_shell("survivor", "echo", "finished before").await;
    p.wait_status(&done, "succeeded", Duration::from_secs(10))
        .await;

    let runs = dir.path().join("runs.txt");
    let script = format!(
        "echo start; sleep 3; echo once >> {}; echo done",
        runs.display()
    );
    let long = p
        .run_shell("survivor", "sh", &format!("-c '{script}'"))
        .await;
    p.wait_status(&long, "running", Duration::from_secs(10))
        .await;

    p.kill_and_restart_in(dir.path(), &[]).await;

    // The agent reconnects, the task completes once, and its whole log lands.
    p.wait_succeeded(&long, Duration::from_secs(30)).await;
    assert_eq!(p.log(&long).await, "start\ndone\n");
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "once\n",
        "ran more than once"
    );
    // What finished before the crash is intact.
    let t = p.task(&done).await;
    assert_eq!(t["status"], "succeeded");
    assert_eq!(p.log(&done).await, "finished before\n");
    p.wait_agents(1).await;
}

#[tokio::test]
async fn up_restarts_with_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut p = Platform::up(&data, 1, &[]).await;
    let task = p.run_shell("local-1", "echo", "persisted").await;
    p.wait_status(&task, "succeeded", Duration::from_secs(10))
        .await;
    let (_, before) = p.get("/api/agents").await;
    let user = p.user("keeper", "viewer").await;
    assert!(!user.is_empty());

    // Ctrl-C shuts down cleanly.
    let status = p.proc.interrupt();
    assert!(status.success(), "{status:?}");

    let p = Platform::up(&data, 1, &[]).await;
    let t = p.task(&task).await;
    assert_eq!(t["status"], "succeeded");
    assert_eq!(p.log(&task).await, "persisted\n");
    let (_, after) = p.get("/api/agents").await;
    assert_eq!(
        after.as_array().unwrap().len(),
        1,
        "the local agent kept its identity: {after}"
    );
    assert_eq!(after[0]["uuid"], before[0]["uuid"]);
    assert_eq!(after[0]["id"], before[0]["id"]);
    login(&p.http, &p.url, "keeper", "password-123").await;
}

#[tokio::test]
async fn restarted_agent_keeps_its_id_and_reports_lost_work() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &["--lease-ttl", "30"]).await;
    let state = dir.path().join("agent");
    let phoenix = || {
        agent(
            &p.url,
            "phoenix",
            &state,
            &["--labels", "arch=x86_64,os=linux"],
        )
    };
    let mut a = phoenix();
    let before = p.wait_agents(1).await;
    let task = p.run_shell("phoenix", "sleep", "60").await;
    p.wait_status(&task, "running", Duration::from_secs(10))
        .await;

    // Restarted well inside the TTL: same identity, and the server learns
    // the running task died with the old process.
    a.kill9();
    let _a = phoenix();
    let t = p.wait_status(&task, "lost", Duration::from_secs(15)).await;
    assert!(t["error"].as_str().unwrap().contains("restarted"), "{t}");
    let after = p.wait_agents(1).await;
    assert_eq!(
        before.as_object().unwrap().keys().collect::<Vec<_>>(),
        after.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    let s = after.as_object().unwrap().values().next().unwrap();
    assert_eq!(s["labels"]["arch"], "x86_64");
}

#[tokio::test]
async fn root_agent_drops_task_privileges_to_run_as() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("run_as needs a root agent; this test runs as non-root and checks nothing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The task user must be able to reach its work directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let p = Platform::server_in(dir.path(), &[]).await;
    let plain = agent(&p.url, "rooted", &dir.path().join("a1"), &[]);
    plain.wait_line("runs as ROOT", Duration::from_secs(10));
    let _dropped = agent(
        &p.url,
        "dropped",
        &dir.path().join("a2"),
        &["--run-as", "nobody"],
    );
    p.wait_agents(2).await;
    let task = p.run_shell("dropped", "id", "-un").await;
    p.wait_succeeded(&task, Duration::from_secs(20)).await;
    assert_eq!(p.log(&task).await, "nobody\n");
    let (_, agents) = p.get("/api/agents/dropped").await;
    assert_eq!(agents["root"], true);
    assert_eq!(agents["run_as"], "nobody");
}

/// A stalled write (here the object store that takes the task's log, frozen
/// for longer than half the agent's lease) holds up the server's handling of
/// that agent's messages, but not its answers to the agent's pings: the
/// agent's fence must not take the stall for a silent server and kill its
/// running task.
#[tokio::test]
async fn a_stalled_write_does_not_kill_running_tasks() {
    let Some(s3) = Moto::start(&[]).await else {
        eprintln!("SKIP a_stalled_write_does_not_kill_running_tasks: no `moto_server` on PATH");
        return;
    };
    s3.create_bucket("stall").await;
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let store = format!("redb:{}", dir.path().join("s.redb").display());
    // A 20 s lease: the agent heartbeats every 6 s and pings every 3 s; its
    // fence fires after 10 s of silence; the lease has at least 13 s left
    // when the stall begins.
    let p = Platform::server_env(
        &store,
        "s3://stall/logs",
        &listen,
        &["--lease-ttl", "20"],
        &s3.env(),
    )
    .await;
    let _a = agent(&p.url, "patient", &dir.path().join("agent"), &[]);
    p.wait_agents(1).await;
    let task = p
        .run_shell("patient", "sh", "-c 'sleep 2; echo stalled; sleep 14'")
        .await;
    p.wait_status(&task, "running", Duration::from_secs(10))
        .await;

    // Frozen before the task writes its line, thawed 11.5 s after it: the
    // line's log chunk blocks the session that long, over the fence's 10 s
    // and under what the lease has left.
    let pid = s3.proc.child.as_ref().unwrap().id();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_millis(13_500)).await;
    signal("-CONT");

    let t = p.wait_task(&task, Duration::from_secs(60)).await;
    assert_eq!(t["status"], "succeeded", "the stall killed the task: {t}");
    assert_eq!(p.log(&task).await, "stalled\n");
}
