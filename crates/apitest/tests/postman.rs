//! Postman collections from `tests/fixtures/postman/` run against a real HTTP
//! server started here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use testbed_apitest::postman::{self, Collection, PostmanRun, RunOptions, Vars};
use testbed_report::Outcome;

const TOKEN: &str = "tok-abc";

fn app() -> Router {
    Router::new()
        .route("/json", get(json_doc))
        .route("/echo", post(echo))
        .route("/status/{code}", get(status))
        .route("/users/{id}", get(user))
        .route("/basic", get(basic))
        .route("/login", post(login))
        .route("/bearer", get(bearer))
        .route("/apikey", get(apikey))
        .route("/slow", get(slow))
}

async fn json_doc() -> impl IntoResponse {
    (
        [("x-testbed", "demo")],
        Json(json!({"name": "testbed", "tags": ["api", "demo"], "version": 2})),
    )
}

async fn echo(
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Json<Value> {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let text = String::from_utf8_lossy(&body).into_owned();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Json(
        json!({"method": method.as_str(), "headers": headers, "query": query, "body": text, "json": parsed}),
    )
}

async fn status(Path(code): Path<u16>) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (code, Json(json!({"status": code.as_u16()}))).into_response()
}

async fn user(Path(id): Path<String>, Query(query): Query<HashMap<String, String>>) -> Json<Value> {
    Json(json!({"id": id, "query": query}))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "unauthorized"})),
    )
        .into_response()
}

async fn basic(headers: HeaderMap) -> Response {
    // base64("demo:s3cret")
    if header(&headers, "authorization") == "Basic ZGVtbzpzM2NyZXQ=" {
        Json(json!({"user": "demo"})).into_response()
    } else {
        unauthorized()
    }
}

async fn login(body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["user"] == "demo" {
        Json(json!({"token": TOKEN})).into_response()
    } else {
        unauthorized()
    }
}

async fn bearer(headers: HeaderMap) -> Response {
    if header(&headers, "authorization") == format!("Bearer {TOKEN}") {
        Json(json!({"token": TOKEN})).into_response()
    } else {
        unauthorized()
    }
}

async fn apikey(headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    if header(&headers, "x-api-key") == "k-123" {
        Json(json!({"via": "header"})).into_response()
    } else if query.get("api_key").map(String::as_str) == Some("k-123") {
        Json(json!({"via": "query"})).into_response()
    } else {
        unauthorized()
    }
}

async fn slow() -> Json<Value> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    Json(json!({"late": true}))
}

async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app()).await.unwrap();
    });
    format!("http://{addr}")
}

/// A URL where nothing listens: a port that was just free.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/postman")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(example(name)).unwrap()
}

fn collection(name: &str) -> Collection {
    postman::load(&read(name)).unwrap_or_else(|p| panic!("{name}: {p:?}"))
}

fn environment(base_url: &str) -> Vars {
    let mut env = postman::load_environment(&read("local.postman_environment.json")).unwrap();
    env.set("baseUrl", base_url);
    env
}

fn outcome(run: &PostmanRun, case: &str) -> (Outcome, String) {
    run.report
        .suites
        .iter()
        .flat_map(|s| s.cases.iter())
        .find(|c| c.name == case)
        .map(|c| (c.outcome, c.message.clone().unwrap_or_default()))
        .unwrap_or_else(|| panic!("no case {case:?}; cases: {:#?}", case_names(run)))
}

/// Asserts that each of `cases` passed.
#[track_caller]
fn assert_passed(run: &PostmanRun, cases: &[&str]) {
    for case in cases {
        assert_eq!(outcome(run, case).0, Outcome::Pass, "{case}");
    }
}

/// Asserts that `case` has `expected` as its outcome and a message containing `says`.
#[track_caller]
fn assert_outcome(run: &PostmanRun, case: &str, expected: Outcome, says: &str) {
    let (o, msg) = outcome(run, case);
    assert_eq!(o, expected, "{case}: {msg}");
    assert!(msg.contains(says), "{case}: {msg}");
}

/// The demo collection, `iterations` times (once by default), against a
/// fresh server with the local environment and the globals; it must pass.
/// The run, newman's summary of it and the server's URL.
async fn run_demo(iterations: Option<usize>) -> (PostmanRun, String, String) {
    let base = serve().await;
    let globals = postman::load_environment(&read("globals.postman_globals.json")).unwrap();
    let options = RunOptions {
        environment: environment(&base),
        globals,
        working_dir: Some(example("")),
        iterations,
        ..RunOptions::default()
    };
    let run = postman::run(&collection("testbed-demo.postman_collection.json"), options).await;
    let text = postman::newman_summary(&run);
    assert!(run.ok(), "{text}");
    (run, text, base)
}

#[tokio::test]
async fn demo_collection_passes_against_a_real_server() {
    let (run, text, base) = run_demo(None).await;
    assert!(run.unsupported.is_empty());

    let st = &run.stats;
    assert_eq!(st.iterations, count(1, 0));
    assert_eq!(st.requests, count(15, 0), "{text}");
    assert_eq!(st.prerequest_scripts, count(24, 0));
    assert_eq!(st.test_scripts, count(37, 0));
    assert_eq!(st.assertions, count(46, 0));
    let summary = run.report.summary();
    assert_eq!((summary.total, summary.passed), (46, 46));

    // One suite per folder, the collection's name for top-level requests.
    let suites: Vec<&str> = run.report.suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(suites, ["Basics", "Auth", "Testbed demo"]);
    assert!(run.report.started_at.is_some() && run.report.finished_at.is_some());

    // The token set by `pm.environment.set` in Login was sent by the next request.
    assert_passed(
        &run,
        &[
            "Login › Token issued",
            "Bearer from login › Token from the previous request accepted",
        ],
    );
    assert_eq!(run.environment.get_str("token").as_deref(), Some(TOKEN));
    assert_passed(
        &run,
        &[
            // Folder basic auth inherited; request noauth stops inheritance;
            // collection API key inherited by top-level requests.
            "Basic inherited from folder › Basic credentials accepted",
            "No auth is rejected › 401 without credentials",
            "API key from collection › Collection API key accepted",
            "API key in query › Query API key accepted",
            // Script order and local variables across the scripts of one request.
            "Echo raw JSON › Scripts ran collection, folder, request",
            "Get JSON › legacy: responseBody mentions testbed",
        ],
    );
    assert!(
        run.console
            .iter()
            .any(|l| l == "Get JSON: got testbed for Get JSON"),
        "{:?}",
        run.console
    );

    // newman's shape.
    assert!(text.contains("\n❏ Basics\n"), "{text}");
    assert!(text.contains("\n→ Get JSON\n"), "{text}");
    assert!(
        text.contains(&format!("  GET {base}/json [200 OK, ")),
        "{text}"
    );
    assert!(text.contains("  ✓  Status code is 200\n"), "{text}");
    assert!(text.contains("  │ got testbed for Get JSON\n"), "{text}");
    assert!(text.contains("┌─────"), "{text}");
    assert!(text.contains("│                requests │"), "{text}");
    assert!(text.contains("total run duration: "), "{text}");
    assert!(!text.contains("failure"), "{text}");
}

#[tokio::test]
async fn chained_variables_matter() {
    // Without Login first, there is no token: the bearer request is refused.
    let base = serve().await;
    let options = RunOptions {
        environment: environment(&base),
        folders: vec!["Bearer from login".into()],
        ..RunOptions::default()
    };
    let run = postman::run(&collection("testbed-demo.postman_collection.json"), options).await;
    assert_eq!(run.executions.len(), 1);
    let (o, msg) = outcome(
        &run,
        "Bearer from login › Token from the previous request accepted",
    );
    assert_eq!(o, Outcome::Fail);
    assert_eq!(msg, "expected response to have status code 200 but got 401");
    assert!(!run.ok());
}

#[tokio::test]
async fn folder_selection_and_unknown_names() {
    let base = serve().await;
    let options = RunOptions {
        environment: environment(&base),
        folders: vec!["Auth".into(), "Nope".into()],
        ..RunOptions::default()
    };
    let run = postman::run(&collection("testbed-demo.postman_collection.json"), options).await;
    let names: Vec<&str> = run.executions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Basic inherited from folder",
            "Login",
            "Bearer from login",
            "No auth is rejected"
        ]
    );
    assert_outcome(
        &run,
        "folder 'Nope'",
        Outcome::Error,
        "no folder or request named 'Nope'",
    );
}

#[tokio::test]
async fn edge_cases_are_reported_not_hidden() {
    let base = serve().await;
    let mut env = environment(&base);
    let dead = dead_url();
    env.set("deadUrl", dead.as_str());
    let options = RunOptions {
        environment: env,
        timeout: Duration::from_millis(700),
        script_time_limit: Duration::from_secs(1),
        ..RunOptions::default()
    };
    let started = std::time::Instant::now();
    let run = postman::run(
        &collection("testbed-edge-cases.postman_collection.json"),
        options,
    )
    .await;
    let text = postman::newman_summary(&run);
    assert!(started.elapsed() < Duration::from_secs(20), "{text}");
    assert!(!run.ok());

    // A failed assertion fails only its own test.
    assert_passed(&run, &["Failing assertion › Status code is 200"]);
    let (o, msg) = outcome(&run, "Failing assertion › Name is wrong on purpose");
    assert_eq!(o, Outcome::Fail);
    assert_eq!(msg, "expected 'testbed' to equal 'not-testbed'");

    // A script that throws outside pm.test is a failed test named after it.
    assert_passed(&run, &["Throwing script › Runs before the throw"]);
    let (o, msg) = outcome(&run, "Throwing script › test-script");
    assert_eq!(o, Outcome::Fail);
    assert!(msg.starts_with("ReferenceError: "), "{msg}");
    assert!(msg.contains("thisFunctionDoesNotExist"), "{msg}");

    // An endless loop is stopped by the time limit.
    assert_passed(&run, &["Endless script › Runs before the loop"]);
    assert_outcome(
        &run,
        "Endless script › test-script",
        Outcome::Error,
        "time limit of 1s",
    );
    let endless = run
        .executions
        .iter()
        .find(|e| e.name == "Endless script")
        .unwrap();
    assert!(
        endless.duration < Duration::from_secs(4),
        "{:?}",
        endless.duration
    );

    // Unsupported features are named, and fail what they touch.
    assert_outcome(
        &run,
        "NTLM request › Would check the token",
        Outcome::Error,
        "unsupported: auth type 'ntlm'",
    );
    // pm.sendRequest is supported (tests/newman.rs checks what it sends).
    assert_passed(
        &run,
        &[
            "Uses pm.sendRequest › Calls another API",
            "Uses pm.sendRequest › Plain test still passes",
        ],
    );
    assert_outcome(
        &run,
        "Unknown dynamic variable › Status code is 200",
        Outcome::Error,
        "{{$randomCity}}",
    );
    assert_eq!(
        run.unsupported,
        [
            "request 'NTLM request': auth type 'ntlm'",
            "request 'Unknown dynamic variable': dynamic variable '{{$randomCity}}'",
            "request 'File upload without a file': file upload in form field 'doc' with no file chosen (src)",
        ]
    );

    // No answer: the request's tests are errors with the cause.
    let (o, msg) = outcome(&run, "Connection refused › Status code is 200");
    assert_eq!(o, Outcome::Error);
    assert_eq!(
        msg,
        format!("connection refused: {}", dead.trim_start_matches("http://"))
    );
    let (o, msg) = outcome(&run, "Too slow › Answers in time");
    assert_eq!(o, Outcome::Error);
    assert_eq!(msg, "timed out after 700ms");

    assert_outcome(
        &run,
        "File upload without a file › Uploaded",
        Outcome::Error,
        "no file chosen",
    );

    // A request without tests is one case; skipRequest skips; setNextRequest jumps.
    assert_passed(&run, &["No tests", "Last › Reached through setNextRequest"]);
    assert_eq!(outcome(&run, "Skipped by script").0, Outcome::Skip);
    assert!(run.executions.iter().all(|e| e.name != "Never run"));

    let st = &run.stats;
    assert_eq!(st.requests, count(12, 5), "{text}");
    assert_eq!(st.test_scripts, count(6, 2), "{text}");
    assert_eq!(st.assertions, count(8, 1), "{text}");
    let s = run.report.summary();
    assert_eq!(
        (s.passed, s.failed, s.errors, s.skipped),
        (8, 2, 6, 1),
        "{text}"
    );

    assert!(
        text.contains(&format!("  GET {dead}/nothing [errored]\n")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(" 1.  AssertionError ")
                && l.ends_with("  Name is wrong on purpose")),
        "{text}"
    );
    assert!(text.contains("inside \"Failing assertion\""), "{text}");
    assert!(text.contains("unsupported (each is counted as an error):\n  - request 'NTLM request': auth type 'ntlm'"), "{text}");
}

#[tokio::test]
async fn bail_stops_at_the_first_failure() {
    let base = serve().await;
    let options = RunOptions {
        environment: environment(&base),
        bail: true,
        ..RunOptions::default()
    };
    let run = postman::run(
        &collection("testbed-edge-cases.postman_collection.json"),
        options,
    )
    .await;
    assert_eq!(run.executions.len(), 1);
    assert!(run.report.suites[0].diagnostics[0].starts_with("bail"));
}

#[test]
fn malformed_collection_names_every_problem_with_its_position() {
    let problems = postman::load(&read("broken.postman_collection.json")).unwrap_err();
    let lines: Vec<String> = problems
        .iter()
        .map(|p| p.with_file("broken.json"))
        .collect();
    assert_eq!(
        lines,
        [
            "broken.json:8:5: $.item[0]: 'Neither request nor folder' has neither \"request\" nor \"item\"",
            "broken.json:13:18: $.item[1].request: request has no \"url\"",
            "broken.json:18:27: $.item[2].request.auth.type: unknown auth type \"kerberos\" (Postman's are inherit, noauth, basic, bearer, apikey, digest, oauth1, oauth2, hawk, awsv4, ntlm, edgegrid, jwt, asap, akamai)",
            "broken.json:24:58: $.item[3].request.header: expected an array or a string, found a number",
            "broken.json:28:30: $.item[4].event[0].listen: unknown event \"afterwards\" (prerequest or test)",
        ]
    );
}

#[test]
fn syntax_errors_and_other_versions_are_rejected() {
    let p = postman::load("{\n  \"info\": {\n    \"name\": \"x\",,\n  }\n}").unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].line, p[0].column), (Some(3), Some(17)));
    assert!(p[0].message.starts_with("invalid JSON: "), "{}", p[0]);

    // v2.0 is read (as Newman does); a schema of no known version is not.
    let v20 = r#"{"info": {"name": "old", "schema": "https://schema.getpostman.com/json/collection/v2.0.0/collection.json"}, "item": []}"#;
    assert_eq!(postman::load(v20).unwrap().version, "2.0");
    let v9 = r#"{"info": {"name": "new", "schema": "https://schema.getpostman.com/json/collection/v9.0.0/collection.json"}, "item": []}"#;
    let p = postman::load(v9).unwrap_err();
    assert!(p[0].message.contains("v9.0.0"), "{}", p[0]);
    assert_eq!(p[0].path, "$.info.schema");

    // v1 is converted (tests/newman.rs runs one); its problems name the v1 field.
    let v1 = r#"{"id": "1", "name": "older", "order": [], "requests": []}"#;
    assert_eq!(postman::load(v1).unwrap().version, "1.0");
    let v1 = "{\"name\": \"older\", \"order\": [\"a\"],\n \"requests\": [{\"id\": \"a\", \"url\": 5, \"dataMode\": \"pigeon\", \"currentHelper\": \"kerberos\"}, {\"name\": \"no id\"}]}";
    let p = postman::load(v1).unwrap_err();
    let found: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        found,
        [
            "2:89: $.requests[1]: has no \"id\": orders name requests and folders by id",
            "2:34: $.requests[0].url: expected the URL's text, found a number",
            "2:49: $.requests[0].dataMode: unknown body mode \"pigeon\" (raw, urlencoded, params, binary or graphql)",
            "2:76: $.requests[0].currentHelper: unknown v1 auth helper \"kerberos\" (basicAuth, bearerAuth, digestAuth, oAuth1, hawkAuth, awsSigV4 or normal)",
        ],
    );

    let p = postman::load_environment(&read("testbed-demo.postman_collection.json")).unwrap_err();
    assert!(
        p[0].message.contains("collection, not an environment"),
        "{}",
        p[0]
    );
}

#[test]
fn the_run_future_can_be_spawned() {
    fn send<T: Send>(_: &T) {}
    let c = collection("testbed-demo.postman_collection.json");
    let fut = postman::run(&c, RunOptions::default());
    send(&fut);
}

fn data_rows(name: &str) -> Vec<Vars> {
    let path = example(name);
    let text = read(name);
    postman::load_data(&text, postman::DataFormat::of(&path, &text))
        .unwrap_or_else(|p| panic!("{name}: {p:?}"))
}

/// Executed and failed counts, as in `run.stats`.
fn count(executed: usize, failed: usize) -> postman::Count {
    postman::Count { executed, failed }
}

/// Every case name of the run.
fn case_names(run: &PostmanRun) -> Vec<String> {
    run.report
        .suites
        .iter()
        .flat_map(|s| s.cases.iter().map(|c| c.name.clone()))
        .collect()
}

#[tokio::test]
async fn iteration_data_from_csv_and_json_drives_one_iteration_per_row() {
    let base = serve().await;
    for file in ["users.csv", "users.json"] {
        let mut env = Vars::new();
        env.set("baseUrl", base.as_str());
        // Data sits above the environment: the rows' roles must win.
        env.set("role", "nobody");
        let options = RunOptions {
            environment: env,
            data: data_rows(file),
            ..RunOptions::default()
        };
        let run = postman::run(&collection("users.postman_collection.json"), options).await;
        let text = postman::newman_summary(&run);
        assert!(run.ok(), "{file}:\n{text}");
        let st = &run.stats;
        assert_eq!(st.iterations, count(3, 0), "{text}");
        assert_eq!(st.requests.executed, 3, "{text}");
        assert_eq!(st.test_scripts.executed, 3, "{text}");
        assert_eq!(st.assertions, count(12, 0), "{text}");
        let names = case_names(&run);
        assert_eq!(names.len(), 12, "{names:#?}");
        for i in 1..=3 {
            let (o, _) = outcome(
                &run,
                &format!("get user › the id comes from the data [iteration {i}]"),
            );
            assert_eq!(o, Outcome::Pass);
        }
        let urls: Vec<&str> = run.executions.iter().map(|e| e.url.as_str()).collect();
        assert!(
            urls[2].contains("/users/3?name=grace&role=user,%20read-only"),
            "{urls:?}"
        );
        assert_eq!(
            run.console,
            [
                "get user: iteration 1/3: ada",
                "get user: iteration 2/3: alan",
                "get user: iteration 3/3: grace"
            ]
        );
        assert!(text.contains("Iteration 3/3"), "{text}");
        assert!(
            text.contains("│              iterations │                 3 │"),
            "{text}"
        );
    }

    // -n caps the rows, or reuses the last row beyond them, as newman does.
    let mut env = Vars::new();
    env.set("baseUrl", base.as_str());
    for (file, n, last) in [
        ("users.csv", 2, "get user: iteration 2/2: alan"),
        ("users.json", 4, "get user: iteration 4/4: grace"),
    ] {
        let run = postman::run(
            &collection("users.postman_collection.json"),
            RunOptions {
                environment: env.clone(),
                data: data_rows(file),
                iterations: Some(n),
                ..RunOptions::default()
            },
        )
        .await;
        assert!(run.ok(), "{}", postman::newman_summary(&run));
        assert_eq!(run.stats.iterations.executed, n);
        assert_eq!(run.console.last().map(String::as_str), Some(last));
    }
}

#[tokio::test]
async fn iteration_count_without_data_repeats_the_collection() {
    let (run, text, _) = run_demo(Some(2)).await;
    assert_eq!(run.stats.iterations.executed, 2);
    assert_eq!(run.stats.requests.executed, 30, "{text}");
    let names = case_names(&run);
    let unique: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "names repeat: {names:#?}");
    assert!(names
        .iter()
        .all(|n| n.ends_with(" [iteration 1]") || n.ends_with(" [iteration 2]")));
    assert_eq!(run.stats.assertions.executed, names.len());
}

#[test]
fn bad_data_files_are_problems_at_load_and_nothing_runs() {
    use testbed_apitest::files::{self, Options};
    let dir = tempfile::tempdir().unwrap();
    let c = example("users.postman_collection.json");
    let problems = |paths: &[PathBuf], opts: &Options| -> Vec<String> {
        files::load(paths, opts)
            .map(|_| ())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let load = |data: &std::path::Path| {
        let opts = Options {
            data: Some(data.to_path_buf()),
            ..Options::default()
        };
        problems(std::slice::from_ref(&c), &opts)
    };
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ragged = write("ragged.csv", "id,name\n1,ada\n2\n3,grace,extra\n");
    let r = ragged.display();
    assert_eq!(
        load(&ragged),
        [
            format!("{r}:3:1: this row has 1 field(s), the header row has 2"),
            format!("{r}:4:1: this row has 3 field(s), the header row has 2"),
        ]
    );
    for (name, text, problem) in [
        (
            "object.json",
            "{\"id\": 1}",
            "1:1: $: expected an array of objects (one per iteration), found an object",
        ),
        (
            "mixed.json",
            "[\n  {\"id\": 1},\n  [2]\n]",
            "3:3: $[1]: expected an object (one iteration's variables), found an array",
        ),
    ] {
        let path = write(name, text);
        assert_eq!(load(&path), [format!("{}:{problem}", path.display())]);
    }
    let syntax = write("syntax.json", "[\n  {\"id\": 1,}\n]");
    let p = load(&syntax);
    assert!(
        p[0].starts_with(&format!("{}:2:", syntax.display())),
        "{p:?}"
    );
    assert!(p[0].contains("invalid JSON"), "{p:?}");
    let missing = dir.path().join("missing.csv");
    let p = load(&missing);
    assert!(
        p[0].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{p:?}"
    );

    // Suites have `each:`; data given with one is said, not ignored.
    let suite =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/api/testbed-smoke.yaml");
    let opts = Options {
        data: Some(example("users.csv")),
        iterations: Some(2),
        ..Options::default()
    };
    let p = problems(&[suite, c.clone()], &opts);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains(
            "testbed-smoke.yaml: -d/--iteration-data applies to Postman collections only"
        ),
        "{p:?}"
    );
    assert!(
        p[1].contains("-n/--iteration-count applies to Postman collections only"),
        "{p:?}"
    );
    // A collection alone takes them.
    assert!(files::load(&[c], &opts).is_ok());
}
