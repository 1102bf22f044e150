//! Performance tests (seed 001) behind the API: plan, execution and report
//! records, the live per-second series merged from the load agents, and the
//! watcher that turns a finished execution into a report.
//!
//! Two paths carry an agent's windows. Live: each window arrives as a
//! `metrics` message on the replica holding the agent's session, is merged
//! into [`Live`], and that replica's share of the second is published in the
//! store (`/performance/live/{execution}/{second}/{replica}`), which is what
//! the WebSocket and the metrics endpoint of *every* replica read and merge
//! ([`live_since`]). Exact: the `load` task's result holds every window, so
//! the report is built from the stored results and loses nothing when a
//! connection drops.
//!
//! Why the store and not a replica-to-replica relay: every replica already
//! reads and watches the store, so the relay needs no membership, addresses
//! or authentication between replicas, survives a replica's restart, and a
//! reader on any replica (or one that connects late) sees every second from
//! the start. Its cost is one small write per load agent per second.
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

pub mod control;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

#[derive(Debug, Clone, Default)]
pub struct ExecLive {
    pub points: BTreeMap<u64, LivePoint>,
    /// Agents (tasks) of the execution, when this replica started it.
    pub expected: usize,
}

#[derive(Default)]
struct LiveInner {
    execs: HashMap<String, ExecLive>,
    tasks: HashMap<Uuid, String>,
    /// Each task's own windows, for a report that must do without the
    /// result of a task whose agent died.
    per_task: HashMap<Uuid, Vec<Window>>,
}

/// The live series of the executions whose agents report to this replica.
#[derive(Default)]
pub struct Live {
    inner: Mutex<LiveInner>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, execution: &str, tasks: &[Uuid]) {
        let mut l = self.lock();
        l.execs.entry(execution.to_string()).or_default().expected = tasks.len();
        for t in tasks {
            l.tasks.insert(*t, execution.to_string());
        }
    }

    fn execution_of(&self, task: &Uuid) -> Option<String> {
        self.lock().tasks.get(task).cloned()
    }

    fn bind(&self, task: Uuid, execution: &str) {
        let mut l = self.lock();
        l.tasks.insert(task, execution.to_string());
        l.execs.entry(execution.to_string()).or_default();
    }

    fn record(&self, execution: &str, task: Uuid, window: Window, system: SystemMetrics) {
        let mut l = self.lock();
        l.per_task.entry(task).or_default().push(window.clone());
        let exec = l.execs.entry(execution.to_string()).or_default();
        match exec.points.get_mut(&window.index) {
            Some(p) => {
                p.window.merge(&window);
                p.contributors += 1;
                p.system.push(system);
                p.system_tasks.push(task);
            }
            None => {
                exec.points.insert(
                    window.index,
                    LivePoint {
                        window,
                        contributors: 1,
                        system: vec![system],
                        system_tasks: vec![task],
                    },
                );
            }
        }
    }

    pub fn snapshot(&self, execution: &str) -> Option<ExecLive> {
        self.lock().execs.get(execution).cloned()
    }

    /// This replica's share of one second of an execution.
    fn point(&self, execution: &str, index: u64) -> Option<LivePoint> {
        self.lock()
            .execs
            .get(execution)
            .and_then(|e| e.points.get(&index))
            .cloned()
    }

    fn task_windows(&self, task: &Uuid) -> Vec<Window> {
        self.lock().per_task.get(task).cloned().unwrap_or_default()
    }

    pub fn forget(&self, execution: &str) {
        let mut l = self.lock();
        l.execs.remove(execution);
        let gone: Vec<Uuid> = l
            .tasks
            .iter()
            .filter(|(_, e)| *e == execution)
            .map(|(t, _)| *t)
            .collect();
        for t in gone {
            l.tasks.remove(&t);
            l.per_task.remove(&t);
        }
    }
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

/// A `metrics` message from an agent.
pub async fn on_metrics(state: &AppState, task_id: Uuid, window: Value, system: SystemMetrics) {
    let window: Window = match serde_json::from_value(window) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(%task_id, "unreadable load window: {e}");
            return;
        }
    };
    let execution = match state.perf.execution_of(&task_id) {
        Some(e) => e,
        None => {
            // Started by another replica: the task names its execution.
            let Ok(Some((task, _))) =
                records::get::<Task>(&state.store, &keys::task(&task_id)).await
            else {
                return;
            };
            let Some(e) = task
                .parameters
                .get("execution_id")
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                return;
            };
            state.perf.bind(task_id, &e);
            e
        }
    };
    let index = window.index;
    state.metrics.load_window(&execution, task_id, &window);
    state.perf.record(&execution, task_id, window, system);
    if let Some(p) = state.perf.point(&execution, index) {
        publish(state, &execution, index, &p).await;
    }
}

/// One replica's share of one second, as stored for the other replicas.
#[derive(Debug, Serialize, Deserialize)]
struct LiveShare {
    window: Window,
    contributors: usize,
    system: Vec<SystemMetrics>,
    system_tasks: Vec<Uuid>,
}

async fn publish(state: &AppState, execution: &str, index: u64, p: &LivePoint) {
    let share = LiveShare {
        window: p.window.clone(),
        contributors: p.contributors,
        system: p.system.clone(),
        system_tasks: p.system_tasks.clone(),
    };
    let key = keys::perf_live(execution, index, &state.replica);
    match serde_json::to_vec(&share) {
        Ok(bytes) => {
            if let Err(e) = state.store.put(&key, bytes, None).await {
                // The live view misses this second; the report does not.
                tracing::warn!(%execution, "publishing a live second: {e}");
            }
        }
        Err(e) => tracing::warn!(%execution, "encoding a live second: {e}"),
    }
}

/// The live seconds of an execution from `from` on, merged across the
/// replicas that received its agents' windows. `expected` is how many
/// agents the execution has.
pub async fn live_since(
    state: &AppState,
    execution: &str,
    from: u64,
    expected: usize,
) -> ApiResult<ExecLive> {
    let prefix = keys::perf_live_prefix(execution);
    // Keys sort by second (zero-padded): start just before `from`'s.
    let mut after = (from > 0).then(|| format!("{prefix}{:020}", from - 1) + "0");
    let mut out = ExecLive {
        points: BTreeMap::new(),
        expected,
    };
    loop {
        let page = state.store.range(&prefix, after.as_deref(), 500).await?;
        for kv in &page.kvs {
            let Ok(share) = serde_json::from_slice::<LiveShare>(&kv.value) else {
                continue;
            };
            match out.points.get_mut(&share.window.index) {
                Some(p) => {
                    p.window.merge(&share.window);
                    p.contributors += share.contributors;
                    p.system.extend(share.system);
                    p.system_tasks.extend(share.system_tasks);
                }
                None => {
                    out.points.insert(
                        share.window.index,
                        LivePoint {
                            window: share.window,
                            contributors: share.contributors,
                            system: share.system,
                            system_tasks: share.system_tasks,
                        },
                    );
                }
            }
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return Ok(out),
        }
    }
}

/// Removes an execution's live seconds (its report holds them for good).
async fn forget_live(state: &AppState, execution: &str) {
    let prefix = keys::perf_live_prefix(execution);
    loop {
        let page = match state.store.range(&prefix, None, 100).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%execution, "removing live seconds: {e}");
                return;
            }
        };
        if page.kvs.is_empty() {
            return;
        }
        let ops = page
            .kvs
            .iter()
            .map(|kv| testbed_store::TxnOp::Delete {
                key: kv.key.clone(),
            })
            .collect();
        if let Err(e) = state.store.txn(&[], ops).await {
            tracing::warn!(%execution, "removing live seconds: {e}");
            return;
        }
        if !page.more {
            return;
        }
    }
}

/// Follows an execution until all its tasks ended, records agents lost on
/// the way, then builds its report. Idempotent, so a second watcher (or a
/// restart) does no harm.
pub async fn watch_execution(state: AppState, execution: String) {
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        match step(&state, &execution).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(%execution, "performance execution: {}", e.message),
        }
    }
    // Keep the live series a little longer for late WebSocket readers.
    tokio::select! {
        _ = state.shutdown.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
    }
    state.perf.forget(&execution);
    forget_live(&state, &execution).await;
}

/// Controller-leader pass over unreported executions (see [`ACTIVE`]).
pub async fn sweep(state: &AppState) -> ApiResult<()> {
    let active: Vec<(String, Value)> = records::list(&state.store, ACTIVE, |_| true).await?;
    for (key, _) in active {
        let execution = &key[ACTIVE.len()..];
        step(state, execution).await?;
    }
    Ok(())
}

async fn step(state: &AppState, execution: &str) -> ApiResult<bool> {
    let key = execution_key(execution);
    let Some((exec, _)) = records::get::<Execution>(&state.store, &key).await? else {
        state.store.delete(&active_key(execution)).await?;
        return Ok(true);
    };
    if exec.report_id.is_some() {
        state.store.delete(&active_key(execution)).await?;
        return Ok(true);
    }
    let mut tasks = Vec::new();
    for t in &exec.tasks {
        if let Some((task, _)) = records::get::<Task>(&state.store, &keys::task(&t.task_id)).await?
        {
            tasks.push(task);
        }
    }
    let lost: Vec<String> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Lost && !exec.lost_agents.contains(&t.agent_name))
        .map(|t| t.agent_name.clone())
        .collect();
    if !lost.is_empty() {
        tracing::warn!(%execution, "load agents lost: {}", lost.join(", "));
        records::update::<Execution, _>(&state.store, &key, |e| {
            let mut changed = false;
            for a in &lost {
                if !e.lost_agents.contains(a) {
                    e.lost_agents.push(a.clone());
                    changed = true;
                }
            }
            changed
        })
        .await?;
    }
    // A task record still missing long after the start was never created
    // (its dispatch failed): the execution ends without it.
    let stale = testbed_core::now() - exec.start_time > chrono::Duration::seconds(30);
    if (tasks.len() < exec.tasks.len() && !stale) || !tasks.iter().all(|t| t.status.is_terminal()) {
        return Ok(false);
    }
    finalize(state, execution, &tasks).await?;
    Ok(true)
}

/// Windows of every task's result (inline, or the artifact a long run
/// uploaded), merged per second. A task without a result (its agent was
/// lost) counts with the windows it sent live.
async fn merged_windows(state: &AppState, tasks: &[Task]) -> Vec<Window> {
    let mut all: Vec<Window> = Vec::new();
    for t in tasks {
        let result = t.result.as_ref();
        if let Some(name) = result
            .and_then(|r| r.get("windows_artifact"))
            .and_then(Value::as_str)
        {
            match state.blobs.get(&keys::artifact_blob(&t.id, name)).await {
                Ok(Some(bytes)) => match serde_json::from_slice::<Vec<Window>>(&bytes) {
                    Ok(ws) => all.extend(ws),
                    Err(e) => tracing::warn!(task = %t.id, "unreadable windows artifact: {e}"),
                },
                Ok(None) => tracing::warn!(task = %t.id, "windows artifact missing"),
                Err(e) => tracing::warn!(task = %t.id, "reading windows artifact: {e}"),
            }
            continue;
        }
        let Some(ws) = result
            .and_then(|r| r.get("windows"))
            .and_then(Value::as_array)
        else {
            all.extend(state.perf.task_windows(&t.id));
            continue;
        };
        for w in ws {
            match serde_json::from_value::<Window>(w.clone()) {
                Ok(w) => all.push(w),
                Err(e) => tracing::warn!(task = %t.id, "unreadable window in result: {e}"),
            }
        }
    }
    merge_windows(all.iter())
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

async fn finalize(state: &AppState, execution: &str, tasks: &[Task]) -> ApiResult<()> {
    let key = execution_key(execution);
    let windows = merged_windows(state, tasks).await;
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
        let report = build_report(state, &exec, report_id, end, &windows, &agg).await;
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
    state.store.delete(&active_key(execution)).await?;
    let status = exec.status;
    records::update::<LoadTest, _>(&state.store, &plan_key(exec.plan_id), |p| {
        if p.last_execution.as_deref() == Some(execution) && p.status != status {
            p.status = status;
            true
        } else {
            false
        }
    })
    .await?;
    tracing::info!(%execution, report_id, requests = agg.requests, "performance execution ended: {status}");
    Ok(())
}

/// The report of an execution that ends at `end`, from its merged windows.
async fn build_report(
    state: &AppState,
    exec: &Execution,
    report_id: u64,
    end: DateTime<Utc>,
    windows: &[Window],
    agg: &Aggregate,
) -> PerfReport {
    let execution = exec.execution_id.as_str();
    let live = state.perf.snapshot(execution);
    let mut system = SystemSeries::default();
    if let Some(live) = &live {
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
