//! A task's processes never outlive their agent: `testbed agent` killed
//! with SIGKILL at random points mid-task, leftovers recorded in the state
//! directory reaped at the next start, and tasks fenced when the server has
//! been out of reach for half the lease.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;

/// xorshift64*: random kill points without a dependency; the seed is
/// printed (and taken from TESTBED_TEST_SEED) to replay a failure.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("TESTBED_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("TESTBED_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Pids in process group `pgid` that are still running (zombies aside).
fn group_alive(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

async fn wait_group_gone(pgid: i32, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let alive = group_alive(pgid);
        if alive.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "process group {pgid} still has {alive:?} {within:?} after its agent died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_file(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// `sh -c SCRIPT`, as run_shell parameters.
fn sh(script: &str) -> serde_json::Value {
    json!({"command": "sh", "args": format!("-c '{script}'")})
}

struct Attempt {
    task: String,
    pidfile: PathBuf,
    out: PathBuf,
    pgid: Option<i32>,
}

#[tokio::test]
async fn agent_killed_at_random_points_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &[]).await;
    let state = dir.path().join("agent");
    let mut rng = Rng::new();
    let mut a = agent(&p.url, "crashy", &state, &[]);
    a.wait_line("connected to", Duration::from_secs(30));
    let mut attempts = Vec::new();
    for i in 0..20 {
        let pidfile = dir.path().join(format!("{i}.pid"));
        let out = dir.path().join(format!("{i}.out"));
        // Half the tasks leave the waiting to a background grandchild, so
        // the group outlives the leader's own sleep.
        let script = if i % 2 == 0 {
            format!(
                "echo $$ > {}; sleep 0.6; echo done >> {}",
                pidfile.display(),
                out.display()
            )
        } else {
            format!(
                "echo $$ > {}; sleep 0.7 & sleep 0.1; wait; echo done >> {}",
                pidfile.display(),
                out.display()
            )
        };
        let task = p
            .run("linux_system", "crashy", "run_shell", sh(&script))
            .await;
        // Mostly mid-run; now and then before the process even started.
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
        } else {
            assert!(
                wait_file(&pidfile, Duration::from_secs(10)).await,
                "task {i} never started"
            );
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        }
        a.kill9();
        let pgid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pgid) = pgid {
            wait_group_gone(pgid, Duration::from_secs(2)).await;
        }
        attempts.push(Attempt {
            task,
            pidfile,
            out,
            pgid,
        });
        // The same agent comes back (same state directory, same identity).
        a = agent(&p.url, "crashy", &state, &[]);
        a.wait_line("connected to", Duration::from_secs(30));
    }

    // Past every task's sleep: nothing that was running when its agent died
    // got to finish.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut mid_run = 0;
    for (i, at) in attempts.iter().enumerate() {
        let t = p.wait_task(&at.task, Duration::from_secs(15)).await;
        let written = std::fs::read_to_string(&at.out).unwrap_or_default();
        if let Some(pgid) = at.pgid {
            mid_run += 1;
            assert!(
                group_alive(pgid).is_empty(),
                "task {i}: group {pgid} came back"
            );
            assert_eq!(
                written, "",
                "task {i} finished after its agent was killed: {t}"
            );
            assert_ne!(t["status"], "succeeded", "task {i}: {t}");
        } else {
            // Killed before the task reached a process, or just as it
            // started: whatever started is gone, and the task ran whole and
            // once (on the agent that came back) or not at all.
            if let Some(pgid) = std::fs::read_to_string(&at.pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                assert!(group_alive(pgid).is_empty(), "task {i}: group {pgid} lives");
            }
            assert!(
                written.is_empty() || written == "done\n",
                "task {i}: {written:?}"
            );
            assert_eq!(
                written == "done\n",
                t["status"] == "succeeded",
                "task {i}: {t}"
            );
        }
    }
    eprintln!(
        "{} kills, {mid_run} of them with the task's process running",
        attempts.len()
    );
    assert!(mid_run >= 10, "only {mid_run} kills hit a running task");
}

/// A group record as the agent writes it under `state/groups`.
fn record(pgid: i32, start: u64, boot: &str, owner: (i32, u64)) -> String {
    format!(
        "pgid {pgid}\nstart {start}\nboot {boot}\nowner {} {}\nmark none\n",
        owner.0, owner.1
    )
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    fields[19].parse().unwrap()
}

#[tokio::test]
async fn leftover_groups_recorded_in_the_state_dir_are_reaped_at_start() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::server_in(dir.path(), &[]).await;
    let state = dir.path().join("agent");
    let groups = state.join("groups");
    std::fs::create_dir_all(&groups).unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let boot = boot.trim();
    let spawn = || {
        std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap()
    };
    // The record of `child`'s group as an agent that is gone (the owner:
    // a pid no longer alive) left it.
    let leave_record = |child: &std::process::Child, start: u64, boot: &str| {
        std::fs::write(
            groups.join(format!("{}.group", child.id())),
            record(child.id() as i32, start, boot, (i32::MAX - 1, 1)),
        )
        .unwrap()
    };
    // What a dead agent whose watcher died too would leave behind.
    let mut leftover = spawn();
    leave_record(&leftover, start_time(leftover.id()), boot);
    // A record whose pid now belongs to someone else (another start time)
    // and one from before a reboot: neither may be killed.
    let mut stranger = spawn();
    leave_record(&stranger, start_time(stranger.id()) + 1, boot);
    let mut old_boot = spawn();
    leave_record(&old_boot, start_time(old_boot.id()), "another-boot");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grandchild: Vec<i32> = group_alive(leftover.id() as i32);
    assert_eq!(grandchild.len(), 2, "{grandchild:?}");

    let a = agent(&p.url, "reaper", &state, &[]);
    a.wait_line("left over from an earlier run", Duration::from_secs(30));
    let status = leftover.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    wait_group_gone(leftover.id() as i32, Duration::from_secs(2)).await;
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "a stranger was killed"
    );
    assert!(
        old_boot.try_wait().unwrap().is_none(),
        "a stranger was killed"
    );
    // Forgotten once handled.
    a.wait_line("connected to", Duration::from_secs(30));
    assert!(std::fs::read_dir(&groups).unwrap().next().is_none());
    for mut c in [stranger, old_boot] {
        let _ = std::process::Command::new("kill")
            .args(["-9", "--", &format!("-{}", c.id())])
            .status();
        let _ = c.wait();
    }
}

#[tokio::test]
async fn an_agent_cut_off_from_its_server_kills_its_tasks_within_half_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let store = format!("redb:{}", dir.path().join("s.redb").display());
    let blobs = dir.path().join("blobs");
    let ttl = 4;
    let ttl_arg = ttl.to_string();
    let mut p = Platform::server(&store, &blobs, &listen, &["--lease-ttl", &ttl_arg]).await;
    let _a = agent(&p.url, "fenced", &dir.path().join("agent"), &[]);
    p.wait_agents(1).await;
    let pidfile = dir.path().join("pid");
    let out = dir.path().join("out");
    let script = format!(
        "echo $$ > {}; sleep 6 & sleep 1; wait; echo done >> {}",
        pidfile.display(),
        out.display()
    );
    let task = p
        .run("linux_system", "fenced", "run_shell", sh(&script))
        .await;
    assert!(wait_file(&pidfile, Duration::from_secs(10)).await);
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Still running while the server answers, past the fence's bound.
    tokio::time::sleep(Duration::from_millis(ttl * 1000 / 2 + 500)).await;
    assert!(
        !group_alive(pgid).is_empty(),
        "killed while the server was fine"
    );

    p.proc.kill9();
    // Half the lease, plus the SIGTERM grace, plus slack: well before the
    // lease would run out and the task could be run elsewhere.
    let took = wait_group_gone(pgid, Duration::from_secs(ttl)).await;
    eprintln!("task group gone {took:?} after the server died (lease {ttl} s)");
    assert!(
        took >= Duration::from_millis(ttl * 1000 / 2 - 500),
        "{took:?}"
    );

    // Back up: the agent reports why the task stopped.
    let p2 = Platform::server(&store, &blobs, &listen, &["--lease-ttl", &ttl_arg]).await;
    drop(std::mem::replace(&mut p, p2));
    let t = p.wait_task(&task, Duration::from_secs(30)).await;
    assert_ne!(t["status"], "succeeded", "{t}");
    eprintln!("fenced task ended {} ({})", t["status"], t["error"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!out.exists(), "the fenced task finished anyway");
}
