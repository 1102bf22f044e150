//! A starter process (this test binary, re-run in a "starter" role) spawns
//! a group through a lifeline; the test then kills the starter and looks at
//! what is left of the group.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed_lifeline::{group_members, reap, record_in, Lifeline, Record};

const ROLE: &str = "LIFELINE_TEST_ROLE";

/// Not a test of its own: the body of the starter process.
#[test]
fn starter_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let script = std::env::var("LIFELINE_TEST_SCRIPT").unwrap();
    let records = std::env::var("LIFELINE_TEST_RECORDS").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        record_in(Path::new(&records)).unwrap();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(&script).stdout(Stdio::null());
        let pending = Lifeline::attach(&mut cmd).unwrap();
        let mut child = cmd.spawn().unwrap();
        let lifeline = pending.started(child.id().unwrap());
        println!("pgid {}", lifeline.pgid());
        if role == "release" {
            // The task ends normally; what it left behind is not killed
            // when the starter dies later.
            let _ = child.wait().await;
            drop(lifeline);
            println!("released");
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

struct Starter {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pgid: i32,
}

fn start(role: &str, script: &str, records: &Path) -> Starter {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "starter_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("LIFELINE_TEST_SCRIPT", script)
        .env("LIFELINE_TEST_RECORDS", records)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pgid = loop {
        let line = lines.next().expect("starter said nothing").unwrap();
        // libtest may have started the line ("test starter_role ... ").
        if let Some((_, n)) = line.split_once("pgid ") {
            break n.trim().parse().unwrap();
        }
    };
    Starter { child, lines, pgid }
}

/// Members of `pgid` that are not zombies.
fn alive(pgid: i32) -> Vec<i32> {
    group_members(pgid)
        .into_iter()
        .filter(|pid| {
            !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        })
        .collect()
}

/// Watchers guarding `pgid` (their command line ends in `-PGID`).
fn watchers(pgid: i32) -> Vec<i32> {
    let tail = format!("\0-{pgid}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.starts_with(b"testbed-lifeline\0") && c.ends_with(tail.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn wait_gone(pgid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while !alive(pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "group {pgid} still has {:?}",
            alive(pgid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_group_dies_with_its_starter_even_by_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!("sleep 1 & sleep 1; wait; echo done >> {}", out.display());
    let mut s = start("hold", &script, &dir.path().join("groups"));
    assert!(!alive(s.pgid).is_empty());
    // The record names the group while it runs.
    let record = std::fs::read_to_string(dir.path().join(format!("groups/{}.group", s.pgid)))
        .expect("group recorded");
    assert_eq!(Record::parse(&record).unwrap().pgid, s.pgid);
    // One small watcher, outside the group. It holds the pipe from its
    // fork on; its exec (which gives it the name looked for) may lag on a
    // loaded machine, so it is waited for.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut w = watchers(s.pgid);
    while w.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        w = watchers(s.pgid);
    }
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(!group_members(s.pgid).contains(&w[0]));

    s.child.kill().unwrap();
    s.child.wait().unwrap();
    wait_gone(s.pgid, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!out.exists(), "the task finished after its starter died");
}

#[test]
fn a_released_group_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("daemon.pid");
    // The leader exits at once, leaving a "daemon" in the group.
    let script = format!("sleep 30 & echo $! > {}", pidfile.display());
    let groups = dir.path().join("groups");
    let mut s = start("release", &script, &groups);
    loop {
        let line = s.lines.next().unwrap().unwrap();
        if line.contains("released") {
            break;
        }
    }
    assert!(
        std::fs::read_dir(&groups).unwrap().next().is_none(),
        "the record outlived the release"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !watchers(s.pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the watcher stayed after the release"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let daemon: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(alive(s.pgid), vec![daemon]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn reap_kills_recorded_leftovers_and_spares_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let groups = dir.path().join("groups");
    std::fs::create_dir_all(&groups).unwrap();
    // Two groups of our own making, as a dead agent would leave them.
    let spawn = || {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let mut leftover = spawn();
    let mut stranger = spawn();
    let boot = testbed_lifeline::boot_id().unwrap();
    let dead_owner = (i32::MAX - 1, 1);
    let write = |child: &std::process::Child, start: u64| {
        let pgid = child.id() as i32;
        let r = Record {
            pgid,
            start,
            boot: boot.clone(),
            owner: dead_owner,
            mark: "none".into(),
        };
        std::fs::write(groups.join(format!("{pgid}.group")), r.render()).unwrap();
    };
    write(
        &leftover,
        testbed_lifeline::start_time(leftover.id() as i32).unwrap(),
    );
    // The stranger has the recorded pgid but another start time: a reused
    // id, not ours.
    write(
        &stranger,
        testbed_lifeline::start_time(stranger.id() as i32).unwrap() + 1,
    );

    let reaped = reap(&groups).unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!(reaped[0].pgid, leftover.id() as i32);
    let status = leftover.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "a stranger was killed"
    );
    assert!(std::fs::read_dir(&groups).unwrap().next().is_none());
    stranger.kill().unwrap();
    let _ = stranger.wait();
}
