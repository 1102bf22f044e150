//! `linux_system` with real processes.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{assert_methods, read_pid, wait_gone, Harness};
use testbed_agent::plugin::{Plugin, PluginError, PluginOutput};
use testbed_agent::plugins::linux_system::LinuxSystem;
use testbed_core::schema::validate;
use testbed_core::task::TaskStatus;

const SEED_DESCRIPTION: &str =
    "parameters is dict. command key is linux cmd. args key is parameters of linux cmd";

async fn run_shell(h: &Harness, params: Value) -> Result<PluginOutput, PluginError> {
    LinuxSystem.invoke("run_shell", params, &h.ctx).await
}

#[test]
fn spec_matches_seed_002() {
    let spec = LinuxSystem.spec();
    assert_eq!(spec.name, "linux_system");
    assert_methods(&spec, &["run_shell", "system_information"]);
    assert_eq!(
        spec.method("run_shell").unwrap().description,
        SEED_DESCRIPTION
    );
    // Its own description, not a copy of run_shell's.
    let info = &spec.method("system_information").unwrap().description;
    assert!(info.starts_with("Describe the machine"), "{info}");
}

#[test]
fn run_shell_schema_accepts_the_seed_example_and_names_bad_fields() {
    let spec = LinuxSystem.spec();
    let schema = &spec.method("run_shell").unwrap().schema;
    for ok in [
        json!({"command": "ls", "args": "-alt"}),
        json!({"command": "ls", "args": ["-a", "-l"], "cwd": "x", "env": {"A": "b"},
               "timeout": 1.5, "shell": false, "stdin": "in"}),
    ] {
        validate(schema, &ok, "/parameters").unwrap();
    }
    let cases = [
        (json!({"args": "-alt"}), "/parameters/command"),
        (json!({"command": ""}), "/parameters/command"),
        (
            json!({"command": "ls", "timeout": 0}),
            "/parameters/timeout",
        ),
        (json!({"command": "ls", "args": [1]}), "/parameters/args/0"),
        (json!({"command": "ls", "bogus": true}), "/parameters/bogus"),
    ];
    for (params, field) in cases {
        let errs = validate(schema, &params, "/parameters").unwrap_err();
        assert!(errs.iter().any(|e| e.field == field), "{params}: {errs:?}");
    }
}

#[tokio::test]
async fn ls_alt_lists_the_work_directory() {
    let mut h = Harness::new();
    std::fs::write(h.work_dir().join("hello.txt"), "hi").unwrap();
    let out = run_shell(&h, json!({"command": "ls", "args": "-alt"}))
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.result["exit_code"], 0);
    assert_eq!(out.result["command"], json!(["ls", "-alt"]));
    assert_eq!(out.result["timed_out"], false);
    assert!(out.result["duration_ms"].is_u64());
    let log = h.log_text();
    assert!(log.contains("hello.txt"), "{log}");
    assert!(out.result["stdout_tail"]
        .as_str()
        .unwrap()
        .contains("hello.txt"));
}

#[tokio::test]
async fn args_are_split_like_shell_words() {
    let mut h = Harness::new();
    let out = run_shell(&h, json!({"command": "printf", "args": r#""%s|" "a b" c"#}))
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(h.log_text(), "a b|c|");
    assert_eq!(out.result["command"], json!(["printf", "%s|", "a b", "c"]));
}

#[tokio::test]
async fn args_may_be_an_array() {
    let mut h = Harness::new();
    run_shell(
        &h,
        json!({"command": "printf", "args": ["%s|", "it's", "\"q\""]}),
    )
    .await
    .unwrap();
    assert_eq!(h.log_text(), "it's|\"q\"|");
}

#[tokio::test]
async fn without_shell_mode_nothing_is_interpreted() {
    let mut h = Harness::allowing_shell();
    let out = run_shell(
        &h,
        json!({"command": "echo", "args": "$HOME ; echo injected $(id) `id` > x *"}),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(h.log_text(), "$HOME ; echo injected $(id) `id` > x *\n");
    assert!(!h.work_dir().join("x").exists());
}

#[tokio::test]
async fn shell_mode_is_refused_unless_allowed() {
    let h = Harness::new();
    let err = run_shell(&h, json!({"command": "echo hi", "shell": true}))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("allow_shell"), "{err}");

    let mut h = Harness::allowing_shell();
    let out = run_shell(
        &h,
        json!({"command": "echo $((1 + 2)) | tr 3 x;", "args": "echo second", "shell": true}),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(h.log_text(), "x\nsecond\n");
    assert_eq!(out.result["command"][0], "/bin/sh");
}

#[tokio::test]
async fn non_zero_exit_fails_with_its_code() {
    let mut h = Harness::new();
    let out = run_shell(
        &h,
        json!({"command": "sh", "args": "-c 'echo oops >&2; exit 3'"}),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Failed);
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.result["exit_code"], 3);
    assert_eq!(h.log_text(), "oops\n");
}

#[tokio::test]
async fn a_missing_command_is_named() {
    let h = Harness::new();
    let err = run_shell(&h, json!({"command": "no-such-command-xyz"}))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Failed(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("command not found: no-such-command-xyz"),
        "{err}"
    );
    // A whole command line in `command` gets a hint.
    let err = run_shell(&h, json!({"command": "ls -alt"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`args`"), "{err}");
}

#[tokio::test]
async fn unbalanced_quotes_are_invalid_args() {
    let h = Harness::new();
    let err = run_shell(&h, json!({"command": "echo", "args": "'unterminated"}))
        .await
        .unwrap_err();
    match err {
        PluginError::InvalidParams { field, .. } => assert_eq!(field, "args"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_parameters_name_the_field() {
    let h = Harness::new();
    for (params, field) in [
        (json!({}), "command"),
        (json!({"command": "ls", "timeout": -1}), "timeout"),
        (json!({"command": "ls", "env": {"A": 1}}), "env/A"),
        (json!({"command": "ls", "surprise": 1}), "surprise"),
        (json!("ls"), "parameters"),
    ] {
        match run_shell(&h, params.clone()).await {
            Err(PluginError::InvalidParams { field: f, .. }) => assert_eq!(f, field, "{params}"),
            other => panic!("{params}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn cwd_env_and_stdin() {
    let mut h = Harness::new();
    std::fs::create_dir(h.work_dir().join("sub")).unwrap();
    let out = run_shell(
        &h,
        json!({"command": "sh", "args": ["-c", "pwd; echo \"$NAME\"; cat"],
               "cwd": "sub", "env": {"NAME": "value with spaces"}, "stdin": "fed\n"}),
    )
    .await
    .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(
        h.log_text(),
        format!(
            "{}\nvalue with spaces\nfed\n",
            h.work_dir().join("sub").display()
        )
    );
}

#[tokio::test]
async fn timeout_kills_the_command() {
    let h = Harness::new();
    let started = Instant::now();
    let out = run_shell(
        &h,
        json!({"command": "sleep", "args": "30", "timeout": 0.3}),
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status, TaskStatus::Failed);
    assert_eq!(out.result["timed_out"], true);
    assert_eq!(out.exit_code, None);
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    let h = Harness::allowing_shell();
    let pid_file = h.work_dir().join("grandchild.pid");
    let ctx = h.ctx.clone();
    let params = json!({
        "command": format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display()),
        "shell": true,
    });
    let task = tokio::spawn(async move { LinuxSystem.invoke("run_shell", params, &ctx).await });
    let grandchild = read_pid(&pid_file).await;
    h.ctx.cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run_shell did not return after cancel")
        .unwrap();
    assert!(matches!(result, Err(PluginError::Cancelled)), "{result:?}");
    assert!(
        wait_gone(grandchild).await,
        "grandchild {grandchild} is still running"
    );
}

#[tokio::test]
async fn system_information_describes_the_machine() {
    let mut h = Harness::new();
    let out = LinuxSystem
        .invoke("system_information", json!({}), &h.ctx)
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    let r = &out.result;
    assert!(!r["hostname"].as_str().unwrap().is_empty(), "{r}");
    assert!(r["memory"]["total_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(r["memory"]["used_bytes"].as_u64().is_some(), "{r}");
    assert!(r["cpu"]["count"].as_u64().unwrap() > 0, "{r}");
    assert!(r["load_average"]["one"].as_f64().is_some(), "{r}");
    assert!(r["os"]["kernel_version"].is_string(), "{r}");
    assert!(r.get("command_output").is_none());
    let log = h.log_text();
    assert!(log.contains(r["hostname"].as_str().unwrap()), "{log}");
    assert!(log.contains("memory:"), "{log}");

    // `null` parameters mean none.
    LinuxSystem
        .invoke("system_information", Value::Null, &h.ctx)
        .await
        .unwrap();
}

#[tokio::test]
async fn system_information_can_run_a_command() {
    let mut h = Harness::new();
    let out = LinuxSystem
        .invoke(
            "system_information",
            json!({"command": "echo", "args": "'from the command'"}),
            &h.ctx,
        )
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Succeeded);
    assert_eq!(out.result["command_output"]["exit_code"], 0);
    assert_eq!(
        out.result["command_output"]["stdout_tail"],
        "from the command\n"
    );
    assert!(h.log_text().ends_with("from the command\n"));

    let out = LinuxSystem
        .invoke("system_information", json!({"command": "false"}), &h.ctx)
        .await
        .unwrap();
    assert_eq!(out.status, TaskStatus::Failed);
    assert_eq!(out.exit_code, Some(1));
}

#[tokio::test]
async fn unknown_methods_are_refused() {
    let h = Harness::new();
    let err = LinuxSystem
        .invoke("reboot", json!({}), &h.ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::UnknownMethod { .. }), "{err:?}");
    assert!(err.to_string().contains("run_shell"), "{err}");
}
