//! Seed 001's performance API (`/api/performance/…`): load tests (the
//! seed's "plans"), their executions and reports.
//!
//! A [`LoadTest`], an [`Execution`] and a [`PerfReport`] are also the
//! records the server stores, served as stored.
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The status of a load test (its latest execution's) and of an
/// execution. The serde names are seed 001's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PerfStatus {
    /// A load test never started.
    Created,
    Running,
    Paused,
    Completed,
    Stopped,
    Failed,
}

impl PerfStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PerfStatus::Created => "created",
            PerfStatus::Running => "running",
            PerfStatus::Paused => "paused",
            PerfStatus::Completed => "completed",
            PerfStatus::Stopped => "stopped",
            PerfStatus::Failed => "failed",
        }
    }

    /// Load is being generated, or held by a pause.
    pub fn is_active(self) -> bool {
        matches!(self, PerfStatus::Running | PerfStatus::Paused)
    }
}

impl std::fmt::Display for PerfStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A load test as stored and served at `/api/performance/plans/{id}/`
/// (seed 001 calls it a performance plan): the load to generate
/// (`config`), its project, and the status of its latest execution. Each
/// start makes an [`Execution`] of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadTest {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub project_id: u64,
    #[schema(value_type = Object)]
    pub config: Value,
    /// created, running, paused, completed, stopped or failed (of the latest execution).
    pub status: PerfStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub last_execution: Option<String>,
    /// Who created the load test: only they (or an admin) may change or
    /// delete it.
    #[serde(default)]
    pub created_by: String,
}

/// A load test's body (create and update).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadTestInput {
    #[schema(pattern = r"\S", max_length = 200)]
    pub name: String,
    pub description: Option<String>,
    /// Required on create.
    pub project_id: Option<u64>,
    /// `concurrent_users`, `ramp_up_time` (s), `hold_time` (s), `test_type`
    /// (load|stress|spike|soak), `target_url`, `request_timeout` (ms); optional
    /// `stages`, `arrival_rate`, `rate_stages`, `max_vus`, `scenario`,
    /// `thresholds`, `method`, `headers`, `body`, `protocol`, `insecure`, and
    /// `agents` (a number, or `{group}` / `{labels}` with an optional `count`).
    #[schema(value_type = Object)]
    pub config: Value,
}

/// A load test in a list (the seed's fields).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadTestItem {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub project_id: u64,
    pub status: PerfStatus,
    pub created_at: DateTime<Utc>,
}

/// One agent's share of an execution: the `load` task it runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecTask {
    pub task_id: Uuid,
    pub agent_uuid: Uuid,
    pub agent_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Execution {
    pub execution_id: String,
    pub plan_id: u64,
    /// running, paused, stopped, completed or failed.
    pub status: PerfStatus,
    pub start_time: DateTime<Utc>,
    /// When the agents begin load together (Unix ms).
    pub load_start_ms: u64,
    pub stop_time: Option<DateTime<Utc>>,
    pub pause_time: Option<DateTime<Utc>>,
    pub resume_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub tasks: Vec<ExecTask>,
    /// Agents whose share was lost (agent died mid-run).
    pub lost_agents: Vec<String>,
    pub report_id: Option<u64>,
    pub created_by: String,
}

impl Execution {
    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StartResponse {
    pub execution_id: String,
    pub status: PerfStatus,
    pub start_time: DateTime<Utc>,
    pub websocket_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StopResponse {
    pub execution_id: String,
    pub status: PerfStatus,
    pub stop_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PauseResponse {
    pub execution_id: String,
    pub status: PerfStatus,
    pub pause_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResumeResponse {
    pub execution_id: String,
    pub status: PerfStatus,
    pub resume_time: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimeSeries {
    pub timestamps: Vec<u64>,
    pub values: Vec<f64>,
    pub percentiles: Percentiles,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorStats {
    pub labels: Vec<String>,
    pub values: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SystemSeries {
    pub cpu: Vec<f64>,
    pub memory: Vec<f64>,
    pub network: Vec<f64>,
    /// Each load agent's own CPU and memory (percent), second by second
    /// beside `cpu`; null where the agent sent no sample that second.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentSystemSeries>,
}

/// One load agent's CPU and memory series in a performance report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AgentSystemSeries {
    pub cpu: Vec<Option<f64>>,
    pub memory: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportSummary {
    pub total_requests: u64,
    /// Percent.
    pub success_rate: f64,
    /// Milliseconds.
    pub avg_response_time: f64,
    pub error_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportMetrics {
    pub response_times: TimeSeries,
    pub errors: ErrorStats,
    pub system_metrics: SystemSeries,
}

/// One threshold of a load test judged on an execution's merged result:
/// the wire form of `testbed_load::ThresholdResult` (this crate does not
/// depend on the load generator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThresholdOutcome {
    /// As written in the load test, e.g. `p(95)<500`.
    pub expr: String,
    /// The metric's value in the run.
    pub observed: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PerfReport {
    pub id: u64,
    pub plan_id: u64,
    pub execution_id: String,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    /// completed, stopped or failed.
    pub status: PerfStatus,
    pub summary: ReportSummary,
    pub metrics: ReportMetrics,
    /// Agents that generated load.
    pub agents: Vec<String>,
    pub lost_agents: Vec<String>,
    /// The load test's thresholds (`p(95)<500`, `error_rate<0.01`, …)
    /// judged on the merged result of every agent.
    #[serde(default)]
    pub thresholds: Vec<ThresholdOutcome>,
    /// No threshold failed.
    #[serde(default = "yes")]
    pub passed: bool,
}

fn yes() -> bool {
    true
}

/// A report in a list (no series).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportItem {
    pub id: u64,
    pub plan_id: u64,
    pub execution_id: String,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub status: PerfStatus,
    pub summary: ReportSummary,
}
