//! `testbed load` run as a user would, against a small HTTP/1.1 server in
//! the test: the `--json` report, and exit codes for thresholds and bad input.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A keep-alive HTTP/1.1 server answering every request `200 ok`, counting them.
fn serve() -> (String, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut s, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        buf.drain(..end);
                        c.fetch_add(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    (url, count)
}

fn testbed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn load_reports_json_and_exit_codes() {
    let (url, count) = serve();

    let out = testbed(&["load", &url, "-c", "2", "-d", "1s", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is JSON only");
    let requests = report["summary"]["requests"].as_u64().unwrap();
    assert!(requests > 0);
    assert_eq!(requests, count.load(Ordering::SeqCst));
    assert_eq!(report["summary"]["errors"], 0);
    assert_eq!(report["passed"], true);
    assert!(report["summary"]["p99_ms"].as_f64().is_some());
    assert!(!report["series"].as_array().unwrap().is_empty());

    let out = testbed(&[
        "load",
        &url,
        "-c",
        "1",
        "-d",
        "1s",
        "--json",
        "--threshold",
        "p(99)<0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["thresholds"][0]["expr"], "p(99)<0");
    assert_eq!(report["thresholds"][0]["passed"], false);

    // The human summary carries percentiles and the histogram.
    let out = testbed(&["load", &url, "-c", "1", "-d", "1s"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("p99"), "{text}");
    assert!(text.contains("Latency histogram"), "{text}");

    // Usage and configuration errors exit 2 and name the problem.
    let out = testbed(&["load", "not-a-url", "-d", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("url"));
    let out = testbed(&["load", &url, "-d", "1s", "--threshold", "p(99)<<1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("p(99)<<1"));
}

/// A TCP server that accepts connections and never answers, holding them open.
fn stalling() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    url
}

#[test]
fn load_against_a_stalling_target_ends_on_time_and_counts_the_cut() {
    let url = stalling();
    let t = std::time::Instant::now();
    let out = testbed(&["load", &url, "-c", "4", "-d", "2s"]);
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A behaviour bound, not a benchmark: the 30 s default timeout does not
    // stretch the run.
    assert!(
        took < std::time::Duration::from_millis(4500),
        "ran {took:?}\n{stdout}"
    );
    // The live view says what is going on while it goes on.
    assert!(stdout.contains("waiting 4"), "{stdout}");
    assert!(stdout.contains("Cut:          4 at deadline"), "{stdout}");
    assert!(stdout.contains("cut at deadline"), "{stdout}");
    // Nothing succeeded: not a pass.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no request succeeded (4 cut at deadline)"),
        "{stderr}"
    );

    // JSON carries the count too.
    let out = testbed(&["load", &url, "-c", "2", "-d", "1s", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["cut"], 2, "{report}");

    // With a timeout shorter than the run, timeouts show live as they happen.
    let out = testbed(&["load", &url, "-c", "2", "-d", "3s", "--timeout", "500ms"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout
        .lines()
        .find(|l| l.starts_with("[   1s/3s]"))
        .unwrap_or("");
    assert!(first.contains("[Timeout "), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn load_names_refused_and_unknown_hosts_and_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = testbed(&[
        "load",
        &format!("http://127.0.0.1:{port}/"),
        "-c",
        "2",
        "-d",
        "1s",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // Live and in the summary.
    assert!(stdout.contains("[connection refused "), "{stdout}");
    assert!(
        stdout.contains("\nErrors:\n  connection refused"),
        "{stdout}"
    );
    assert!(
        stderr.contains("no request succeeded") && stderr.contains("connection refused"),
        "{stderr}"
    );
    // --json keeps the seed's label and adds the cause.
    let out = testbed(&[
        "load",
        &format!("http://127.0.0.1:{port}/"),
        "-c",
        "1",
        "-d",
        "1s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"][0]["label"], "Connection Error", "{report}");
    assert_eq!(
        report["error_causes"][0]["label"], "connection refused",
        "{report}"
    );

    let out = testbed(&["load", "http://nonexistent.invalid/", "-c", "1", "-d", "1s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("unknown host (DNS lookup failed)"),
        "{stdout}"
    );
    assert!(stderr.contains("unknown host"), "{stderr}");

    // The exit codes are documented.
    let out = testbed(&["load", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit codes:") && help.contains("no request succeeded"),
        "{help}"
    );
}

/// `--out json=FILE --out csv=FILE`: one line per window, the same windows
/// as the report's series; a remote-write endpoint that is down drops its
/// windows (counted) while the run goes on and passes.
#[test]
fn load_streams_windows_to_files_and_survives_a_dead_exporter() {
    let (url, _) = serve();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("windows.jsonl");
    let csv = dir.path().join("windows.csv");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/api/v1/write", dead.local_addr().unwrap());
    drop(dead);
    let out = testbed(&[
        "load",
        &url,
        "-c",
        "2",
        "-d",
        "3s",
        "--json",
        "--out",
        &format!("json={}", json.display()),
        "--out",
        &format!("csv={}", csv.display()),
        "--out",
        &format!("prometheus-rw={dead_url}"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let series = report["series"].as_array().unwrap();

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), series.len(), "{lines:?}");
    let total: u64 = lines.iter().map(|l| l["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, report["summary"]["requests"].as_u64().unwrap());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i as u64, "{l}");
        assert!(l["time_ms"].as_u64().unwrap() > 1_600_000_000_000, "{l}");
    }
    assert!(lines[0]["p99_ms"].as_f64().is_some(), "{}", lines[0]);

    // No cell needs quoting here (maps are `code:count;…`).
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut rows = text.lines().map(|l| l.split(',').collect::<Vec<_>>());
    let header = rows.next().unwrap();
    assert_eq!(header[0], "time_ms");
    assert_eq!(header[3], "requests");
    let rows: Vec<Vec<&str>> = rows.collect();
    assert_eq!(rows.len(), lines.len());
    assert!(rows.iter().all(|r| r.len() == header.len()), "{text}");
    let csv_total: u64 = rows.iter().map(|r| r[3].parse::<u64>().unwrap()).sum();
    assert_eq!(csv_total, total);

    let n = lines.len();
    assert!(
        stderr.contains(&format!(
            "output json={}: {n} window(s) written",
            json.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "output prometheus-rw={dead_url}: 0 window(s) written, {n} dropped (last error: "
        )),
        "{stderr}"
    );
}

#[test]
fn load_rejects_bad_outputs_before_starting() {
    let (url, count) = serve();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("w.jsonl");
    for (out_arg, says) in [
        (
            "influx=http://127.0.0.1:8086".to_string(),
            "unknown output `influx`",
        ),
        (
            "prometheus-rw=127.0.0.1:9090".to_string(),
            "not an http(s) URL",
        ),
        (
            "csv".to_string(),
            "expected json=FILE, csv=FILE or prometheus-rw=URL",
        ),
        (format!("json={}", missing.display()), "cannot create"),
    ] {
        let out = testbed(&["load", &url, "-d", "1s", "--out", &out_arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{out_arg}: {stderr}");
        assert!(stderr.contains(&format!("--out {out_arg}: ")), "{stderr}");
        assert!(stderr.contains(says), "{out_arg}: {stderr}");
    }
    let out = testbed(&["load", &url, "-d", "1s", "--tag", "0bad=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tag \"0bad=x\""));
    assert_eq!(count.load(Ordering::SeqCst), 0, "no load was sent");
}
