//! Starting a run and controlling it: [`start`] spawns the engine threads and
//! a coordinator that merges their per-second windows; [`RunHandle`] yields
//! the windows and the final [`LoadReport`]; [`RunControl`] pauses, resumes and
//! stops from anywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ConfigError, LoadError};
use crate::metrics::Window;
use crate::plan::{LoadProfile, Schedule};
use crate::report::{EndReason, LoadReport};
use crate::scenario::CompiledScenario;
use crate::threshold::{self, Threshold};
use crate::worker::{self, WorkerMsg};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for `start_at`.
    Scheduled,
    Running,
    Paused,
    /// Stop requested; the report is being assembled.
    Stopping,
    Finished,
}

/// Options that are about this run rather than the plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Begin load at this wall-clock time (to start several agents
    /// together); windows count from it. Default: now.
    pub start_at: Option<SystemTime>,
}

#[derive(Debug)]
struct Clock {
    paused_total: Duration,
    pause_started: Option<Instant>,
    /// Finished pauses, for marking windows.
    pauses: Vec<(Instant, Instant)>,
}

/// Run state shared by the [`RunControl`], the engine threads and the coordinator.
#[derive(Debug)]
pub(crate) struct Control {
    pub start: Instant,
    pub start_unix_ms: u64,
    paused: AtomicBool,
    stopped: AtomicBool,
    clock: Mutex<Clock>,
    state: watch::Sender<RunState>,
}

impl Control {
    fn new(start: Instant, start_unix_ms: u64, initial: RunState) -> Control {
        Control {
            start,
            start_unix_ms,
            paused: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            clock: Mutex::new(Clock {
                paused_total: Duration::ZERO,
                pause_started: None,
                pauses: Vec::new(),
            }),
            state: watch::Sender::new(initial),
        }
    }

    fn clock(&self) -> MutexGuard<'_, Clock> {
        // A panic while holding this lock leaves consistent data (plain
        // fields), so a poisoned lock is still usable.
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[inline]
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> watch::Receiver<RunState> {
        self.state.subscribe()
    }

    /// Active (unpaused) time since the start at `now`.
    pub fn active_at(&self, now: Instant) -> Duration {
        let c = self.clock();
        let wall = now.saturating_duration_since(self.start);
        let current = c
            .pause_started
            .map(|p| now.saturating_duration_since(p.max(self.start)))
            .unwrap_or_default();
        wall.saturating_sub(c.paused_total + current)
    }

    /// The instant at which `active` seconds of active time are reached,
    /// assuming no further pause.
    pub fn wall_at(&self, active: f64) -> Instant {
        let c = self.clock();
        self.start + Duration::from_secs_f64(active.max(0.0)) + c.paused_total
    }

    /// Whether the run was paused at any moment of `[from, to)`.
    pub fn paused_during(&self, from: Instant, to: Instant) -> bool {
        let c = self.clock();
        if let Some(p) = c.pause_started {
            if p < to {
                return true;
            }
        }
        c.pauses.iter().any(|&(a, b)| a < to && b >= from)
    }

    fn pause(&self) -> bool {
        if self.is_stopped() {
            return false;
        }
        let mut c = self.clock();
        if c.pause_started.is_some() {
            return false;
        }
        c.pause_started = Some(Instant::now());
        self.paused.store(true, Ordering::Relaxed);
        drop(c);
        self.state.send_replace(RunState::Paused);
        true
    }

    fn resume(&self) -> bool {
        if self.is_stopped() {
            return false;
        }
        let mut c = self.clock();
        let Some(p) = c.pause_started.take() else {
            return false;
        };
        let now = Instant::now();
        let p = p.max(self.start);
        if now > p {
            c.paused_total += now - p;
            c.pauses.push((p, now));
        }
        self.paused.store(false, Ordering::Relaxed);
        drop(c);
        self.state.send_replace(RunState::Running);
        true
    }

    fn stop(&self) -> bool {
        if self.stopped.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.state.send_if_modified(|s| {
            if *s == RunState::Finished {
                false
            } else {
                *s = RunState::Stopping;
                true
            }
        });
        true
    }

    pub(crate) fn set_running(&self) {
        self.state.send_if_modified(|s| {
            if *s == RunState::Scheduled {
                *s = RunState::Running;
                true
            } else {
                false
            }
        });
    }
}

/// Pauses, resumes and stops a run; cheap to clone and usable from any
/// thread or runtime.
#[derive(Debug, Clone)]
pub struct RunControl {
    control: Arc<Control>,
}

impl RunControl {
    /// No new requests start until [`resume`](Self::resume); requests in
    /// flight finish. Paused time does not count towards the stages. Returns
    /// false if the run was not running.
    pub fn pause(&self) -> bool {
        self.control.pause()
    }

    /// Continues a paused run where its schedule stood. Returns false if it
    /// was not paused.
    pub fn resume(&self) -> bool {
        self.control.resume()
    }

    /// Ends the run now, aborting requests in flight; the report still
    /// comes. Returns false if already stopping.
    pub fn stop(&self) -> bool {
        self.control.stop()
    }

    pub fn state(&self) -> RunState {
        *self.control.state.borrow()
    }

    /// Follows state changes.
    pub fn watch(&self) -> watch::Receiver<RunState> {
        self.control.subscribe()
    }

    /// Active (unpaused) time so far.
    pub fn elapsed(&self) -> Duration {
        self.control.active_at(Instant::now())
    }
}

/// A started run: per-second windows as they close, then the report.
#[derive(Debug)]
pub struct RunHandle {
    control: RunControl,
    windows: mpsc::UnboundedReceiver<Window>,
    report: oneshot::Receiver<LoadReport>,
    check_names: Vec<String>,
}

impl RunHandle {
    pub fn control(&self) -> RunControl {
        self.control.clone()
    }

    /// Names of the scenario's checks, in the order of [`Window::checks`].
    pub fn check_names(&self) -> &[String] {
        &self.check_names
    }

    /// The next window (merged across this engine's threads, `paused` set);
    /// `None` once the run has ended and every window was delivered.
    pub async fn next_window(&mut self) -> Option<Window> {
        self.windows.recv().await
    }

    /// Waits for the end of the run (windows not yet taken are dropped).
    pub async fn report(self) -> Result<LoadReport, LoadError> {
        self.report.await.map_err(|_| LoadError::Aborted)
    }

    /// [`report`](Self::report) for callers outside an async runtime.
    pub fn blocking_report(self) -> Result<LoadReport, LoadError> {
        self.report.blocking_recv().map_err(|_| LoadError::Aborted)
    }
}

/// Read-only state every engine thread shares.
pub(crate) struct Shared {
    pub plan: LoadProfile,
    pub scenario: CompiledScenario,
    pub schedule: Schedule,
    pub control: Arc<Control>,
    pub workers: usize,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Validates and compiles `plan` and starts it now.
pub fn start(plan: LoadProfile) -> Result<RunHandle, LoadError> {
    start_with(plan, RunOptions::default())
}

/// Like [`start`], with run options (synchronised start).
pub fn start_with(plan: LoadProfile, opts: RunOptions) -> Result<RunHandle, LoadError> {
    plan.validate()?;
    let thresholds: Vec<Threshold> = threshold::parse_all(&plan.thresholds)
        .map_err(|e| ConfigError::single("thresholds", e.to_string()))?;
    let scenario = CompiledScenario::compile(&plan.scenario)?;
    let needs_tls = scenario.requests.iter().any(|r| r.may_use_tls());
    let tls = if needs_tls {
        Some(
            crate::client::tls_config(plan.protocol, plan.insecure)
                .map_err(|e| ConfigError::single("protocol", format!("TLS setup: {e}")))?,
        )
    } else {
        None
    };
    let now_sys = SystemTime::now();
    let now = Instant::now();
    let (start, start_sys) = match opts.start_at {
        Some(at) => match at.duration_since(now_sys) {
            Ok(delay) => (now + delay, at),
            Err(_) => (now, now_sys),
        },
        None => (now, now_sys),
    };
    let start_unix_ms = start_sys
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let initial = if start > now {
        RunState::Scheduled
    } else {
        RunState::Running
    };
    let control = Arc::new(Control::new(start, start_unix_ms, initial));
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let workers = plan
        .workers
        .unwrap_or(cpus)
        .min(plan.max_vus().max(1) as usize)
        .max(1);
    let check_names = scenario.check_names.clone();
    let shared = Arc::new(Shared {
        schedule: Schedule::of(&plan.load),
        plan,
        scenario,
        control: control.clone(),
        workers,
        tls,
    });

    let (msg_tx, msg_rx) = mpsc::unbounded_channel();
    let (win_tx, win_rx) = mpsc::unbounded_channel();
    let (rep_tx, rep_rx) = oneshot::channel();
    for id in 0..workers {
        let shared = shared.clone();
        let tx = msg_tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("load-worker-{id}"))
            .spawn(move || worker::run(id, shared, tx));
        if let Err(e) = spawned {
            control.stop();
            return Err(LoadError::Spawn(e));
        }
    }
    drop(msg_tx);
    let coord_shared = shared.clone();
    thread::Builder::new()
        .name("load-coordinator".into())
        .spawn(move || coordinate(coord_shared, thresholds, msg_rx, win_tx, rep_tx))
        .map_err(|e| {
            control.stop();
            LoadError::Spawn(e)
        })?;
    Ok(RunHandle {
        control: RunControl { control },
        windows: win_rx,
        report: rep_rx,
        check_names,
    })
}

/// Merges the threads' windows second by second, forwards each once every
/// thread is past it, and builds the report when all threads are done.
fn coordinate(
    shared: Arc<Shared>,
    thresholds: Vec<Threshold>,
    mut rx: mpsc::UnboundedReceiver<WorkerMsg>,
    out: mpsc::UnboundedSender<Window>,
    report: oneshot::Sender<LoadReport>,
) {
    let control = &shared.control;
    let n = shared.workers;
    // Per thread: the first window index it may still send.
    let mut next_index = vec![0u64; n];
    let mut pending: std::collections::BTreeMap<u64, Window> = Default::default();
    let mut all: Vec<Window> = Vec::new();
    let mut last_end = control.start;
    let emit = |w: Window, all: &mut Vec<Window>| {
        let mut w = w;
        let from = control.start + Duration::from_secs(w.index);
        let to = from + Duration::from_millis(w.duration_ms);
        w.paused = control.paused_during(from, to);
        let _ = out.send(w.clone());
        all.push(w);
    };
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            WorkerMsg::Window(id, w) => {
                next_index[id] = w.index + 1;
                match pending.get_mut(&w.index) {
                    Some(acc) => acc.merge(&w),
                    None => {
                        pending.insert(w.index, *w);
                    }
                }
            }
            WorkerMsg::Done(id, end) => {
                next_index[id] = u64::MAX;
                last_end = last_end.max(end);
            }
        }
        let ready = next_index.iter().copied().min().unwrap_or(u64::MAX);
        while let Some(entry) = pending.first_entry() {
            if *entry.key() >= ready {
                break;
            }
            emit(entry.remove(), &mut all);
        }
        if ready == u64::MAX {
            break;
        }
    }
    for (_, w) in std::mem::take(&mut pending) {
        emit(w, &mut all);
    }
    let end = if control.is_stopped() {
        EndReason::Stopped
    } else {
        EndReason::Completed
    };
    let active = control.active_at(last_end).as_secs_f64();
    let wall = last_end
        .saturating_duration_since(control.start)
        .as_secs_f64();
    let r = LoadReport::from_windows(
        &all,
        active,
        wall,
        control.start_unix_ms,
        end,
        &thresholds,
        &shared.scenario.check_names,
    );
    control.state.send_replace(RunState::Finished);
    let _ = report.send(r);
}
