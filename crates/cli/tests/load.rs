//! `testbed load` run as a user would, against a small HTTP/1.1 server in
//! the test: the `--json` report, and exit codes for thresholds and bad input.

use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use testbed_load::output::otlp_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use testbed_load::output::otlp_proto::common::v1::{any_value, KeyValue};
use testbed_load::output::otlp_proto::metrics::v1::{
    metric::Data, number_data_point, HistogramDataPoint, NumberDataPoint,
};
use testbed_load::output::prost::Message as _;

use crate::common::{header, http_server, serve};

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
    let dead_addr = dead.local_addr().unwrap();
    let dead_url = format!("http://{dead_addr}/api/v1/write");
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
        "--out",
        &format!("otlp=http://{dead_addr}"),
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
    // The cause, not only reqwest's "error sending request".
    let otlp_line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("output otlp=http://{dead_addr}: ")))
        .unwrap_or_else(|| panic!("no otlp line: {stderr}"));
    assert!(
        otlp_line.contains(&format!(
            "0 window(s) written, {n} dropped (last error: http://{dead_addr}/v1/metrics: "
        )) && otlp_line.to_lowercase().contains("connection refused"),
        "{otlp_line}"
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
            "expected json=FILE, csv=FILE, prometheus-rw=URL or otlp=URL",
        ),
        ("otlp=localhost:4318".to_string(), "not an http(s) URL"),
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

/// What an OTLP/HTTP receiver got: each request's path, content type and
/// decoded body.
pub(crate) type OtlpReceived = Arc<Mutex<Vec<(String, String, ExportMetricsServiceRequest)>>>;

/// An OTLP/HTTP metrics receiver on 127.0.0.1 (keep-alive HTTP/1.1, `200`
/// with an empty `ExportMetricsServiceResponse`); an undecodable body is a
/// `400` and is not recorded. Its base URL, without a path.
pub(crate) fn otlp_receiver() -> (String, OtlpReceived) {
    let got: OtlpReceived = Default::default();
    let g = got.clone();
    let addr = http_server(move |head, body| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let status = match ExportMetricsServiceRequest::decode(&body[..]) {
            Ok(req) => {
                let ctype = header(head, "content-type");
                g.lock().unwrap().push((path, ctype, req));
                "200 OK"
            }
            Err(_) => "400 Bad Request",
        };
        format!("HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
    });
    (format!("http://{addr}"), got)
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

/// Every data point of the sum `name`, in the order received.
pub(crate) fn otlp_sum_points(got: &OtlpReceived, name: &str) -> Vec<NumberDataPoint> {
    otlp_metrics(got, name)
        .into_iter()
        .flat_map(|d| match d {
            Data::Sum(s) => s.data_points,
            other => panic!("{name} is not a sum: {other:?}"),
        })
        .collect()
}

fn otlp_metrics(got: &OtlpReceived, name: &str) -> Vec<Data> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, r)| r.resource_metrics.iter())
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter())
        .filter(|m| m.name == name)
        .filter_map(|m| m.data.clone())
        .collect()
}

pub(crate) fn int_value(p: &NumberDataPoint) -> u64 {
    match p.value {
        Some(number_data_point::Value::AsInt(n)) => n as u64,
        other => panic!("not an int: {other:?}"),
    }
}

/// Checks what an OTLP receiver got from one run of `requests` requests
/// named `plan`: every request a protobuf POST to `/v1/metrics` from
/// service `testbed-load`, cumulative request counts rising window by
/// window to the total, a histogram counting every response. The number of
/// windows received.
pub(crate) fn check_otlp(got: &OtlpReceived, plan: &str, requests: u64) -> usize {
    for (path, ctype, req) in got.lock().unwrap().iter() {
        assert_eq!(path, "/v1/metrics");
        assert_eq!(ctype, "application/x-protobuf");
        let resource = req.resource_metrics[0].resource.as_ref().unwrap();
        assert_eq!(
            string_attr(&resource.attributes, "service.name"),
            Some("testbed-load")
        );
    }
    let points = otlp_sum_points(got, "testbed.load.requests");
    assert!(!points.is_empty(), "no window received");
    let totals: Vec<u64> = points.iter().map(int_value).collect();
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
    // Each window's own count is the step from the one before; they add
    // up to the run's total.
    let per_window: u64 = std::iter::once(totals[0])
        .chain(totals.windows(2).map(|w| w[1] - w[0]))
        .sum();
    assert_eq!(per_window, requests, "{totals:?}");
    for p in &points {
        assert_eq!(string_attr(&p.attributes, "testbed.plan"), Some(plan));
        assert!(p.time_unix_nano > p.start_time_unix_nano, "{p:?}");
    }
    let hist: Vec<HistogramDataPoint> = otlp_metrics(got, "testbed.load.request.duration")
        .into_iter()
        .flat_map(|d| match d {
            Data::Histogram(h) => h.data_points,
            other => panic!("duration is not a histogram: {other:?}"),
        })
        .collect();
    let last = hist.last().expect("histogram points");
    assert_eq!(last.count, requests);
    assert_eq!(last.bucket_counts.iter().sum::<u64>(), requests);
    let vus = otlp_metrics(got, "testbed.load.vus");
    assert!(!vus.is_empty(), "users gauge");
    points.len()
}

/// `--out otlp=URL`: a receiver on 127.0.0.1 gets every window as OTLP
/// metrics, whose request counts add up to the run's total.
#[test]
fn load_streams_windows_to_an_otlp_receiver() {
    let (url, count) = serve();
    let (otlp, got) = otlp_receiver();
    let out = testbed(&[
        "load",
        &url,
        "-c",
        "2",
        "-d",
        "3s",
        "--json",
        "--name",
        "smoke",
        "--tag",
        "testid=e2e",
        "--out",
        &format!("otlp={otlp}"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let total = report["summary"]["requests"].as_u64().unwrap();
    assert_eq!(total, count.load(Ordering::SeqCst));
    let windows = check_otlp(&got, "smoke", total);
    assert_eq!(windows, report["series"].as_array().unwrap().len());
    let points = otlp_sum_points(&got, "testbed.load.requests");
    assert_eq!(string_attr(&points[0].attributes, "testid"), Some("e2e"));
    assert!(
        stderr.contains(&format!("output otlp={otlp}: {windows} window(s) written")),
        "{stderr}"
    );
}
