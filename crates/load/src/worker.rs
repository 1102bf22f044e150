//! One engine thread: a single-threaded tokio runtime running its share of
//! the virtual users (closed model) or of the arrival rate (open model),
//! recording into a thread-local window that is handed to the coordinator
//! each second. Sharing nothing on the hot path is what keeps per-request
//! metrics cheap: no atomics, no locks, no task migration.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use crate::client::{self, Conn, Failure};
use crate::engine::{Control, Shared};
use crate::metrics::{ErrorKind, LocalWindow, Window};
use crate::plan::{share, Load, Order, ThinkTime};
use crate::scenario::{CompiledRequest, Origin};

pub(crate) enum WorkerMsg {
    Window(usize, Box<Window>),
    /// The thread finished at this instant.
    Done(usize, Instant),
}

/// Lateness of an open-model arrival below this is the timer's resolution
/// (tokio timers tick in milliseconds), not queueing: latency then counts
/// from the actual start, so the engine does not charge its own timer
/// granularity to the target.
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// How often the closed model re-reads its stage targets.
const SCHEDULE_TICK: Duration = Duration::from_millis(20);
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long requests still waiting for an answer when the schedule ends may
/// take to finish before they are cut (at most the request timeout): enough
/// for a healthy target's last answers, short enough that a stalled target
/// cannot stretch the run.
const FINISH_GRACE: Duration = Duration::from_millis(250);

struct Worker {
    id: usize,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<WorkerMsg>,
    window: RefCell<LocalWindow>,
    window_end: Cell<Instant>,
    /// Virtual users reported in windows.
    vus: Cell<u64>,
    /// Closed model: users with an id below this run.
    target: Cell<u64>,
    target_changed: Notify,
    /// The schedule is over: finish the current iteration and stop.
    ending: Cell<bool>,
    end_notify: Notify,
    dns: RefCell<HashMap<Origin, Arc<Vec<SocketAddr>>>>,
    row_counter: Cell<u64>,
    /// Requests started and not yet answered or failed.
    in_flight: Cell<u64>,
}

/// Runs engine thread `id` to the end of the plan or a stop.
pub(crate) fn run(id: usize, shared: Arc<Shared>, tx: mpsc::UnboundedSender<WorkerMsg>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("load worker {id}: cannot build a runtime: {e}");
            let _ = tx.send(WorkerMsg::Done(id, Instant::now()));
            return;
        }
    };
    let n_checks = shared.scenario.check_names.len();
    let start = shared.control.start;
    let w = Rc::new(Worker {
        id,
        tx: tx.clone(),
        window: RefCell::new(LocalWindow::new(0, n_checks)),
        window_end: Cell::new(start + Duration::from_secs(1)),
        vus: Cell::new(0),
        target: Cell::new(0),
        target_changed: Notify::new(),
        ending: Cell::new(false),
        end_notify: Notify::new(),
        dns: RefCell::new(HashMap::new()),
        row_counter: Cell::new(0),
        in_flight: Cell::new(0),
        shared,
    });
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, main(w.clone()));
    {
        // Dropping the tasks closes their sockets, which needs the runtime.
        let _guard = rt.enter();
        drop(local);
    }
    let end = Instant::now();
    w.flush_final(end);
    let _ = tx.send(WorkerMsg::Done(id, end));
}

async fn main(w: Rc<Worker>) {
    let control = w.shared.control.clone();
    let mut state = control.subscribe();
    if Instant::now() < control.start {
        tokio::select! {
            _ = tokio::time::sleep_until(control.start.into()) => {}
            _ = stopped(&control, &mut state) => return,
        }
        control.set_running();
    }
    tokio::task::spawn_local(ticker(w.clone()));
    let load = async {
        match w.shared.plan.load {
            Load::Closed { .. } => closed(w.clone()).await,
            Load::Open { .. } => open(w.clone()).await,
        }
    };
    tokio::select! {
        _ = load => {}
        _ = stopped(&control, &mut state) => {}
    }
}

async fn stopped(control: &Control, state: &mut tokio::sync::watch::Receiver<crate::RunState>) {
    while !control.is_stopped() {
        if state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits while the run is paused (returns at once if it is not).
async fn unpaused(control: &Control, state: &mut tokio::sync::watch::Receiver<crate::RunState>) {
    while control.is_paused() && !control.is_stopped() {
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Waits out a pause: true once the run goes on, false once it is stopped
/// (paused or not) — the first thing each turn of a scheduling loop asks.
async fn running(
    control: &Control,
    state: &mut tokio::sync::watch::Receiver<crate::RunState>,
) -> bool {
    loop {
        if control.is_stopped() {
            return false;
        }
        if !control.is_paused() {
            return true;
        }
        unpaused(control, state).await;
    }
}

/// Closes a window each second even when nothing completes.
async fn ticker(w: Rc<Worker>) {
    loop {
        tokio::time::sleep_until(w.window_end.get().into()).await;
        w.rotate(Instant::now());
    }
}

impl Worker {
    fn control(&self) -> &Control {
        &self.shared.control
    }

    fn rotate(&self, now: Instant) {
        let start = self.control().start;
        let idx = now.saturating_duration_since(start).as_secs();
        if idx <= self.window.borrow().index {
            return;
        }
        let n_checks = self.shared.scenario.check_names.len();
        let mut fresh = LocalWindow::new(idx, n_checks);
        fresh.vus = self.vus.get();
        let mut old = self.window.replace(fresh);
        old.in_flight = self.in_flight.get();
        self.window_end.set(start + Duration::from_secs(idx + 1));
        self.send(old, 1000);
    }

    fn send(&self, lw: LocalWindow, duration_ms: u64) {
        let ts = (self.control().start_unix_ms + lw.index * 1000) / 1000;
        let w = lw.into_window(ts, duration_ms);
        let _ = self.tx.send(WorkerMsg::Window(self.id, Box::new(w)));
    }

    fn flush_final(&self, end: Instant) {
        let n_checks = self.shared.scenario.check_names.len();
        let lw = self.window.replace(LocalWindow::new(u64::MAX, n_checks));
        let from = self.control().start + Duration::from_secs(lw.index);
        let ms = end.saturating_duration_since(from).as_millis().min(1000) as u64;
        self.send(lw, ms);
    }

    /// Runs `f` on the window that `now` falls in.
    #[inline]
    fn record<R>(&self, now: Instant, f: impl FnOnce(&mut LocalWindow) -> R) -> R {
        if now >= self.window_end.get() {
            self.rotate(now);
        }
        f(&mut self.window.borrow_mut())
    }

    fn record_failure(&self, now: Instant, kind: ErrorKind, bytes: (u64, u64)) {
        self.record(now, |win| {
            win.requests += 1;
            win.record_error(kind);
            win.bytes_in += bytes.0;
            win.bytes_out += bytes.1;
        });
    }

    fn set_vus(&self, n: u64) {
        self.vus.set(n);
        let mut win = self.window.borrow_mut();
        win.vus = win.vus.max(n);
    }

    fn next_row(&self) -> &[String] {
        let rows = &self.shared.scenario.data.rows;
        if rows.is_empty() {
            return &[];
        }
        let n = self.row_counter.get();
        self.row_counter.set(n + 1);
        let idx = (n * self.shared.workers as u64 + self.id as u64) % rows.len() as u64;
        &rows[idx as usize]
    }

    async fn resolve(&self, origin: &Origin) -> Result<Arc<Vec<SocketAddr>>, ErrorKind> {
        if let Some(a) = self.dns.borrow().get(origin) {
            return Ok(a.clone());
        }
        let addrs: Vec<SocketAddr> = match origin.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, origin.port)],
            // A resolver that does not answer is a failed lookup too, and
            // must not hold the user past its request timeout.
            Err(_) => tokio::time::timeout(
                self.shared.plan.request_timeout,
                tokio::net::lookup_host((origin.host.as_str(), origin.port)),
            )
            .await
            .map_err(|_| ErrorKind::UnknownHost)?
            .map_err(|_| ErrorKind::UnknownHost)?
            .collect(),
        };
        if addrs.is_empty() {
            return Err(ErrorKind::UnknownHost);
        }
        let addrs = Arc::new(addrs);
        self.dns.borrow_mut().insert(origin.clone(), addrs.clone());
        Ok(addrs)
    }

    /// Sleeps `d` unless the run ends first.
    async fn nap(&self, d: Duration) {
        if self.ending.get() || self.control().is_stopped() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.end_notify.notified() => {}
        }
    }

    /// Ends the schedule: users finish their current request within
    /// [`FINISH_GRACE`]; the requests still unanswered then are cut (counted
    /// by their [`Flight`] guards as the tasks are dropped).
    async fn finish(&self, mut set: JoinSet<()>) {
        self.ending.set(true);
        self.target_changed.notify_waiters();
        self.end_notify.notify_waiters();
        let grace = FINISH_GRACE.min(self.shared.plan.request_timeout);
        let _ =
            tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
    }
}

/// One request in flight. Dropped before [`Flight::landed`] (its user's task
/// dropped because the run ended), it counts the request as cut.
struct Flight<'a> {
    w: &'a Worker,
    landed: bool,
}

impl<'a> Flight<'a> {
    fn start(w: &'a Worker) -> Flight<'a> {
        w.in_flight.set(w.in_flight.get() + 1);
        Flight { w, landed: false }
    }

    /// The request ended with an answer or an error of its own.
    fn landed(mut self) {
        self.landed = true;
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let w = self.w;
        w.in_flight.set(w.in_flight.get().saturating_sub(1));
        if !self.landed {
            w.record(Instant::now(), |win| win.cut += 1);
        }
    }
}

/// xorshift64*: plenty for picking requests and think times.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// One virtual user: its connections, random state and buffers, reused for
/// every request so the steady state allocates little.
struct Vu {
    conns: Vec<Conn>,
    rng: Rng,
    body: Vec<u8>,
    scratch: Vec<u8>,
    checks: Vec<bool>,
    backoff: Duration,
    /// Request deadline timer, re-armed only when it fires early.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Vu {
    fn new(w: &Worker, id: u64) -> Vu {
        let seed = (w.id as u64) << 32 ^ id ^ (w.control().start_unix_ms << 8);
        Vu {
            conns: Vec::new(),
            rng: Rng::new(seed),
            body: Vec::new(),
            scratch: Vec::new(),
            checks: Vec::new(),
            backoff: Duration::ZERO,
            timer: Box::pin(tokio::time::sleep_until(
                (Instant::now() + w.shared.plan.request_timeout).into(),
            )),
        }
    }

    async fn iteration(&mut self, w: &Worker, intended: Option<Instant>) {
        let sc = &w.shared.scenario;
        let row = w.next_row();
        match sc.order {
            Order::Weighted => {
                let i = if sc.requests.len() == 1 {
                    0
                } else {
                    sc.pick(self.rng.next())
                };
                self.request(w, &sc.requests[i], row, intended).await;
                self.think(w).await;
            }
            Order::Sequence => {
                for (n, r) in sc.requests.iter().enumerate() {
                    if n > 0 && (w.ending.get() || w.control().is_stopped()) {
                        break;
                    }
                    self.request(w, r, row, if n == 0 { intended } else { None })
                        .await;
                    self.think(w).await;
                }
            }
        }
        w.record(Instant::now(), |win| win.iterations += 1);
    }

    async fn think(&mut self, w: &Worker) {
        let d = match w.shared.plan.scenario.think_time {
            None => return,
            Some(ThinkTime::Fixed(d)) => d,
            Some(ThinkTime::Range { min, max }) => {
                let span = (max - min).as_micros() as u64;
                let extra = if span == 0 { 0 } else { self.rng.next() % span };
                min + Duration::from_micros(extra)
            }
        };
        w.nap(d).await;
    }

    async fn backoff(&mut self, w: &Worker) {
        self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        w.nap(self.backoff).await;
    }

    /// The index of a live connection to `origin`, connecting if needed.
    async fn conn_for(&mut self, w: &Worker, origin: &Arc<Origin>) -> Result<usize, ErrorKind> {
        self.conns.retain(|c| !c.is_dead());
        if let Some(i) = self.conns.iter().position(|c| *c.origin == **origin) {
            return Ok(i);
        }
        let addrs = w.resolve(origin).await?;
        let sh = &w.shared;
        let conn = tokio::time::timeout(
            sh.plan.request_timeout,
            client::connect(origin.clone(), &addrs, sh.tls.as_ref(), sh.plan.protocol),
        )
        .await
        .map_err(|_| ErrorKind::Timeout)??;
        self.conns.push(conn);
        Ok(self.conns.len() - 1)
    }

    async fn request(
        &mut self,
        w: &Worker,
        req: &CompiledRequest,
        row: &[String],
        mut intended: Option<Instant>,
    ) {
        let control = w.control();
        if control.is_paused() {
            let mut state = control.subscribe();
            unpaused(control, &mut state).await;
            // The schedule resumed later than planned; time from now.
            intended = None;
        }
        if control.is_stopped() {
            return;
        }
        let built = match req.prepare(row) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!("request not built: {e}");
                w.record_failure(Instant::now(), ErrorKind::Connection, (0, 0));
                return;
            }
        };
        let mut retried = false;
        let flight = Flight::start(w);
        let (status, t0, t1, bytes) = loop {
            let ci = match self.conn_for(w, &built.target.origin).await {
                Ok(i) => i,
                Err(kind) => {
                    flight.landed();
                    w.record_failure(Instant::now(), kind, (0, 0));
                    self.backoff(w).await;
                    return;
                }
            };
            let Vu {
                conns,
                body,
                scratch,
                timer,
                ..
            } = self;
            let conn = &mut conns[ci];
            let (in0, out0) = conn.bytes();
            let sent = Instant::now();
            let t0 = intended.unwrap_or(sent);
            let deadline = sent + w.shared.plan.request_timeout;
            let exchange = conn.exchange(req, &built, req.needs_body, body, scratch);
            let res = with_deadline(timer.as_mut(), deadline, exchange).await;
            let t1 = Instant::now();
            let (in1, out1) = conn.bytes();
            let bytes = (in1 - in0, out1 - out0);
            match res {
                Ok(Ok(status)) => break (status, t0, t1, bytes),
                Ok(Err(Failure::Stale)) if !retried => {
                    self.conns.swap_remove(ci);
                    retried = true;
                }
                Ok(Err(Failure::Stale)) => {
                    flight.landed();
                    self.conns.swap_remove(ci);
                    w.record_failure(t1, ErrorKind::Connection, bytes);
                    return;
                }
                Ok(Err(Failure::Failed(kind))) => {
                    flight.landed();
                    self.conns.swap_remove(ci);
                    w.record_failure(t1, kind, bytes);
                    return;
                }
                Err(TimedOut) => {
                    flight.landed();
                    self.conns.swap_remove(ci);
                    w.record_failure(t1, ErrorKind::Timeout, bytes);
                    return;
                }
            }
        };
        flight.landed();
        self.backoff = Duration::ZERO;
        self.checks.clear();
        if !req.checks.is_empty() {
            let mut json = None;
            for c in &req.checks {
                self.checks.push(c.eval(status, &self.body, &mut json));
            }
        }
        let error = if status >= 400 {
            Some(ErrorKind::Http(status))
        } else if self.checks.iter().any(|ok| !ok) {
            Some(ErrorKind::CheckFailed)
        } else {
            None
        };
        let latency = t1.saturating_duration_since(t0).as_micros() as u64;
        let checks = &self.checks;
        w.record(t1, |win| {
            win.requests += 1;
            win.bytes_in += bytes.0;
            win.bytes_out += bytes.1;
            win.latency.saturating_record(latency);
            win.record_status(status);
            if let Some(k) = error {
                win.record_error(k);
            }
            for (j, ok) in checks.iter().enumerate() {
                if let Some(c) = win.checks.get_mut(req.check_base + j) {
                    if *ok {
                        c.passed += 1;
                    } else {
                        c.failed += 1;
                    }
                }
            }
        });
    }
}

struct TimedOut;

/// Runs `fut` until `deadline`. `timer` is reused across requests: while its
/// own deadline is no later than `deadline` it is left armed (re-registering
/// a timer per request costs more than the rest of the client), and when it
/// fires before `deadline` it is moved there.
async fn with_deadline<F: Future>(
    mut timer: Pin<&mut tokio::time::Sleep>,
    deadline: Instant,
    fut: F,
) -> Result<F::Output, TimedOut> {
    if timer.deadline() > deadline.into() {
        timer.as_mut().reset(deadline.into());
    }
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(TimedOut));
            }
            timer.as_mut().reset(deadline.into());
        }
        Poll::Pending
    })
    .await
}

/// Closed model: keeps this thread's share of the stage target running.
async fn closed(w: Rc<Worker>) {
    let control = w.shared.control.clone();
    let total = w.shared.schedule.total();
    let mut set = JoinSet::new();
    let mut spawned = 0u64;
    let mut state = control.subscribe();
    loop {
        if !running(&control, &mut state).await {
            return;
        }
        let t = control.active_at(Instant::now()).as_secs_f64();
        if t >= total {
            break;
        }
        let global = w.shared.schedule.at(t).round() as u64;
        let mine = share(global, w.id, w.shared.workers);
        while spawned < mine {
            set.spawn_local(closed_vu(w.clone(), spawned));
            spawned += 1;
        }
        if w.target.replace(mine) < mine {
            w.target_changed.notify_waiters();
        }
        w.set_vus(mine);
        let nap = Duration::from_secs_f64((total - t).max(0.001)).min(SCHEDULE_TICK);
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = state.changed() => {}
        }
    }
    w.set_vus(0);
    w.finish(set).await;
}

async fn closed_vu(w: Rc<Worker>, id: u64) {
    let mut vu = Vu::new(&w, id);
    let control = w.shared.control.clone();
    let mut state = control.subscribe();
    loop {
        if w.ending.get() || control.is_stopped() {
            return;
        }
        if control.is_paused() {
            unpaused(&control, &mut state).await;
            continue;
        }
        if id >= w.target.get() {
            // Ramped down: let the connection go until needed again.
            vu.conns.clear();
            w.target_changed.notified().await;
            continue;
        }
        vu.iteration(&w, None).await;
    }
}

/// A pooled open-model user waiting for its next arrival.
struct Slot {
    job: Cell<Option<Instant>>,
    notify: Notify,
}

/// Open model: starts this thread's share of the arrivals at their
/// scheduled instants, each on an idle user from the pool.
async fn open(w: Rc<Worker>) {
    let control = w.shared.control.clone();
    let sched = &w.shared.schedule;
    let total = sched.total();
    let workers = w.shared.workers as f64;
    let max_vus = match &w.shared.plan.load {
        Load::Open { max_vus, .. } => share(*max_vus, w.id, w.shared.workers).max(1),
        Load::Closed { .. } => 1,
    };
    let idle: Rc<RefCell<Vec<Rc<Slot>>>> = Rc::new(RefCell::new(Vec::new()));
    let mut set = JoinSet::new();
    let mut spawned = 0u64;
    let mut state = control.subscribe();
    // This thread takes arrivals id, id + n, id + 2n… of the whole run, so
    // the threads' arrivals interleave evenly.
    let mut next = sched.advance(0.0, w.id as f64);
    let mut burst = 0u32;
    loop {
        if !running(&control, &mut state).await {
            return;
        }
        let at = next.unwrap_or(total);
        let due = control.wall_at(at);
        let now = Instant::now();
        if due > now {
            w.set_vus(spawned - idle.borrow().len() as u64);
            burst = 0;
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = state.changed() => {}
            }
            continue;
        }
        if next.is_none() {
            break;
        }
        next = sched.advance(at, workers);
        let start = if now.saturating_duration_since(due) <= TIMER_SLACK {
            now
        } else {
            due
        };
        let slot = idle.borrow_mut().pop();
        match slot {
            Some(s) => {
                s.job.set(Some(start));
                s.notify.notify_one();
            }
            None if spawned < max_vus => {
                let s = Rc::new(Slot {
                    job: Cell::new(None),
                    notify: Notify::new(),
                });
                set.spawn_local(open_vu(w.clone(), s, idle.clone(), start, spawned));
                spawned += 1;
            }
            None => w.record(now, |win| win.dropped += 1),
        }
        burst += 1;
        if burst.is_multiple_of(64) {
            // Far behind schedule: let the users run between dispatches.
            tokio::task::yield_now().await;
        }
    }
    w.set_vus(0);
    w.ending.set(true);
    for s in idle.borrow_mut().drain(..) {
        s.job.set(None);
        s.notify.notify_one();
    }
    w.finish(set).await;
}

async fn open_vu(
    w: Rc<Worker>,
    slot: Rc<Slot>,
    idle: Rc<RefCell<Vec<Rc<Slot>>>>,
    first: Instant,
    id: u64,
) {
    let mut vu = Vu::new(&w, id);
    let mut job = Some(first);
    while let Some(intended) = job {
        vu.iteration(&w, Some(intended)).await;
        if w.ending.get() || w.control().is_stopped() {
            return;
        }
        idle.borrow_mut().push(slot.clone());
        slot.notify.notified().await;
        job = slot.job.take();
    }
}
