//! The child-process runner, with real processes.

use crate::support;

use std::time::{Duration, Instant};

use support::{read_pid, wait_gone, Harness};
use testbed_agent::plugin::PluginError;
use testbed_agent::process::{
    self, resolve_run_as, CommandSpec, ProcessOutcome, STDOUT_TAIL_BYTES,
};

fn sh(script: &str) -> CommandSpec {
    CommandSpec::new("sh").arg("-c").arg(script)
}

/// Cancels `h`'s task and waits (10 s at most) for `run` to return.
async fn cancel_and_wait<E: std::fmt::Debug>(
    h: &Harness,
    run: tokio::task::JoinHandle<Result<ProcessOutcome, E>>,
) -> ProcessOutcome {
    h.ctx.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run did not return after cancel")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn output_is_streamed_before_the_process_ends() {
    let mut h = Harness::new();
    let ctx = h.ctx.clone();
    // The prompt has no newline: it must still show up while the command
    // is waiting.
    let run = tokio::spawn(async move {
        process::run(sh("echo first; printf 'prompt> '; sleep 30"), &ctx).await
    });
    h.wait_for_log("first\n").await;
    h.wait_for_log("prompt> ").await;
    assert!(!run.is_finished());
    let outcome = cancel_and_wait(&h, run).await;
    assert!(outcome.cancelled);
    assert!(!outcome.success());
}

#[tokio::test]
async fn exit_code_stdout_tail_and_stderr() {
    let mut h = Harness::new();
    let outcome = process::run(sh("echo out; echo err >&2; exit 7"), &h.ctx)
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, Some(7));
    assert_eq!(outcome.signal, None);
    assert_eq!(outcome.stdout_tail, "out\n");
    let log = h.log_text();
    assert!(log.contains("out\n") && log.contains("err\n"), "{log:?}");
}

#[tokio::test]
async fn stdout_tail_is_bounded() {
    let h = Harness::new();
    // 200 000 lines of "x…x" then a marker: far beyond the tail's size.
    let outcome = process::run(
        sh("yes xxxxxxxxxxxxxxxxxxx | head -n 200000; echo END-MARKER"),
        &h.ctx,
    )
    .await
    .unwrap();
    assert!(outcome.success());
    assert!(outcome.stdout_tail.len() <= STDOUT_TAIL_BYTES);
    assert!(outcome.stdout_tail.len() > STDOUT_TAIL_BYTES - 100);
    assert!(outcome.stdout_tail.ends_with("END-MARKER\n"));
}

#[tokio::test]
async fn stdin_cwd_and_env_are_passed() {
    let mut h = Harness::new();
    let sub = h.work_dir().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let outcome = process::run(
        sh("cat; echo \"$GREETING\"; pwd")
            .cwd(&sub)
            .env("GREETING", "hello there")
            .stdin("from stdin\n"),
        &h.ctx,
    )
    .await
    .unwrap();
    assert!(outcome.success());
    let log = h.log_text();
    assert_eq!(
        log,
        format!("from stdin\nhello there\n{}\n", sub.display()),
        "{log:?}"
    );
}

#[tokio::test]
async fn work_dir_is_the_default_cwd() {
    let h = Harness::new();
    let outcome = process::run(CommandSpec::new("pwd"), &h.ctx).await.unwrap();
    assert_eq!(outcome.stdout_tail.trim(), h.work_dir().to_str().unwrap());
}

#[tokio::test]
async fn a_missing_program_is_named() {
    let h = Harness::new();
    let err = process::run(CommandSpec::new("no-such-program-xyz"), &h.ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Failed(_)), "{err:?}");
    assert_eq!(err.to_string(), "command not found: no-such-program-xyz");
}

#[tokio::test]
async fn a_missing_cwd_is_named() {
    let h = Harness::new();
    let err = process::run(CommandSpec::new("true").cwd("/no/such/dir"), &h.ctx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

#[tokio::test]
async fn a_signal_is_reported() {
    let h = Harness::new();
    let outcome = process::run(sh("kill -9 $$"), &h.ctx).await.unwrap();
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.signal, Some(9));
    assert_eq!(outcome.describe(), "killed by signal 9");
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let h = Harness::new();
    let pid_file = h.work_dir().join("bg.pid");
    let started = Instant::now();
    let outcome = process::run(
        sh(&format!(
            "sleep 30 & echo $! > {}; sleep 30",
            pid_file.display()
        ))
        .timeout(Some(Duration::from_millis(500))),
        &h.ctx,
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(outcome.timed_out);
    assert!(!outcome.cancelled);
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.signal, Some(15));
    let pid = read_pid(&pid_file).await;
    assert!(wait_gone(pid).await, "background process {pid} survived");
}

/// Runs `script` (which writes a background process's pid to the file it
/// gets as `{pid_file}`), cancels the task once that pid is there, and
/// checks that the run ended as cancelled, by signal `signal`, and that the
/// background process is gone.
async fn cancel_and_check(script: &str, signal: i32) {
    let h = Harness::new();
    let pid_file = h.work_dir().join("bg.pid");
    let ctx = h.ctx.clone();
    let script = script.replace("{pid_file}", &pid_file.display().to_string());
    let run = tokio::spawn(async move { process::run(sh(&script), &ctx).await });
    let pid = read_pid(&pid_file).await;
    let outcome = cancel_and_wait(&h, run).await;
    assert!(outcome.cancelled);
    assert_eq!(outcome.signal, Some(signal));
    assert!(wait_gone(pid).await, "background process {pid} survived");
}

#[tokio::test]
async fn cancel_kills_a_group_that_ignores_sigterm() {
    // SIGTERM is ignored, so it takes SIGKILL.
    cancel_and_check("trap '' TERM; sleep 30 & echo $! > {pid_file}; wait", 9).await;
}

#[tokio::test]
async fn cancel_kills_a_detached_process_that_ignores_sigterm() {
    // It lets go of the pipes, so nothing shows that it is still there.
    cancel_and_check(
        "(trap '' TERM; exec sleep 30 </dev/null >/dev/null 2>&1) & echo $! > {pid_file}; sleep 30",
        15,
    )
    .await;
}

#[tokio::test]
async fn a_background_process_holding_the_pipes_does_not_hang_the_run() {
    let h = Harness::new();
    let started = Instant::now();
    let outcome = process::run(sh("sleep 30 & echo $!"), &h.ctx)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(outcome.exit_code, Some(0));
    let pid: i32 = outcome.stdout_tail.trim().parse().unwrap();
    // Left running by design; clean up.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
}

#[tokio::test]
async fn already_cancelled_runs_nothing() {
    let h = Harness::new();
    let marker = h.work_dir().join("ran");
    h.ctx.cancel.cancel();
    let outcome = process::run(
        CommandSpec::new("touch").arg(marker.to_str().unwrap()),
        &h.ctx,
    )
    .await
    .unwrap();
    assert!(outcome.cancelled);
    assert!(!marker.exists());
}

#[tokio::test]
async fn lines_mode_hands_stdout_to_the_callback() {
    let mut h = Harness::new();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let outcome = process::run_lines(
        sh("echo one; echo two >&2; printf 'three'"),
        &h.ctx,
        move |l| {
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(l).into_owned())
        },
    )
    .await
    .unwrap();
    assert!(outcome.success());
    assert_eq!(*lines.lock().unwrap(), vec!["one", "three"]);
    assert_eq!(h.log_text(), "two\n");
}

#[test]
fn run_as_is_resolved_from_the_user_database() {
    let root = resolve_run_as("root").unwrap();
    assert_eq!((root.uid, root.gid), (0, 0));
    assert_eq!(root.user, "root");
    let err = resolve_run_as("no-such-user-xyz").unwrap_err();
    assert!(err.contains("no-such-user-xyz"), "{err}");
}

#[tokio::test]
async fn run_as_drops_privileges() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Ok(nobody) = resolve_run_as("nobody") else {
        eprintln!("skipped: no user `nobody`");
        return;
    };
    let h = Harness::with_settings(testbed_agent::plugin::ExecSettings {
        allow_shell: false,
        run_as: Some(nobody.clone()),
    });
    // The temporary directory is private to root; let `nobody` in.
    use std::os::unix::fs::PermissionsExt;
    for dir in [h.tmp.path(), h.work_dir()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let outcome = process::run(sh("id -u; id -G; echo $USER"), &h.ctx)
        .await
        .unwrap();
    assert!(outcome.success(), "{outcome:?}");
    let mut lines = outcome.stdout_tail.lines();
    assert_eq!(lines.next(), Some(nobody.uid.to_string().as_str()));
    // No supplementary group of root's is kept.
    assert_eq!(lines.next(), Some(nobody.gid.to_string().as_str()));
    assert_eq!(lines.next(), Some("nobody"));
}
