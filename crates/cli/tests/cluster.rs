//! Server replicas on a real etcd cluster.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Two server replicas over one real etcd, sharing a blob directory.
async fn two_replicas(dir: &std::path::Path) -> (Etcd, Platform, Platform) {
    let etcd = Etcd::start(1, dir);
    let blobs = dir.join("blobs");
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        replicas.push(Platform::server(&etcd.spec(), &blobs, &addr, &[]).await);
    }
    let b = replicas.pop().expect("two replicas");
    let a = replicas.pop().expect("two replicas");
    (etcd, a, b)
}

#[tokio::test]
async fn two_replicas_serve_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, a, b) = two_replicas(dir.path()).await;
    assert_eq!(a.join_token, b.join_token);

    // The agent holds a session with replica A; the task goes in through B.
    let _agent = agent(&a.url, "etcd-agent", &dir.path().join("agent"), &[]);
    a.wait_agents(1).await;
    let detail = b.wait_agents(1).await;
    assert_eq!(
        detail.as_object().unwrap().values().next().unwrap()["name"],
        "etcd-agent"
    );

    let task = b.run_shell("etcd-agent", "echo", "through replica b").await;
    b.wait_succeeded(&task, Duration::from_secs(20)).await;
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
        let task = p.run_shell("steady", "echo", &format!("round {i}")).await;
        p.wait_succeeded(&task, Duration::from_secs(30)).await;
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

/// Two replicas share only etcd and an S3-compatible store (moto's server
/// mode, a real S3 REST API over HTTP): no directory in common. A task's
/// log, written through the replica that holds the agent, is read through
/// the other while it runs and after it ends.
#[tokio::test]
async fn replicas_share_blobs_through_an_object_store() {
    let Some(s3) = Moto::start(&[]).await else {
        eprintln!(
            "SKIP replicas_share_blobs_through_an_object_store: no `moto_server` on PATH \
             (PyPI moto[server]; scripts/test installs it)"
        );
        return;
    };
    s3.create_bucket("testbed").await;
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(1, dir.path());
    let blobs = "s3://testbed/cluster-1";
    let replica = || {
        let listen = format!("127.0.0.1:{}", free_port());
        let (store, env) = (etcd.spec(), s3.env());
        async move { Platform::server_env(&store, blobs, &listen, &[], &env).await }
    };
    let a = replica().await;
    let b = replica().await;

    let _agent = agent(&a.url, "s3-agent", &dir.path().join("agent"), &[]);
    b.wait_agents(1).await;
    let task = a
        .run_shell(
            "s3-agent",
            "sh",
            "-c 'echo first line; sleep 3; echo second line'",
        )
        .await;
    // While it runs, B merges the chunks A stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = b.log(&task).await;
        if log.contains("first line") {
            assert!(!log.contains("second line"), "{log}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never saw the log: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.task(&task).await["status"], "running");
    b.wait_succeeded(&task, Duration::from_secs(30)).await;
    assert_eq!(b.log(&task).await, "first line\nsecond line\n");
    assert_eq!(a.log(&task).await, "first line\nsecond line\n");
    // The log is one object in the bucket, under the prefix; the chunks
    // were folded away.
    let keys = s3
        .keys("testbed", &format!("cluster-1/tasks/{task}/"))
        .await;
    assert_eq!(keys, vec![format!("cluster-1/tasks/{task}/log.txt")]);
    // Nothing went to a local blob directory (the default one is
    // `testbed-blobs` in the working directory).
    assert!(!std::path::Path::new("testbed-blobs").exists());
}

/// A blob setting that cannot work stops the start with exit code 2 and a
/// message naming the setting and what failed.
#[tokio::test]
async fn a_misconfigured_object_store_stops_the_start() {
    let Some(s3) = Moto::start(&[]).await else {
        eprintln!("SKIP a_misconfigured_object_store_stops_the_start: no `moto_server` on PATH");
        return;
    };
    s3.create_bucket("present").await;
    // This one checks signatures: no key is known to it, so every key is bad.
    let strict = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
        .await
        .expect("moto");
    let dir = tempfile::tempdir().unwrap();
    let down = format!("http://127.0.0.1:{}", free_port());
    let with = |endpoint: &str| {
        let mut env = s3.env();
        env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
        env.push(("AWS_ENDPOINT_URL".into(), endpoint.to_string()));
        env
    };
    type Env = Vec<(String, String)>;
    let cases: Vec<(&str, Env, &str)> = vec![
        ("gs://bucket/x", s3.env(), "unsupported blob store `gs://`"),
        ("s3:///prefix", s3.env(), "no bucket"),
        ("file://relative/dir", s3.env(), "absolute path"),
        ("s3://missing/x", s3.env(), "the bucket does not exist"),
        (
            "s3://present/x",
            with(&down),
            "cannot be reached: check AWS_ENDPOINT_URL",
        ),
        (
            "s3://present/x",
            with("not a url"),
            "AWS_ENDPOINT_URL \"not a url\" is not a URL",
        ),
        (
            "s3://present/x",
            with(&strict.endpoint),
            "access refused: check AWS_ACCESS_KEY_ID",
        ),
    ];
    for (i, (spec, env, expected)) in cases.into_iter().enumerate() {
        let out = std::process::Command::new(bin())
            .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--store")
            .arg(format!(
                "redb:{}",
                dir.path().join(format!("s{i}.redb")).display()
            ))
            .args(["--blobs", spec])
            .envs(env)
            .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains("--blobs (TESTBED_BLOBS)"), "{spec}: {err}");
        assert!(err.contains(spec), "{spec}: {err}");
        assert!(
            err.contains(expected),
            "{spec}: expected {expected:?} in {err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "{spec}"
        );
    }
    // The variable works like the flag.
    let out = std::process::Command::new(bin())
        .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--store")
        .arg(format!("redb:{}", dir.path().join("env.redb").display()))
        .envs(s3.env())
        .env("TESTBED_BLOBS", "s3://missing/y")
        .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("s3://missing/y: writing a probe object failed"),
        "{err}"
    );
}

/// A load agent `loader` holding its session with replica `b`, seen by both
/// replicas, and a plan `name` created through replica `a`: two users for
/// `hold_time` seconds against a counting target. The agent (kept running
/// while held), the plan's id and the target's request count.
async fn plan_with_agent_on(
    a: &Platform,
    b: &Platform,
    dir: &std::path::Path,
    name: &str,
    hold_time: u64,
) -> (Proc, u64, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let agent = agent(&b.url, "loader", &dir.join("agent"), &["--plugins", "load"]);
    b.wait_agents(1).await;
    a.wait_agents(1).await;
    let (target, count) = serve();
    let plan = a
        .perf_plan(
            name,
            json!({"concurrent_users": 2, "hold_time": hold_time, "test_type": "load",
                "target_url": target, "request_timeout": 2000}),
        )
        .await;
    (agent, plan["id"].as_u64().unwrap(), count)
}

/// A load test started through one replica whose load agent holds its
/// session with the other: the live WebSocket and the metrics endpoint of
/// the starting replica show the agent's seconds (relayed through the
/// store), not only the replica that receives them.
#[tokio::test]
async fn live_load_metrics_show_on_every_replica() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, a, b) = two_replicas(dir.path()).await;
    let (_agent, id, count) = plan_with_agent_on(&a, &b, dir.path(), "relayed", 4).await;
    let started = a.start_perf(id).await;
    let exec = started["execution_id"].as_str().unwrap().to_string();
    let ws_url = started["websocket_url"].as_str().unwrap();
    assert!(ws_url.contains(&a.url.replace("http://", "")), "{ws_url}");

    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut busy_seconds = 0;
    let mut busy_mid_run = None;
    let mut finished = None;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(40), ws.next())
        .await
        .expect("websocket went quiet")
    {
        match msg.unwrap() {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("metrics") => {
                        if v["data"]["requests_per_second"].as_f64().unwrap() > 0.0 {
                            busy_seconds += 1;
                            if busy_mid_run.is_none() {
                                // While it runs, replica A's metrics endpoint
                                // sees the requests too.
                                let (s, m) =
                                    a.get(&format!("/api/performance/metrics/{exec}/")).await;
                                assert_eq!(s, 200, "{m}");
                                busy_mid_run =
                                    m["metrics"]["throughput"]["total_requests"].as_u64();
                            }
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
    assert!(busy_seconds >= 2, "only {busy_seconds} busy seconds on A");
    assert!(
        busy_mid_run.is_some_and(|n| n > 0),
        "A's metrics endpoint showed no requests mid-run: {busy_mid_run:?}"
    );
    let finished = finished.expect("no finished message");
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(
        finished["summary"]["total_requests"].as_u64(),
        Some(count.load(std::sync::atomic::Ordering::SeqCst))
    );
}

/// Waits until `p` leads the controller.
async fn wait_leader(p: &Platform) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, h) = p.get("/healthz").await;
        if h["controller_leader"] == true {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{} never led", p.url);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the plan's first report, through `p`.
async fn perf_report(p: &Platform, plan: u64, within: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (s, b) = p
            .get(&format!("/api/performance/reports/?plan_id={plan}"))
            .await;
        assert_eq!(s, 200, "{b}");
        if let Some(id) = b["results"][0]["id"].as_u64() {
            let (s, r) = p.get(&format!("/api/performance/reports/{id}/")).await;
            assert_eq!(s, 200, "{r}");
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no report for plan {plan}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the target's request count stands still for a second.
async fn until_quiet(count: &std::sync::atomic::AtomicU64, within: Duration) -> u64 {
    use std::sync::atomic::Ordering::SeqCst;
    let deadline = std::time::Instant::now() + within;
    let mut last = count.load(SeqCst);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = count.load(SeqCst);
        if now == last {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the load never paused"
        );
        last = now;
    }
}

/// The report is built by the controller leader from what is in the store,
/// not from the memory of the replica that happens to finish it: a load
/// test started through the leader, whose load agent holds its session with
/// the other replica, reports the agent's CPU and memory. (When the
/// starting replica built the report from its own memory, these series were
/// empty here.)
#[tokio::test]
async fn the_report_holds_the_figures_of_agents_on_another_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, a, b) = two_replicas(dir.path()).await;
    wait_leader(&a).await;
    let (_agent, id, count) = plan_with_agent_on(&a, &b, dir.path(), "elsewhere", 3).await;
    a.start_perf(id).await;
    let r = perf_report(&a, id, Duration::from_secs(40)).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(
        r["summary"]["total_requests"].as_u64(),
        Some(count.load(std::sync::atomic::Ordering::SeqCst)),
        "{r}"
    );
    let system = &r["metrics"]["system_metrics"];
    assert!(
        !system["cpu"].as_array().unwrap().is_empty(),
        "no CPU series: {r}"
    );
    let cpu = system["agents"]["loader"]["cpu"].as_array();
    assert!(
        cpu.is_some_and(|c| c.iter().any(|v| v.is_number())),
        "no CPU series for the agent: {r}"
    );
}

/// An execution belongs to the controller, not to the replica that started
/// it: that replica (also the leader) is killed mid-run, and the other one
/// takes over, carries a pause, a resume and a stop asked of it to the load
/// agent, and reports the execution.
#[tokio::test]
async fn an_execution_outlives_the_replica_that_started_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(1, dir.path());
    let blobs = dir.path().join("blobs");
    let ttl = ["--lease-ttl", "3"];
    let listen = || format!("127.0.0.1:{}", free_port());
    let mut a = Platform::server(&etcd.spec(), &blobs, &listen(), &ttl).await;
    wait_leader(&a).await;
    let b = Platform::server(&etcd.spec(), &blobs, &listen(), &ttl).await;
    let _agent = agent(
        &b.url,
        "loader",
        &dir.path().join("agent"),
        &["--plugins", "load"],
    );
    b.wait_agents(1).await;
    let (target, count) = serve();
    let plan = a
        .perf_plan(
            "orphan",
            json!({"concurrent_users": 2, "ramp_up_time": 0, "hold_time": 60,
                "test_type": "load", "target_url": target, "request_timeout": 2000}),
        )
        .await;
    let id = plan["id"].as_u64().unwrap();
    a.start_perf(id).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while count.load(SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no load");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.proc.kill9();

    // Asked of B before B leads: B's reconciler carries it once it does.
    let (s, p) = b
        .post(&format!("/api/performance/plans/{id}/pause/"), json!({}))
        .await;
    assert_eq!(s, 200, "{p}");
    let paused_at = until_quiet(&count, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count.load(SeqCst), paused_at, "requests while paused");
    let (_, h) = b.get("/healthz").await;
    assert_eq!(h["controller_leader"], true, "{h}");

    let (s, r) = b
        .post(&format!("/api/performance/plans/{id}/resume/"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count.load(SeqCst) == paused_at {
        assert!(std::time::Instant::now() < deadline, "no load after resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, st) = b
        .post(&format!("/api/performance/plans/{id}/stop/"), json!({}))
        .await;
    assert_eq!(s, 200, "{st}");
    let r = perf_report(&b, id, Duration::from_secs(30)).await;
    assert_eq!(r["status"], "stopped", "{r}");
    // Every answered request, give or take the two in flight at the stop.
    let total = r["summary"]["total_requests"].as_u64().unwrap();
    let served = count.load(SeqCst);
    assert!(
        total <= served && total + 2 >= served,
        "{served} served: {r}"
    );
    let windows = r["metrics"]["response_times"]["timestamps"]
        .as_array()
        .unwrap()
        .len();
    assert!(windows < 45, "stopped well short of the hold: {windows} s");
}

/// A group reserved by a run (its lock taken by whichever replica leads the
/// controller) takes no one-off work through either replica: each
/// replica's fleet view follows the reservation through the store, and a
/// view that has not seen it yet is caught by the guard of the transaction
/// that writes the task. Tasks submitted while it lasts wait, held, and run
/// once it ends.
#[tokio::test]
async fn a_reservation_holds_one_off_tasks_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, a, b) = two_replicas(dir.path()).await;
    let _agent = agent(&a.url, "lab-agent", &dir.path().join("agent"), &[]);
    a.wait_agents(1).await;
    b.wait_agents(1).await;
    let (s, g) = b.post("/api/groups", json!({"name": "lab"})).await;
    assert_eq!(s, 201, "{g}");
    let (s, g) = b
        .call(
            reqwest::Method::PUT,
            "/api/groups/lab/agents/lab-agent",
            None,
        )
        .await;
    assert_eq!(s, 200, "{g}");
    // Before the reservation, either replica places work on the agent.
    for p in [&a, &b] {
        let t = p
            .run(
                "linux_system",
                "lab-agent",
                "run_shell",
                json!({"command": "true"}),
            )
            .await;
        p.wait_succeeded(&t, Duration::from_secs(20)).await;
    }
    let owner = "name: owner\nreserve: lab\nsteps:\n  - id: hold\n    plugin: linux_system\n    method: run_shell\n    target: {group: lab}\n    params: {command: sleep, args: \"4\"}\n";
    let run = b.start_run(owner, json!({})).await;
    b.wait_step(&run, "hold", "running").await;
    let mut held = Vec::new();
    for p in [&a, &b] {
        let (s, t) = p
            .post("/v2.1/testcases", json!({"plugin": "linux_system", "host": "lab-agent", "method": "run_shell", "parameters": {"command": "echo", "args": "after"}}))
            .await;
        assert_eq!(s, 201, "{t}");
        let id = t["task_id"].as_str().unwrap().to_string();
        let t = p.task(&id).await;
        assert_eq!(t["status"], "queued", "{t}");
        let reason = t["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("group `lab` is reserved by run") && reason.contains(run.as_str()),
            "{t}"
        );
        held.push((p, id));
    }
    let done = b.wait_run(&run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "passed", "{done}");
    for (p, id) in held {
        p.wait_succeeded(&id, Duration::from_secs(20)).await;
        assert_eq!(p.log(&id).await, "after\n");
    }
}
