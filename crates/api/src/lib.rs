//! The wire types of Testbed's HTTP API: every request body the server
//! reads and every JSON answer it sends, one module per resource.
//!
//! The server's handlers take and return these types and its OpenAPI
//! document (`/api/openapi.json`) is generated from them, so the document,
//! the server and the CLI, which decodes answers into the same structs,
//! cannot disagree on a field: an answer missing a field the CLI reads is a
//! decoding error naming that field, not a silently empty column.
//!
//! Field names are the external interface (seed 001's performance API,
//! seed 002's `/v2.1/slaves` and `/v2.1/testcases`): rename a Rust field
//! only with `#[serde(rename)]` keeping its JSON name.
//!
//! Types that are also records of the data model (tasks, runs, plans,
//! result reports) live in `testbed-core` and `testbed-report` and are
//! re-exported here from the module of their resource.
//!
//! What seeds 001 and 002 fix here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md.

pub mod agents;
pub mod auth;
pub mod error;
pub mod meta;
pub mod page;
pub mod performance;
pub mod projects;
pub mod reports;
pub mod resources;
pub mod runs;
pub mod tasks;

use utoipa::OpenApi;

/// Every schema of this crate, by name: merged into the server's OpenAPI
/// document, so a type is documented even before a handler names it.
#[derive(OpenApi)]
#[openapi(components(schemas(
    error::ErrorBody,
    meta::Health,
    auth::LoginRequest,
    auth::LoginResponse,
    auth::SessionView,
    auth::StreamTokenRequest,
    auth::StreamTokenResponse,
    auth::UserView,
    auth::CreateUser,
    auth::UpdateUser,
    agents::AgentInfo,
    agents::Slave,
    tasks::SubmitRequest,
    tasks::Submitted,
    tasks::TaskView,
    tasks::TaskPage,
    runs::CreateRun,
    runs::RunSummary,
    reports::CaseRow,
    resources::GroupView,
    resources::GroupMember,
    projects::Project,
    projects::ProjectInput,
    projects::Message,
    performance::PerfStatus,
    performance::LoadTest,
    performance::LoadTestInput,
    performance::LoadTestItem,
    performance::ExecTask,
    performance::Execution,
    performance::StartResponse,
    performance::StopResponse,
    performance::PauseResponse,
    performance::ResumeResponse,
    performance::Percentiles,
    performance::TimeSeries,
    performance::ErrorStats,
    performance::SystemSeries,
    performance::AgentSystemSeries,
    performance::ReportSummary,
    performance::ReportMetrics,
    performance::ThresholdOutcome,
    performance::PerfReport,
    performance::ReportItem,
)))]
pub struct Schemas;

#[cfg(test)]
mod tests;
