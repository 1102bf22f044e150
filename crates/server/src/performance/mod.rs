//! Performance tests (seed 001): plan, execution and report records with
//! typed statuses ([`PerfStatus`]), what a plan's config means
//! ([`config`]), the execution's control ([`control`]: start, stop, pause,
//! resume as intent recorded in the store), the controller's reconciler of
//! executions ([`reconcile`]), the live per-second series and the report.
//!
//! An execution is driven like a plan run: the API records what is wanted
//! (the execution, its placed load tasks, its status), and the controller
//! leader's reconciler — fed by the plan engine's task watch and a watch on
//! `/performance/active/` — creates the tasks, carries stop and pause to
//! them, records lost agents and builds the report. Nothing of an execution
//! lives in the replica that started it.
//!
//! Two paths carry an agent's windows. Live: each window arrives as a
//! `metrics` message on the replica holding the agent's session, which
//! stores it under the task's own key for that second
//! (`/performance/live/{execution}/{second}/{task}`); the WebSocket and the
//! metrics endpoint of *every* replica read and merge those keys
//! ([`live_since`]), and so does the report for CPU, memory and the windows
//! of a task whose agent died. Exact: the `load` task's result holds every
//! window, so the report loses nothing when a connection drops.
//!
//! Why the store and not a replica-to-replica relay: every replica already
//! reads and watches the store, so the relay needs no membership, addresses
//! or authentication between replicas, survives a replica's restart, and a
//! reader on any replica (or one that connects late, or the leader building
//! the report) sees every second from the start. Its cost is one small
//! write per load agent per second.
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

pub mod config;
pub mod control;
pub mod reconcile;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use testbed_core::agent::SystemMetrics;
use testbed_core::keys;
use testbed_core::task::{Task, TaskStatus};
use testbed_load::{merge_windows, Aggregate, Window};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::records;
use crate::state::AppState;

pub use testbed_api::performance::{
    AgentSystemSeries, ErrorStats, ExecTask, Execution, LoadTest, Percentiles, PerfReport,
    PerfStatus, ReportMetrics, ReportSummary, SystemSeries, ThresholdOutcome, TimeSeries,
};

// The store keys live with every other key in `testbed_core::keys`.
pub use testbed_core::keys::{
    perf_active as active_key, perf_execution as execution_key, perf_plan as plan_key,
    perf_report as report_key, perf_windows_blob as windows_blob, PERF_ACTIVE as ACTIVE,
    PERF_EXECUTIONS as EXECUTIONS, PERF_PLANS as PLANS, PERF_REPORTS as REPORTS,
};

/// Judges a plan's thresholds on the merged windows of an execution.
async fn judge(
    state: &AppState,
    plan_id: u64,
    agg: &Aggregate,
    secs: f64,
) -> Vec<ThresholdOutcome> {
    let Ok(Some((plan, _))) = records::get::<LoadTest>(&state.store, &plan_key(plan_id)).await
    else {
        return Vec::new();
    };
    let Ok(cfg) = testbed_load::SeedConfig::from_json(&plan.config) else {
        return Vec::new();
    };
    let Ok(load_plan) = cfg.to_plan() else {
        return Vec::new();
    };
    let summary = agg.summary(secs);
    load_plan
        .thresholds
        .iter()
        .filter_map(|t| testbed_load::Threshold::parse(t).ok())
        .map(|t| {
            let judged = t.judge(&summary);
            ThresholdOutcome {
                expr: judged.expr,
                observed: judged.observed,
                passed: judged.passed,
            }
        })
        .collect()
}

pub(crate) fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `a` as a percentage of `b` (0 when `b` is).
fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        round2(a as f64 * 100.0 / b as f64)
    }
}

/// One second of one execution, merged across its agents.
#[derive(Debug, Clone)]
pub struct LivePoint {
    pub window: Window,
    /// How many agents' windows are in it.
    pub contributors: usize,
    pub system: Vec<SystemMetrics>,
    /// The task each of `system`'s samples came from (same order), so a
    /// viewer can tell the load agents apart.
    pub system_tasks: Vec<Uuid>,
}

impl LivePoint {
    fn add(&mut self, s: LiveSecond, task: Uuid) {
        self.window.merge(&s.window);
        self.contributors += 1;
        self.system.push(s.system);
        self.system_tasks.push(task);
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExecLive {
    pub points: BTreeMap<u64, LivePoint>,
    /// Agents (tasks) of the execution.
    pub expected: usize,
}

/// Above this many remembered tasks, [`Live`] starts afresh (a forgotten
/// task is looked up again in the store).
const MAX_BOUND_TASKS: usize = 4096;

/// Which execution each load task connected here belongs to, so a window
/// is stored without reading its task. Bounded: it is a cache, the task
/// record says the same.
#[derive(Default)]
pub struct Live {
    tasks: Mutex<HashMap<Uuid, String>>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, String>> {
        // Every operation leaves the map whole.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn execution_of(&self, task: &Uuid) -> Option<String> {
        self.lock().get(task).cloned()
    }

    fn bind(&self, task: Uuid, execution: &str) {
        let mut l = self.lock();
        if l.len() >= MAX_BOUND_TASKS {
            l.clear();
        }
        l.insert(task, execution.to_string());
    }
}

/// The execution a task is a load share of, if it is one.
pub fn execution_of(task: &Task) -> Option<&str> {
    if task.plugin != "load" {
        return None;
    }
    task.parameters.get("execution_id").and_then(Value::as_str)
}

/// Each load agent's CPU and memory (percent) in one second, named by the
/// agents of `tasks`; samples of tasks not listed are left out.
pub fn system_by_agent(p: &LivePoint, tasks: &[ExecTask]) -> Vec<(String, f64, f64)> {
    p.system_tasks
        .iter()
        .zip(&p.system)
        .filter_map(|(task, s)| {
            let agent = tasks.iter().find(|t| t.task_id == *task)?;
            let (cpu, mem, _) = system_point(std::slice::from_ref(s));
            Some((agent.agent_name.clone(), cpu, mem))
        })
        .collect()
}

/// CPU and memory averaged over the agents, network summed (MB/s).
pub fn system_point(samples: &[SystemMetrics]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = samples.len() as f64;
    let cpu = samples.iter().map(|s| s.cpu_percent as f64).sum::<f64>() / n;
    let mem = samples
        .iter()
        .map(|s| {
            if s.memory_total_bytes == 0 {
                0.0
            } else {
                s.memory_used_bytes as f64 * 100.0 / s.memory_total_bytes as f64
            }
        })
        .sum::<f64>()
        / n;
    let net = samples
        .iter()
        .map(|s| (s.network_rx_bytes + s.network_tx_bytes) as f64 / 1e6)
        .sum::<f64>();
    (round2(cpu), round2(mem), round2(net))
}

/// A `metrics` message from an agent: stored as the task's share of that
/// second, for every replica (and the report) to read.
///
/// The store write is not awaited by the agent's session: a session handles
/// its messages in order and answers the agent's pings only between them, so
/// a write held up by a busy store (one per load agent per second) would
/// hold up the pongs too — and an agent that hears nothing for half its
/// lease kills its tasks (the fence), cutting the load short.
pub async fn on_metrics(state: &AppState, task_id: Uuid, window: Value, system: SystemMetrics) {
    let window: Window = match serde_json::from_value(window) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(%task_id, "unreadable load window: {e}");
            return;
        }
    };
    let state = state.clone();
    tokio::spawn(async move { store_second(&state, task_id, window, system).await });
}

async fn store_second(state: &AppState, task_id: Uuid, window: Window, system: SystemMetrics) {
    let execution = match state.perf.execution_of(&task_id) {
        Some(e) => e,
        None => {
            // The task names its execution.
            let Ok(Some((task, _))) =
                records::get::<Task>(&state.store, &keys::task(&task_id)).await
            else {
                return;
            };
            let Some(e) = execution_of(&task).map(str::to_string) else {
                return;
            };
            state.perf.bind(task_id, &e);
            e
        }
    };
    state.metrics.load_window(&execution, task_id, &window);
    let key = keys::perf_live(&execution, window.index, &task_id);
    match serde_json::to_vec(&LiveSecond { window, system }) {
        Ok(bytes) => {
            if let Err(e) = state.store.put(&key, bytes, None).await {
                // The live view misses this second; the report does not.
                tracing::warn!(%execution, "publishing a live second: {e}");
            }
        }
        Err(e) => tracing::warn!(%execution, "encoding a live second: {e}"),
    }
}

/// One task's window of one second, as stored for every replica.
#[derive(Debug, Serialize, Deserialize)]
struct LiveSecond {
    window: Window,
    system: SystemMetrics,
}

/// The stored live seconds of an execution from second `from` on, with
/// the task each came from, in key (time) order.
async fn read_live(
    state: &AppState,
    execution: &str,
    from: u64,
) -> ApiResult<Vec<(Uuid, LiveSecond)>> {
    let prefix = keys::perf_live_prefix(execution);
    // Keys sort by second (zero-padded): start just before `from`'s.
    let after = (from > 0).then(|| format!("{prefix}{:020}", from - 1) + "0");
    let mut out = Vec::new();
    let mut pages = crate::records::Pages::new(&state.store, &prefix, 500).starting_after(after);
    while let Some(kvs) = pages.next().await? {
        for kv in &kvs {
            let task = kv
                .key
                .rsplit('/')
                .next()
                .and_then(|t| t.parse::<Uuid>().ok());
            let (Some(task), Ok(second)) = (task, serde_json::from_slice::<LiveSecond>(&kv.value))
            else {
                continue;
            };
            out.push((task, second));
        }
    }
    Ok(out)
}

/// Merges stored seconds per second, across tasks.
fn merge_live(seconds: Vec<(Uuid, LiveSecond)>, expected: usize) -> ExecLive {
    let mut out = ExecLive {
        points: BTreeMap::new(),
        expected,
    };
    for (task, s) in seconds {
        match out.points.get_mut(&s.window.index) {
            Some(p) => p.add(s, task),
            None => {
                out.points.insert(
                    s.window.index,
                    LivePoint {
                        window: s.window,
                        contributors: 1,
                        system: vec![s.system],
                        system_tasks: vec![task],
                    },
                );
            }
        }
    }
    out
}

/// The live seconds of an execution from `from` on, merged across its
/// agents whichever replicas received them. `expected` is how many agents
/// the execution has.
pub async fn live_since(
    state: &AppState,
    execution: &str,
    from: u64,
    expected: usize,
) -> ApiResult<ExecLive> {
    Ok(merge_live(
        read_live(state, execution, from).await?,
        expected,
    ))
}

/// Removes an execution's live seconds (its report holds them for good).
async fn forget_live(state: &AppState, execution: &str) -> ApiResult<()> {
    let prefix = keys::perf_live_prefix(execution);
    loop {
        let page = state.store.range(&prefix, None, 100).await?;
        if page.kvs.is_empty() {
            return Ok(());
        }
        let ops = page
            .kvs
            .iter()
            .map(|kv| testbed_store::TxnOp::Delete {
                key: kv.key.clone(),
            })
            .collect();
        state.store.txn(&[], ops).await?;
        if !page.more {
            return Ok(());
        }
    }
}

/// Windows of every task's result (inline, or the artifact a long run
/// uploaded), merged per second. A task without them (its agent was lost)
/// counts with the windows it sent live.
async fn merged_windows(
    state: &AppState,
    tasks: &[Task],
    live: &[(Uuid, LiveSecond)],
) -> Vec<Window> {
    let mut all: Vec<Window> = Vec::new();
    for t in tasks {
        match result_windows(state, t).await {
            Some(ws) => all.extend(ws),
            None => all.extend(
                live.iter()
                    .filter(|(task, _)| *task == t.id)
                    .map(|(_, s)| s.window.clone()),
            ),
        }
    }
    merge_windows(all.iter())
}

/// The windows a task returned with its result, if it returned them.
async fn result_windows(state: &AppState, t: &Task) -> Option<Vec<Window>> {
    let result = t.result.as_ref()?;
    if let Some(name) = result.get("windows_artifact").and_then(Value::as_str) {
        return match state.blobs.get(&keys::artifact_blob(&t.id, name)).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<Vec<Window>>(&bytes) {
                Ok(ws) => Some(ws),
                Err(e) => {
                    tracing::warn!(task = %t.id, "unreadable windows artifact: {e}");
                    None
                }
            },
            Ok(None) => {
                tracing::warn!(task = %t.id, "windows artifact missing");
                None
            }
            Err(e) => {
                tracing::warn!(task = %t.id, "reading windows artifact: {e}");
                None
            }
        };
    }
    let ws = result.get("windows").and_then(Value::as_array)?;
    Some(
        ws.iter()
            .filter_map(|w| match serde_json::from_value::<Window>(w.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(task = %t.id, "unreadable window in result: {e}");
                    None
                }
            })
            .collect(),
    )
}

pub fn percentiles(agg: &Aggregate) -> Percentiles {
    let h = &agg.latency;
    let q = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            round2(us_to_ms(h.value_at_quantile(p)))
        }
    };
    Percentiles {
        p50: q(0.5),
        p90: q(0.9),
        p95: q(0.95),
        p99: q(0.99),
    }
}

pub fn aggregate(windows: &[Window]) -> Aggregate {
    let mut agg = Aggregate::default();
    for w in windows {
        agg.add(w);
    }
    agg
}

pub fn window_avg_ms(w: &Window) -> f64 {
    if w.latency.is_empty() {
        0.0
    } else {
        round2(w.latency.mean() / 1000.0)
    }
}

/// Builds and stores the report of an execution whose tasks all ended, and
/// ends the execution and its plan with it. The live seconds are read from
/// the store, so whichever replica leads builds the same report.
async fn finalize(state: &AppState, execution: &str, tasks: &[Task]) -> ApiResult<()> {
    let key = execution_key(execution);
    let seconds = read_live(state, execution, 0).await?;
    let windows = merged_windows(state, tasks, &seconds).await;
    let live = merge_live(seconds, tasks.len());
    let agg = aggregate(&windows);
    let any_ran = tasks.iter().any(|t| t.status == TaskStatus::Succeeded);
    // The report is stored before its id is published on the execution:
    // whoever sees `report_id` (the live stream's `finished`, a client
    // polling the execution) can read the report at once. The id is then
    // claimed with a compare-and-set on the execution as it was read; a
    // finalizer that loses (another replica, or a change such as a stop in
    // between) removes its report and, if the execution is still open,
    // tries again from the new state.
    let (exec, report_id) = loop {
        let Some((mut exec, _)) = records::get::<Execution>(&state.store, &key).await? else {
            return Err(ApiError::not_found(format!("no execution {execution}")));
        };
        if exec.report_id.is_some() {
            return Ok(());
        }
        let report_id =
            records::next_counter(&state.store, &keys::counter("performance_report_id")).await?;
        let end = testbed_core::now();
        let seen = exec.clone();
        exec.report_id = Some(report_id);
        exec.end_time = Some(end);
        if exec.is_active() {
            exec.status = if any_ran {
                PerfStatus::Completed
            } else {
                PerfStatus::Failed
            };
        }
        let report = build_report(state, &exec, report_id, end, &windows, &agg, &live).await;
        records::put(&state.store, &report_key(report_id), &report, None).await?;
        let mut claimed = false;
        records::update::<Execution, _>(&state.store, &key, |e| {
            claimed = e.report_id.is_none()
                && e.status == seen.status
                && e.lost_agents == seen.lost_agents;
            if claimed {
                *e = exec.clone();
            }
            claimed
        })
        .await?;
        if claimed {
            break (exec, report_id);
        }
        state.store.delete(&report_key(report_id)).await?;
    };
    match serde_json::to_vec(&windows) {
        Ok(bytes) => {
            if let Err(e) = state
                .blobs
                .put(&windows_blob(execution), bytes::Bytes::from(bytes))
                .await
            {
                tracing::warn!(%execution, "storing windows: {e}");
            }
        }
        Err(e) => tracing::warn!(%execution, "encoding windows: {e}"),
    }
    let status = exec.status;
    plan_shows(state, exec.plan_id, execution, status).await?;
    tracing::info!(%execution, report_id, requests = agg.requests, "performance execution ended: {status}");
    Ok(())
}

/// A load test shows its latest execution's status: sets it to `status`
/// while `execution` is still the latest (a newer start has moved it on
/// otherwise).
async fn plan_shows(
    state: &AppState,
    plan_id: u64,
    execution: &str,
    status: PerfStatus,
) -> ApiResult<()> {
    records::update::<LoadTest, _>(&state.store, &plan_key(plan_id), |p| {
        if p.last_execution.as_deref() == Some(execution) && p.status != status {
            p.status = status;
            true
        } else {
            false
        }
    })
    .await?;
    Ok(())
}

/// The report of an execution that ends at `end`, from its merged windows
/// and (for CPU and memory) its live seconds.
async fn build_report(
    state: &AppState,
    exec: &Execution,
    report_id: u64,
    end: DateTime<Utc>,
    windows: &[Window],
    agg: &Aggregate,
    live: &ExecLive,
) -> PerfReport {
    let execution = exec.execution_id.as_str();
    let mut system = SystemSeries::default();
    {
        for (i, p) in live.points.values().enumerate() {
            let (c, m, n) = system_point(&p.system);
            system.cpu.push(c);
            system.memory.push(m);
            system.network.push(n);
            for (agent, cpu, mem) in system_by_agent(p, &exec.tasks) {
                let a = system.agents.entry(agent).or_default();
                // Seconds before the agent's first sample are gaps.
                a.cpu.resize(i, None);
                a.memory.resize(i, None);
                a.cpu.push(Some(cpu));
                a.memory.push(Some(mem));
            }
        }
        let len = system.cpu.len();
        for a in system.agents.values_mut() {
            a.cpu.resize(len, None);
            a.memory.resize(len, None);
        }
    }
    let summary = ReportSummary {
        total_requests: agg.requests,
        success_rate: if agg.requests == 0 {
            0.0
        } else {
            round2(
                (agg.requests - agg.errors.min(agg.requests)) as f64 * 100.0 / agg.requests as f64,
            )
        },
        avg_response_time: if agg.latency.is_empty() {
            0.0
        } else {
            round2(agg.latency.mean() / 1000.0)
        },
        error_count: agg.errors,
    };
    let secs = ((end - exec.start_time).num_milliseconds().max(1) as f64 / 1000.0)
        .max(windows.len() as f64);
    let thresholds = judge(state, exec.plan_id, agg, secs).await;
    let passed = thresholds.iter().all(|t| t.passed);
    PerfReport {
        id: report_id,
        plan_id: exec.plan_id,
        execution_id: execution.to_string(),
        start_time: exec.start_time,
        end_time: end,
        status: exec.status,
        summary,
        metrics: ReportMetrics {
            response_times: TimeSeries {
                timestamps: windows.iter().map(|w| w.timestamp).collect(),
                values: windows.iter().map(window_avg_ms).collect(),
                percentiles: percentiles(agg),
            },
            errors: ErrorStats {
                labels: agg.error_kinds.keys().cloned().collect(),
                values: agg.error_kinds.values().copied().collect(),
            },
            system_metrics: system,
        },
        agents: exec.tasks.iter().map(|t| t.agent_name.clone()).collect(),
        lost_agents: exec.lost_agents.clone(),
        thresholds,
        passed,
    }
}

/// The metric types `/api/performance/metrics/{id}/` may be asked for.
pub const METRIC_TYPES: &[&str] = &["response_time", "throughput", "error_rate", "system"];

/// The execution's series: live (from every replica, through the store)
/// while it runs, else the stored windows. `time_range`: only the last
/// this many seconds.
pub async fn series(
    state: &AppState,
    exec: &Execution,
    time_range: Option<u64>,
) -> (Vec<Window>, Vec<(f64, f64, f64)>) {
    let (mut windows, mut system) = match live_since(state, &exec.execution_id, 0, 0).await {
        Ok(live) if !live.points.is_empty() => (
            live.points.values().map(|p| p.window.clone()).collect(),
            live.points
                .values()
                .map(|p| system_point(&p.system))
                .collect(),
        ),
        _ => {
            let windows = match state.blobs.get(&windows_blob(&exec.execution_id)).await {
                Ok(Some(bytes)) => {
                    serde_json::from_slice::<Vec<Window>>(&bytes).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            (windows, Vec::new())
        }
    };
    if let (Some(range), Some(last)) = (time_range, windows.last().map(|w| w.index)) {
        let from = last.saturating_sub(range.saturating_sub(1));
        let keep = windows.iter().position(|w| w.index >= from).unwrap_or(0);
        windows.drain(..keep);
        if system.len() > windows.len() {
            system.drain(..system.len() - windows.len());
        }
    }
    (windows, system)
}

/// The `metrics` of `/api/performance/metrics/{id}/`: every type, or the
/// one asked for.
pub fn metrics_body(windows: &[Window], system: &[(f64, f64, f64)], only: Option<&str>) -> Value {
    let agg = aggregate(windows);
    let last = windows.last();
    let h = &agg.latency;
    let ms = |us: u64| round2(us_to_ms(us));
    let active = windows.iter().filter(|w| !w.paused).count().max(1) as f64;
    let (cpu, mem, net) = system.last().copied().unwrap_or_default();
    let all = json!({
        "response_time": {
            "current": last.map(window_avg_ms).unwrap_or(0.0),
            "avg": if h.is_empty() { 0.0 } else { round2(h.mean() / 1000.0) },
            "min": if h.is_empty() { 0.0 } else { ms(h.min()) },
            "max": if h.is_empty() { 0.0 } else { ms(h.max()) },
            "p95": percentiles(&agg).p95,
        },
        "throughput": {
            "current_rps": last.map(|w| round2(w.rps())).unwrap_or(0.0),
            "avg_rps": if windows.is_empty() { 0.0 } else { round2(agg.requests as f64 / active) },
            "total_requests": agg.requests,
        },
        "error_rate": {
            "current": last.map(|w| pct(w.errors, w.requests)).unwrap_or(0.0),
            "total_errors": agg.errors,
        },
        "system": {
            "cpu_usage": cpu,
            "memory_usage": mem,
            "network_io": net,
        },
    });
    match only {
        Some(t) => json!({ t: all.get(t).cloned().unwrap_or(Value::Null) }),
        None => all,
    }
}

/// One second of the live WebSocket.
pub fn metrics_message(p: &LivePoint, exec: &Execution) -> Value {
    let w = &p.window;
    let (cpu, mem, net) = system_point(&p.system);
    let agents: Vec<Value> = system_by_agent(p, &exec.tasks)
        .into_iter()
        .map(|(agent, cpu, memory)| json!({"agent": agent, "cpu": cpu, "memory": memory}))
        .collect();
    json!({
        "type": "metrics",
        "timestamp": w.timestamp,
        // The merged second itself (histogram as base64 HdrHistogram V2),
        // for clients that pass it on exactly (`testbed perf run --out`).
        "window": w,
        "data": {
            "active_users": w.vus,
            "requests_per_second": round2(w.rps()),
            "response_time": window_avg_ms(w),
            // Added for the console's live chart (clients reading the fields
            // above are unaffected); null in a second without responses.
            "p50": window_quantile_ms(w, 0.5),
            "p90": window_quantile_ms(w, 0.9),
            "p99": window_quantile_ms(w, 0.99),
            "error_rate": pct(w.errors, w.requests),
            "paused": w.paused,
            "system_metrics": {"cpu": cpu, "memory": mem, "network": net},
            // Each load agent's own CPU and memory (percent) in this second.
            "agents": agents,
        }
    })
}

/// A latency quantile of one second's merged histogram, in ms.
fn window_quantile_ms(w: &Window, q: f64) -> Option<f64> {
    (!w.latency.is_empty()).then(|| round2(us_to_ms(w.latency.value_at_quantile(q))))
}

/// The live WebSocket's last message: how the execution ended.
pub async fn finished_message(state: &AppState, exec: &Execution) -> Value {
    let report = match exec.report_id {
        Some(id) => records::get::<PerfReport>(&state.store, &report_key(id))
            .await
            .ok()
            .flatten()
            .map(|(r, _)| r),
        None => None,
    };
    json!({
        "type": "finished",
        "timestamp": testbed_core::now().timestamp(),
        "execution_id": exec.execution_id,
        "status": exec.status,
        "report_id": exec.report_id,
        "lost_agents": exec.lost_agents,
        "summary": report.map(|r| serde_json::to_value(r.summary).unwrap_or(Value::Null)),
    })
}
