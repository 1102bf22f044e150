//! Prometheus metrics of a server replica, served at `/metrics`.
//!
//! Everything is registered once in one [`prometheus_client`] registry:
//!
//! * HTTP requests by method, route **template** and status, and their
//!   latency — from [`track_http`], an axum middleware reading
//!   [`MatchedPath`], so no id ever becomes a label;
//! * store operation latency and errors by operation — from
//!   [`InstrumentedStore`], which wraps the store once in `start()`;
//! * login failures — counted by the login limiter (`auth.rs`);
//! * WebSocket sessions open by kind — [`Metrics::track_ws`] around each
//!   stream;
//! * gauges read at scrape time: tasks, runs and steps by status
//!   (cluster-wide, from the store, cached briefly), the queues of tasks
//!   waiting for their agents (total, deepest, agents with one), agents
//!   connected here, controller leadership;
//! * dispatch latency — [`Metrics::dispatched`], from the assignment relay
//!   (`controller.rs`) as it hands a new assignment to an agent connected
//!   here;
//! * reconcile pass latency and errors by pass — [`Metrics::reconcile`]
//!   around the engine's per-run reconcile and sweep and the controller's
//!   sweeps;
//! * live load-test figures of the executions whose agents report to this
//!   replica — [`Metrics::load_window`] from `performance::on_metrics`,
//!   summed at scrape time over the load tasks that are still reporting;
//! * the usual `process_*` metrics, read from `/proc/self` ([`process`]).
//!
//! Access: `/metrics` on the API port needs `Authorization: Bearer <metrics
//! token>` (`--metrics-token-file`, `TESTBED_METRICS_TOKEN`), or it is served
//! without auth on its own `--metrics-listen` address; with neither, it does
//! not exist (404). See docs/operations.md.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Deserialize;
use testbed_core::run::{RunStatus, StepStatus};
use testbed_core::task::TaskStatus;
use testbed_store::{
    Compare, DynStore, KeyValue, LeaseId, Page, Store, StoreError, TxnOp, WatchStream,
};

use crate::error::ApiError;
use crate::state::AppState;

pub use testbed_telemetry::CONTENT_TYPE;

/// How long a scrape-time count of the tasks is reused: scrapes from several
/// Prometheus servers (or a curl loop) cost at most one store scan per
/// interval, and a scrape is never more than this behind.
const TASK_COUNT_TTL: Duration = Duration::from_secs(1);

/// Page size of the task scan.
const TASK_SCAN_PAGE: usize = 1000;

/// Who may read `/metrics`, and where.
#[derive(Clone, Default)]
pub struct MetricsSettings {
    /// `/metrics` on the API port, for `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A separate listener that serves `/metrics` alone, without auth.
    pub listen: Option<String>,
}

impl std::fmt::Debug for MetricsSettings {
    // The token is a secret: never in a log line or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("listen", &self.listen)
            .finish()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    pass: &'static str,
}

/// A reconcile pass, for `testbed_reconcile_duration_seconds{pass}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The plan engine bringing one run forward (on an event or in a sweep).
    Run,
    /// The plan engine's periodic sweep over every active run.
    EngineSweep,
    /// The controller's sweep for tasks of dead agents and held tasks.
    LostSweep,
    /// The controller leader's sweep over active performance executions.
    PerformanceSweep,
}

impl Pass {
    const ALL: [Pass; 4] = [
        Pass::Run,
        Pass::EngineSweep,
        Pass::LostSweep,
        Pass::PerformanceSweep,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Pass::Run => "run",
            Pass::EngineSweep => "engine_sweep",
            Pass::LostSweep => "lost_sweep",
            Pass::PerformanceSweep => "performance_sweep",
        }
    }
}

/// Why a login failed, for `testbed_login_failures_total{reason}`.
#[derive(Clone, Copy, Debug)]
pub enum LoginFailure {
    /// Wrong username or password (or the check itself failed).
    Credentials,
    /// Refused by the rate limit before any check.
    RateLimited,
}

/// `testbed_login_failures_total`, owned by the login limiter and
/// registered by [`Metrics::new`].
#[derive(Clone, Debug, Default)]
pub struct LoginFailures(Family<ReasonLabels, Counter>);

impl LoginFailures {
    pub fn inc(&self, why: LoginFailure) {
        let reason = match why {
            LoginFailure::Credentials => "credentials",
            LoginFailure::RateLimited => "rate_limited",
        };
        self.0.get_or_create(&ReasonLabels { reason }).inc();
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to 10 s: a redb read is microseconds, an etcd round trip a
    // millisecond or more, a slow request seconds.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Dispatch takes milliseconds when all is well; a backlog of watch events
/// or a slow store makes it seconds.
fn dispatch_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0,
    ])
}

/// A load task's window is only "the last second" while its agent keeps
/// sending one a second; a task silent this long (its agent died, the
/// result went to another replica) no longer counts as running here.
const LOAD_STALE: Duration = Duration::from_secs(5);

/// The latest per-second window of each load task reporting to this
/// replica, by task (never a label: summed at scrape time).
#[derive(Default)]
struct LoadLive {
    tasks: Mutex<std::collections::HashMap<uuid::Uuid, LoadTask>>,
}

struct LoadTask {
    execution: String,
    at: Instant,
    window: testbed_load::Window,
}

/// The live load gauges, all at 0 while nothing runs.
#[derive(Clone, Default)]
struct LoadGauges {
    executions: Gauge,
    virtual_users: Gauge,
    requests_per_second: Gauge<f64, std::sync::atomic::AtomicU64>,
    errors_per_second: Gauge<f64, std::sync::atomic::AtomicU64>,
    p50: Gauge<f64, std::sync::atomic::AtomicU64>,
    p95: Gauge<f64, std::sync::atomic::AtomicU64>,
    p99: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// What the load gauges show: sums over the tasks still reporting, the
/// percentiles of their latest windows merged.
#[derive(Debug, Default, PartialEq)]
struct LoadFigures {
    executions: i64,
    virtual_users: i64,
    requests_per_second: f64,
    errors_per_second: f64,
    /// p50, p95, p99 in seconds.
    latency: [f64; 3],
}

impl LoadLive {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<uuid::Uuid, LoadTask>> {
        // Each operation leaves the map whole.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn figures(&self, now: Instant) -> LoadFigures {
        let mut tasks = self.lock();
        tasks.retain(|_, t| now.saturating_duration_since(t.at) < LOAD_STALE);
        let mut f = LoadFigures::default();
        let mut executions = std::collections::HashSet::new();
        let mut latency: Option<testbed_load::hdrhistogram::Histogram<u64>> = None;
        for t in tasks.values() {
            executions.insert(t.execution.as_str());
            let w = &t.window;
            // A final window may be shorter than a second: scale to a rate.
            let secs = w.duration_ms.max(1) as f64 / 1000.0;
            f.virtual_users += w.vus as i64;
            f.requests_per_second += w.requests as f64 / secs;
            f.errors_per_second += w.errors as f64 / secs;
            match &mut latency {
                Some(h) => {
                    // Both are the load engine's histograms (same bounds);
                    // a failed merge only leaves this window's latencies out.
                    let _ = h.add(&w.latency);
                }
                None => latency = Some(w.latency.clone()),
            }
        }
        f.executions = executions.len() as i64;
        if let Some(h) = latency.filter(|h| !h.is_empty()) {
            // Recorded in microseconds.
            for (slot, q) in f.latency.iter_mut().zip([0.5, 0.95, 0.99]) {
                *slot = h.value_at_quantile(q) as f64 / 1e6;
            }
        }
        f
    }
}

/// The store's latency and error families, shared with [`InstrumentedStore`].
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    duration: HistogramFamily<OperationLabels>,
    errors: Family<OperationLabels, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            duration: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
        }
    }
}

impl StoreMetrics {
    fn record<T>(&self, operation: &'static str, started: Instant, result: &Result<T, StoreError>) {
        let labels = OperationLabels { operation };
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

/// The metrics of one server replica.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    store: StoreMetrics,
    tasks: Family<StatusLabels, Gauge>,
    runs: Family<StatusLabels, Gauge>,
    run_steps: Family<StatusLabels, Gauge>,
    agents_connected: Gauge,
    ws_sessions: Family<KindLabels, Gauge>,
    controller_leader: Gauge,
    dispatch_latency: Histogram,
    queue_depth_max: Gauge,
    queue_agents: Gauge,
    reconcile_duration: HistogramFamily<PassLabels>,
    reconcile_errors: Family<PassLabels, Counter>,
    load: LoadLive,
    load_gauges: LoadGauges,
    /// The last task count and when it was taken.
    task_count: tokio::sync::Mutex<Option<Instant>>,
    /// Last scrape error of the task count, logged once per change.
    task_count_error: Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(LoginFailures::default())
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(login_failures: LoginFailures) -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "testbed_http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "testbed_http_request_duration",
            "Time to answer an HTTP request (to the 101 for a WebSocket), by method and route template",
            Unit::Seconds,
            http_duration.clone(),
        );
        let store = StoreMetrics::default();
        registry.register_with_unit(
            "testbed_store_operation_duration",
            "Latency of store operations (redb or etcd), by operation",
            Unit::Seconds,
            store.duration.clone(),
        );
        registry.register(
            "testbed_store_errors",
            "Store operations that failed, by operation",
            store.errors.clone(),
        );
        let tasks = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "testbed_tasks",
            "Tasks in the store by status (cluster-wide: every replica reports the same figure)",
            tasks.clone(),
        );
        let runs = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "testbed_runs",
            "Plan runs in the store by status (cluster-wide, like testbed_tasks)",
            runs.clone(),
        );
        let run_steps = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "testbed_run_steps",
            "Steps of the runs in the store by status (cluster-wide, like testbed_tasks)",
            run_steps.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "testbed_agents_connected",
            "Agents connected to this replica",
            agents_connected.clone(),
        );
        let ws_sessions = Family::<KindLabels, Gauge>::default();
        registry.register(
            "testbed_websocket_sessions",
            "Client WebSocket sessions open on this replica, by kind (agents: testbed_agents_connected)",
            ws_sessions.clone(),
        );
        registry.register(
            "testbed_login_failures",
            "Failed logins: wrong credentials, or refused by the rate limit",
            login_failures.0.clone(),
        );
        let controller_leader = Gauge::default();
        registry.register(
            "testbed_controller_leader",
            "1 while this replica leads the controller, else 0",
            controller_leader.clone(),
        );
        let dispatch_latency = dispatch_histogram();
        registry.register_with_unit(
            "testbed_dispatch_latency",
            "Time from a task's submission (its created_at) until this replica hands its \
             assignment to the agent's connection; tasks held for a reservation and resends \
             after a reconnect are not counted",
            Unit::Seconds,
            dispatch_latency.clone(),
        );
        let queue_depth_max = Gauge::default();
        registry.register(
            "testbed_agent_queue_depth_max",
            "Queued tasks (assigned, not yet running) of the agent with the most \
             (cluster-wide; the total is testbed_tasks{status=\"queued\"})",
            queue_depth_max.clone(),
        );
        let queue_agents = Gauge::default();
        registry.register(
            "testbed_agents_with_queued_tasks",
            "Agents with at least one queued task (cluster-wide)",
            queue_agents.clone(),
        );
        let reconcile_duration: HistogramFamily<PassLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "testbed_reconcile_duration",
            "Time of one reconcile pass of the controller leader, by pass",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<PassLabels, Counter>::default();
        registry.register(
            "testbed_reconcile_errors",
            "Reconcile passes that failed (retried on the next event or sweep), by pass",
            reconcile_errors.clone(),
        );
        let load_gauges = LoadGauges::default();
        registry.register(
            "testbed_load_executions_running",
            "Performance executions with a load agent reporting to this replica",
            load_gauges.executions.clone(),
        );
        registry.register(
            "testbed_load_virtual_users",
            "Virtual users active in the last second, summed over the load agents reporting here",
            load_gauges.virtual_users.clone(),
        );
        registry.register(
            "testbed_load_requests_per_second",
            "Requests finished in the last second, summed over the load agents reporting here",
            load_gauges.requests_per_second.clone(),
        );
        registry.register(
            "testbed_load_errors_per_second",
            "Failed requests in the last second, summed over the load agents reporting here",
            load_gauges.errors_per_second.clone(),
        );
        for (name, which) in [
            ("testbed_load_latency_p50", &load_gauges.p50),
            ("testbed_load_latency_p95", &load_gauges.p95),
            ("testbed_load_latency_p99", &load_gauges.p99),
        ] {
            registry.register_with_unit(
                name,
                "Response time percentile of the last second, over the load agents reporting here",
                Unit::Seconds,
                which.clone(),
            );
        }
        let build = prometheus_client::metrics::info::Info::new(vec![(
            "version",
            env!("CARGO_PKG_VERSION"),
        )]);
        registry.register("testbed_build", "The running Testbed version", build);
        registry.register_collector(Box::new(process::ProcessCollector));
        // Every status and kind from the first scrape on, at 0: a series
        // that appears only when it first moves breaks rate() and alerts.
        for status in TASK_STATUSES {
            tasks.get_or_create_owned(&StatusLabels {
                status: status.as_str(),
            });
        }
        for (_, status) in RUN_STATUSES {
            runs.get_or_create_owned(&StatusLabels { status });
        }
        for status in STEP_STATUSES {
            run_steps.get_or_create_owned(&StatusLabels {
                status: status.as_str(),
            });
        }
        for operation in STORE_OPERATIONS {
            store
                .errors
                .get_or_create_owned(&OperationLabels { operation });
        }
        for kind in ["task_log", "performance_live"] {
            ws_sessions.get_or_create_owned(&KindLabels { kind });
        }
        for pass in Pass::ALL {
            let labels = PassLabels {
                pass: pass.as_str(),
            };
            reconcile_errors.get_or_create_owned(&labels);
            reconcile_duration.get_or_create_owned(&labels);
        }
        for reason in ["credentials", "rate_limited"] {
            login_failures
                .0
                .get_or_create_owned(&ReasonLabels { reason });
        }
        Metrics {
            registry,
            http_requests,
            http_duration,
            store,
            tasks,
            runs,
            run_steps,
            agents_connected,
            ws_sessions,
            controller_leader,
            dispatch_latency,
            queue_depth_max,
            queue_agents,
            reconcile_duration,
            reconcile_errors,
            load: LoadLive::default(),
            load_gauges,
            task_count: tokio::sync::Mutex::new(None),
            task_count_error: Mutex::new(None),
        }
    }

    /// The families the store wrapper records into.
    pub fn store(&self) -> StoreMetrics {
        self.store.clone()
    }

    /// Runs a client WebSocket session, counted as open while it runs.
    pub async fn track_ws<F: std::future::Future<Output = ()>>(
        self: Arc<Self>,
        kind: &'static str,
        session: F,
    ) {
        struct Open(Gauge);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let gauge = self.ws_sessions.get_or_create_owned(&KindLabels { kind });
        gauge.inc();
        let _open = Open(gauge);
        session.await
    }

    /// A task created at `created_at` (by whichever replica) was handed to
    /// its agent's connection now. Wall clocks of two replicas may differ:
    /// a negative difference counts as 0.
    pub fn dispatched(&self, created_at: chrono::DateTime<chrono::Utc>) {
        let took = (chrono::Utc::now() - created_at)
            .to_std()
            .unwrap_or_default();
        self.dispatch_latency.observe(took.as_secs_f64());
    }

    /// Runs one reconcile pass, timed and, should it fail, counted.
    pub async fn reconcile<T, E>(
        &self,
        pass: Pass,
        run: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = run.await;
        let labels = PassLabels {
            pass: pass.as_str(),
        };
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.reconcile_errors.get_or_create(&labels).inc();
        }
        result
    }

    /// A load task of `execution` reported the window of one second.
    pub fn load_window(&self, execution: &str, task: uuid::Uuid, window: &testbed_load::Window) {
        let mut tasks = self.load.lock();
        // Windows arrive in order; a late one never replaces a newer one.
        if tasks
            .get(&task)
            .is_some_and(|t| t.window.index > window.index)
        {
            return;
        }
        tasks.insert(
            task,
            LoadTask {
                execution: execution.to_string(),
                at: Instant::now(),
                window: window.clone(),
            },
        );
    }

    /// A task ended: if it was a load task, it no longer runs here.
    pub fn task_ended(&self, task: &uuid::Uuid) {
        self.load.lock().remove(task);
    }

    fn refresh_load(&self) {
        let f = self.load.figures(Instant::now());
        let g = &self.load_gauges;
        g.executions.set(f.executions);
        g.virtual_users.set(f.virtual_users);
        g.requests_per_second.set(f.requests_per_second);
        g.errors_per_second.set(f.errors_per_second);
        g.p50.set(f.latency[0]);
        g.p95.set(f.latency[1]);
        g.p99.set(f.latency[2]);
    }

    fn observe_http(&self, method: &'static str, route: String, status: u16, elapsed: Duration) {
        self.http_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.http_requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// Sets the gauges that are read at scrape time.
    async fn refresh(&self, state: &AppState) {
        self.agents_connected.set(state.sessions.connected() as i64);
        self.controller_leader
            .set(i64::from(state.leading.load(Ordering::Relaxed)));
        self.refresh_load();
        let mut last = self.task_count.lock().await;
        if last.is_some_and(|at| at.elapsed() < TASK_COUNT_TTL) {
            return;
        }
        match count_records(&state.store).await {
            Ok(c) => {
                let statuses = TASK_STATUSES.iter().map(|s| s.as_str());
                for (status, n) in statuses.zip(c.tasks) {
                    self.tasks.get_or_create(&StatusLabels { status }).set(n);
                }
                for ((_, status), n) in RUN_STATUSES.iter().zip(c.runs) {
                    self.runs.get_or_create(&StatusLabels { status }).set(n);
                }
                let statuses = STEP_STATUSES.iter().map(|s| s.as_str());
                for (status, n) in statuses.zip(c.steps) {
                    self.run_steps
                        .get_or_create(&StatusLabels { status })
                        .set(n);
                }
                self.queue_depth_max.set(c.queue_max);
                self.queue_agents.set(c.queue_agents);
                *last = Some(Instant::now());
                *self.lock_error() = None;
            }
            Err(e) => {
                // The gauges keep their last values; the store's error
                // counter shows the failure. Log each new error once, not
                // every scrape.
                let msg = e.to_string();
                let mut prev = self.lock_error();
                if prev.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("metrics: counting tasks and runs failed: {msg}");
                    *prev = Some(msg);
                }
            }
        }
    }

    fn lock_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.task_count_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The exposition: OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        testbed_telemetry::encode(&self.registry)
    }
}

/// The `operation` label values of the store metrics.
const STORE_OPERATIONS: [&str; 10] = [
    "get",
    "put",
    "delete",
    "range",
    "txn",
    "revision",
    "watch",
    "grant_lease",
    "keep_alive",
    "revoke_lease",
];

const TASK_STATUSES: [TaskStatus; 7] = [
    TaskStatus::Queued,
    TaskStatus::Running,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Error,
    TaskStatus::Cancelled,
    TaskStatus::Lost,
];

const RUN_STATUSES: [(RunStatus, &str); 6] = [
    (RunStatus::Pending, "pending"),
    (RunStatus::Running, "running"),
    (RunStatus::Passed, "passed"),
    (RunStatus::Failed, "failed"),
    (RunStatus::Cancelled, "cancelled"),
    (RunStatus::Error, "error"),
];

const STEP_STATUSES: [StepStatus; 8] = [
    StepStatus::Pending,
    StepStatus::Running,
    StepStatus::Passed,
    StepStatus::Failed,
    StepStatus::Error,
    StepStatus::Skipped,
    StepStatus::Cancelled,
    StepStatus::Lost,
];

/// Counts by status, in the order of the `*_STATUSES` arrays.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    tasks: [i64; 7],
    runs: [i64; 6],
    steps: [i64; 8],
    /// Queued tasks of the agent with the most.
    queue_max: i64,
    /// Agents with a queued task.
    queue_agents: i64,
}

/// Every value under `prefix`, a page at a time.
async fn scan(
    store: &DynStore,
    prefix: &str,
    mut each: impl FnMut(&[u8]),
) -> Result<(), StoreError> {
    let mut pages = crate::records::Pages::new(store, prefix, TASK_SCAN_PAGE);
    while let Some(kvs) = pages.next().await? {
        for kv in &kvs {
            each(&kv.value);
        }
    }
    Ok(())
}

/// Tasks, runs and their steps by status. A record that does not decode is
/// not counted (the API reports it where it is read).
async fn count_records(store: &DynStore) -> Result<Counts, StoreError> {
    #[derive(Deserialize)]
    struct TaskOnly {
        status: TaskStatus,
        agent_uuid: Option<uuid::Uuid>,
    }
    #[derive(Deserialize)]
    struct StepOnly {
        status: StepStatus,
    }
    #[derive(Deserialize)]
    struct RunOnly {
        status: RunStatus,
        #[serde(default)]
        steps: std::collections::BTreeMap<String, StepOnly>,
    }
    let mut c = Counts::default();
    let mut queues: std::collections::HashMap<uuid::Uuid, i64> = Default::default();
    scan(store, testbed_core::keys::TASKS, |bytes| {
        if let Ok(t) = serde_json::from_slice::<TaskOnly>(bytes) {
            if let Some(i) = TASK_STATUSES.iter().position(|s| *s == t.status) {
                c.tasks[i] += 1;
            }
            if let (TaskStatus::Queued, Some(agent)) = (t.status, t.agent_uuid) {
                *queues.entry(agent).or_default() += 1;
            }
        }
    })
    .await?;
    c.queue_max = queues.values().copied().max().unwrap_or(0);
    c.queue_agents = queues.len() as i64;
    #[derive(Deserialize)]
    struct KindOnly {
        #[serde(default)]
        kind: String,
    }
    scan(store, testbed_core::keys::RUNS, |bytes| {
        // A step's own record (`/runs/{id}/steps/{step}`, engine::run_store).
        if serde_json::from_slice::<KindOnly>(bytes).is_ok_and(|k| k.kind == "run_step") {
            if let Ok(step) = serde_json::from_slice::<StepOnly>(bytes) {
                if let Some(i) = STEP_STATUSES.iter().position(|s| *s == step.status) {
                    c.steps[i] += 1;
                }
            }
            return;
        }
        if let Ok(r) = serde_json::from_slice::<RunOnly>(bytes) {
            if let Some(i) = RUN_STATUSES.iter().position(|(s, _)| *s == r.status) {
                c.runs[i] += 1;
            }
            for step in r.steps.values() {
                if let Some(i) = STEP_STATUSES.iter().position(|s| *s == step.status) {
                    c.steps[i] += 1;
                }
            }
        }
    })
    .await?;
    Ok(c)
}

/// The method as a label: the standard ones by name, anything else (a
/// client may send any token) as `other`, so the label stays bounded.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request by its route template. Requests no route
/// matched (404s, probes) share the route `unmatched`, so a scanner cannot
/// grow the label set.
pub async fn track_http(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    metrics.observe_http(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// Constant-time comparison, so the time of a refusal does not tell how
/// much of a guessed token was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /metrics` on the API port: only for the metrics token (not a user
/// token: a scraper's secret must not open the API, nor a user's session
/// the metrics).
pub async fn serve_with_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = state.settings.metrics.token.as_deref() else {
        return ApiError::not_found("no such endpoint: /metrics").into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if same_secret(token.as_bytes(), expected.as_bytes()) => {
            exposition(&state).await
        }
        Some(_) => ApiError::unauthorized("invalid metrics token").into_response(),
        None => {
            let mut r = ApiError::unauthorized(
                "missing metrics token (Authorization: Bearer <token of --metrics-token-file>)",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// `GET /metrics` on `--metrics-listen`: no auth (that address is for the
/// scraper's network only).
pub async fn serve_open(State(state): State<AppState>) -> Response {
    exposition(&state).await
}

async fn exposition(state: &AppState) -> Response {
    state.metrics.refresh(state).await;
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body,
        )
            .into_response(),
        Err(_) => ApiError::internal("encoding the metrics failed").into_response(),
    }
}

/// The router of `--metrics-listen`: `/metrics` and nothing else.
pub fn open_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(serve_open))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!(
                "no such endpoint: {} (this address serves /metrics only)",
                uri.path()
            ))
        })
        .with_state(state)
}

/// The store, timed and counted per operation. Wraps whatever backend the
/// server was given, in one place (`start()`), so every caller is measured.
pub struct InstrumentedStore {
    inner: DynStore,
    metrics: StoreMetrics,
}

impl InstrumentedStore {
    pub fn wrap(inner: DynStore, metrics: StoreMetrics) -> DynStore {
        Arc::new(InstrumentedStore { inner, metrics })
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.metrics.record($op, started, &result);
        result
    }};
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn get(&self, key: &str) -> testbed_store::Result<Option<KeyValue>> {
        timed!(self, "get", self.inner.get(key))
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> testbed_store::Result<i64> {
        timed!(self, "put", self.inner.put(key, value, lease))
    }
    async fn delete(&self, key: &str) -> testbed_store::Result<bool> {
        timed!(self, "delete", self.inner.delete(key))
    }
    async fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> testbed_store::Result<Page> {
        timed!(self, "range", self.inner.range(prefix, after, limit))
    }
    async fn txn(
        &self,
        compares: &[(String, Compare)],
        ops: Vec<TxnOp>,
    ) -> testbed_store::Result<Option<i64>> {
        timed!(self, "txn", self.inner.txn(compares, ops))
    }
    // The single-key forms go to the backend's own (possibly faster)
    // versions, and count as transactions.
    async fn txn_put(
        &self,
        key: &str,
        compare: Compare,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> testbed_store::Result<Option<i64>> {
        timed!(self, "txn", self.inner.txn_put(key, compare, value, lease))
    }
    async fn txn_delete(&self, key: &str, compare: Compare) -> testbed_store::Result<bool> {
        timed!(self, "txn", self.inner.txn_delete(key, compare))
    }
    async fn revision(&self) -> testbed_store::Result<i64> {
        timed!(self, "revision", self.inner.revision())
    }
    /// Times the opening of the watch; its events are not timed.
    async fn watch(&self, prefix: &str, from_revision: i64) -> testbed_store::Result<WatchStream> {
        timed!(self, "watch", self.inner.watch(prefix, from_revision))
    }
    async fn grant_lease(&self, ttl: Duration) -> testbed_store::Result<LeaseId> {
        timed!(self, "grant_lease", self.inner.grant_lease(ttl))
    }
    async fn keep_alive(&self, lease: LeaseId) -> testbed_store::Result<()> {
        timed!(self, "keep_alive", self.inner.keep_alive(lease))
    }
    async fn revoke_lease(&self, lease: LeaseId) -> testbed_store::Result<()> {
        timed!(self, "revoke_lease", self.inner.revoke_lease(lease))
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn exclusive(&self) -> bool {
        self.inner.exclusive()
    }
}

/// The usual `process_*` metrics, shared with the agent's `/metrics`.
pub use testbed_telemetry::process;

#[cfg(test)]
mod tests {
    use super::*;
    use testbed_load::Window;

    #[test]
    fn exposition_names_follow_conventions() {
        let login = LoginFailures::default();
        let m = Metrics::new(login.clone());
        m.observe_http(
            "GET",
            "/api/runs/{id}".into(),
            200,
            Duration::from_millis(3),
        );
        login.inc(LoginFailure::Credentials);
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                "testbed_http_requests_total{method=\"GET\",route=\"/api/runs/{id}\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("testbed_http_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("testbed_login_failures_total{reason=\"credentials\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("testbed_login_failures_total{reason=\"rate_limited\"} 0"),
            "{text}"
        );
        assert!(text.contains("testbed_tasks{status=\"lost\"} 0"), "{text}");
        assert!(
            text.contains("testbed_store_errors_total{operation=\"txn\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn new_families_are_there_at_zero() {
        let m = Metrics::default();
        let text = m.encode().unwrap();
        for line in [
            "testbed_dispatch_latency_seconds_count 0",
            "testbed_agent_queue_depth_max 0",
            "testbed_agents_with_queued_tasks 0",
            "testbed_reconcile_duration_seconds_count{pass=\"engine_sweep\"} 0",
            "testbed_reconcile_errors_total{pass=\"lost_sweep\"} 0",
            "testbed_load_executions_running 0",
            "testbed_load_virtual_users 0",
            "testbed_load_requests_per_second 0.0",
            "testbed_load_latency_p99_seconds 0.0",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    #[tokio::test]
    async fn reconcile_passes_are_timed_and_failures_counted() {
        let m = Metrics::default();
        let ok: Result<(), ()> = m.reconcile(Pass::Run, async { Ok(()) }).await;
        assert!(ok.is_ok());
        let failed: Result<(), &str> = m.reconcile(Pass::Run, async { Err("contended") }).await;
        assert_eq!(failed, Err("contended"));
        m.dispatched(chrono::Utc::now() - chrono::Duration::milliseconds(20));
        // Another replica's clock ahead of ours: 0, not negative.
        m.dispatched(chrono::Utc::now() + chrono::Duration::seconds(5));
        let text = m.encode().unwrap();
        assert!(
            text.contains("testbed_reconcile_duration_seconds_count{pass=\"run\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("testbed_reconcile_errors_total{pass=\"run\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("testbed_dispatch_latency_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("testbed_dispatch_latency_seconds_bucket{le=\"0.001\"} 1"),
            "{text}"
        );
    }

    fn window(index: u64, duration_ms: u64, requests: u64, errors: u64, vus: u64) -> Window {
        let mut w = Window::empty(index, 0);
        w.duration_ms = duration_ms;
        w.requests = requests;
        w.errors = errors;
        w.vus = vus;
        for i in 0..requests {
            // 1 ms to 100 ms, in microseconds.
            w.latency
                .record(1_000 + i * 99_000 / requests.max(1))
                .unwrap();
        }
        w
    }

    #[test]
    fn load_figures_sum_the_latest_window_of_each_task() {
        let m = Metrics::default();
        let (a, b, c) = (
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            uuid::Uuid::from_u128(3),
        );
        m.load_window("e1", a, &window(3, 1000, 100, 5, 10));
        m.load_window("e1", b, &window(3, 1000, 50, 0, 5));
        // A later window replaces; a late one does not.
        m.load_window("e2", c, &window(1, 1000, 10, 0, 1));
        m.load_window("e2", c, &window(2, 500, 20, 10, 2));
        m.load_window("e2", c, &window(1, 1000, 999, 0, 99));
        let f = m.load.figures(Instant::now());
        assert_eq!(f.executions, 2);
        assert_eq!(f.virtual_users, 17);
        // The final half-second window of c counts as a rate.
        assert_eq!(f.requests_per_second, 190.0);
        assert_eq!(f.errors_per_second, 25.0);
        let [p50, p95, p99] = f.latency;
        assert!(
            0.001 <= p50 && p50 < p95 && p95 <= p99 && p99 <= 0.101,
            "{f:?}"
        );

        // A finished task stops counting; a silent one after LOAD_STALE.
        m.task_ended(&c);
        let f = m.load.figures(Instant::now());
        assert_eq!((f.executions, f.virtual_users), (1, 15));
        let f = m.load.figures(Instant::now() + LOAD_STALE);
        assert_eq!(f, LoadFigures::default());
        m.refresh_load();
        let text = m.encode().unwrap();
        assert!(text.contains("testbed_load_executions_running 0"), "{text}");
    }

    #[test]
    fn status_labels_are_the_api_spelling() {
        for (status, label) in RUN_STATUSES {
            assert_eq!(serde_json::to_value(status).unwrap(), label);
        }
        for status in STEP_STATUSES {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for status in TASK_STATUSES {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn settings_debug_hides_the_token() {
        let s = MetricsSettings {
            token: Some("s3cret".into()),
            listen: None,
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
