//! `testbed perf run`: a performance plan file through a server, followed
//! live, judged by its thresholds.

use crate::common;

use std::process::Command;

use common::*;

fn perf_run(p: &Platform, plan: &std::path::Path) -> std::process::Output {
    perf_run_with(p, plan, &[])
}

fn perf_run_with(p: &Platform, plan: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["perf", "run"])
        .arg(plan)
        .args(extra)
        .env("TESTBED_SERVER", &p.url)
        .env("TESTBED_TOKEN", &p.token)
        .env("TESTBED_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn perf_run_follows_live_and_judges_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;
    let (url, count) = serve();
    let plan = dir.path().join("perf.yaml");
    let write = |threshold: &str| {
        std::fs::write(
            &plan,
            format!(
                "name: quick\nconfig:\n  concurrent_users: 2\n  ramp_up_time: 0\n  hold_time: 2\n  test_type: load\n  target_url: \"{url}\"\n  request_timeout: 2000\n  thresholds: [\"{threshold}\"]\n"
            ),
        )
        .unwrap();
    };
    write("error_rate<0.01");
    let o = perf_run(&p, &plan);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("rps"), "live lines: {err}");
    assert!(out.contains("✓ error_rate<0.01"), "{out}");
    let served = count.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        out.contains(&format!("{served} requests")),
        "{out} (target saw {served})"
    );

    // A threshold that cannot hold: exit 1.
    write("p(99)<0");
    let o = perf_run(&p, &plan);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("✗ p(99)<0"));

    // A bad plan file: exit 2 with its location.
    std::fs::write(&plan, "name: x\nconfg: {}\n").unwrap();
    let o = perf_run(&p, &plan);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("perf.yaml:2:"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `perf run --out`: the execution's seconds, merged over its agents as the
/// server streams them, reach a JSON-lines file and an OTLP receiver from
/// the client while a real execution runs on a real agent; their request
/// counts add up to the report's. A bad `--out` starts nothing (exit 2).
#[tokio::test]
async fn perf_run_streams_seconds_to_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;
    let (url, count) = serve();
    let (otlp, got) = crate::load::otlp_receiver();
    let plan = dir.path().join("perf.yaml");
    std::fs::write(
        &plan,
        format!(
            "name: outputs\nconfig:\n  concurrent_users: 2\n  ramp_up_time: 0\n  hold_time: 2\n  test_type: load\n  target_url: \"{url}\"\n  request_timeout: 2000\n"
        ),
    )
    .unwrap();
    let jsonl = dir.path().join("seconds.jsonl");
    let o = perf_run_with(
        &p,
        &plan,
        &[
            "--json",
            "--out",
            &format!("json={}", jsonl.display()),
            "--out",
            &format!("otlp={otlp}"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json report");
    let total = report["summary"]["total_requests"].as_u64().unwrap();
    assert_eq!(total, count.load(std::sync::atomic::Ordering::SeqCst));
    assert!(total > 0);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    let sum: u64 = lines.iter().map(|l| l["requests"].as_u64().unwrap()).sum();
    assert_eq!(sum, total, "{lines:?}");
    let windows = crate::load::check_otlp(&got, "outputs", total);
    assert_eq!(windows, lines.len());
    assert!(
        err.contains(&format!("output otlp={otlp}: {windows} window(s) written")),
        "{err}"
    );

    let plans = || {
        let o = Command::new(bin())
            .args(["perf", "ls", "--json"])
            .env("TESTBED_SERVER", &p.url)
            .env("TESTBED_TOKEN", &p.token)
            .output()
            .unwrap();
        assert!(o.status.success());
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
            .unwrap()
            .len()
    };
    let plans_before = plans();
    let o = perf_run_with(&p, &plan, &["--out", "otlp=collector:4318"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--out otlp=collector:4318: \"collector:4318\" is not an http(s) URL"),
        "{err}"
    );
    assert_eq!(plans(), plans_before, "no plan was created");
}
