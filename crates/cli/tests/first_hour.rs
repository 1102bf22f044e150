//! A new user's first hour with `testbed run` (issue 11): where a plan runs
//! (the logged-in server, or a local platform that says whether it is
//! kept), what the user sees (no server log lines), and how a cancelled or
//! interrupted run ends (`Result: CANCELLED`, exit 2, never PASS).

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, free_port, Platform, Proc, ADMIN_PASSWORD};
use serde_json::Value;

const PLAN: &str = "name: hello\nsteps:\n  - id: greet\n    plugin: linux_system\n    method: run_shell\n    params: {command: sh, args: \"-c 'echo hello-from-plan'\"}\n";
const SLEEPY: &str = "name: sleepy\nsteps:\n  - id: nap\n    plugin: linux_system\n    method: run_shell\n    params: {command: sleep, args: \"60\"}\n";

/// `testbed` as a new user runs it: no server in the environment, no log
/// level asked for, the login file (if any) under `config`.
fn user_cmd(config: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_remove("TESTBED_SERVER")
        .env_remove("TESTBED_TOKEN")
        .env_remove("TESTBED_LOG")
        .env_remove("TESTBED_ADMIN_PASSWORD")
        .env("TESTBED_CONFIG_DIR", config)
        .stdin(Stdio::null());
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Lines that only a server's or agent's log would print.
fn assert_no_server_log(stderr: &str) {
    for needle in [
        " INFO ",
        " WARN ",
        "ROOT",
        "agent connection lost",
        "server listening",
    ] {
        assert!(
            !stderr.contains(needle),
            "server log line ({needle}) in the user's output:\n{stderr}"
        );
    }
}

/// Every output line of `p` until it exits (or `timeout`).
fn drain(p: &Proc, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut all = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.lines.recv_timeout(left) {
            Ok(l) => {
                all.push_str(&l);
                all.push('\n');
            }
            Err(_) => return all,
        }
    }
}

#[test]
fn without_a_login_the_run_is_local_said_so_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let json = dir.path().join("report.json");
    let o = user_cmd(&dir.path().join("config"))
        .arg("run")
        .arg(&plan)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("Result: PASS"), "{out}");
    // Said plainly: where it ran, that it is gone, and how to keep it.
    assert!(err.contains("throwaway local platform"), "{err}");
    assert!(err.contains("--data-dir DIR"), "{err}");
    assert_no_server_log(&err);
    // No id or command that points at a platform that no longer exists.
    assert!(!err.contains("runs show"), "{err}");
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(!report.contains("log_url"), "{report}");
    assert!(!report.contains("127.0.0.1"), "{report}");

    // -v asks for the platform's log.
    let o = user_cmd(&dir.path().join("config"))
        .args(["run", "--local", "-v"])
        .arg(&plan)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("server listening"), "{err}");

    // The modes and exit codes are documented.
    let o = user_cmd(&dir.path().join("config"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let (help, _) = text(&o);
    for needle in [
        "--local",
        "--data-dir",
        "testbed login",
        "Exit codes:",
        "CANCELLED",
    ] {
        assert!(help.contains(needle), "{needle} not in:\n{help}");
    }
}

#[tokio::test]
async fn a_kept_data_dir_reopens_with_up_and_shows_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let data = dir.path().join("data");
    let o = user_cmd(&dir.path().join("config"))
        .arg("run")
        .arg(&plan)
        .arg("--data-dir")
        .arg(&data)
        .env("TESTBED_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("kept in"), "{err}");
    assert!(err.contains("testbed up --data-dir"), "{err}");
    assert_no_server_log(&err);
    // The platform's log went to the data dir instead.
    let log = std::fs::read_to_string(data.join("testbed.log")).unwrap();
    assert!(log.contains("server listening"), "{log}");
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|r| r.split(':').next()))
        .expect("run id line")
        .to_string();
    assert!(err.contains(&format!("testbed runs show {id}")), "{err}");

    // A second run on the same dir needs no password (the admin exists now).
    let o = user_cmd(&dir.path().join("config"))
        .arg("run")
        .arg(&plan)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(!err.contains("password"), "{err}");

    // `testbed up` on it finds both runs, the first one by the printed id.
    let p = Platform::up(&data, 0, &[]).await;
    let (s, runs) = p.get("/api/runs").await;
    assert_eq!(s, 200, "{runs}");
    assert_eq!(runs["total"], 2, "{runs}");
    let (s, run) = p.get(&format!("/api/runs/{id}")).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "passed");
}

#[tokio::test]
async fn logged_in_the_run_goes_to_that_server_and_cancels_say_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let sleepy = dir.path().join("sleepy.yaml");
    std::fs::write(&sleepy, SLEEPY).unwrap();
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;

    // `testbed login`, then `testbed run` with nothing else.
    let mut login = user_cmd(&config)
        .args(["login", "--server", &p.url, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = login.stdin.take().unwrap();
        writeln!(stdin, "{ADMIN_PASSWORD}").unwrap();
    }
    let o = login.wait_with_output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));

    let o = user_cmd(&config).arg("run").arg(&plan).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        err.contains(&format!("running on {} as admin", p.url)),
        "{err}"
    );
    let (_, runs) = p.get("/api/runs").await;
    assert_eq!(runs["total"], 1, "{runs}");
    let id = runs["results"][0]["id"].as_str().unwrap();
    assert!(err.contains(&format!("testbed runs show {id}")), "{err}");

    // Ctrl-C while it runs: the run is cancelled and says so.
    let mut cmd = user_cmd(&config);
    cmd.arg("run").arg(&sleepy);
    let mut run = Proc::spawn("run", cmd);
    let id = wait_running(&p, "sleepy", 1).await;
    let status = run.interrupt();
    let all = drain(&run, Duration::from_secs(5));
    assert_eq!(status.code(), Some(2), "{all}");
    assert!(all.contains("Result: CANCELLED"), "{all}");
    assert!(!all.contains("Result: PASS"), "{all}");
    assert!(!all.contains("All tests successful"), "{all}");
    let (_, r) = p.get(&format!("/api/runs/{id}")).await;
    assert_eq!(r["status"], "cancelled", "{r}");

    // `testbed runs cancel` from elsewhere while the run is followed.
    let mut cmd = user_cmd(&config);
    cmd.arg("run").arg(&sleepy);
    let mut run = Proc::spawn("run", cmd);
    let id = wait_running(&p, "sleepy", 2).await;
    let o = user_cmd(&config)
        .args(["runs", "cancel", &id])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let status = run.wait_exit(Duration::from_secs(30));
    let all = drain(&run, Duration::from_secs(5));
    assert_eq!(status.code(), Some(2), "{all}");
    assert!(all.contains("Result: CANCELLED"), "{all}");
    assert!(!all.contains("Result: PASS"), "{all}");

    // The report the server stored says so too, read later by anyone.
    let (_, r) = p.get(&format!("/api/runs/{id}")).await;
    let report = r["report_id"]
        .as_str()
        .expect("a stored report")
        .to_string();
    let (_, rec) = p.get(&format!("/api/reports/{report}")).await;
    assert_eq!(rec["properties"]["run_status"], "cancelled", "{rec}");
    let (_, list) = p.get("/api/reports").await;
    let listed = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == report.as_str())
        .expect("listed");
    assert_eq!(listed["ok"], false, "a cancelled run is not ok: {listed}");
    let o = user_cmd(&config)
        .args(["report", "show", &report])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(out.contains("Result: CANCELLED"), "{out}\n{err}");
    let o = user_cmd(&config)
        .args(["report", "show", &report, "--format", "html"])
        .output()
        .unwrap();
    let (out, _) = text(&o);
    assert!(
        out.contains("CANCELLED") && !out.contains(">PASS<"),
        "{out}"
    );

    // A saved login whose server is gone: a clear way out, no silent local run.
    std::fs::write(
        config.join("credentials.json"),
        format!(
            "{{\"server\": \"http://127.0.0.1:{}\", \"token\": \"t\"}}",
            free_port()
        ),
    )
    .unwrap();
    let o = user_cmd(&config).arg("run").arg(&plan).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot reach") && err.contains("--local"),
        "{err}"
    );
}

/// Waits until the `n`-th run of `plan` on `p` has a running step; its id.
async fn wait_running(p: &Platform, plan: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, runs) = p.get("/api/runs").await;
        let mine: Vec<&Value> = runs["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["plan_name"] == plan)
            .collect();
        if mine.len() >= n {
            if let Some(r) = mine.iter().find(|r| r["status"] == "running") {
                let id = r["id"].as_str().unwrap().to_string();
                let (_, full) = p.get(&format!("/api/runs/{id}")).await;
                if full["steps"]["nap"]["status"] == "running" {
                    return id;
                }
            }
        }
        assert!(Instant::now() < deadline, "no running {plan} run: {runs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn an_interrupted_local_run_says_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let sleepy = dir.path().join("sleepy.yaml");
    std::fs::write(&sleepy, SLEEPY).unwrap();
    let mut cmd = user_cmd(&dir.path().join("config"));
    cmd.args(["run", "--local"]).arg(&sleepy);
    let mut run = Proc::spawn("run", cmd);
    run.wait_line("run sleepy", Duration::from_secs(60));
    // Let the step start on the local agent.
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM, as a CI runner or `timeout` sends.
    let pid = run.child.as_ref().unwrap().id();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let status = run.wait_exit(Duration::from_secs(30));
    let all = drain(&run, Duration::from_secs(5));
    assert_eq!(status.code(), Some(2), "{all}");
    assert!(all.contains("Result: CANCELLED"), "{all}");
    assert!(!all.contains("Result: PASS"), "{all}");
}

/// `testbed run` labels its local agents as `up` does, and a run whose
/// step waits says why on a non-terminal stderr (a CI log).
#[test]
fn local_agents_take_labels_and_a_waiting_step_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let labelled = dir.path().join("labelled.yaml");
    std::fs::write(
        &labelled,
        "name: labelled\nsteps:\n  - id: greet\n    plugin: linux_system\n    method: run_shell\n    \
         target: {labels: {arch: x86_64}}\n    params: {command: echo, args: on-x86}\n",
    )
    .unwrap();
    let o = user_cmd(&config)
        .args(["run", "--local", "--agent-labels", "arch=x86_64"])
        .arg(&labelled)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");

    // Without the label nothing can match: refused before it waits.
    let o = user_cmd(&config)
        .args(["run", "--local"])
        .arg(&labelled)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("arch=x86_64"), "{err}");

    // A step told to wait says what for, in a log, then gives up.
    let waiting = dir.path().join("waiting.yaml");
    std::fs::write(
        &waiting,
        "name: waiting\nwait_for_agents: true\npending_timeout: 2s\nsteps:\n  - id: greet\n    \
         plugin: linux_system\n    method: run_shell\n    target: {labels: {arch: sparc}}\n    \
         params: {command: echo, args: never}\n",
    )
    .unwrap();
    let o = user_cmd(&config)
        .args(["run", "--local"])
        .arg(&waiting)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        err.contains("… greet pending") && err.contains("arch=sparc"),
        "the wait is shown: {err}"
    );
    assert!(!err.contains("pending pending"), "{err}");
}
