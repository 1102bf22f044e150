//! docs/plugins.md followed word for word: its worked example's file is
//! `plugin_guide/countdown.rs` (byte for byte the guide's code block), it is
//! registered with the guide's one line in a `builtin_plugins!` table, and
//! a real agent (the agent's runtime, in this process, which is the only way
//! to carry a plugin the `testbed` binary was not built with) serves it to a
//! real `testbed server`, where `testbed exec` runs it as the guide shows —
//! bad parameters included.

use crate::common;

use std::process::Output;

use common::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

// The guide's registration line, in a table of this test's own.
testbed_agent::builtin_plugins! {
    countdown => Countdown,
}

const GUIDE: &str = "docs/plugins.md";

/// The guide's code block that starts with `first_line`.
fn guide_block(first_line: &str) -> String {
    let guide = std::fs::read_to_string(repo_root().join(GUIDE)).expect("docs/plugins.md");
    let start = guide
        .find(&format!("```rust\n{first_line}"))
        .unwrap_or_else(|| panic!("{GUIDE} has no rust block starting with {first_line:?}"));
    let body = &guide[start + "```rust\n".len()..];
    let end = body.find("\n```\n").expect("the block ends");
    body[..=end].to_string()
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_guide_shows_this_plugin_and_this_registration() {
    assert_eq!(
        guide_block("//! `countdown`"),
        include_str!("plugin_guide/countdown.rs"),
        "the worked example in {GUIDE} and tests/plugin_guide/countdown.rs differ"
    );
    let table = guide_block("builtin_plugins! {");
    assert!(
        table.contains("\n    countdown => Countdown,\n"),
        "{GUIDE}'s table lacks the example's line: {table}"
    );
}

/// `testbed ARGS` as the platform's admin. Awaited, not blocking: the
/// agent under test runs on this test's runtime.
async fn testbed(p: &Platform, args: &[&str]) -> Output {
    tokio::process::Command::new(bin())
        .args(args)
        .env("TESTBED_SERVER", &p.url)
        .env("TESTBED_TOKEN", &p.token)
        .output()
        .await
        .expect("testbed runs")
}

/// `testbed exec` of `countdown.count` on the guide's agent.
async fn count(p: &Platform, params: &str) -> Output {
    let args = [
        "exec",
        "--host",
        "guide-1",
        "--plugin",
        "countdown",
        "--method",
        "count",
        "--params",
        params,
    ];
    testbed(p, &args).await
}

#[tokio::test]
async fn the_guides_plugin_runs_on_a_real_agent_and_bad_parameters_are_said_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &[]).await;
    let mut cfg = testbed_agent::AgentConfig::new(&p.url, &p.join_token, "guide-1");
    cfg.state_dir = dir.path().join("agent");
    cfg.plugins = vec!["countdown".into()];
    let agent = testbed_agent::Agent::build_with(cfg, BUILTIN)
        .await
        .expect("the agent builds with the guide's table");
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (agent, stop) = (agent.clone(), stop.clone());
        async move { agent.run(stop).await }
    });
    p.wait_agents(1).await;

    let o = count(&p, r#"{"from": 3, "then": "true"}"#).await;
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out, "3\n2\n1\n", "{err}");
    let o = count(&p, r#"{"from": 2, "then": "false"}"#).await;
    assert_eq!(o.status.code(), Some(1), "a failing `then` fails the task");

    // Refused by the server, before any agent sees them, in words naming
    // the field (the schema the server checks is the one derived from
    // `Count`).
    for (params, words) in [
        (
            r#"{"from": 3, "pause": 5}"#,
            // As docs/plugins.md shows it.
            "error: validation failed: /parameters/pause: unknown parameter `pause` (422)",
        ),
        (
            r#"{"from": "3"}"#,
            "parameter `from`: expected an integer, got a string",
        ),
        (r#"{}"#, "missing parameter `from`"),
        (
            r#"{"from": 0}"#,
            "parameter `from`: 0 is less than the minimum of 1",
        ),
    ] {
        let o = count(&p, params).await;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{params}: {err}");
        assert!(err.contains(words), "{params}: {err}");
    }
    let (s, b) = p
        .post(
            "/v2.1/testcases",
            json!({"plugin": "countdown", "host": "guide-1", "method": "count",
                   "parameters": {"from": 1, "pause": 5}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["details"][0]["field"], "/parameters/pause", "{b}");
    assert_eq!(
        b["details"][0]["message"], "unknown parameter `pause`",
        "{b}"
    );

    stop.cancel();
    running.await.unwrap().unwrap();
}

/// The schemas of the agent's own plugins are derived the same way: a
/// typo in a `run_shell` task, or a wrong type, is named in words.
#[tokio::test]
async fn built_in_plugins_refuse_bad_parameters_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::up(
        &dir.path().join("data"),
        1,
        &["--plugins", "linux_system,noop"],
    )
    .await;
    for (plugin, method, params, field, words) in [
        (
            "noop",
            "sleep",
            json!({"ms": 1, "mss": 2}),
            "/parameters/mss",
            "unknown parameter `mss`",
        ),
        (
            "noop",
            "noop",
            json!({"ms": 0}),
            "/parameters/ms",
            "unknown parameter `ms`",
        ),
        (
            "noop",
            "sleep",
            json!({"ms": "5"}),
            "/parameters/ms",
            "parameter `ms`: expected an integer, got a string",
        ),
        (
            "linux_system",
            "run_shell",
            json!({"args": "-l"}),
            "/parameters/command",
            "missing parameter `command`",
        ),
        (
            "linux_system",
            "run_shell",
            json!({"command": "ls", "env": {"A": 1}}),
            "/parameters/env/A",
            "parameter `env/A`: expected a string, got an integer",
        ),
    ] {
        let (s, b) = p
            .post(
                "/v2.1/testcases",
                json!({"plugin": plugin, "host": "local-1", "method": method, "parameters": params}),
            )
            .await;
        assert_eq!(s, 422, "{params}: {b}");
        assert_eq!(b["details"][0]["field"], field, "{params}: {b}");
        assert_eq!(b["details"][0]["message"], words, "{params}: {b}");
    }
    let o = testbed(
        &p,
        &[
            "exec",
            "--host",
            "local-1",
            "--plugin",
            "noop",
            "--method",
            "noop",
            "--params",
            r#"{"ms": 0}"#,
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown parameter `ms`"), "{err}");
    assert!(!err.contains("False schema"), "{err}");
}
