//! Plans and their runs: `/api/plans`, `/api/runs`, `/api/results`.
//!
//! A stored plan, a run and a result are records of the data model
//! ([`testbed_core::run`]); they are served as stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

pub use testbed_core::run::{
    Instance, PlanRecord, ResultRecord, Run, RunStatus, StepState, StepStatus,
};

/// `POST /api/runs`: one of `plan_id` and `plan`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// A stored plan…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<Uuid>,
    /// …or a plan's YAML source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// What the runs list shows of a run (also its index record,
/// `/index/runs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub plan_name: String,
    pub plan_id: Option<Uuid>,
    pub status: RunStatus,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub report_id: Option<Uuid>,
}

impl RunSummary {
    pub fn of(r: &Run) -> RunSummary {
        RunSummary {
            id: r.id,
            plan_name: r.plan_name.clone(),
            plan_id: r.plan_id,
            status: r.status,
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            finished_at: r.finished_at,
            report_id: r.report_id,
        }
    }
}
