//! `testbed api run` as a drop-in for `newman run`: Newman's options and
//! exit codes, its json reporter's counts, its exports and cookie jar files,
//! through the real binary against a real HTTP server on 127.0.0.1 that
//! answers like postman-echo.com (`testbed_testsupport::echo`, the server
//! Newman's counts were recorded against).
//!
//! The counts are compared with those Newman itself recorded for the corpus
//! of crates/apitest/tests/fixtures/newman (counts.json).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Map, Value};
use testbed_testsupport::echo::serve_in_thread;
use testbed_testsupport::newman::{fixture, localized};

// ------------------------------------------------------------ helpers

/// `testbed ARGS` in `dir`.
fn testbed_in(dir: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .current_dir(dir)
        .env("TESTBED_LOG", "error")
        .output()
        .expect("running testbed")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn read_json(path: &Path, out: &str) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}\n{out}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{out}", path.display()))
}

fn item(name: &str, url: &str, test: &str) -> Value {
    json!({
        "name": name,
        "request": {"url": url, "method": "GET"},
        "event": [{"listen": "test", "script": {"exec": test.lines().collect::<Vec<_>>()}}],
    })
}

/// Writes a v2.1 collection of `items` to `dir/NAME.postman_collection.json`;
/// its path, as an argument.
fn write_collection(dir: &Path, name: &str, items: Value) -> String {
    let path = dir.join(format!("{name}.postman_collection.json"));
    let doc = json!({
        "info": {"name": "drop-in", "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"},
        "item": items,
    });
    std::fs::write(&path, doc.to_string()).expect("write");
    path.display().to_string()
}

/// `run.executions[].item.name` of a json reporter file.
fn executed(report: &Value) -> Vec<String> {
    report["run"]["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|e| e["item"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

// ------------------------------------------------------------ tests

#[test]
fn the_json_reporter_and_the_table_give_newmans_recorded_counts() {
    let base = serve_in_thread();
    let dir = tempfile::tempdir().expect("tempdir");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("counts.json")).expect("counts.json"),
    )
    .expect("counts.json");
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for case in doc["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let mut args = vec!["api".to_string(), "run".to_string()];
        for (key, flag) in [
            ("collection", ""),
            ("environment", "-e"),
            ("globals", "-g"),
            ("data", "-d"),
        ] {
            if let Some(f) = case[key].as_str() {
                let path = dir.path().join(f);
                std::fs::write(&path, localized(f, &base)).expect("write");
                if !flag.is_empty() {
                    args.push(flag.into());
                }
                args.push(path.display().to_string());
            }
        }
        let report = dir.path().join(format!("{name}.json"));
        let canonical = dir.path().join(format!("{name}.testbed.json"));
        args.extend(strings(&["-r", "cli,json", "--reporter-json-export"]));
        args.push(report.display().to_string());
        args.push("--json".into());
        args.push(canonical.display().to_string());
        let out = testbed_in(dir.path(), &args);
        let all = text(&out);
        let stats = &read_json(&report, &all)["run"]["stats"];
        // Testbed's own JSON report carries the same counts.
        let props = &read_json(&canonical, &all)["properties"];
        let in_report: Value = props["newman.stats"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_else(|| panic!("{name}: no newman.stats in {props}"));
        assert_eq!(&in_report, stats, "{name}");
        let newman = &case["newman"];
        let mut ours = Map::new();
        for row in newman.as_object().expect("rows").keys() {
            ours.insert(
                row.clone(),
                json!({"total": stats[row]["total"], "failed": stats[row]["failed"]}),
            );
        }
        if Value::Object(ours.clone()) != *newman {
            mismatches.push(format!("{name}: Newman {newman} / Testbed {ours:?}\n{all}"));
            continue;
        }
        // The cli reporter's table says the same.
        let a = &newman["assertions"];
        let row = format!("│{:>25}│{:>19}│", "assertions ", format!("{} ", a["total"]));
        assert!(all.contains(&row), "{name}: no `{row}` in\n{all}");
        // Newman exits 1 when any row has a failure.
        let failed: u64 = newman
            .as_object()
            .expect("rows")
            .values()
            .map(|r| r["failed"].as_u64().unwrap_or(0))
            .sum();
        let want = if failed > 0 { 1 } else { 0 };
        assert_eq!(out.status.code(), Some(want), "{name}: exit code\n{all}");
        compared += 1;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    assert!(
        compared >= 14,
        "only {compared} corpus collections compared"
    );
}

/// A CI line written for Newman, with `newman run` replaced by
/// `testbed api run` and nothing else changed.
#[test]
fn a_newman_ci_line_runs_with_only_the_command_name_changed() {
    let base = serve_in_thread();
    let dir = tempfile::tempdir().expect("tempdir");
    let items = json!([
        {"name": "users", "item": [
            item("list users", &format!("{base}/get?page=1"),
                "pm.test('200', () => pm.response.to.have.status(200));\n\
                 pm.environment.set('token', 'from-run');\n\
                 pm.globals.set('seen', pm.globals.get('region') + '-ok');"),
            item("set a cookie", "{{baseUrl}}/cookies/set?session=s1",
                "pm.test('redirect not followed', () => pm.response.to.have.status(302));"),
        ]},
        {"name": "orders", "item": [
            item("never run", &format!("{base}/status/500"), "pm.test('x', () => pm.response.to.have.status(200));"),
        ]},
    ]);
    write_collection(dir.path(), "api", items);
    std::fs::write(
        dir.path().join("ci.postman_environment.json"),
        json!({"name": "ci", "values": [{"key": "token", "value": "none", "enabled": true}]})
            .to_string(),
    )
    .expect("write");
    let newman_line = format!(
        "newman run api.postman_collection.json -e ci.postman_environment.json \
         --env-var baseUrl={base} --global-var region=eu --folder users --bail \
         --delay-request 10 --timeout-request 5000 --timeout-script 2000 --timeout 60000 \
         --insecure --ignore-redirects --color off --disable-unicode \
         -r cli,json,junit --reporter-json-export out/report.json \
         --reporter-junit-export out/junit.xml --export-environment out/env.json \
         --export-globals out/globals.json --export-cookie-jar out/jar.json"
    );
    let line = newman_line.replacen("newman run", "testbed api run", 1);
    let args = shell_words::split(&line).expect("words");
    assert_eq!(args[0], "testbed");
    let out = testbed_in(dir.path(), &args[1..]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("|              assertions |                 2 |"),
        "ASCII table:\n{stdout}"
    );
    assert!(!stdout.contains('│') && !stdout.contains('✓'), "{stdout}");

    let report = read_json(&dir.path().join("out/report.json"), &all);
    assert_eq!(executed(&report), ["list users", "set a cookie"], "{all}");
    assert_eq!(report["run"]["stats"]["requests"]["total"], 2);
    assert_eq!(
        report["run"]["stats"]["assertions"],
        json!({"total": 2, "pending": 0, "failed": 0})
    );
    let junit = std::fs::read_to_string(dir.path().join("out/junit.xml")).expect("junit");
    assert!(junit.contains("<testsuite"), "{junit}");
    let env = read_json(&dir.path().join("out/env.json"), &all);
    assert_eq!(env["name"], "ci");
    assert_eq!(env["_postman_variable_scope"], "environment");
    let value = |doc: &Value, key: &str| {
        doc["values"]
            .as_array()
            .expect("values")
            .iter()
            .find(|v| v["key"] == key)
            .map(|v| v["value"].clone())
    };
    assert_eq!(value(&env, "token"), Some(json!("from-run")), "{env}");
    let globals = read_json(&dir.path().join("out/globals.json"), &all);
    assert_eq!(value(&globals, "seen"), Some(json!("eu-ok")), "{globals}");
    let jar = read_json(&dir.path().join("out/jar.json"), &all);
    let cookies = jar["cookies"].as_array().expect("cookies");
    assert!(jar["version"]
        .as_str()
        .is_some_and(|v| v.starts_with("tough-cookie")));
    assert!(
        cookies
            .iter()
            .any(|c| c["key"] == "session" && c["value"] == "s1" && c["domain"] == "127.0.0.1"),
        "{jar}"
    );
}

#[test]
fn folder_bail_and_exit_codes_follow_newman() {
    let base = serve_in_thread();
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = "pm.test('ok', () => pm.response.to.have.status(200));";
    let items = json!([
        {"name": "A", "item": [item("a1", &format!("{base}/get"), ok), item("a2", &format!("{base}/status/500"), ok), item("a3", &format!("{base}/get"), ok)]},
        {"name": "B", "item": [item("b1", &format!("{base}/get"), ok)]},
        {"name": "C", "item": [item("c1", &format!("{base}/get"), ok)]},
    ]);
    let file = write_collection(dir.path(), "c", items);
    let run = |extra: &[&str]| {
        let report = dir.path().join("r.json");
        let _ = std::fs::remove_file(&report);
        let mut args = strings(&["api", "run", &file, "-r", "json", "--reporter-json-export"]);
        args.push(report.display().to_string());
        args.extend(strings(extra));
        let out = testbed_in(dir.path(), &args);
        let all = text(&out);
        let doc = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        (
            out.status.code(),
            doc.map(|d| executed(&d)).unwrap_or_default(),
            all,
        )
    };

    // --folder, repeatable, by name: only those folders run.
    let (code, names, all) = run(&["--folder", "B", "--folder", "C"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(names, ["b1", "c1"], "{all}");
    // Everything: a2 fails, the rest still runs; exit 1.
    let (code, names, all) = run(&[]);
    assert_eq!(code, Some(1), "{all}");
    assert_eq!(names, ["a1", "a2", "a3", "b1", "c1"], "{all}");
    // --bail: the run stops after the first failing request.
    let (code, names, all) = run(&["--bail"]);
    assert_eq!(code, Some(1), "{all}");
    assert_eq!(names, ["a1", "a2"], "{all}");
    // -x: the same failures, exit 0.
    let (code, _, all) = run(&["-x"]);
    assert_eq!(code, Some(0), "{all}");
    // An unknown folder is an error; with `--bail folder` nothing runs.
    let (code, names, all) = run(&["--folder", "Z", "--folder", "B"]);
    assert_eq!(
        (code, names.as_slice()),
        (Some(1), &["b1".to_string()][..]),
        "{all}"
    );
    assert!(all.contains("no folder or request named 'Z'"), "{all}");
    let (code, names, all) = run(&["--folder", "Z", "--folder", "B", "--bail", "folder"]);
    assert_eq!(code, Some(1), "{all}");
    assert!(names.is_empty(), "{all}");
    // --timeout: the whole run's limit ends a slow run with an error.
    let slow = write_collection(
        dir.path(),
        "slow",
        json!([item("slow", &format!("{base}/delay/3000"), ok)]),
    );
    let out = testbed_in(
        dir.path(),
        &strings(&["api", "run", &slow, "--timeout", "300"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("time limit (300 ms)"), "{}", text(&out));

    // A directory for a report gets Newman's default name inside it;
    // --silent prints no request lines.
    let out = testbed_in(
        dir.path(),
        &strings(&[
            "api",
            "run",
            &file,
            "--silent",
            "-r",
            "cli,junit",
            "--reporter-junit-export",
            "reports/",
        ]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("→ a1"), "{}", text(&out));
    let written: Vec<String> = std::fs::read_dir(dir.path().join("reports"))
        .expect("reports/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        written.len() == 1
            && written[0].starts_with("newman-run-report-")
            && written[0].ends_with(".xml"),
        "{written:?}"
    );
    // The file outputs describe one collection's run: two collections are
    // refused before anything runs.
    let out = testbed_in(
        dir.path(),
        &strings(&["api", "run", &file, &slow, "--export-environment", "e.json"]),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--export-environment"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("e.json").exists());

    // Bad option values and unreadable files: exit 2, naming the option or file.
    for (args, names) in [
        (vec!["--delay-request", "soon"], "--delay-request"),
        (vec!["-r", "htmlextra"], "--reporters"),
        (vec!["--bail", "sometimes"], "--bail"),
        (vec!["--cookie-jar", "missing-jar.json"], "missing-jar.json"),
        (vec!["-g", "missing-globals.json"], "missing-globals.json"),
        (vec!["-e", "missing-env.json"], "missing-env.json"),
    ] {
        let mut all_args = strings(&["api", "run", &file]);
        all_args.extend(strings(&args));
        let out = testbed_in(dir.path(), &all_args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains(names),
            "{args:?} must name {names}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_cookie_jar_round_trips_between_runs() {
    let base = serve_in_thread();
    let dir = tempfile::tempdir().expect("tempdir");
    // Run 1: the server sets a cookie; the exported jar holds it.
    let set = write_collection(
        dir.path(),
        "set",
        json!([item("set", &format!("{base}/cookies/set?flavour=oat"), "")]),
    );
    let out = testbed_in(
        dir.path(),
        &strings(&["api", "run", &set, "--export-cookie-jar", "jar.json"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let jar = read_json(&dir.path().join("jar.json"), &text(&out));
    let cookie = jar["cookies"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["key"] == "flavour"))
        .unwrap_or_else(|| panic!("no cookie in {jar}"));
    assert_eq!(cookie["value"], "oat");
    assert_eq!(cookie["path"], "/");

    // Run 2: a collection that only reads /cookies gets it from the jar; a
    // cookie written by hand in tough-cookie's form is sent as well.
    let mut jar = jar;
    jar["cookies"].as_array_mut().expect("cookies").push(json!({
        "key": "handmade", "value": "yes", "domain": "127.0.0.1", "path": "/",
        "hostOnly": true, "creation": "2026-01-01T00:00:00.000Z",
    }));
    std::fs::write(dir.path().join("jar2.json"), jar.to_string()).expect("write");
    let read = write_collection(
        dir.path(),
        "read",
        json!([item(
            "read",
            &format!("{base}/cookies"),
            "pm.test('sent', () => {\n\
               const c = pm.response.json().cookies;\n\
               pm.expect(c.flavour).to.equal('oat');\n\
               pm.expect(c.handmade).to.equal('yes');\n\
             });"
        )]),
    );
    let out = testbed_in(
        dir.path(),
        &strings(&["api", "run", &read, "--cookie-jar", "jar2.json"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Without the jar the same test fails: the cookie came from the file.
    let out = testbed_in(dir.path(), &strings(&["api", "run", &read]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

// ------------------------------------------------------------ proxies

/// What a forward proxy saw: each request's first line (an absolute-form
/// target for `http:`, `CONNECT host:port` for `https:`) and its
/// `Proxy-Authorization` header.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A forward proxy on 127.0.0.1, as a CI job's would be. Whatever host a
/// request names, it forwards plain requests to `http_origin` and tunnels
/// `CONNECT`s to `tls_origin`, so names that exist nowhere (`.invalid`) are
/// reachable only through it. Each forwarded request gets `Connection: close`,
/// so every request of the client arrives as a new head here.
fn forward_proxy(
    http_origin: std::net::SocketAddr,
    tls_origin: std::net::SocketAddr,
) -> (String, Seen) {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};

    fn pipe(mut from: TcpStream, mut to: TcpStream) {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().expect("clone"));
                let mut first = String::new();
                if reader.read_line(&mut first).unwrap_or(0) == 0 {
                    return;
                }
                let first = first.trim_end().to_string();
                let mut headers = Vec::new();
                let mut auth = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                    if name.eq_ignore_ascii_case("proxy-authorization") {
                        auth = Some(value.trim().to_string());
                    } else if !name.eq_ignore_ascii_case("connection")
                        && !name.eq_ignore_ascii_case("proxy-connection")
                    {
                        headers.push(line);
                    }
                }
                log.lock().expect("log").push((first.clone(), auth));
                let mut parts = first.split(' ');
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let mut client = client;
                if method == "CONNECT" {
                    let origin = TcpStream::connect(tls_origin).expect("tls origin");
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .expect("write");
                    pipe(origin.try_clone().expect("clone"), client);
                    pipe(reader.into_inner(), origin);
                    return;
                }
                // The origin gets the origin-form target, as from a client.
                let path = target
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or("/");
                let mut origin = TcpStream::connect(http_origin).expect("origin");
                let head = format!(
                    "{method} {path} HTTP/1.1\r\n{}Connection: close\r\n\r\n",
                    headers.concat()
                );
                origin.write_all(head.as_bytes()).expect("write");
                // What the reader already buffered of a body goes first.
                origin.write_all(reader.buffer()).expect("write");
                pipe(origin.try_clone().expect("clone"), client);
                pipe(reader.into_inner(), origin);
            });
        }
    });
    (format!("127.0.0.1:{}", addr.port()), seen)
}

/// `openssl s_server -www` on 127.0.0.1 with a fresh self-signed
/// certificate: a real HTTPS server for the `CONNECT` tunnel to end at.
struct TlsOrigin {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_origin(dir: &Path) -> TlsOrigin {
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=secure.invalid", "-keyout", "key.pem", "-out"])
        .arg("cert.pem")
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/test installs it)");
    assert!(made.status.success(), "{}", text(&made));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new("openssl")
        .args([
            "s_server", "-quiet", "-www", "-cert", "cert.pem", "-key", "key.pem",
        ])
        .args(["-accept", &addr.to_string()])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let origin = TlsOrigin { child, addr };
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return origin;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("openssl s_server did not listen on {addr}");
}

/// `testbed ARGS` in `dir` with exactly the proxy variables in `env`.
fn testbed_with_proxies(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testbed"));
    cmd.args(args).current_dir(dir).env("TESTBED_LOG", "error");
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("running testbed")
}

/// Newman's proxies: `HTTP_PROXY` (with its credentials) for `http:` URLs,
/// `NO_PROXY` hosts sent direct, and `https:` URLs through a `CONNECT`
/// tunnel of the lower-case `http_proxy` when no HTTPS proxy is set.
#[test]
fn proxies_from_the_environment_as_newman_uses_them() {
    let base = serve_in_thread();
    let echo: std::net::SocketAddr = base.trim_start_matches("http://").parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = tls_origin(dir.path());
    let (proxy, seen) = forward_proxy(echo, tls.addr);

    // `origin.invalid` resolves nowhere: only the proxy can answer for it.
    let file = write_collection(dir.path(), "proxy", json!([
            item(
                "proxied",
                "http://origin.invalid/get?via=proxy",
                "pm.test('through the proxy', () => {\n\
                   pm.response.to.have.status(200);\n\
                   pm.expect(pm.response.json().url).to.equal('http://origin.invalid/get?via=proxy');\n\
                 });"
            ),
            item(
                "direct",
                &format!("http://localhost:{}/get?via=direct", echo.port()),
                "pm.test('direct', () => pm.response.to.have.status(200));"
            ),
        ]));
    let args = strings(&["api", "run", &file]);
    let out = testbed_with_proxies(
        dir.path(),
        &args,
        &[
            ("HTTP_PROXY", &format!("http://tester:s3cret@{proxy}")),
            ("NO_PROXY", "example.test, localhost"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = seen.lock().expect("log").clone();
    assert_eq!(
        got,
        vec![(
            "GET http://origin.invalid/get?via=proxy HTTP/1.1".to_string(),
            // base64("tester:s3cret")
            Some("Basic dGVzdGVyOnMzY3JldA==".to_string())
        )],
        "{}",
        text(&out)
    );

    // Without the proxy the same run fails: the proxied name resolves nowhere.
    let out = testbed_with_proxies(dir.path(), &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // https: a CONNECT tunnel through the lower-case http_proxy, as
    // postman-request falls back to it; -k for the self-signed certificate.
    seen.lock().expect("log").clear();
    let file = write_collection(
        dir.path(),
        "tls",
        json!([item(
            "tunnelled",
            "https://secure.invalid/",
            "pm.test('through the tunnel', () => pm.response.to.have.status(200));"
        )]),
    );
    let out = testbed_with_proxies(
        dir.path(),
        &strings(&["api", "run", &file, "-k"]),
        &[("http_proxy", &format!("http://{proxy}"))],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = seen.lock().expect("log").clone();
    assert_eq!(
        got.iter()
            .map(|(line, _)| line.as_str())
            .collect::<Vec<_>>(),
        ["CONNECT secure.invalid:443 HTTP/1.1"],
        "{}",
        text(&out)
    );

    // A proxy address that is not one is named, not silently skipped.
    let out = testbed_with_proxies(
        dir.path(),
        &strings(&["api", "run", &file, "-k"]),
        &[("HTTPS_PROXY", "socks5://127.0.0.1:1")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("HTTPS_PROXY=socks5://127.0.0.1:1"),
        "{}",
        text(&out)
    );
}
