//! The CLI's conventions (docs/cli.md), run as a user would run the real
//! binary: one `--json` shape for lists, ids by unique prefix, summaries
//! for humans, no colour in redirected output, a quiet exit on a closed
//! pipe, "did you mean", server addresses without a scheme, a 401 that says
//! what to do, a clear "address in use", completions and man pages.

use crate::common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `testbed ARGS` with its own config dir, no inherited server or token,
/// stdout and stderr captured (so not terminals), `stdin` piped in.
fn testbed_env(cfg: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("TESTBED_CONFIG_DIR", cfg)
        .env_remove("TESTBED_TOKEN")
        .env_remove("TESTBED_SERVER")
        .env_remove("TESTBED_PASSWORD")
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn testbed");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

fn testbed(cfg: &Path, args: &[&str]) -> Output {
    testbed_env(cfg, args, None, &[])
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", out(o), err(o)))
}

/// Runs `testbed ARGS` with stdout a pipe whose reading end is already
/// closed, as `testbed … | head -1` once `head` has its line.
fn with_closed_stdout(cfg: &Path, args: &[&str]) -> (ExitStatus, String) {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let o = Command::new(bin())
        .args(args)
        .env("TESTBED_CONFIG_DIR", cfg)
        .env_remove("TESTBED_TOKEN")
        .env_remove("TESTBED_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("spawn testbed");
    (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Ended the way `cat` ends on a closed pipe: by SIGPIPE (or the same
/// status, 141, for commands that keep SIGPIPE ignored), with nothing said.
fn assert_quiet_pipe_exit(what: &str, status: ExitStatus, stderr: &str) {
    assert!(
        status.signal() == Some(13) || status.code() == Some(141),
        "{what}: {status:?}, stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what} complained about the closed pipe: {stderr}"
    );
}

fn no_escape_codes(what: &str, text: &str) {
    assert!(
        !text.contains('\u{1b}'),
        "{what}: ANSI codes in redirected output:\n{text:?}"
    );
}

/// The hex digit most task ids start with, once two share one.
fn shared_first_digit(ids: &[String]) -> Option<char> {
    let mut counts = std::collections::BTreeMap::new();
    for id in ids {
        *counts.entry(id.chars().next()?).or_insert(0) += 1;
    }
    counts.into_iter().find(|(_, n)| *n >= 2).map(|(c, _)| c)
}

#[tokio::test]
async fn client_commands_follow_one_convention() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;
    let cfg = dir.path().join("cfg");
    let bare = p.url.trim_start_matches("http://").to_string();
    assert_ne!(bare, p.url, "the platform serves http");

    // An address without a scheme, and a password piped in without
    // --password-stdin (stdin is not a terminal: nothing to hide).
    let o = testbed_env(
        &cfg,
        &["login", "--server", &bare],
        Some(&format!("{ADMIN_PASSWORD}\n")),
        &[],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains(&format!("logged in to {}", p.url)),
        "{}",
        out(&o)
    );
    let saved: Value =
        serde_json::from_slice(&std::fs::read(cfg.join("credentials.json")).unwrap()).unwrap();
    assert_eq!(
        saved["server"],
        p.url.as_str(),
        "the saved server has its scheme"
    );
    // --password-stdin, and TESTBED_SERVER without a scheme.
    let o = testbed_env(
        &cfg,
        &["login", "--password-stdin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
        &[("TESTBED_SERVER", &bare)],
    );
    assert!(o.status.success(), "{}", err(&o));
    let o = testbed_env(&cfg, &["agents", "ls"], None, &[("TESTBED_SERVER", &bare)]);
    assert!(
        o.status.success() && out(&o).contains("local-1"),
        "{}",
        err(&o)
    );

    // Work to list: tasks, and a run with its report.
    let submit = || {
        p.run(
            "linux_system",
            "local-1",
            "run_shell",
            json!({"command": "true"}),
        )
    };
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(submit().await);
    }
    // Two ids sharing a first digit (at most 17 ids by pigeonhole) make an
    // ambiguous prefix.
    while shared_first_digit(&tasks).is_none() {
        tasks.push(submit().await);
    }
    for t in &tasks {
        p.wait_task(t, Duration::from_secs(30)).await;
    }
    let plan = "name: conventions\nsteps:\n  - id: one\n    plugin: linux_system\n    method: run_shell\n    params: {command: \"true\"}\n";
    let (s, run) = p.post("/api/runs", json!({"plan": plan})).await;
    assert_eq!(s, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report_id = loop {
        let (_, r) = p.get(&format!("/api/runs/{run_id}")).await;
        if let Some(id) = r["report_id"].as_str() {
            break id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run never reported: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // One --json shape for every list: an array of objects with an id.
    for list in [
        vec!["agents", "ls", "--json"],
        vec!["tasks", "ls", "--json"],
        vec!["runs", "ls", "--json"],
        vec!["report", "ls", "--json"],
    ] {
        let o = testbed(&cfg, &list);
        assert!(o.status.success(), "{list:?}: {}", err(&o));
        let v = json_of(&o);
        let items = v
            .as_array()
            .unwrap_or_else(|| panic!("{list:?} --json is not an array: {v}"));
        assert!(!items.is_empty(), "{list:?} listed nothing");
        assert!(items.iter().all(|i| !i["id"].is_null()), "{list:?}: {v}");
    }
    // No performance plan yet: still an array.
    let o = testbed(&cfg, &["perf", "ls", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(json_of(&o), json!([]));
    let (s, project) = p
        .post(
            "/api/projects",
            json!({"name": "default", "description": "cli"}),
        )
        .await;
    assert_eq!(s, 201, "{project}");
    let (s, plan) = p
        .post(
            "/api/performance/plans/",
            json!({"name": "listed", "project_id": project["id"], "config": {
                "concurrent_users": 1, "ramp_up_time": 0, "hold_time": 1, "test_type": "load",
                "target_url": format!("{}/healthz", p.url)}}),
        )
        .await;
    assert_eq!(s, 201, "{plan}");
    let o = testbed(&cfg, &["perf", "ls", "--json"]);
    assert_eq!(json_of(&o)[0]["name"], "listed");
    let o = testbed(&cfg, &["perf", "list"]);
    assert!(out(&o).contains("listed"), "{}", out(&o));
    let o = testbed(&cfg, &["tasks", "ls", "--json", "--status", "succeeded"]);
    // The tasks submitted, and the one of the run's step.
    assert_eq!(json_of(&o).as_array().map(Vec::len), Some(tasks.len() + 1));
    let o = testbed(&cfg, &["tasks", "ls", "--json", "--limit", "2"]);
    assert_eq!(json_of(&o).as_array().map(Vec::len), Some(2));
    // `list` is an alias of `ls`, and tables carry no colour when redirected.
    let o = testbed(&cfg, &["runs", "list"]);
    assert!(
        o.status.success() && out(&o).contains(&run_id),
        "{}",
        err(&o)
    );
    no_escape_codes("runs list", &out(&o));

    // Ids by unique prefix; `tasks show` is a summary, not JSON.
    let task = &tasks[0];
    let o = testbed(&cfg, &["tasks", "show", &task[..8]]);
    assert!(o.status.success(), "{}", err(&o));
    let shown = out(&o);
    assert!(
        shown.starts_with(&format!("task {task}")) && shown.contains("status:     succeeded"),
        "{shown}"
    );
    assert!(!shown.trim_start().starts_with('{'), "raw JSON: {shown}");
    let o = testbed(&cfg, &["tasks", "show", &task[..8], "--json"]);
    assert_eq!(json_of(&o)["id"], task.as_str());
    let o = testbed(&cfg, &["runs", "show", &run_id[..6]]);
    assert!(
        o.status.success() && out(&o).contains(&run_id),
        "{}",
        err(&o)
    );
    let o = testbed(&cfg, &["report", "show", &report_id[..6]]);
    assert!(o.status.success(), "{}", err(&o));
    let o = testbed(&cfg, &["tasks", "logs", &task[..8]]);
    assert!(o.status.success(), "{}", err(&o));
    // Ambiguous: an error listing the candidates.
    let digit = shared_first_digit(&tasks).unwrap().to_string();
    let o = testbed(&cfg, &["tasks", "show", &digit]);
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert!(
        e.contains("is ambiguous") && e.contains("give more characters"),
        "{e}"
    );
    let candidates = tasks.iter().filter(|t| t.starts_with(&digit));
    for c in candidates {
        assert!(e.contains(c.as_str()), "candidate {c} not listed: {e}");
    }
    // The API's lists take the prefix, and say so in the OpenAPI document.
    let (s, page) = p.get(&format!("/api/tasks?id_prefix={}", &task[..8])).await;
    assert_eq!((s, page["total"].as_u64()), (200, Some(1)), "{page}");
    let (_, spec) = p.get("/api/openapi.json").await;
    for path in ["/api/tasks", "/api/runs", "/api/plans", "/api/reports"] {
        let params = spec["paths"][path]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            params
                .iter()
                .any(|q| q["name"] == "id_prefix" && q["in"] == "query"),
            "{path} documents no id_prefix: {params:?}"
        );
    }
    // Unknown: not found, exit 2.
    let unknown = (0..16u8)
        .map(|d| format!("{d:x}0000000"))
        .find(|pre| !tasks.iter().any(|t| t.starts_with(pre)))
        .unwrap();
    let o = testbed(&cfg, &["tasks", "show", &unknown]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains(&format!("no task whose id starts with `{unknown}`")),
        "{}",
        err(&o)
    );
    let o = testbed(&cfg, &["runs", "show", "not-an-id"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("run ids are uuids"), "{}", err(&o));

    // system_information describes itself, not run_shell.
    let o = testbed(&cfg, &["agents", "show", "local-1"]);
    let shown = out(&o);
    let info = shown
        .lines()
        .find(|l| l.trim_start().starts_with("system_information"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(info.contains("Describe the machine"), "{info}");

    // A closed stdout ends the listing quietly.
    for args in [["runs", "ls"], ["tasks", "ls"]] {
        let (status, stderr) = with_closed_stdout(&cfg, &args);
        assert_quiet_pipe_exit(&args.join(" "), status, &stderr);
    }

    // An expired or revoked token says how to get a new one.
    let o = testbed_env(
        &cfg,
        &["tasks", "ls"],
        None,
        &[("TESTBED_TOKEN", "not-a-token")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("TESTBED_TOKEN") && err(&o).contains("testbed login"),
        "{}",
        err(&o)
    );
    let o = testbed(&cfg, &["logout"]);
    assert!(o.status.success(), "{}", err(&o));
    std::fs::write(
        cfg.join("credentials.json"),
        serde_json::to_vec(&json!({"server": p.url, "token": saved["token"]})).unwrap(),
    )
    .unwrap();
    let o = testbed(&cfg, &["runs", "ls"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("run `testbed login`"), "{}", err(&o));
    // The live log (a WebSocket) says the same; a full id needs no lookup.
    let o = testbed(&cfg, &["tasks", "logs", "-f", task]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("run `testbed login`"), "{}", err(&o));

    // The platform's own logs, redirected, carry no colour either.
    let logged: Vec<String> = p.proc.lines.try_iter().collect();
    assert!(
        logged.iter().any(|l| l.contains("INFO")),
        "no log lines seen"
    );
    no_escape_codes("testbed up's log", &logged.join("\n"));
}

#[test]
fn typos_get_a_suggestion() {
    let cfg = tempfile::tempdir().unwrap();
    let o = testbed(cfg.path(), &["agnets", "ls"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("agents"), "{}", err(&o));
    let o = testbed(cfg.path(), &["runs", "sho", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("show"), "{}", err(&o));
    // `agent` is a command of its own (it runs an agent).
    for args in [["agent", "ls"], ["agent", "list"]] {
        let o = testbed(cfg.path(), &args);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            err(&o).contains("did you mean `testbed agents ls`"),
            "{args:?}: {}",
            err(&o)
        );
    }
}

#[test]
fn help_documents_exit_codes_and_has_no_colour_or_jargon() {
    let cfg = tempfile::tempdir().unwrap();
    let o = testbed(cfg.path(), &["--help"]);
    assert!(o.status.success());
    let help = out(&o);
    for needle in [
        "Exit codes:",
        "  0  ",
        "  1  ",
        "  2  ",
        "completions",
        "man",
    ] {
        assert!(help.contains(needle), "`{needle}` not in --help:\n{help}");
    }
    no_escape_codes("--help", &help);
    for args in [
        vec!["tasks", "show", "--help"],
        vec!["tasks", "ls", "--help"],
        vec!["runs", "logs", "--help"],
        vec!["perf", "run", "--help"],
        vec!["perf", "--help"],
    ] {
        let o = testbed(cfg.path(), &args);
        let help = out(&o);
        assert!(o.status.success(), "{args:?}");
        assert!(!help.to_lowercase().contains("seed-00"), "{args:?}: {help}");
        no_escape_codes(&args.join(" "), &help);
    }
    let help = out(&testbed(cfg.path(), &["tasks", "show", "--help"]));
    assert!(help.contains("unique prefix"), "{help}");
    let help = out(&testbed(cfg.path(), &["tasks", "ls", "--help"]));
    assert!(
        help.contains("Only tasks in this status") && help.contains("JSON array"),
        "{help}"
    );
    // A status that does not exist is named, with the ones that do.
    let o = testbed(cfg.path(), &["runs", "ls", "--status", "done"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("passed"), "{}", err(&o));
    let help = out(&testbed(cfg.path(), &["runs", "logs", "--help"]));
    assert!(
        help.contains("-f, --follow") && help.contains("until the run ends"),
        "{help}"
    );
    // A usage error exits 2, with colour off in a redirected stderr.
    let o = testbed_env(cfg.path(), &["tasks", "ls", "--bogus"], None, &[]);
    assert_eq!(o.status.code(), Some(2));
    no_escape_codes("usage error", &err(&o));
    let o = testbed_env(cfg.path(), &["--bogus"], None, &[("NO_COLOR", "1")]);
    assert_eq!(o.status.code(), Some(2));
    no_escape_codes("usage error with NO_COLOR", &err(&o));
}

#[test]
fn completions_and_man_pages() {
    let cfg = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = testbed(cfg.path(), &["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", err(&o));
        let script = out(&o);
        for sub in ["agents", "runs", "tasks", "login"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let o = testbed(cfg.path(), &["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));

    let o = testbed(cfg.path(), &["man"]);
    assert!(o.status.success(), "{}", err(&o));
    let page = out(&o);
    assert!(
        page.starts_with(".ie") || page.contains(".TH testbed"),
        "{page}"
    );
    for sub in ["agents", "runs", "completions", "Exit codes"] {
        assert!(page.contains(sub), "man page lacks {sub}");
    }
    let mandir = cfg.path().join("man1");
    let o = testbed(cfg.path(), &["man", "--dir", mandir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    for page in [
        "testbed.1",
        "testbed-runs.1",
        "testbed-runs-ls.1",
        "testbed-tasks-show.1",
    ] {
        let text =
            std::fs::read_to_string(mandir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }

    // Printing to a closed pipe: quiet, for client commands (SIGPIPE) …
    let (status, stderr) = with_closed_stdout(cfg.path(), &["completions", "bash"]);
    assert_quiet_pipe_exit("completions bash", status, &stderr);
    // … and for the commands that keep SIGPIPE ignored (they run programs).
    let suite = cfg.path().join("suite.yaml");
    std::fs::write(
        &suite,
        "name: lint me\ntests:\n  - name: ok\n    steps:\n      - exec: {command: [echo, hi]}\n        assert: [{status: 0}]\n",
    )
    .unwrap();
    let (status, stderr) =
        with_closed_stdout(cfg.path(), &["api", "lint", suite.to_str().unwrap()]);
    assert_quiet_pipe_exit("api lint", status, &stderr);
}

#[test]
fn address_in_use_is_said_once_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let store = format!("redb:{}", dir.path().join("s.redb").display());
    let o = testbed_env(
        dir.path(),
        &[
            "server",
            "--listen",
            &addr,
            "--store",
            &store,
            "--blobs",
            dir.path().join("b").to_str().unwrap(),
        ],
        None,
        &[("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.contains(&format!(
            "{addr} is already in use — another Testbed? stop it or pass --listen HOST:PORT"
        )),
        "{e}"
    );
    assert_eq!(e.matches("in use").count(), 1, "said more than once: {e}");
    assert!(!e.contains("os error"), "{e}");
    no_escape_codes("server error", &e);
}

#[test]
fn bad_server_addresses_are_named() {
    let cfg = tempfile::tempdir().unwrap();
    let o = testbed_env(
        cfg.path(),
        &["login", "--server", "ftp://example.org", "--password-stdin"],
        Some("x\n"),
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("--server `ftp://example.org`: the scheme must be http:// or https://"),
        "{}",
        err(&o)
    );
    let o = testbed_env(
        cfg.path(),
        &["agents", "ls"],
        None,
        &[("TESTBED_SERVER", "http://:8774"), ("TESTBED_TOKEN", "t")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("TESTBED_SERVER"), "{}", err(&o));
}

/// `testbed login` at a terminal (a pty from util-linux `script`): the
/// password typed is not echoed.
#[tokio::test]
async fn login_prompt_at_a_terminal_does_not_echo() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &[]).await;
    let cfg = dir.path().join("cfg");
    let cmdline = format!("{} login --server {}", bin().display(), p.url);
    let mut child = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .env("TESTBED_CONFIG_DIR", &cfg)
        .env_remove("TESTBED_TOKEN")
        .env_remove("TESTBED_SERVER")
        .env_remove("TESTBED_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script`");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("password for admin at") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => panic!("no prompt: {}", String::from_utf8_lossy(&seen)),
        }
    }
    // The prompt is printed just before echo is turned off: give the
    // prompt's reader a moment to get there before typing.
    std::thread::sleep(Duration::from_millis(1000));
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "login did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(2)) {
        seen.extend(chunk);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{text}");
    assert!(text.contains("logged in to"), "{text}");
    assert!(
        !text.contains(ADMIN_PASSWORD),
        "the password was echoed: {text}"
    );
}
