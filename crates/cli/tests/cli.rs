//! The client commands, run as a user would: `testbed login`, `agents ls`,
//! `exec`, `tasks`.

use crate::common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn testbed(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("TESTBED_CONFIG_DIR", config)
        .env_remove("TESTBED_TOKEN")
        .env_remove("TESTBED_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn login_list_exec() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(&dir.path().join("data"), 1, &[]).await;
    let cfg = dir.path().join("cfg");

    // Before login: a clear usage error, exit 2.
    let o = testbed(&cfg, &["agents", "ls"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("testbed login"));

    let o = testbed(
        &cfg,
        &["login", "--server", &p.url, "--password-stdin"],
        Some("wrong\n"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong username or password"));
    let o = testbed(
        &cfg,
        &["login", "--server", &p.url, "--password-stdin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = testbed(&cfg, &["agents", "ls"], None);
    assert!(o.status.success());
    let table = text(&o);
    assert!(
        table.contains("local-1") && table.contains("online") && table.contains("linux_system"),
        "{table}"
    );
    let o = testbed(&cfg, &["agents", "ls", "--json"], None);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["name"], "local-1");

    // exec follows the log and exits with the task's code.
    let o = testbed(
        &cfg,
        &[
            "exec",
            "--host",
            "local-1",
            "--",
            "echo",
            "hello world",
            "$HOME",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        text(&o),
        "hello world $HOME\n",
        "arguments are passed verbatim, not through a shell"
    );
    let o = testbed(
        &cfg,
        &[
            "exec",
            "--host",
            "local-1",
            "--",
            "sh",
            "-c",
            "echo bye; exit 3",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(text(&o), "bye\n");
    let o = testbed(&cfg, &["exec", "--host", "nowhere", "--", "true"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no live agent matches host"));

    let o = testbed(&cfg, &["tasks", "ls"], None);
    assert!(text(&o).contains("linux_system.run_shell"));

    // The saved token is the user's alone; logout ends it on the server too.
    use std::os::unix::fs::PermissionsExt;
    let saved = cfg.join("credentials.json");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials readable by others");
    let token: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    let o = testbed(&cfg, &["logout"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!saved.exists());
    let r = p
        .http
        .get(format!("{}/api/auth/me", p.url))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the logged-out token still works");
}

#[tokio::test]
async fn simulated_fleet_registers_and_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &["--lease-ttl", "3"]).await;
    let _fleet = agent(
        &p.url,
        "sim",
        &dir.path().join("sim"),
        &["--simulate", "25"],
    );
    let detail = p.wait_agents(25).await;
    let mut ids: Vec<u64> = detail
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        (1..=25).collect::<Vec<u64>>(),
        "each agent got its own numeric id"
    );
    assert!(detail
        .as_object()
        .unwrap()
        .values()
        .all(|s| s["compute_node_type"] == "noop"));
    // Still all alive after several TTLs: heartbeats keep the leases.
    tokio::time::sleep(Duration::from_secs(7)).await;
    p.wait_agents(25).await;
    // And they run no-op tasks.
    let task = p.run("noop", "sim-7", "noop", serde_json::json!({})).await;
    p.wait_succeeded(&task, Duration::from_secs(10)).await;
}
