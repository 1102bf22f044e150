//! Exec plugins: real executables in a plugin directory.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::{assert_methods, write_script, Harness};
use tempfile::TempDir;
use testbed_agent::plugin::{DynPlugin, PluginError};
use testbed_agent::plugins::exec::{load_dir, ExecPluginError};
use testbed_core::schema::validate;
use testbed_core::task::TaskStatus;

fn echo_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/echo.py")
}

/// A plugin directory holding a copy of `examples/plugins/echo.py`.
fn echo_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    // fs::copy keeps the executable bit.
    std::fs::copy(echo_example(), dir.path().join("echo.py")).unwrap();
    dir
}

async fn load_one(dir: &Path) -> DynPlugin {
    let mut plugins = load_dir(dir).await.unwrap();
    assert_eq!(plugins.len(), 1);
    plugins.remove(0)
}

/// A shell-script plugin called `name` whose describe answer is
/// `describe` and whose invocation runs `invoke`.
fn script_plugin(dir: &Path, file: &str, describe: &str, invoke: &str) -> PathBuf {
    let path = dir.join(file);
    write_script(
        &path,
        &format!(
            "#!/bin/sh\nread -r line\ncase \"$line\" in\n*'\"describe\"'*) cat <<'EOF'\n{describe}\nEOF\n;;\n*) {invoke} ;;\nesac\n"
        ),
    );
    path
}

const SIMPLE: &str = r#"{"name": "shelly", "methods": [{"name": "go", "description": "d", "schema": {"type": "object"}}]}"#;

#[tokio::test]
async fn the_example_describes_itself() {
    let dir = echo_dir();
    // Neither of these is a plugin.
    std::fs::write(dir.path().join("README.md"), "not executable").unwrap();
    write_script(&dir.path().join(".hidden"), "#!/bin/sh\necho garbage\n");
    std::fs::create_dir(dir.path().join("subdir")).unwrap();

    let plugin = load_one(dir.path()).await;
    let spec = plugin.spec();
    assert_eq!(spec.name, "echo");
    assert_methods(&spec, &["echo", "fail"]);
    for m in &spec.methods {
        assert!(!m.description.is_empty());
    }
    let schema = &spec.method("echo").unwrap().schema;
    validate(
        schema,
        &json!({"message": "hi", "repeat": 3}),
        "/parameters",
    )
    .unwrap();
    for bad in [
        json!({}),
        json!({"message": "hi", "repeat": 0}),
        json!({"message": "hi", "repeat": 101}),
    ] {
        assert!(validate(schema, &bad, "/parameters").is_err(), "{bad}");
    }
}

#[tokio::test]
async fn echo_logs_and_returns_its_result() {
    let dir = echo_dir();
    let plugin = load_one(dir.path()).await;
    let mut h = Harness::new();
    let out = plugin
        .invoke("echo", json!({"message": "hello", "repeat": 3}), &h.ctx)
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(out.result, json!({"message": "hello", "repeat": 3}));
    assert_eq!(h.log_text(), "hello\nhello\nhello\n");

    // `repeat` defaults to 1.
    let out = plugin
        .invoke("echo", json!({"message": "once"}), &h.ctx)
        .await
        .unwrap();
    assert_eq!(out.result["repeat"], 1);
}

#[tokio::test]
async fn fail_fails_and_stderr_reaches_the_log() {
    let dir = echo_dir();
    let plugin = load_one(dir.path()).await;
    let mut h = Harness::new();
    let out = plugin.invoke("fail", json!({}), &h.ctx).await.unwrap();
    assert_eq!(out.status, TaskStatus::Failed);
    assert_eq!(out.exit_code, Some(1));
    let log = h.log_text();
    assert!(log.contains("this method always fails\n"), "{log}");
    assert!(log.contains("fail: giving up\n"), "{log}");
}

#[tokio::test]
async fn unknown_methods_are_refused_before_running_anything() {
    let dir = echo_dir();
    let plugin = load_one(dir.path()).await;
    let h = Harness::new();
    let err = plugin.invoke("nope", json!({}), &h.ctx).await.unwrap_err();
    assert!(matches!(err, PluginError::UnknownMethod { .. }), "{err:?}");
}

#[tokio::test]
async fn the_request_carries_task_id_and_work_dir_and_runs_there() {
    let dir = tempfile::tempdir().unwrap();
    // Echoes its request back as the result, from its cwd.
    script_plugin(
        dir.path(),
        "mirror",
        SIMPLE,
        r#"printf '{"log": "cwd=%s"}\n' "$(pwd)"; printf '{"result": %s, "ok": true}\n' "$line""#,
    );
    let plugin = load_one(dir.path()).await;
    let mut h = Harness::new();
    let out = plugin
        .invoke("go", json!({"a": [1, 2]}), &h.ctx)
        .await
        .unwrap();
    assert_eq!(
        out.result,
        json!({
            "op": "invoke",
            "method": "go",
            "params": {"a": [1, 2]},
            "task_id": h.ctx.task_id,
            "work_dir": h.work_dir(),
        })
    );
    assert_eq!(h.log_text(), format!("cwd={}\n", h.work_dir().display()));
}

#[tokio::test]
async fn garbage_on_describe_names_the_file() {
    let dir = echo_dir();
    let bad = dir.path().join("garbage-plugin");
    write_script(&bad, "#!/bin/sh\necho 'this is not json'\n");
    let err = load_dir(dir.path()).await.err().unwrap();
    assert!(matches!(err, ExecPluginError::Invalid { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("garbage-plugin"), "{msg}");
    assert!(msg.contains("this is not json"), "{msg}");
}

#[tokio::test]
async fn invalid_descriptions_are_explained() {
    let cases = [
        (
            r#"{"name": "Bad Name", "methods": [{"name": "m"}]}"#,
            "[a-z0-9_-]+",
        ),
        (r#"{"name": "p", "methods": []}"#, "no methods"),
        (
            r#"{"name": "p", "methods": [{"name": "m", "schema": {"type": "no-such-type"}}]}"#,
            "schema of method `m`",
        ),
        (r#"{"methods": []}"#, "name"),
    ];
    for (describe, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        script_plugin(dir.path(), "p", describe, "exit 0");
        let msg = load_dir(dir.path()).await.err().unwrap().to_string();
        assert!(msg.contains(expected), "{describe}: {msg}");
        assert!(
            msg.contains(dir.path().join("p").to_str().unwrap()),
            "{msg}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    write_script(
        &dir.path().join("silent"),
        "#!/bin/sh\necho 'why' >&2\nexit 5\n",
    );
    let msg = load_dir(dir.path()).await.err().unwrap().to_string();
    assert!(
        msg.contains("printed nothing") && msg.contains("exit status 5"),
        "{msg}"
    );
    assert!(msg.contains("why"), "{msg}");
}

#[tokio::test]
async fn two_plugins_with_one_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    script_plugin(dir.path(), "a", SIMPLE, "exit 0");
    script_plugin(dir.path(), "b", SIMPLE, "exit 0");
    let err = load_dir(dir.path()).await.err().unwrap();
    assert!(
        matches!(err, ExecPluginError::DuplicateName { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_directory_holds_no_plugins() {
    assert!(load_dir(Path::new("/no/such/plugin/dir"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn exiting_without_a_result_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    script_plugin(
        dir.path(),
        "p",
        SIMPLE,
        r#"echo 'plain text'; echo '{"log": "a log line"}'; echo 'to stderr' >&2; exit 3"#,
    );
    let plugin = load_one(dir.path()).await;
    let mut h = Harness::new();
    let err = plugin.invoke("go", json!({}), &h.ctx).await.unwrap_err();
    assert!(matches!(err, PluginError::Failed(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin exited with status 3 without a result"
    );
    let log = h.log_text();
    // Non-protocol output is kept as it is.
    for line in ["plain text\n", "a log line\n", "to stderr\n"] {
        assert!(log.contains(line), "{log}");
    }
}

#[tokio::test]
async fn an_error_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    script_plugin(dir.path(), "p", SIMPLE, r#"echo '{"error": "no can do"}'"#);
    let plugin = load_one(dir.path()).await;
    let h = Harness::new();
    let err = plugin.invoke("go", json!({}), &h.ctx).await.unwrap_err();
    assert_eq!(err.to_string(), "no can do");
}

#[tokio::test]
async fn cancel_kills_an_exec_plugin() {
    let dir = tempfile::tempdir().unwrap();
    script_plugin(
        dir.path(),
        "p",
        SIMPLE,
        r#"echo '{"log": "working"}'; sleep 30; echo '{"result": null}'"#,
    );
    let plugin = load_one(dir.path()).await;
    let mut h = Harness::new();
    let ctx = h.ctx.clone();
    let task = tokio::spawn(async move { plugin.invoke("go", json!({}), &ctx).await });
    h.wait_for_log("working\n").await;
    h.ctx.cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("invoke did not return after cancel")
        .unwrap();
    assert!(matches!(result, Err(PluginError::Cancelled)), "{result:?}");
}
