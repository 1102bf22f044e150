//! Ties a child's process group to the life of the process that started it.
//!
//! A task runs in a process group of its own so that it can be stopped as
//! one. That alone does not stop it when its starter (an agent) dies: the
//! group is re-parented and carries on, so work the server believes lost
//! finishes anyway, and a retry elsewhere runs it a second time.
//!
//! [`Lifeline::attach`] closes that gap for every command that goes through
//! it. Before the command is spawned a pipe is made whose write end only the
//! starter holds. In the child, after it has entered its new group and
//! before it execs, a watcher process is forked off (twice, so the child's
//! own `wait` never sees it); the watcher keeps nothing but the pipe's read
//! end, execs a one-line `/bin/sh` script (so it does not hold a copy of
//! the starter's memory) and blocks reading the pipe. When the starter ends
//! the task normally it writes a line, and the watcher leaves quietly. When the starter dies,
//! whatever killed it (SIGKILL and OOM included), the kernel closes the
//! write end, the watcher reads end-of-file and SIGKILLs the whole group.
//!
//! Nothing in the kernel needs configuring: no cgroups, no subreaper, no
//! privileges. `PR_SET_PDEATHSIG` is not used: it fires when the spawning
//! *thread* exits (a runtime's blocking-pool thread retiring would kill a
//! healthy task) and it reaches only the direct child, not its group.
//!
//! As a second line, each live group is recorded in a small file under a
//! directory given to [`record_in`]; [`reap`] at the next start kills any
//! recorded group that is still there (its watcher was killed too, say).
//!
//! Limits: a process that leaves the group on purpose (`setsid`, `setpgid`)
//! is not followed; the watcher runs with the child's user, so it cannot
//! kill a member that gained other privileges (a set-user-ID program), and
//! a task running as that user can kill its own watcher.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nix::libc;

/// Set in each protected command's environment: it marks the group's
/// processes as ours when [`reap`] finds a group whose leader is gone.
pub const MARK_ENV: &str = "TESTBED_LIFELINE";

/// File name suffix of a group record.
const RECORD_SUFFIX: &str = ".group";

static RECORD_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NEXT_MARK: AtomicU64 = AtomicU64::new(0);

/// A command prepared by [`Lifeline::attach`], not yet spawned.
pub struct Pending {
    read: Option<OwnedFd>,
    write: Option<OwnedFd>,
    mark: String,
}

/// The live link to a spawned group. Dropping it releases the group (the
/// watcher leaves without killing): the starter is alive and has already
/// dealt with the group itself.
pub struct Lifeline {
    write: Option<OwnedFd>,
    pgid: i32,
    record: Option<PathBuf>,
}

impl Lifeline {
    /// Puts `cmd` in a new process group (as `process_group(0)` does) and
    /// arranges for that group to be SIGKILLed when this process dies. Call
    /// [`Pending::started`] with the spawned child.
    pub fn attach(cmd: &mut tokio::process::Command) -> io::Result<Pending> {
        let (read, write) = cloexec_pipe()?;
        let fd = read.as_raw_fd();
        let mark = format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT_MARK.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        cmd.process_group(0).env(MARK_ENV, &mark);
        // SAFETY: the closure only makes async-signal-safe calls (fork,
        // waitpid, setsid, chdir, dup2, close, sigaction, execve, read,
        // kill, _exit) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || start_watcher(fd));
        }
        Ok(Pending {
            read: Some(read),
            write: Some(write),
            mark,
        })
    }

    /// The process group this lifeline guards.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }
}

impl Pending {
    /// Completes the link once the child runs: the read end is closed here
    /// (the watcher holds its own) and the group is recorded on disk.
    /// `pid` is the child's pid, which is also its group id.
    pub fn started(mut self, pid: u32) -> Lifeline {
        self.read = None;
        let pgid = i32::try_from(pid).unwrap_or(0);
        let record = if pgid > 0 {
            write_record(pgid, &self.mark)
        } else {
            None
        };
        Lifeline {
            write: self.write.take(),
            pgid,
            record,
        }
    }
}

impl Drop for Pending {
    // Dropped without `started`: the spawn failed, possibly after the
    // watcher was forked (a program that cannot be executed). Its group is
    // already gone, and the pid may be reused, so the watcher must not kill.
    fn drop(&mut self) {
        release(self.write.take());
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        release(self.write.take());
        if let Some(path) = self.record.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Tells the watcher to leave the group alone. If the byte cannot be
/// written (the watcher is gone already), closing the pipe is all there is
/// left to do.
fn release(write: Option<OwnedFd>) {
    if let Some(fd) = write {
        let _ = fs::File::from(fd).write_all(b"\n");
    }
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills both descriptors on success, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: freshly created and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs in the child between fork and exec, after it entered its group.
fn start_watcher(read_fd: RawFd) -> io::Result<()> {
    // SAFETY (whole function): only async-signal-safe libc calls; the
    // child is single-threaded at this point.
    unsafe {
        let pgid = libc::getpid();
        let mid = libc::fork();
        if mid < 0 {
            return Err(io::Error::last_os_error());
        }
        if mid == 0 {
            // The intermediate: fork the watcher and exit at once, so the
            // watcher is re-parented away from the task and no `wait` in
            // the task ever reaps it.
            let watcher = libc::fork();
            if watcher == 0 {
                watch(read_fd, pgid);
            }
            libc::_exit(if watcher < 0 { 1 } else { 0 });
        }
        let mut status: libc::c_int = 0;
        loop {
            let r = libc::waitpid(mid, &mut status, 0);
            if r == mid {
                break;
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(io::Error::last_os_error());
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            // Without its watcher the task would not die with its starter.
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        Ok(())
    }
}

/// The watcher: waits for the starter's byte or death, then exits, killing
/// the group in the second case. Never returns.
unsafe fn watch(read_fd: RawFd, pgid: libc::pid_t) -> ! {
    // Out of the task's group and session: signals aimed at the group (a
    // cancel's SIGTERM, a terminal's SIGINT) must not take the watcher out
    // before the group is gone.
    libc::setsid();
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE] {
        libc::signal(sig, libc::SIG_IGN);
    }
    // Holding the task's directory would keep its file system busy.
    let _ = libc::chdir(c"/".as_ptr());
    // Keep only the pipe, as stdin: a copy of the task's output pipes (or
    // of another task's lifeline) held here would keep them open.
    if read_fd != 0 && libc::dup2(read_fd, 0) != 0 {
        libc::kill(-pgid, libc::SIGKILL);
        libc::_exit(1);
    }
    close_from(1);
    // Wait in a fresh, small program rather than in this copy of the
    // starter's memory, which the starter's own writes would slowly turn
    // into private pages held here for as long as the task runs.
    let mut target = [0u8; 24];
    let target = negative_decimal(pgid, &mut target);
    let argv: [*const libc::c_char; 6] = [
        c"testbed-lifeline".as_ptr(),
        c"-c".as_ptr(),
        WATCH_SCRIPT.as_ptr(),
        c"testbed-lifeline".as_ptr(),
        target,
        std::ptr::null(),
    ];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), envp.as_ptr());
    // No shell: wait here instead.
    let mut byte = 0u8;
    loop {
        let n = libc::read(0, (&mut byte as *mut u8).cast(), 1);
        if n == 1 {
            libc::_exit(0);
        }
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // End of file: the starter is gone, and with it anyone who could
        // report this group's outcome.
        libc::kill(-pgid, libc::SIGKILL);
        libc::_exit(0);
    }
}

/// What the watcher runs: a line on stdin releases the group, end of file
/// (the starter died) kills it. `$1` is minus the group id.
const WATCH_SCRIPT: &std::ffi::CStr = c"read -r _ || kill -s KILL -- \"$1\"";

/// Writes `-n` (n > 0) as a C string into `buf`, without allocating.
fn negative_decimal(n: libc::pid_t, buf: &mut [u8; 24]) -> *const libc::c_char {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut v = n.unsigned_abs();
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf[0] = b'-';
    for i in 0..len {
        buf[1 + i] = digits[len - 1 - i];
    }
    buf[1 + len] = 0;
    buf.as_ptr().cast()
}

/// Closes every descriptor from `first` up.
unsafe fn close_from(first: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        ) == 0
        {
            return;
        }
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        lim.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        4096
    };
    for fd in first..max {
        libc::close(fd);
    }
}

/// Records groups started from now on in `dir` (created if missing), so
/// that [`reap`] on the same directory after a crash can find them.
///
/// The setting is process-wide: a process running several agents records
/// into the first directory that accepts the file, which the next start of
/// that agent reaps.
pub fn record_in(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut dirs = RECORD_DIRS.lock().unwrap_or_else(|p| p.into_inner());
    if !dirs.iter().any(|d| d == dir) {
        dirs.push(dir.to_path_buf());
    }
    Ok(())
}

fn write_record(pgid: i32, mark: &str) -> Option<PathBuf> {
    let boot = boot_id()?;
    let start = start_time(pgid)?;
    let me = i32::try_from(std::process::id()).ok()?;
    let owner_start = start_time(me)?;
    let body =
        format!("pgid {pgid}\nstart {start}\nboot {boot}\nowner {me} {owner_start}\nmark {mark}\n");
    let dirs = RECORD_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for dir in dirs {
        let path = dir.join(format!("{pgid}{RECORD_SUFFIX}"));
        if fs::write(&path, &body).is_ok() {
            return Some(path);
        }
    }
    None
}

/// A leftover group found and killed by [`reap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub pgid: i32,
}

/// A group record as written by [`Lifeline`]; public so tests (and
/// operators) can write one by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pgid: i32,
    /// The leader's start time, in clock ticks since boot.
    pub start: u64,
    pub boot: String,
    /// The recording process and its start time.
    pub owner: (i32, u64),
    pub mark: String,
}

impl Record {
    pub fn parse(text: &str) -> Option<Record> {
        let mut pgid = None;
        let mut start = None;
        let mut boot = None;
        let mut owner = None;
        let mut mark = None;
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "pgid" => pgid = value.parse().ok(),
                "start" => start = value.parse().ok(),
                "boot" => boot = Some(value.to_string()),
                "owner" => {
                    let (pid, t) = value.split_once(' ')?;
                    owner = Some((pid.parse().ok()?, t.parse().ok()?));
                }
                "mark" => mark = Some(value.to_string()),
                _ => {}
            }
        }
        Some(Record {
            pgid: pgid?,
            start: start?,
            boot: boot?,
            owner: owner?,
            mark: mark?,
        })
    }

    pub fn render(&self) -> String {
        format!(
            "pgid {}\nstart {}\nboot {}\nowner {} {}\nmark {}\n",
            self.pgid, self.start, self.boot, self.owner.0, self.owner.1, self.mark
        )
    }
}

/// Kills the groups recorded in `dir` that outlived their recorder, then
/// forgets them. Records of a process still running (another agent on the
/// same directory, or this one) are left alone, and so is any group that
/// cannot be shown to be the recorded one: its leader must still be the
/// same process (same start time), or a member must carry the group's
/// mark in its environment. A missing directory holds no leftovers.
pub fn reap(dir: &Path) -> io::Result<Vec<Reaped>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let boot = boot_id();
    let mut reaped = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(RECORD_SUFFIX))
        {
            continue;
        }
        let Some(record) = fs::read_to_string(&path)
            .ok()
            .as_deref()
            .and_then(Record::parse)
        else {
            let _ = fs::remove_file(&path);
            continue;
        };
        let (owner, owner_start) = record.owner;
        if boot.as_deref() == Some(record.boot.as_str()) && start_time(owner) == Some(owner_start) {
            continue;
        }
        if boot.as_deref() == Some(record.boot.as_str()) && is_recorded_group(&record) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(record.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
            reaped.push(Reaped { pgid: record.pgid });
        }
        let _ = fs::remove_file(&path);
    }
    Ok(reaped)
}

fn is_recorded_group(record: &Record) -> bool {
    if record.pgid <= 1 {
        return false;
    }
    if start_time(record.pgid) == Some(record.start) {
        return true;
    }
    let needle = format!("{MARK_ENV}={}", record.mark);
    group_members(record.pgid).into_iter().any(|pid| {
        fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
            .unwrap_or(false)
    })
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// A process's start time in clock ticks since boot (field 22 of stat).
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Every process whose group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat_fields(pid)
                .and_then(|f| f.get(2)?.parse::<i32>().ok())
                .is_some_and(|g| g == pgid)
        })
        .collect()
}

/// This boot's identity, so records from before a reboot are dropped.
pub fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_written_negated() {
        for (n, text) in [(1, "-1"), (1234, "-1234"), (i32::MAX, "-2147483647")] {
            let mut buf = [0u8; 24];
            let p = negative_decimal(n, &mut buf);
            // SAFETY: negative_decimal NUL-terminates inside buf.
            let s = unsafe { std::ffi::CStr::from_ptr(p) };
            assert_eq!(s.to_str().unwrap(), text);
        }
    }

    #[test]
    fn records_round_trip() {
        let r = Record {
            pgid: 42,
            start: 7,
            boot: "b".into(),
            owner: (9, 8),
            mark: "m-1".into(),
        };
        assert_eq!(Record::parse(&r.render()), Some(r));
        assert_eq!(Record::parse("pgid x\n"), None);
    }
}
