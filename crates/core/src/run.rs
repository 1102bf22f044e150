//! Runs of plans and the seed-003 resources around them: test cases,
//! environments, groups and the latest result per case and environment.
//!
//! What seed 003 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-003-the-store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::plan::{PlanSpec, TargetSpec};

/// A stored test case (seed 003: `steps`, `expected_result`), plus what
/// executes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Human-readable steps (seed 003).
    #[serde(default)]
    pub steps: Vec<String>,
    #[serde(default)]
    pub expected_result: String,
    #[schema(pattern = r"\S")]
    pub plugin: String,
    #[schema(pattern = r"\S")]
    pub method: String,
    /// Parameters; may reference `{{ env.NAME }}` of the environment.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub parameters: Value,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{1,9}(ns|us|ms|s|m|h|d|w)( ?[0-9]{1,9}(ns|us|ms|s|m|h|d|w))*$")]
    pub timeout: Option<String>,
    #[serde(default)]
    #[schema(value_type = u64, maximum = 4294967295_u64)]
    pub retries: u32,
    #[serde(default = "crate::now")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "crate::now")]
    pub updated_at: DateTime<Utc>,
}

/// A test environment: variables and which agents it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: BTreeMap<String, Value>,
    /// Agents of this environment (a host, agent, group or labels).
    #[serde(default, deserialize_with = "selector_object")]
    pub selector: Option<TargetSpec>,
    #[serde(default = "crate::now")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "crate::now")]
    pub updated_at: DateTime<Utc>,
}

/// A group of agents, for isolation. Membership is kept on the agents'
/// records (their `groups`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "crate::now")]
    pub created_at: DateTime<Utc>,
}

/// `/groups/{name}/lock`: the run holding the group exclusively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupLock {
    pub run_id: Uuid,
    pub since: DateTime<Utc>,
}

/// A selector only as the object the API documents: serde would also read a
/// struct from an array of its fields in order (`[null, "vm"]`).
fn selector_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TargetSpec>, D::Error> {
    fn objects_only(v: &Value, path: &str) -> Result<(), String> {
        match v {
            Value::Null => Ok(()),
            Value::Object(m) => match m.get("each") {
                // `each: all` is the one word a selector takes.
                Some(Value::String(w)) if w == "all" => Ok(()),
                Some(each) => objects_only(each, &format!("{path}/each")),
                None => Ok(()),
            },
            _ => Err(format!(
                "`{path}` must be an object (host, agent, group, labels or each)"
            )),
        }
    }
    let v = Value::deserialize(d)?;
    objects_only(&v, "selector").map_err(serde::de::Error::custom)?;
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A stored plan at `/plans/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanRecord {
    pub id: Uuid,
    pub name: String,
    /// The YAML it was created from (kept so edits and line numbers match).
    pub source: String,
    pub spec: PlanSpec,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Running,
    Passed,
    Failed,
    Cancelled,
    Error,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Passed,
    Failed,
    Error,
    Skipped,
    Cancelled,
    /// Its last attempt was lost with its agent (the outcome is unknown)
    /// and no retry was left.
    Lost,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Error => "error",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Lost => "lost",
        }
    }
}

/// One execution of a step on one agent (several for `each:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub agent_uuid: Uuid,
    pub agent_name: String,
    pub status: StepStatus,
    /// 1 for the first try.
    pub attempt: u32,
    pub task_id: Option<Uuid>,
    /// Tasks of earlier attempts.
    #[serde(default)]
    pub previous: Vec<Uuid>,
    pub exit_code: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub reason: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepState {
    pub status: StepStatus,
    /// Why it is pending, skipped or failed.
    pub reason: Option<String>,
    #[serde(default)]
    pub instances: Vec<Instance>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub outputs: BTreeMap<String, Value>,
    /// When the step became ready to run (for the pending timeout).
    pub ready_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepState {
    pub fn new() -> Self {
        StepState {
            status: StepStatus::Pending,
            reason: None,
            instances: Vec::new(),
            outputs: BTreeMap::new(),
            ready_at: None,
            started_at: None,
            finished_at: None,
        }
    }
}

impl Default for StepState {
    fn default() -> Self {
        Self::new()
    }
}

/// A run of a plan at `/runs/{id}`: the whole state the controller needs,
/// so any replica can continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub kind: String,
    pub v: u32,
    pub id: Uuid,
    pub plan_id: Option<Uuid>,
    pub plan_name: String,
    /// The plan as it was when the run started.
    pub spec: PlanSpec,
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Value>,
    pub environment: Option<String>,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub steps: BTreeMap<String, StepState>,
    pub cancel_requested: bool,
    pub report_id: Option<Uuid>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Run {
    pub const KIND: &'static str = "run";
}

/// The latest result of a test case in an environment (seed 003's
/// `/results/{testcase}/{environment}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultRecord {
    pub testcase: String,
    pub environment: String,
    /// pass, fail, error, skip.
    pub status: String,
    pub run_id: Uuid,
    pub task_id: Option<Uuid>,
    pub agent: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub message: Option<String>,
    pub log_url: Option<String>,
    pub finished_at: DateTime<Utc>,
}

/// `/reports/{id}`: a report's summary; the body is a blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportRecord {
    pub id: Uuid,
    pub name: String,
    pub run_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
    pub xfailed: usize,
    pub xpassed: usize,
    pub duration_ms: u64,
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::Environment;

    #[test]
    fn selector_is_an_object_only() {
        let ok: Environment =
            serde_json::from_str(r#"{"name":"e","selector":{"each":{"group":"lab"}}}"#).unwrap();
        assert_eq!(
            ok.selector.unwrap().each.unwrap().group.as_deref(),
            Some("lab")
        );
        for bad in [
            r#"{"name":"e","selector":[null,"vm"]}"#,
            r#"{"name":"e","selector":{"each":[null,null]}}"#,
        ] {
            let err = serde_json::from_str::<Environment>(bad).unwrap_err();
            assert!(err.to_string().contains("must be an object"), "{err}");
        }
        let none: Environment = serde_json::from_str(r#"{"name":"e","selector":null}"#).unwrap();
        assert!(none.selector.is_none());
        // `each: all` at any depth, as the OpenAPI document allows; no other word.
        for all in [
            r#"{"name":"e","selector":{"each":"all"}}"#,
            r#"{"name":"e","selector":{"each":{"each":"all"}}}"#,
        ] {
            let e: Environment = serde_json::from_str(all).unwrap();
            assert!(e.selector.unwrap().each.is_some(), "{all}");
        }
        assert!(serde_json::from_str::<Environment>(
            r#"{"name":"e","selector":{"each":{"each":"every"}}}"#
        )
        .is_err());
    }
}
