//! Traces (docs/operations.md, "Traces and logs"): the real server and agent
//! export OTLP/HTTP to a real receiver on 127.0.0.1 that decodes what they
//! send with the OpenTelemetry protobuf messages.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::{json, Value};

use crate::common::{self, Platform, Proc};

/// One span as received, with the service that sent it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace: String,
    span: String,
    parent: String,
    attrs: HashMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
}

async fn export(
    spans: Arc<Mutex<Vec<Got>>>,
    body: axum::body::Bytes,
) -> impl axum::response::IntoResponse {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Any::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            let attrs = s
                .attributes
                .iter()
                .filter_map(|kv| {
                    let v = match kv.value.as_ref()?.value.as_ref()? {
                        Any::StringValue(s) => s.clone(),
                        Any::IntValue(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    Some((kv.key.clone(), v))
                })
                .collect();
            got.push(Got {
                service: service.clone(),
                name: s.name,
                trace: hex(&s.trace_id),
                span: hex(&s.span_id),
                parent: hex(&s.parent_span_id),
                attrs,
            });
        }
    }
    (
        axum::http::StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let shared = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body| export(shared.clone(), body)),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    /// Polls until a span satisfies `f`.
    async fn wait(&self, what: &str, f: impl Fn(&Got) -> bool) -> Got {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.spans.lock().unwrap().iter().find(|s| f(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among the spans received: {:#?}",
                self.spans.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Exports every 100 ms instead of every 5 s, so the test waits less.
const FAST: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

/// `testbed server --log-format json` on a fresh port with `extra` flags.
async fn server(dir: &Path, extra: &[&str]) -> Platform {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "--log-format",
        "json",
        "server",
        "--listen",
        &listen,
        "--store",
    ])
    .arg(format!("redb:{}", dir.join("s.redb").display()))
    .arg("--blobs")
    .arg(dir.join("blobs"))
    .args(extra)
    .env(FAST.0, FAST.1)
    .env("TESTBED_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
    .env("TESTBED_JOIN_TOKEN", common::JOIN_TOKEN);
    let proc = Proc::spawn("server", cmd);
    let line = proc.wait_line("Testbed is listening on ", Duration::from_secs(60));
    let url = line.rsplit(' ').next().unwrap().trim().to_string();
    let http = reqwest::Client::new();
    let token = common::login(&http, &url, "admin", common::ADMIN_PASSWORD).await;
    Platform {
        proc,
        url,
        token,
        join_token: common::JOIN_TOKEN.to_string(),
        http,
    }
}

fn agent(url: &str, name: &str, state: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(common::bin());
    cmd.args(["agent", "--server", url, "--name", name, "--state-dir"])
        .arg(state)
        .args(extra)
        .env(FAST.0, FAST.1)
        .env("TESTBED_JOIN_TOKEN", common::JOIN_TOKEN);
    Proc::spawn(&format!("agent {name}"), cmd)
}

/// Runs `true` on `agent`; its task id, once it succeeded.
async fn run_true(p: &Platform, agent: &str) -> String {
    let id = p
        .run(
            "linux_system",
            agent,
            "run_shell",
            json!({"command": "true"}),
        )
        .await;
    p.wait_succeeded(&id, Duration::from_secs(30)).await;
    id
}

const PLAN: &str = "name: traced\nsteps:\n  - id: first\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n  - id: second\n    plugin: linux_system\n    method: run_shell\n    depends_on: [first]\n    params: {command: echo, args: two}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_and_a_run_are_traced_across_server_and_agent() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = server(dir.path(), &["--otlp-endpoint", &rx.url]).await;
    let a = agent(
        &p.url,
        "traced",
        &dir.path().join("agent"),
        &["--otlp-endpoint", &rx.url],
    );
    p.wait_agents(1).await;

    // A task on its own: the server's span, and the agent's under it.
    let id = run_true(&p, "traced").await;
    let task = rx
        .wait("the server's task span", |s| {
            s.name == "task" && s.attrs.get("testbed.task.id") == Some(&id)
        })
        .await;
    assert_eq!(task.service, "testbed-server");
    assert_eq!(task.parent, "", "a task outside a run is a root: {task:?}");
    assert_eq!(task.attrs["testbed.task.status"], "succeeded");
    assert_eq!(task.attrs["testbed.agent"], "traced");
    let exec = rx
        .wait("the agent's span of the task", |s| {
            s.name == "task.execute" && s.attrs.get("task") == Some(&id)
        })
        .await;
    assert_eq!(exec.service, "testbed-agent");
    assert_eq!(exec.trace, task.trace, "{exec:?} vs {task:?}");
    assert_eq!(exec.parent, task.span, "{exec:?} vs {task:?}");
    assert_eq!(exec.attrs["plugin"], "linux_system");
    assert_eq!(exec.attrs["method"], "run_shell");
    assert_eq!(exec.attrs["status"], "succeeded");
    // The agent logs text: the ids are appended to the line.
    let line = a.wait_line(&format!("task finished task={id}"), Duration::from_secs(30));
    assert!(
        line.ends_with(&format!("trace_id={} span_id={}", exec.trace, exec.span)),
        "{line}"
    );

    // The server's JSON log lines about the task carry its trace id.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let traced = loop {
        while let Ok(l) = p.proc.lines.try_recv() {
            lines.push(l);
        }
        let found: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["task"] == id.as_str())
            .collect();
        if found.iter().any(|v| v["message"] == "task finished") {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no log line of task {id}:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for v in &traced {
        assert_eq!(v["trace_id"], task.trace.as_str(), "{v}");
        assert!(v["span_id"].as_str().is_some_and(|s| s.len() == 16), "{v}");
    }
    assert!(
        traced.iter().any(|v| v["message"] == "task dispatched"),
        "{traced:?}"
    );

    // A run: its span, a span per step under it, the steps' tasks under
    // those, and the agent's spans under the tasks.
    let run_id = p.start_run(PLAN, json!({})).await;
    let run_state = p.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run_state["status"], "passed", "{run_state}");
    let run = rx
        .wait("the run span", |s| {
            s.name == "run" && s.attrs.get("testbed.run.id") == Some(&run_id)
        })
        .await;
    assert_eq!(run.service, "testbed-server");
    assert_eq!(run.parent, "");
    assert_eq!(run.attrs["testbed.run.status"], "passed");
    for step in ["first", "second"] {
        let s = rx
            .wait(&format!("step {step}"), |s| {
                s.name == "step"
                    && s.attrs.get("testbed.run.id") == Some(&run_id)
                    && s.attrs.get("testbed.step").map(String::as_str) == Some(step)
            })
            .await;
        assert_eq!(
            (s.trace.as_str(), s.parent.as_str()),
            (run.trace.as_str(), run.span.as_str()),
            "{s:?}"
        );
        let t = rx
            .wait(&format!("the task of step {step}"), |t| {
                t.name == "task" && t.parent == s.span
            })
            .await;
        assert_eq!(t.trace, run.trace);
        assert_eq!(t.attrs["testbed.step"], step);
        let e = rx
            .wait(&format!("the agent's span of step {step}"), |e| {
                e.name == "task.execute" && e.parent == t.span
            })
            .await;
        assert_eq!(e.service, "testbed-agent");
        assert_eq!(e.trace, run.trace);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_spans_not_tasks() {
    // Nothing listens there: every export fails at once.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let p = server(dir.path(), &["--otlp-endpoint", &closed]).await;
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let _a = agent(
        &p.url,
        "dark",
        &dir.path().join("agent"),
        &["--otlp-endpoint", &closed, "--metrics-listen", &metrics],
    );
    p.wait_agents(1).await;
    for _ in 0..5 {
        run_true(&p, "dark").await;
    }
    let run_id = p.start_run(PLAN, json!({})).await;
    let run = p.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "passed", "{run}");
    // The loss is said once and counted.
    p.proc
        .wait_line("exporting traces to", Duration::from_secs(30));
    let scrape = || async {
        let r = reqwest::get(format!("http://{metrics}/metrics")).await;
        r.unwrap().text().await.unwrap()
    };
    let dropped = |body: &String| {
        body.lines()
            .find_map(|l| l.strip_prefix("testbed_trace_spans_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)
    };
    common::poll(Duration::from_secs(30), scrape, dropped, |body| {
        format!("no dropped spans counted:\n{body}")
    })
    .await;
    let (s, _) = p.get_text("/healthz").await;
    assert_eq!(s, 200);
}

#[test]
fn a_bad_endpoint_is_refused_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = Command::new(common::bin());
        cmd.args(args).current_dir(dir.path());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["server", "--otlp-endpoint", "not a url"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--otlp-endpoint `not a url`: not a URL"),
        "{err}"
    );
    let (code, err) = run(
        &["agent", "--server", "http://127.0.0.1:1", "--name", "x"],
        Some(("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317")),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_ENDPOINT `grpc://collector:4317`")
            && err.contains("http or https"),
        "{err}"
    );
}
