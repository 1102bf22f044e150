//! A first start as a new user makes it: `testbed up` with no password, a
//! lost password reset with `testbed admin reset-password`, and a first
//! start that cannot bind, all on the real binary.

use crate::common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `testbed up` with no local agents; `password` is TESTBED_ADMIN_PASSWORD.
fn up(dir: &Path, listen: &str, password: Option<&str>) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["up", "--agents", "0", "--listen", listen, "--data-dir"])
        .arg(dir)
        .env_remove("TESTBED_ADMIN_PASSWORD");
    if let Some(p) = password {
        cmd.env("TESTBED_ADMIN_PASSWORD", p);
    }
    cmd
}

fn url_of(p: &Proc) -> String {
    let line = p.wait_line("Testbed is listening on ", Duration::from_secs(60));
    line.rsplit(' ').next().expect("url").trim().to_string()
}

/// Runs `cmd` to its end (killed after 60 s), `stdin` written to it.
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn testbed");
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("testbed did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn reset(dir: &Path, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(["admin", "reset-password", "--data-dir"])
        .arg(dir)
        .env_remove("TESTBED_ADMIN_PASSWORD");
    if stdin.is_some() {
        cmd.arg("--password-stdin");
    }
    run(cmd, stdin)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn login_status(url: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

async fn me_status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{url}/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me")
        .status()
        .as_u16()
}

fn listen() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn a_lost_generated_password_is_reset_and_old_sessions_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testbed-data");

    // First start, no password: one is generated and shown once.
    let mut first = Proc::spawn("up-1", up(&dir, &listen(), None));
    let url = url_of(&first);
    let line = first.wait_line("admin login: admin / ", Duration::from_secs(10));
    let generated = line
        .split("admin / ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("generated password")
        .to_string();
    let old_token = login(&reqwest::Client::new(), &url, "admin", &generated).await;
    assert_eq!(me_status(&url, &old_token).await, 200);

    // redb is locked by the running server: a clear refusal, exit 2.
    let busy = reset(&dir, Some("new-password-1\n"));
    assert_eq!(busy.status.code(), Some(2), "{}", text(&busy));
    let msg = text(&busy);
    assert!(msg.contains("already open"), "{msg}");
    assert!(msg.contains("stop that `testbed up`"), "{msg}");
    assert_eq!(login_status(&url, "new-password-1").await, 401);
    assert!(first.interrupt().success());

    let done = reset(&dir, Some("new-password-1\n"));
    assert!(done.status.success(), "{}", text(&done));
    assert!(
        text(&done).contains("password of `admin` reset"),
        "{}",
        text(&done)
    );

    // The tour's second start sets TESTBED_ADMIN_PASSWORD on the same dir:
    // it cannot apply, and the banner says how to reset.
    let second = Proc::spawn("up-2", up(&dir, &listen(), Some("change-me")));
    let url = url_of(&second);
    let hint = second.wait_line("TESTBED_ADMIN_PASSWORD is ignored", Duration::from_secs(10));
    assert!(
        hint.contains("testbed admin reset-password --data-dir"),
        "{hint}"
    );
    assert_eq!(login_status(&url, "new-password-1").await, 200);
    assert_eq!(login_status(&url, &generated).await, 401);
    assert_eq!(login_status(&url, "change-me").await, 401);
    // The session from before the reset has ended.
    assert_eq!(me_status(&url, &old_token).await, 401);
    drop(second);

    // No password given: one is generated and printed once.
    let done = reset(&dir, None);
    assert!(done.status.success(), "{}", text(&done));
    let out = String::from_utf8_lossy(&done.stdout).to_string();
    let fresh = out
        .lines()
        .find_map(|l| l.split("login: admin / ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated password in {out}"))
        .to_string();
    let third = Proc::spawn("up-3", up(&dir, &listen(), None));
    let url = url_of(&third);
    assert_eq!(login_status(&url, &fresh).await, 200);
    assert_eq!(login_status(&url, "new-password-1").await, 401);
}

#[tokio::test]
async fn a_first_start_that_cannot_bind_creates_no_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testbed-data");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let failed = run(up(&dir, &addr, None), None);
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed));
    let msg = text(&failed);
    assert!(
        msg.contains(&format!("{addr} is already in use")) && msg.contains("--listen"),
        "{msg}"
    );
    assert!(!msg.contains("admin login"), "{msg}");
    drop(taken);

    // The admin was not created, so the password given now is the one set.
    let p = Proc::spawn("up", up(&dir, &listen(), Some("tour-pass-1")));
    let url = url_of(&p);
    p.wait_line(
        "admin login: admin / $TESTBED_ADMIN_PASSWORD",
        Duration::from_secs(10),
    );
    assert_eq!(login_status(&url, "tour-pass-1").await, 200);
}

#[test]
fn reset_refuses_a_dir_without_a_store_and_short_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = reset(&tmp.path().join("nope"), Some("long-enough-1\n"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("no store at"), "{}", text(&missing));
    assert!(!tmp.path().join("nope").exists(), "the store was created");

    std::fs::create_dir(tmp.path().join("d")).unwrap();
    std::fs::write(tmp.path().join("d/testbed.redb"), b"").unwrap();
    let short = reset(&tmp.path().join("d"), Some("short\n"));
    assert_eq!(short.status.code(), Some(2));
    assert!(
        text(&short).contains("at least 8 characters"),
        "{}",
        text(&short)
    );
}
