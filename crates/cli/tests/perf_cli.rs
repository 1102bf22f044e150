//! `testbed perf run`: a performance plan file through a server, followed
//! live, judged by its thresholds.

use crate::common;

use std::process::Command;

use common::*;

fn perf_run(p: &Platform, plan: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["perf", "run"])
        .arg(plan)
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
