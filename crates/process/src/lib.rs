//! A child process in a process group of its own, so that stopping it stops
//! everything it started, not only the direct child.
//!
//! Every program Testbed runs for a user (an agent's task, a TAP script, an
//! API test's `exec` step) is started with [`spawn`], so the same rules hold
//! for all of them:
//!
//! * the child leads a new process group, and that group is tied to this
//!   process's life by a [`Lifeline`]: should the starter die, however it
//!   dies (SIGKILL included), the group is SIGKILLed;
//! * a [`Group`] dropped while still armed (a timed-out or cancelled run, a
//!   future abandoned half-way) SIGKILLs the whole group;
//! * stdout and stderr are pipes, stdin is either a pipe written from a
//!   task of its own (so a child that writes before it reads cannot
//!   deadlock against us) or `/dev/null` (so nothing blocks on input);
//! * once the child has exited by itself, [`Group::release`] leaves what it
//!   started in the background alone: a task may mean to start a daemon.
//!
//! What to do with the output, and how an exit becomes a result, is each
//! caller's business.

use std::future::Future;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use testbed_lifeline::Lifeline;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why [`spawn`] started nothing.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The lifeline's pipe could not be made.
    #[error("preparing the process group: {0}")]
    Prepare(io::Error),
    /// The program could not be started (not found, not executable, ...).
    #[error("{0}")]
    Spawn(io::Error),
    /// Spawned, but already reaped before its pid could be read.
    #[error("the process vanished right after it started")]
    Vanished,
}

/// How [`Group::wait_until`] ended.
#[derive(Debug)]
pub enum Ended {
    /// The child exited (or waiting for it failed).
    Exited(io::Result<ExitStatus>),
    Cancelled,
    TimedOut,
}

/// A running child and its process group.
pub struct Group {
    child: Child,
    pgid: Pid,
    /// Dropped on release: the watcher then leaves without killing.
    lifeline: Option<Lifeline>,
    /// Whether dropping the group kills it.
    armed: bool,
    stdin_writer: Option<JoinHandle<()>>,
}

/// Starts `cmd` as the leader of a new process group tied to this process's
/// life, with stdout and stderr piped. With `stdin`, those bytes are written
/// to the child's stdin, which is then closed; without, stdin is
/// `/dev/null`.
pub fn spawn(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Result<Group, SpawnError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let pending = Lifeline::attach(cmd).map_err(SpawnError::Prepare)?;
    let mut child = cmd.spawn().map_err(SpawnError::Spawn)?;
    let Some(pid) = child.id() else {
        return Err(SpawnError::Vanished);
    };
    let lifeline = pending.started(pid);
    let stdin_writer = match (child.stdin.take(), stdin) {
        // A child may exit without reading its input (EPIPE); that is its
        // business, not an error of ours.
        (Some(mut pipe), Some(bytes)) => Some(tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        })),
        _ => None,
    };
    Ok(Group {
        child,
        // The leader's pid is the group's id.
        pgid: Pid::from_raw(lifeline.pgid()),
        lifeline: Some(lifeline),
        armed: true,
        stdin_writer,
    })
}

impl Group {
    /// The group's id, which is the leader's pid.
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// The leader, for its stdout and stderr pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the leader to exit (members it left behind may live on).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Waits for the leader to exit, for `cancel`, or for `timeout`,
    /// whichever comes first. Nothing is killed here.
    pub async fn wait_until(
        &mut self,
        cancel: &CancellationToken,
        timeout: Option<Duration>,
    ) -> Ended {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        tokio::select! {
            status = self.child.wait() => Ended::Exited(status),
            _ = cancel.cancelled() => Ended::Cancelled,
            _ = sleep_until(deadline), if deadline.is_some() => Ended::TimedOut,
        }
    }

    /// SIGKILLs every member of the group.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// SIGKILLs the group and reaps its leader.
    pub async fn kill_and_wait(&mut self) -> io::Result<ExitStatus> {
        self.kill();
        self.child.wait().await
    }

    /// Stops the group politely: SIGTERM, then up to `grace` for the leader
    /// to exit and for `drained` (say, the output pipes reaching their end),
    /// then SIGKILL for whatever is left. `None` when the leader did not
    /// exit even `grace` after SIGKILL.
    pub async fn terminate(
        &mut self,
        grace: Duration,
        drained: impl Future<Output = ()>,
    ) -> Option<io::Result<ExitStatus>> {
        self.signal(Signal::SIGTERM);
        let all_gone = async {
            let status = self.child.wait().await;
            drained.await;
            status
        };
        let status = tokio::time::timeout(grace, all_gone).await.ok();
        // Whatever is left ignored SIGTERM or let go of the pipes; it goes
        // now. The group id is the leader's pid, reaped moments ago at
        // most, so it cannot have been handed to anyone else yet.
        self.kill();
        match status {
            Some(status) => Some(status),
            None => tokio::time::timeout(grace, self.child.wait()).await.ok(),
        }
    }

    /// The leader exited by itself: what it left behind in the group is
    /// neither killed when this `Group` is dropped nor when this process
    /// dies later.
    pub fn release(&mut self) {
        self.armed = false;
        self.lifeline = None;
    }

    fn signal(&self, signal: Signal) {
        // ESRCH (the group is already gone) is the outcome we want anyway.
        let _ = killpg(self.pgid, signal);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
        // A leftover process that inherited stdin but never reads it would
        // keep the writer blocked for as long as it lives.
        if let Some(writer) = self.stdin_writer.take() {
            writer.abort();
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
