//! The YAML suite runner against real HTTP servers on 127.0.0.1 (TCP, Unix
//! socket, HTTP/2): captures, asserts, polling, setup/teardown, iterations,
//! tags, skips, known-broken tests, unreachable targets and bad files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use testbed_apitest::runner::{self, RunOptions};
use testbed_apitest::suite;
use testbed_report::Outcome;

#[derive(Default)]
struct Shop {
    items: Mutex<Vec<(u64, String)>>,
    deleted: Mutex<Vec<u64>>,
    polls: AtomicUsize,
}

fn app() -> Router {
    let state = Arc::new(Shop::default());
    Router::new()
        .route(
            "/items",
            get(|State(s): State<Arc<Shop>>| async move {
                let items = s.items.lock().map(|i| i.clone()).unwrap_or_default();
                Json(
                    items
                        .iter()
                        .map(|(id, n)| json!({"id": id, "name": n}))
                        .collect::<Vec<_>>(),
                )
            })
            .post(
                |State(s): State<Arc<Shop>>, Json(body): Json<Value>| async move {
                    let Some(name) = body.get("name").and_then(Value::as_str) else {
                        return (
                            StatusCode::BAD_REQUEST,
                            HeaderMap::new(),
                            Json(json!({"error": "name is required"})),
                        );
                    };
                    let mut items = s.items.lock().expect("lock");
                    let id = items.len() as u64 + 1;
                    items.push((id, name.to_string()));
                    let mut h = HeaderMap::new();
                    h.insert("location", format!("/items/{id}").parse().expect("header"));
                    (
                        StatusCode::CREATED,
                        h,
                        Json(json!({"id": id, "name": name, "tags": ["new"]})),
                    )
                },
            ),
        )
        .route(
            "/items/{id}",
            get(
                |State(s): State<Arc<Shop>>, UrlPath(id): UrlPath<u64>| async move {
                    let items = s.items.lock().expect("lock");
                    match items.iter().find(|(i, _)| *i == id) {
                        Some((i, n)) => (StatusCode::OK, Json(json!({"id": i, "name": n}))),
                        None => (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))),
                    }
                },
            )
            .delete(
                |State(s): State<Arc<Shop>>, UrlPath(id): UrlPath<u64>| async move {
                    s.items.lock().expect("lock").retain(|(i, _)| *i != id);
                    s.deleted.lock().expect("lock").push(id);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/deleted",
            get(|State(s): State<Arc<Shop>>| async move {
                Json(json!(*s.deleted.lock().expect("lock")))
            }),
        )
        .route(
            "/eventually",
            get(|State(s): State<Arc<Shop>>| async move {
                let n = s.polls.fetch_add(1, Ordering::SeqCst);
                Json(json!({"state": if n >= 2 { "running" } else { "pending" }, "polls": n + 1}))
            }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                Json(json!({"content_type": ct, "body": body}))
            }),
        )
        .route(
            // A long poll: answers once there are more than `after` items.
            "/wait",
            get(
                |State(s): State<Arc<Shop>>,
                 axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, usize>>| async move {
                    let after = q.get("after").copied().unwrap_or(0);
                    loop {
                        let items = s.items.lock().map(|i| i.clone()).unwrap_or_default();
                        if items.len() > after {
                            return Json(json!({"count": items.len(), "last": items.last().map(|(_, n)| n.clone())}));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            ),
        )
        .route(
            // Never answers.
            "/hang",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route(
            "/version",
            get(|req: axum::extract::Request| async move {
                Json(json!({"http": format!("{:?}", req.version())}))
            }),
        )
        .with_state(state)
}

async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app()).await });
    format!("http://{addr}")
}

fn write_suite(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("suite.yaml");
    std::fs::write(&p, text).expect("write suite");
    p
}

async fn run_text(text: &str, vars: Value) -> testbed_report::Suite {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_suite(dir.path(), text);
    let s = match suite::load(&file) {
        Ok(s) => s,
        Err(p) => panic!("suite did not load: {p:?}"),
    };
    let opts = RunOptions {
        vars: vars.as_object().cloned().unwrap_or_default(),
        ..RunOptions::default()
    };
    runner::run_suite(&s, &opts).await
}

/// Runs `tests` (a suite's text below its `http:` line) against a fresh
/// server; the suite's results and the server's URL.
async fn run_on_server(tests: &str) -> (testbed_report::Suite, String) {
    let base = serve().await;
    let text = format!("http: {{base_url: \"{{{{ base }}}}\"}}\n{tests}");
    (run_text(&text, json!({"base": base})).await, base)
}

/// The ids the test server was asked to delete, in order.
async fn deleted_items(base: &str) -> Value {
    reqwest::get(format!("{base}/deleted"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// The address of a port that was just free: nothing listens there.
fn closed_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// A case's message, or "" when it has none.
fn message(c: &testbed_report::Case) -> &str {
    c.message.as_deref().unwrap_or_default()
}

fn outcome<'a>(s: &'a testbed_report::Suite, name: &str) -> &'a testbed_report::Case {
    s.cases.iter().find(|c| c.name == name).unwrap_or_else(|| {
        panic!(
            "no case {name:?} in {:?}",
            s.cases.iter().map(|c| &c.name).collect::<Vec<_>>()
        )
    })
}

#[tokio::test]
async fn a_crud_suite_captures_polls_iterates_and_tears_down() {
    let base = serve().await;
    let s = run_text(
        r#"
name: shop
http:
  base_url: "{{ base }}"
vars:
  prefix: tb
setup:
  - request: {method: POST, url: /items, json: {name: "{{ prefix }}-fixture"}}
    capture: {fixture: $.id}
tests:
  - name: create and read back
    steps:
      - request: {method: POST, url: /items, json: {name: widget}}
        assert:
          - status: 201
          - header: Location
            matches: "^/items/\\d+$"
          - jsonpath: $.tags
            contains: new
          - schema: {type: object, required: [id, name], properties: {id: {type: integer}}}
        capture:
          id: $.id
          location: {header: location}
      - request: {url: "{{ location }}"}
        assert:
          - jsonpath: $.name
            equals: widget
          - jsonpath: $.id
            equals: "{{ id }}"
          - duration: {lt: 10000}
    teardown:
      - request: {method: DELETE, url: "/items/{{ id }}"}
        assert: [{status: 204}]
  - name: setup captures are visible
    steps:
      - request: {url: "/items/{{ fixture }}"}
        assert:
          - jsonpath: $.name
            equals: tb-fixture
  - name: "echo {{ item.kind }}"
    each: [{kind: json}, {kind: form}]
    steps:
      - request: {method: POST, url: /echo, json: {a: 1}}
        assert:
          - jsonpath: $.content_type
            equals: application/json
  - name: form and text bodies
    steps:
      - request: {method: POST, url: /echo, form: {a: "b c"}}
        assert:
          - jsonpath: $.body
            equals: "a=b+c"
      - request: {method: POST, url: /echo, body: "plain {{ prefix | upper }}"}
        assert:
          - jsonpath: $.body
            equals: plain TB
  - name: eventually running
    steps:
      - request: {url: /eventually}
        until:
          - jsonpath: $.state
            equals: running
        retry: {attempts: 10, interval: 10ms}
        assert:
          - jsonpath: $.polls
            equals: 3
teardown:
  - request: {method: DELETE, url: "/items/{{ fixture }}"}
"#,
        json!({"base": base}),
    )
    .await;
    for c in &s.cases {
        assert_eq!(
            c.outcome,
            Outcome::Pass,
            "{}: {:?} {:?}",
            c.name,
            c.message,
            c.output
        );
    }
    let names: Vec<&str> = s.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "create and read back",
            "setup captures are visible",
            "echo json",
            "echo form",
            "form and text bodies",
            "eventually running"
        ]
    );
    // Both the test's and the suite's teardown ran: item 2 and the fixture (1).
    let deleted = deleted_items(&base).await;
    assert_eq!(deleted, json!([2, 1]));
}

#[tokio::test]
async fn failures_say_what_was_expected_and_keep_the_reply() {
    let (s, _) = run_on_server(
        r#"
tests:
  - name: wrong status
    steps:
      - request: {method: POST, url: /items, json: {name: x}}
        assert: [{status: 200}]
      - request: {url: /never-reached}
  - name: wrong field
    steps:
      - request: {url: /items/1}
        assert:
          - jsonpath: $.name
            equals: y
  - name: missing capture
    steps:
      - request: {url: /items/1}
        capture: {nope: $.nope}
  - name: still runs after failures
    steps:
      - request: {url: /items}
        assert: [{status: 200}]
"#,
    )
    .await;
    let c = outcome(&s, "wrong status");
    assert_eq!(c.outcome, Outcome::Fail);
    let m = message(c);
    assert!(
        m.contains("POST /items") && m.contains("expected 200, got 201"),
        "{m}"
    );
    assert!(
        c.output
            .as_deref()
            .unwrap_or_default()
            .contains("status 201"),
        "{:?}",
        c.output
    );
    let m = message(outcome(&s, "wrong field"));
    assert!(m.contains("$.name: expected \"y\", got \"x\""), "{m}");
    let m = message(outcome(&s, "missing capture"));
    assert!(m.contains("capture `nope`"), "{m}");
    assert_eq!(
        outcome(&s, "still runs after failures").outcome,
        Outcome::Pass
    );
}

#[tokio::test]
async fn an_unreachable_target_is_an_error_and_the_rest_go_on() {
    let base = serve().await;
    let closed = closed_addr();
    let s = run_text(
        r#"
http: {base_url: "{{ base }}", timeout: 2s}
tests:
  - name: refused
    steps:
      - request: {url: "http://{{ closed }}/x"}
  - name: dns
    steps:
      - request: {url: "http://no-such-host.invalid/x"}
  - name: fine
    steps:
      - request: {url: /items}
"#,
        json!({"base": base, "closed": closed.to_string()}),
    )
    .await;
    let refused = outcome(&s, "refused");
    assert_eq!(refused.outcome, Outcome::Error);
    assert!(
        message(refused).contains("connection refused"),
        "{:?}",
        refused.message
    );
    let dns = outcome(&s, "dns");
    assert_eq!(dns.outcome, Outcome::Error);
    assert!(
        message(dns).to_lowercase().contains("dns"),
        "{:?}",
        dns.message
    );
    assert_eq!(outcome(&s, "fine").outcome, Outcome::Pass);
}

#[tokio::test]
async fn an_absent_target_skips_the_suite_with_the_reason() {
    let closed = closed_addr();
    let s = run_text(
        r#"
requires:
  - program: sh
  - tcp: "{{ addr }}"
tests:
  - name: a
    steps: [{request: {url: "http://{{ addr }}/"}}]
  - name: b
    steps: [{request: {url: "http://{{ addr }}/"}}]
"#,
        json!({"addr": closed.to_string()}),
    )
    .await;
    assert_eq!(s.cases.len(), 2);
    for c in &s.cases {
        assert_eq!(c.outcome, Outcome::Skip);
        let m = message(c);
        assert!(m.starts_with(&format!("requires tcp {closed}")), "{m}");
    }
}

#[tokio::test]
async fn tags_select_and_known_broken_tests_are_xfail_or_xpass() {
    let base = serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_suite(
        dir.path(),
        r#"
http: {base_url: "{{ base }}"}
tests:
  - name: smoke
    tags: [smoke]
    steps: [{request: {url: /items}, assert: [{status: 200}]}]
  - name: slow
    tags: [slow]
    steps: [{request: {url: /items}}]
  - name: broken
    tags: [smoke]
    xfail: "bug 42"
    steps: [{request: {url: /items}, assert: [{status: 500}]}]
  - name: fixed
    tags: [smoke]
    xfail: "bug 43"
    steps: [{request: {url: /items}}]
  - name: not here
    tags: [smoke]
    skip: "needs a GPU"
    steps: [{request: {url: /items}}]
  - name: per-test requirement
    tags: [smoke]
    requires: [{env: TESTBED_SURELY_UNSET_VARIABLE}]
    steps: [{request: {url: /items}}]
"#,
    );
    let s = suite::load(&file).expect("loads");
    let opts = RunOptions {
        vars: json!({"base": base})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        tags: vec!["smoke".into()],
        ..RunOptions::default()
    };
    let report = runner::run("tags", &[s], &opts).await;
    let s = &report.suites[0];
    let got: Vec<(&str, Outcome)> = s
        .cases
        .iter()
        .map(|c| (c.name.as_str(), c.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("smoke", Outcome::Pass),
            ("broken", Outcome::Xfail),
            ("fixed", Outcome::Xpass),
            ("not here", Outcome::Skip),
            ("per-test requirement", Outcome::Skip)
        ]
    );
    assert!(
        report.summary().ok,
        "xfail, xpass and skip do not fail a run"
    );
}

#[tokio::test]
async fn setup_failure_errors_every_test_and_teardown_still_runs() {
    let (s, base) = run_on_server(
        r#"
setup:
  - request: {method: POST, url: /items, json: {}}
    assert: [{status: 201}]
teardown:
  - request: {method: DELETE, url: /items/99}
tests:
  - name: a
    steps: [{request: {url: /items}}]
"#,
    )
    .await;
    let a = outcome(&s, "a");
    assert_eq!(a.outcome, Outcome::Error);
    assert!(message(a).starts_with("setup failed"), "{:?}", a.message);
    let deleted = deleted_items(&base).await;
    assert_eq!(
        deleted,
        json!([99]),
        "suite teardown runs after a failed setup"
    );
}

#[tokio::test]
async fn http_over_a_unix_socket_and_http2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind unix");
    tokio::spawn(async move { axum::serve(listener, app()).await });
    let base = serve().await;
    let s = run_text(
        r#"
http: {unix_socket: "{{ sock }}"}
tests:
  - name: over the socket
    steps:
      - request: {url: http://docker/items}
        assert: [{status: 200}, {jsonpath: $, type: array}]
"#,
        json!({"sock": sock.display().to_string()}),
    )
    .await;
    assert_eq!(
        outcome(&s, "over the socket").outcome,
        Outcome::Pass,
        "{:?}",
        s.cases[0].message
    );
    let s = run_text(
        r#"
http: {base_url: "{{ base }}", http2: true}
tests:
  - name: h2c
    steps:
      - request: {url: /version}
        assert: [{jsonpath: $.http, equals: HTTP/2.0}]
"#,
        json!({"base": base}),
    )
    .await;
    assert_eq!(
        outcome(&s, "h2c").outcome,
        Outcome::Pass,
        "{:?}",
        s.cases[0].message
    );
}

#[test]
fn a_malformed_suite_reports_every_problem_with_line_and_column() {
    let text = "\
name: bad
http: {base_url: x, bogus: 1}
tests:
  - name: one
    steps:
      - request: {url: /a}
        assert:
          - status: {around: 200}
          - jsonpath: $.x
            eq: 1
      - request: {url: /b}
        exec: {command: ls}
  - name: two
    steps:
      - request: {url: \"{{ nope | frob }}\"}
        retry: {attempts: 0}
      - exec: {command: [1, 2]}
  - steps: []
";
    let problems = suite::parse(text, Path::new("bad.yaml")).expect_err("must not load");
    let found: Vec<(String, Option<usize>, Option<usize>)> = problems
        .iter()
        .map(|p| (p.path.clone(), p.line, p.column))
        .collect();
    let at = |path: &str| {
        found
            .iter()
            .find(|(p, _, _)| p == path)
            .unwrap_or_else(|| panic!("no problem at {path}: {problems:#?}"))
    };
    assert_eq!(at("http.bogus").1, Some(2));
    assert_eq!(at("tests[0].steps[0].assert[0].status.around").1, Some(8));
    let eq = at("tests[0].steps[0].assert[1].eq");
    assert_eq!((eq.1, eq.2), (Some(10), Some(13)), "points at the key");
    assert!(problems
        .iter()
        .any(|p| p.message.contains("unknown operator `eq`")));
    let around = at("tests[0].steps[0].assert[0].status.around");
    assert_eq!((around.1, around.2), (Some(8), Some(22)), "at the key");
    assert_eq!(at("tests[0].steps[1].exec").1, Some(12));
    let bad = at("tests[1].steps[0].request.url");
    assert_eq!(
        (bad.1, bad.2),
        (Some(15), Some(24)),
        "the template's own string"
    );
    assert_eq!(at("tests[1].steps[0].retry.attempts").1, Some(16));
    let cmd = at("tests[1].steps[1].exec.command");
    assert_eq!(cmd.1, Some(17), "the nested field, not just the step");
    assert!(
        found
            .iter()
            .any(|(p, l, _)| p == "tests[2]" && *l == Some(18)),
        "{problems:#?}"
    );
    assert!(problems.len() >= 7, "{problems:#?}");
    let syntax = suite::parse("tests: [\n  - {name: x\n", Path::new("s.yaml")).expect_err("syntax");
    assert!(syntax[0].line.is_some(), "{syntax:?}");
}

#[tokio::test]
async fn templates_compute_with_captured_values() {
    let (s, _) = run_on_server(
        r#"
vars:
  n: "41"
tests:
  - name: arithmetic and comparisons
    steps:
      - request: {method: POST, url: /items, json: {name: "n{{ n + 1 }}"}}
        capture: {id: $.id}
      - request: {url: "/items/{{ id * 3 - id * 2 }}"}
        assert:
          - jsonpath: $.name
            equals: "n{{ n | int + 1 }}"
          - jsonpath: $.id
            equals: "{{ (id + 1) / 2 }}"
          - jsonpath: $.id
            lt: "{{ id + 0.5 }}"
      - request: {method: POST, url: /echo, json: {big: "{{ id > 0 and not (n == 40) }}", half: "{{ n / 2.0 }}"}}
        assert:
          - jsonpath: $.body
            equals: '{"big":true,"half":20.5}'
  - name: a bad value at run time is located
    steps:
      - request: {url: /items}
        capture: {word: "$[0].name"}
      - request:
          url: /items
          query: {page: "{{ word + 1 }}"}
  - name: an overflow is an error
    steps:
      - request: {url: "/items/{{ 9223372036854775807 + id0 }}"}
"#,
    )
    .await;
    let c = outcome(&s, "arithmetic and comparisons");
    assert_eq!(c.outcome, Outcome::Pass, "{:?} {:?}", c.message, c.output);
    let c = outcome(&s, "a bad value at run time is located");
    assert_eq!(c.outcome, Outcome::Error);
    let m = message(c);
    // Where the `{{ word + 1 }}` string starts in the file (its first
    // line is the `http:` line run_on_server adds, then an empty one).
    assert!(m.contains("suite.yaml:28:25: "), "{m}");
    assert!(m.contains("cannot add string \"n42\" to integer 1"), "{m}");
    let m = message(outcome(&s, "an overflow is an error"));
    assert!(m.contains("`id0` is not defined"), "{m}");
}

#[test]
fn a_malformed_template_is_located_at_its_string() {
    let text = "\
tests:
  - name: t
    steps:
      - request:
          url: /a
          query: {page: \"{{ rev | int + }}\"}
";
    let problems = suite::parse(text, Path::new("bad.yaml")).expect_err("must not load");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!(p.path, "tests[0].steps[0].request.query.page");
    assert_eq!((p.line, p.column), (Some(6), Some(25)), "{p:?}");
    assert!(
        p.message.contains("expected a value after `+` at the end"),
        "{}",
        p.message
    );
}

#[tokio::test]
async fn a_background_step_runs_while_later_steps_run() {
    let (s, _) = run_on_server(
        r#"
tests:
  - name: long poll sees a later create
    steps:
      - name: poll
        background: true
        request: {url: "/wait?after=0", timeout: 10s}
      - request: {method: POST, url: /items, json: {name: late}}
        assert: [{status: 201}]
      - await: poll
        assert:
          - status: 200
          - jsonpath: $.last
            equals: late
        capture: {count: $.count}
      - request: {url: "/items/{{ count }}"}
        assert:
          - jsonpath: $.name
            equals: late
  - name: a background step that never answers is bounded by its timeout
    steps:
      - name: stuck
        background: true
        request: {url: /hang, timeout: 300ms}
      - await: stuck
  - name: one never awaited is cancelled and reported
    steps:
      - name: forgotten
        background: true
        request: {url: /hang, timeout: 30s}
      - request: {url: /items}
  - name: teardown may await what the steps started
    steps:
      - name: poll
        background: true
        request: {url: "/wait?after=0"}
      - request: {url: /nope}
        assert: [{status: 200}]
    teardown:
      - await: poll
        assert: [{status: 200}]
"#,
    )
    .await;
    let c = outcome(&s, "long poll sees a later create");
    assert_eq!(c.outcome, Outcome::Pass, "{:?} {:?}", c.message, c.output);
    let c = outcome(
        &s,
        "a background step that never answers is bounded by its timeout",
    );
    assert_eq!(c.outcome, Outcome::Error);
    let m = message(c);
    assert!(
        m.contains("await stuck: the background step `stuck` failed: timed out after 300ms"),
        "{m}"
    );
    assert!(c.duration_ms < 5000, "{}", c.duration_ms);
    let c = outcome(&s, "one never awaited is cancelled and reported");
    assert_eq!(c.outcome, Outcome::Pass, "reported, not failed");
    assert!(
        c.duration_ms < 5000,
        "cancelled, not waited for: {}",
        c.duration_ms
    );
    assert_eq!(
        message(c),
        "background step `forgotten` was still running at the end: cancelled"
    );
    let c = outcome(&s, "teardown may await what the steps started");
    assert_eq!(c.outcome, Outcome::Fail, "{:?}", c.message);
    assert!(message(c).contains("GET /nope"), "{}", message(c));
}

#[test]
fn background_and_await_are_checked_when_the_suite_loads() {
    let text = "\
tests:
  - name: t
    steps:
      - background: true
        request: {url: /a}
        assert: [{status: 200}]
      - name: q
        background: true
        qmp: {execute: stop}
      - await: nothing
      - name: w
        background: true
        request: {url: /w}
      - await: w
      - await: w
        retry: {attempts: 2}
";
    let problems = suite::parse(text, Path::new("bad.yaml")).expect_err("must not load");
    let has = |path: &str, text: &str| {
        assert!(
            problems
                .iter()
                .any(|p| p.path == path && p.message.contains(text) && p.line.is_some()),
            "no {path}: {text} in {problems:#?}"
        )
    };
    has("tests[0].steps[0].background", "needs a `name`");
    has(
        "tests[0].steps[0].assert",
        "move `assert` to the `await` step",
    );
    has(
        "tests[0].steps[1].background",
        "a qmp step cannot run in the background",
    );
    has(
        "tests[0].steps[2].await",
        "no background step named \"nothing\"",
    );
    has(
        "tests[0].steps[5].await",
        "already awaited at tests[0].steps[4]",
    );
    has("tests[0].steps[5].retry", "waits once");
}
