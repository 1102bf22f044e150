//! Real `sh` processes, each leaving a `sleep` behind in its group, and
//! what is left of the group after each way of stopping it.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use testbed_lifeline::group_members;
use testbed_process::{spawn, Ended, Group, SpawnError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Members of the group that are not zombies (a reparented zombie waits for
/// whoever reaps orphans here, which may be slow or nobody).
fn live_members(pgid: i32) -> Vec<i32> {
    group_members(pgid)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| Some(s[s.rfind(')')? + 2..].starts_with('Z')))
                == Some(false)
        })
        .collect()
}

/// Whether every member is gone; signals take a moment to be delivered, so
/// this waits for it (a generous bound, not a measurement).
fn group_gone(pgid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if live_members(pgid).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `script` under `sh`, once it has printed its first line (so whatever it
/// starts in the background is running).
async fn started(script: &str) -> Group {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    let mut group = spawn(&mut cmd, None).unwrap();
    let out = group.child().stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).await.unwrap();
    assert_eq!(line, "ready\n");
    group
}

const LEAVES_A_SLEEP: &str = "sleep 60 >/dev/null 2>&1 & echo ready; wait";

#[tokio::test]
async fn kill_and_wait_kills_the_whole_group() {
    let mut group = started(LEAVES_A_SLEEP).await;
    let pgid = group.pgid();
    assert_eq!(live_members(pgid).len(), 2, "sh and its sleep");
    let status = group.kill_and_wait().await.unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(group_gone(pgid), "left: {:?}", live_members(pgid));
}

#[tokio::test]
async fn dropping_an_armed_group_kills_it() {
    let group = started(LEAVES_A_SLEEP).await;
    let pgid = group.pgid();
    drop(group);
    assert!(group_gone(pgid), "left: {:?}", live_members(pgid));
}

#[tokio::test]
async fn a_released_group_keeps_what_it_started() {
    let mut group = started("sleep 60 >/dev/null 2>&1 & echo ready").await;
    let pgid = group.pgid();
    assert!(group.wait().await.unwrap().success());
    group.release();
    drop(group);
    let left = live_members(pgid);
    assert_eq!(left.len(), 1, "the background sleep: {left:?}");
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(group_gone(pgid));
}

#[tokio::test]
async fn terminate_kills_what_ignores_sigterm() {
    // Ignoring TERM is inherited by the background sleep too.
    let mut group = started("trap '' TERM; sleep 60 >/dev/null 2>&1 & echo ready; wait").await;
    let pgid = group.pgid();
    let status = group
        .terminate(Duration::from_millis(300), async {})
        .await
        .expect("the leader exits after SIGKILL")
        .unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(group_gone(pgid), "left: {:?}", live_members(pgid));
}

#[tokio::test]
async fn terminate_lets_a_polite_group_exit_by_itself() {
    let mut group = started("trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done").await;
    let status = group
        .terminate(Duration::from_secs(30), async {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

#[tokio::test]
async fn stdin_is_written_and_closed() {
    let mut cmd = Command::new("cat");
    let mut group = spawn(&mut cmd, Some(b"hello\n".to_vec())).unwrap();
    let mut out = String::new();
    let mut stdout = group.child().stdout.take().unwrap();
    stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello\n");
    assert!(group.wait().await.unwrap().success());
}

#[tokio::test]
async fn without_stdin_a_reader_sees_end_of_file() {
    let mut cmd = Command::new("cat");
    let mut group = spawn(&mut cmd, None).unwrap();
    assert!(group.wait().await.unwrap().success());
}

#[tokio::test]
async fn wait_until_stops_at_cancel_or_timeout() {
    let cancel = CancellationToken::new();
    let mut group = started(LEAVES_A_SLEEP).await;
    cancel.cancel();
    assert!(matches!(
        group.wait_until(&cancel, None).await,
        Ended::Cancelled
    ));
    let mut group = started(LEAVES_A_SLEEP).await;
    let pgid = group.pgid();
    let never = CancellationToken::new();
    assert!(matches!(
        group
            .wait_until(&never, Some(Duration::from_millis(50)))
            .await,
        Ended::TimedOut
    ));
    // Waiting killed nothing.
    assert_eq!(live_members(pgid).len(), 2);
    let mut group = started("echo ready; exit 7").await;
    match group
        .wait_until(&never, Some(Duration::from_secs(60)))
        .await
    {
        Ended::Exited(status) => assert_eq!(status.unwrap().code(), Some(7)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let mut cmd = Command::new("/nonexistent/testbed-no-such-program");
    match spawn(&mut cmd, None) {
        Err(SpawnError::Spawn(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started a missing program"),
    }
}
