//! `testbed up` killed with SIGKILL at random points, restarted on the same
//! data directory each time: every run finishes, every step's work is done
//! once, and a restart does not stand still for a lease TTL.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// Steps append `TAG STEP TASK-ID NANOS` to a file as their last act (the
/// agent runs each task in `work/<task id>`, so the line names the attempt).
fn plan(out: &std::path::Path) -> String {
    let step = |id: &str, deps: &str, sleep: &str| {
        format!(
            "  - id: {id}\n{deps}    plugin: linux_system\n    method: run_shell\n    retries: 20\n    params: {{command: sh, args: \"-c 'sleep {sleep}; echo {{{{ params.tag }}}} {id} $(basename $PWD) $(date +%s%N) >> {out}'\"}}\n",
            out = out.display()
        )
    };
    format!(
        "name: appender\nparameters:\n  tag: {{type: string}}\nsteps:\n{}{}{}{}",
        step("a", "", "0.3"),
        step("b", "    depends_on: [a]\n", "0.2"),
        step("c", "    depends_on: [a]\n", "0.4"),
        step("d", "    depends_on: [b, c]\n", "0.2"),
    )
}

const PROBE: &str = "name: probe\nsteps:\n  - id: p\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n";

/// xorshift64*: random kill points without a dependency; the seed is
/// printed (and taken from TESTBED_TEST_SEED) to replay a failure.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn rfc3339_nanos(s: &str) -> u128 {
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap();
    t.timestamp_nanos_opt().unwrap() as u128
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_killed_at_random_points_finishes_every_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("lines.txt");
    let plan = plan(&out);
    let seed = std::env::var("TESTBED_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| nanos(SystemTime::now()) as u64 | 1);
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    // A long lease makes a stall on restart unmistakable: waiting out the
    // dead process's lease would take 20 s.
    let ttl = ["--lease-ttl", "20"];
    let mut p = Platform::up(&data, 2, &ttl).await;

    let mut runs: Vec<(String, String)> = Vec::new();
    // When each SIGKILL was sent, and when `up` was reaped.
    let mut kills: Vec<(u128, u128)> = Vec::new();
    for i in 0..10 {
        let tag = format!("r{i}");
        let id = p.start_run(&plan, json!({"tag": tag})).await;
        runs.push((tag, id));
        // Anywhere from before the first step starts to past the run's end.
        let wait = Duration::from_millis(50 + rng.next() % 1500);
        tokio::time::sleep(wait).await;
        let sent = nanos(SystemTime::now());
        p.proc.kill9();
        kills.push((sent, nanos(SystemTime::now())));

        p = Platform::up(&data, 2, &ttl).await;
        // The restarted controller works at once: a new run is dispatched
        // and done well inside the lease it would otherwise wait out.
        let since = Instant::now();
        let probe = p.start_run(PROBE, json!({})).await;
        let done = p.wait_run(&probe, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "passed", "{done}");
        assert!(
            since.elapsed() < Duration::from_secs(8),
            "restart {i}: a new run took {:?} (a lease TTL is 20 s)",
            since.elapsed()
        );
    }

    // Every run ends first; only then is every line written.
    let mut finished = BTreeMap::new();
    for (tag, id) in &runs {
        let run = p.wait_run(id, Duration::from_secs(90)).await;
        assert_eq!(run["status"], "passed", "run {tag}: {run}");
        finished.insert(id.clone(), run);
    }
    let lines = std::fs::read_to_string(&out).unwrap_or_default();
    let mut by_step: BTreeMap<(String, String), Vec<(String, u128)>> = BTreeMap::new();
    for line in lines.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "torn line {line:?}");
        by_step
            .entry((f[0].to_string(), f[1].to_string()))
            .or_default()
            .push((f[2].to_string(), f[3].parse().unwrap()));
    }

    let mut lost = 0;
    let mut unknown_outcomes = 0;
    // Of those, lines written in the instant between `up`'s death and its
    // tasks' process groups being killed.
    let mut after_death = 0;
    for (tag, id) in &runs {
        let run = &finished[id];
        for step in ["a", "b", "c", "d"] {
            let inst = &run["steps"][step]["instances"][0];
            let last = inst["task_id"].as_str().unwrap().to_string();
            let previous: Vec<String> = inst["previous"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            let written = by_step
                .get(&(tag.clone(), step.to_string()))
                .cloned()
                .unwrap_or_default();
            let finals = written.iter().filter(|(t, _)| *t == last).count();
            assert_eq!(
                finals, 1,
                "run {tag} step {step}: the attempt that passed ({last}) wrote {finals} lines: {written:?}"
            );
            for (n, prev) in previous.iter().enumerate() {
                let t: Value = p.task(prev).await;
                assert_eq!(
                    t["status"], "lost",
                    "run {tag} step {step}: an earlier attempt that did not die with its agent was retried: {t}"
                );
                lost += 1;
                let created = rfc3339_nanos(t["created_at"].as_str().unwrap());
                let (_, killed) = kills
                    .iter()
                    .copied()
                    .find(|(sent, _)| *sent > created)
                    .expect("a lost attempt follows a kill");
                let next = previous.get(n + 1).unwrap_or(&last);
                let retried = rfc3339_nanos(p.task(next).await["created_at"].as_str().unwrap());
                for (task, at) in written.iter().filter(|(t, _)| t == prev) {
                    // Its command finished as `up` died, and its result died
                    // with it: the outcome was unknown, so the retry was
                    // right. Its process group is killed the moment `up`
                    // dies (from outside), so a line written well after
                    // that would be a process that outlived its agent, and
                    // one written after the retry was created an overlap.
                    assert!(
                        *at <= killed + 300_000_000,
                        "run {tag} step {step}: attempt {task} wrote its line {} ms after `up` died",
                        (at - killed) / 1_000_000
                    );
                    assert!(
                        *at < retried,
                        "run {tag} step {step}: attempt {task} overlapped its retry {next}"
                    );
                    unknown_outcomes += 1;
                    if *at > killed {
                        after_death += 1;
                    }
                }
                assert!(
                    written.iter().filter(|(t, _)| t == prev).count() <= 1,
                    "run {tag} step {step}: attempt {prev} ran twice: {written:?}"
                );
            }
            for (task, _) in &written {
                assert!(
                    *task == last || previous.contains(task),
                    "run {tag} step {step}: a line from unknown task {task}"
                );
            }
        }
    }
    // The restarted replica leads, and its loops are healthy.
    let (s, h) = p.get("/healthz").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["controller_leader"], true, "{h}");
    assert_eq!(h["controller_loops_ok"], true, "{h}");
    assert_eq!(h["controller_loops_failing"], json!([]), "{h}");
    eprintln!(
        "{} kills, {} runs passed, {lost} attempts lost with `up` and retried, \
         {unknown_outcomes} of them had finished around the kill ({after_death} in the \
         instant after `up` died, before their process group was killed)",
        kills.len(),
        runs.len()
    );
}

/// The case of the report: one local agent, a step with `retries: 1`
/// running when `up` is killed, and a step depending on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_running_when_up_dies_is_retried_and_its_dependents_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("lines.txt");
    let plan = format!(
        "name: once\nsteps:\n  - id: slow\n    plugin: linux_system\n    method: run_shell\n    retries: 1\n    params: {{command: sh, args: \"-c 'sleep 2; echo slow >> {out}'\"}}\n  - id: after\n    depends_on: [slow]\n    plugin: linux_system\n    method: run_shell\n    params: {{command: sh, args: \"-c 'echo after >> {out}'\"}}\n",
        out = out.display()
    );
    let ttl = ["--lease-ttl", "20"];
    let mut p = Platform::up(&data, 1, &ttl).await;
    let id = p.start_run(&plan, json!({})).await;
    let run = p
        .wait_run_until(&id, Duration::from_secs(20), |r| {
            r["steps"]["slow"]["instances"][0]["task_id"].is_string()
        })
        .await;
    let first = run["steps"]["slow"]["instances"][0]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    p.wait_status(&first, "running", Duration::from_secs(10))
        .await;
    p.proc.kill9();

    let p = Platform::up(&data, 1, &ttl).await;
    let since = Instant::now();
    let retried = p
        .wait_run_until(&id, Duration::from_secs(60), |r| {
            r["steps"]["slow"]["instances"][0]["attempt"] == 2
        })
        .await;
    // Not after the 20 s lease of the dead process.
    assert!(
        since.elapsed() < Duration::from_secs(8),
        "retried {:?} after the restart",
        since.elapsed()
    );
    assert!(
        retried["steps"]["slow"]["instances"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("restarted"),
        "{retried}"
    );
    let run = p.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "passed", "{run}");
    assert_eq!(run["steps"]["after"]["status"], "passed", "{run}");
    let t = p.task(&first).await;
    assert_eq!(t["status"], "lost", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("outcome is unknown"),
        "{t}"
    );
    // The killed attempt's process died with `up`: one line each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "slow\nafter\n",
        "a step ran twice or not at all"
    );
}
