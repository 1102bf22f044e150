//! The engine against a real local hyper server: counts, error classes,
//! checks, thresholds, h2c, pause/resume, stop, open-model rate, coordinated
//! omission, window merging, validation and data variables.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testbed_load::{
    merge_windows, Check, DataSource, EndReason, Load, LoadProfile, Order, Protocol, RequestSpec,
    SeedConfig, Stage, StatusMatch, Window,
};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

async fn run_collect(plan: LoadProfile) -> (Vec<Window>, testbed_load::LoadReport) {
    let mut run = testbed_load::start(plan).expect("start");
    let mut windows = Vec::new();
    while let Some(w) = run.next_window().await {
        windows.push(w);
    }
    (windows, run.report().await.expect("report"))
}

fn error_count(r: &testbed_load::LoadReport, label: &str) -> u64 {
    r.errors
        .iter()
        .find(|e| e.label == label)
        .map(|e| e.count)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counts_equal_the_servers() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let plan = LoadProfile::closed(srv.url("/ok"), 4, secs(1.0));
    let (windows, report) = run_collect(plan).await;
    let s = &report.summary;
    assert!(s.requests > 50, "only {} requests", s.requests);
    assert_eq!(s.requests, srv.count(), "engine and server disagree");
    assert_eq!(s.errors, 0);
    assert_eq!(report.status_codes.get(&200), Some(&s.requests));
    assert_eq!(windows.iter().map(|w| w.requests).sum::<u64>(), s.requests);
    assert_eq!(s.latency.len(), s.requests);
    assert!(s.bytes_in > 0 && s.bytes_out > 0);
    assert!(s.min_ms <= s.p50_ms && s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
    assert_eq!(report.end, EndReason::Completed);
    assert!(report.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    // 404 and 500 by code.
    let mut plan = LoadProfile::closed(srv.url("/404"), 2, secs(0.5));
    plan.scenario
        .requests
        .push(RequestSpec::get(srv.url("/500")));
    plan.scenario.order = Order::Sequence;
    let (_, r) = run_collect(plan).await;
    assert!(error_count(&r, "HTTP 404") > 0);
    assert!(error_count(&r, "HTTP 500") > 0);
    assert_eq!(
        error_count(&r, "HTTP 404") + error_count(&r, "HTTP 500"),
        r.summary.requests
    );
    assert_eq!(r.summary.errors, r.summary.requests);
    assert_eq!(r.summary.success_rate, 0.0);

    // A request slower than the timeout.
    let mut plan = LoadProfile::closed(srv.url("/slow?ms=2000"), 2, secs(0.6));
    plan.request_timeout = Duration::from_millis(200);
    let (_, r) = run_collect(plan).await;
    assert!(error_count(&r, "Timeout") >= 2, "{:?}", r.errors);
    assert_eq!(error_count(&r, "Timeout"), r.summary.errors);

    // Nobody listening: errors, no crash, no busy loop.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let plan = LoadProfile::closed(format!("http://127.0.0.1:{port}/"), 2, secs(1.0));
    let t = Instant::now();
    let (windows, r) = run_collect(plan).await;
    assert!(t.elapsed() < secs(3.0));
    let refused = error_count(&r, "Connection Error");
    assert!(refused > 0);
    assert_eq!(refused, r.summary.requests);
    // The cause is named, within the seed's label.
    assert_eq!(
        r.error_causes
            .iter()
            .find(|c| c.label == testbed_load::CAUSE_REFUSED)
            .map(|c| c.count),
        Some(refused),
        "{:?}",
        r.error_causes
    );
    assert!(refused < 60, "reconnects are not backed off: {refused}");
    assert!(!windows.is_empty());

    // TLS to a plain-HTTP port.
    let mut plan = LoadProfile::closed(format!("https://{}/", srv.addr), 1, secs(0.3));
    plan.insecure = true;
    let (_, r) = run_collect(plan).await;
    assert!(error_count(&r, "TLS Error") > 0, "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_and_thresholds_decide() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let mut plan = LoadProfile::closed(srv.url("/ok"), 2, secs(0.5));
    plan.scenario.requests[0].checks = vec![
        Check::Status(StatusMatch::One(200)),
        Check::BodyContains("\"ok\"".into()),
        Check::JsonPath {
            path: "$.status".into(),
            equals: Some(serde_json::json!("ok")),
        },
        Check::JsonPath {
            path: "$.items[2]".into(),
            equals: None,
        },
    ];
    plan.thresholds = vec![
        "p(95)<5000".into(),
        "checks>0.99".into(),
        "error_rate<0.01".into(),
        "rps>10".into(),
    ];
    let (_, r) = run_collect(plan.clone()).await;
    assert!(r.passed, "{:?}", r.thresholds);
    assert_eq!(r.summary.checks_failed, 0);
    assert_eq!(r.summary.checks_passed, 4 * r.summary.requests);
    assert_eq!(r.checks.len(), 4);

    // One failing check per request: Check Failed errors, thresholds fail.
    plan.scenario.requests[0]
        .checks
        .push(Check::BodyContains("nope".into()));
    plan.thresholds.push("p(99)<0".into());
    let (_, r) = run_collect(plan).await;
    assert!(!r.passed);
    assert_eq!(error_count(&r, "Check Failed"), r.summary.requests);
    let verdict: BTreeMap<&str, bool> = r
        .thresholds
        .iter()
        .map(|t| (t.expr.as_str(), t.passed))
        .collect();
    assert!(verdict["p(95)<5000"]);
    assert!(!verdict["checks>0.99"]);
    assert!(!verdict["error_rate<0.01"]);
    assert!(!verdict["p(99)<0"]);
    assert!((r.summary.checks_rate - 0.8).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_works() {
    let _g = common::serial().await;
    let srv = common::spawn(true);
    let mut plan = LoadProfile::closed(srv.url("/ok"), 3, secs(0.7));
    plan.protocol = Protocol::Http2;
    let (_, r) = run_collect(plan.clone()).await;
    assert!(r.summary.requests > 20);
    assert_eq!(r.summary.errors, 0, "{:?}", r.errors);
    assert_eq!(r.summary.requests, srv.count());
    // HTTP/1.1 against an h2-only server fails as a connection error.
    plan.protocol = Protocol::Http1;
    let (_, r) = run_collect(plan).await;
    assert!(error_count(&r, "Connection Error") > 0, "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_h2_or_http1_and_checks_certificates() {
    let _g = common::serial().await;
    let srv = common::spawn_tls();
    let url = format!("https://localhost:{}/ok", srv.addr.port());
    let mut plan = LoadProfile::closed(&url, 2, secs(0.5));
    plan.insecure = true;
    let (_, r) = run_collect(plan.clone()).await;
    assert!(r.summary.requests > 5);
    assert_eq!(r.summary.errors, 0, "{:?}", r.errors);
    assert_eq!(srv.h2_count(), r.summary.requests, "ALPN did not pick h2");
    // Bytes are counted on the wire, TLS records included.
    assert!(r.summary.bytes_in > r.summary.requests * 30);

    plan.protocol = Protocol::Http1;
    let before = srv.count();
    let (_, r) = run_collect(plan.clone()).await;
    assert_eq!(r.summary.errors, 0, "{:?}", r.errors);
    assert_eq!(srv.count() - before, r.summary.requests);
    assert_eq!(srv.h2_count(), before, "HTTP/1.1 was asked for");

    // The self-signed certificate is refused unless insecure.
    plan.insecure = false;
    let (_, r) = run_collect(plan).await;
    assert!(r.summary.requests > 0);
    assert_eq!(
        error_count(&r, "TLS Error"),
        r.summary.requests,
        "{:?}",
        r.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_requests_and_resume_extends_the_hold() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let mut plan = LoadProfile::closed(srv.url("/slow?ms=5"), 2, secs(2.0));
    plan.scenario.think_time = None;
    let t0 = Instant::now();
    let mut run = testbed_load::start(plan).unwrap();
    let ctl = run.control();
    let collector = tokio::spawn(async move {
        let mut ws = Vec::new();
        while let Some(w) = run.next_window().await {
            ws.push(w);
        }
        (ws, run.report().await.unwrap())
    });
    tokio::time::sleep(secs(0.8)).await;
    assert!(ctl.pause());
    assert_eq!(ctl.state(), testbed_load::RunState::Paused);
    tokio::time::sleep(secs(0.2)).await; // in-flight requests finish
    let frozen = srv.count();
    tokio::time::sleep(secs(1.2)).await;
    assert_eq!(srv.count(), frozen, "requests started while paused");
    let elapsed = ctl.elapsed();
    assert!(elapsed < secs(1.1), "paused time counted: {elapsed:?}");
    assert!(ctl.resume());
    let (windows, r) = collector.await.unwrap();
    let wall = t0.elapsed();
    assert!(srv.count() > frozen, "nothing after resume");
    assert!(wall >= secs(3.3), "hold not extended: {wall:?}");
    assert!(wall < secs(4.5), "{wall:?}");
    assert!(windows.iter().any(|w| w.paused));
    assert!(windows.iter().any(|w| w.paused && w.requests == 0));
    assert!(r.series.iter().any(|p| p.paused));
    assert!(
        (r.summary.duration_secs - 2.0).abs() < 0.3,
        "{}",
        r.summary.duration_secs
    );
    assert_eq!(r.summary.requests, srv.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_a_report_promptly() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let mut plan = LoadProfile::closed(srv.url("/slow?ms=5000"), 3, secs(60.0));
    plan.request_timeout = secs(30.0);
    let run = testbed_load::start(plan).unwrap();
    let ctl = run.control();
    tokio::time::sleep(secs(0.5)).await;
    let t = Instant::now();
    assert!(ctl.stop());
    let r = tokio::time::timeout(secs(2.0), run.report())
        .await
        .expect("report not prompt")
        .unwrap();
    assert!(t.elapsed() < secs(1.0), "{:?}", t.elapsed());
    assert_eq!(r.end, EndReason::Stopped);
    assert_eq!(srv.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_at_the_deadline_are_cut_and_counted() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    // Answers come long after the run's end, well within the timeout.
    let mut plan = LoadProfile::closed(srv.url("/slow?ms=20000"), 3, secs(1.0));
    plan.request_timeout = secs(30.0);
    let t = Instant::now();
    let (windows, r) = run_collect(plan).await;
    // A behaviour bound, not a benchmark: nowhere near the 20 s answer.
    assert!(t.elapsed() < secs(5.0), "{:?}", t.elapsed());
    assert_eq!(r.summary.cut, 3, "{:?}", r.summary);
    assert_eq!(r.summary.requests, 0);
    assert_eq!(windows.iter().map(|w| w.cut).sum::<u64>(), 3);
    // While they waited, the windows said so.
    assert!(windows.iter().any(|w| w.in_flight == 3), "{windows:?}");

    // A healthy target's last answers land within the grace: nothing cut.
    let plan = LoadProfile::closed(srv.url("/ok"), 2, secs(0.5));
    let (_, r) = run_collect(plan).await;
    assert_eq!(r.summary.cut, 0);
    assert!(r.summary.requests > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_keeps_its_rate() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let plan = LoadProfile::open(srv.url("/slow?ms=20"), 200.0, secs(3.0), 50);
    let (windows, r) = run_collect(plan).await;
    let n = r.summary.requests as f64;
    assert!((540.0..=660.0).contains(&n), "{n} requests for 600 planned");
    assert_eq!(r.summary.dropped_iterations, 0);
    for w in windows.iter().filter(|w| w.duration_ms == 1000) {
        assert!(
            (170..=230).contains(&w.requests),
            "window {} had {}",
            w.index,
            w.requests
        );
    }
    // 20 ms of service time means at least 20 ms of latency.
    assert!(r.summary.p50_ms >= 20.0);

    // A pool too small for the rate drops iterations.
    let plan = LoadProfile::open(srv.url("/slow?ms=100"), 100.0, secs(1.0), 2);
    let (_, r) = run_collect(plan).await;
    assert!(
        r.summary.dropped_iterations > 50,
        "{}",
        r.summary.dropped_iterations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_is_free_of_coordinated_omission() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    srv.arm_stall();
    let (_, closed) = run_collect(LoadProfile::closed(srv.url("/stall"), 1, secs(2.5))).await;
    srv.arm_stall();
    let (_, open) = run_collect(LoadProfile::open(srv.url("/stall"), 100.0, secs(2.5), 200)).await;
    // Both saw the one-second stall…
    assert!(closed.summary.max_ms >= 900.0, "{}", closed.summary.max_ms);
    assert!(open.summary.max_ms >= 900.0, "{}", open.summary.max_ms);
    // …but only the open model counts the requests that were due during it.
    assert!(
        closed.summary.p99_ms < 100.0,
        "closed p99 {}",
        closed.summary.p99_ms
    );
    assert!(
        open.summary.p99_ms >= 800.0,
        "open p99 {}",
        open.summary.p99_ms
    );
    assert!(
        open.summary.p90_ms >= 300.0,
        "open p90 {}",
        open.summary.p90_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_from_two_engines_merge_exactly() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let a = testbed_load::start(LoadProfile::closed(srv.url("/ok"), 2, secs(1.0))).unwrap();
    let b = testbed_load::start(LoadProfile::closed(srv.url("/slow?ms=3"), 2, secs(1.0))).unwrap();
    let collect = |mut run: testbed_load::RunHandle| async move {
        let mut ws = Vec::new();
        while let Some(w) = run.next_window().await {
            ws.push(w);
        }
        (ws, run.report().await.unwrap())
    };
    let ((wa, ra), (wb, rb)) = tokio::join!(collect(a), collect(b));
    // Windows travel as JSON between agents and server.
    let wire: Vec<Window> = wa
        .iter()
        .chain(&wb)
        .map(|w| serde_json::from_str(&serde_json::to_string(w).unwrap()).unwrap())
        .collect();
    let merged = merge_windows(&wire);
    let mut all = testbed_load::Aggregate::default();
    for w in &merged {
        all.add(w);
    }
    let mut expected = ra.summary.latency.clone();
    expected.add(&rb.summary.latency).unwrap();
    assert_eq!(all.latency, expected);
    assert_eq!(all.requests, ra.summary.requests + rb.summary.requests);
    assert_eq!(all.requests, srv.count());
    let s = all.summary(1.0);
    assert_eq!(s.p99_ms, expected.value_at_quantile(0.99) as f64 / 1000.0);

    // Split samples, merge, compare with one histogram of every sample.
    let mut one = testbed_load::new_histogram();
    let mut parts = [Window::empty(0, 0), Window::empty(0, 0)];
    for i in 0..10_000u64 {
        let v = (i * 7919) % 2_000_000 + 1;
        one.record(v).unwrap();
        parts[(i % 2) as usize].latency.record(v).unwrap();
    }
    let m = merge_windows(&parts);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].latency, one);
    for q in [0.5, 0.9, 0.99, 0.999] {
        assert_eq!(m[0].latency.value_at_quantile(q), one.value_at_quantile(q));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_ramps_up() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let mut plan = LoadProfile::closed(srv.url("/slow?ms=10"), 8, secs(1.0));
    plan.load = Load::Closed {
        start_vus: 0,
        stages: vec![
            Stage {
                duration: secs(2.0),
                target: 8,
            },
            Stage {
                duration: secs(1.0),
                target: 8,
            },
        ],
    };
    let (windows, r) = run_collect(plan).await;
    assert!(windows[0].vus <= 5, "first window {} vus", windows[0].vus);
    assert_eq!(windows[2].vus, 8);
    assert_eq!(r.summary.vus_max, 8);
    assert!(windows[0].requests < windows[2].requests);
}

#[test]
fn validation_names_the_field() {
    let mut plan = LoadProfile::closed("not a url", 0, Duration::ZERO);
    plan.request_timeout = Duration::ZERO;
    plan.thresholds = vec!["p(95)<<5".into()];
    let err = match testbed_load::start(plan) {
        Err(testbed_load::LoadError::Config(e)) => e,
        other => panic!("expected a config error, got {other:?}"),
    };
    for f in [
        "load.stages[0].duration",
        "load.stages",
        "scenario.requests[0].url",
        "request_timeout",
        "thresholds[0]",
    ] {
        assert!(err.names(f), "{f} not in {err}");
    }
    assert!(err.to_string().contains("p(95)<<5"));

    let err = SeedConfig::from_json(&serde_json::json!({
        "concurrent_users": -3, "hold_time": 0, "test_type": "chaos",
        "target_url": "ftp://x/", "request_timeout": 0
    }))
    .unwrap()
    .to_plan()
    .unwrap_err();
    for f in [
        "concurrent_users",
        "hold_time",
        "test_type",
        "target_url",
        "request_timeout",
    ] {
        assert!(err.names(f), "{f} not in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_file_variables_are_substituted() {
    let _g = common::serial().await;
    let srv = common::spawn(false);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, "user,id\nann,1\nbob,2\ncy,3\n").unwrap();
    let mut plan = LoadProfile::closed(srv.url("/user/{{user}}?id={{id}}"), 2, secs(0.5));
    plan.scenario.requests[0]
        .headers
        .insert("X-User".into(), "{{user}}".into());
    plan.scenario.data = Some(DataSource {
        path: Some(csv),
        format: None,
        rows: None,
    });
    let (_, r) = run_collect(plan.clone()).await;
    assert_eq!(r.summary.errors, 0, "{:?}", r.errors);
    let seen = srv.seen();
    assert_eq!(seen.len() as u64, r.summary.requests);
    let allowed = [
        "/user/ann?id=1|ann",
        "/user/bob?id=2|bob",
        "/user/cy?id=3|cy",
    ];
    for s in &seen {
        assert!(allowed.contains(&s.as_str()), "unexpected {s}");
    }
    for a in allowed {
        assert!(seen.iter().any(|s| s == a), "row {a} never used");
    }

    // JSON rows work the same; an unknown variable is a config error.
    let json = dir.path().join("users.json");
    std::fs::write(&json, r#"[{"user":"dee","id":4}]"#).unwrap();
    plan.scenario.data = Some(DataSource {
        path: Some(json),
        format: None,
        rows: None,
    });
    let (_, r) = run_collect(plan.clone()).await;
    assert_eq!(r.summary.errors, 0);
    assert!(srv.seen().iter().any(|s| s == "/user/dee?id=4|dee"));
    plan.scenario.requests[0].url = srv.url("/user/{{nobody}}");
    match testbed_load::start(plan) {
        Err(testbed_load::LoadError::Config(e)) => {
            assert!(e.names("scenario.requests[0].url"), "{e}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}
