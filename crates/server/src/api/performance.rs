//! Seed-001 performance-test API: plans, execution control (start, stop,
//! pause, resume), reports, metrics and the live WebSocket. Paths keep the
//! seed's trailing slashes. Thin: each handler checks the caller's role,
//! reads its input and calls [`crate::performance`], which holds what the
//! records mean and what each operation does.
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use testbed_core::user::Role;
use utoipa::IntoParams;

use super::page::{Page, PageQuery};
use super::projects::{field_error, parse_int_id, Message};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::performance::config;
use crate::performance::control::{self, load_execution, Action, PlanFields, Started};
use crate::performance::{self as perf, LoadTest, PerfReport, PerfStatus};
use crate::records;
use crate::state::AppState;
use testbed_api::performance::{
    LoadTestInput, LoadTestItem, PauseResponse, ReportItem, ResumeResponse, StartResponse,
    StopResponse,
};

/// A plan's body, checked: every problem at once, each naming its field.
async fn validate(state: &AppState, body: &Value, creating: bool) -> ApiResult<PlanFields> {
    if !body.is_object() {
        return Err(ApiError::field("/", "the body must be a JSON object"));
    }
    let mut errs = Vec::new();
    let (name, description) = super::projects::name_and_description(body, &mut errs);
    let project_id = match body.get("project_id") {
        None | Some(Value::Null) => {
            if creating {
                errs.push(field_error("/project_id", "is required"));
            }
            None
        }
        Some(v) => match v.as_u64() {
            Some(id) => {
                if records::get::<Value>(&state.store, &super::projects::project_key(id))
                    .await?
                    .is_none()
                {
                    errs.push(field_error("/project_id", format!("no project {id}")));
                }
                Some(id)
            }
            None => {
                errs.push(field_error("/project_id", "must be a positive integer"));
                None
            }
        },
    };
    let config = match body.get("config") {
        None | Some(Value::Null) => {
            errs.push(field_error("/config", "is required"));
            Value::Null
        }
        Some(c) => {
            config::check_config(c, &mut errs);
            c.clone()
        }
    };
    if !errs.is_empty() {
        return Err(ApiError::validation(errs));
    }
    Ok(PlanFields {
        name,
        description,
        project_id,
        config,
    })
}

/// The plan a path names.
async fn load_plan(state: &AppState, raw: &str) -> ApiResult<LoadTest> {
    control::load_plan(state, parse_int_id(raw, "plan")?).await
}

/// The plan a path names, which the caller (an operator) may change.
async fn own_plan(state: &AppState, c: &Caller, raw: &str) -> ApiResult<LoadTest> {
    c.require(Role::Operator)?;
    let plan = load_plan(state, raw).await?;
    c.require_owner(&plan.created_by, &format!("plan {}", plan.id))?;
    Ok(plan)
}

/// Create a performance plan.
#[utoipa::path(post, path = "/api/performance/plans/", tag = "performance", request_body = LoadTestInput,
    responses((status = 201, body = LoadTest), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_plan(
    State(state): State<AppState>,
    c: Caller,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<LoadTest>)> {
    c.require(Role::Operator)?;
    let fields = validate(&state, &body, true).await?;
    let plan = control::create_plan(&state, &c.name, fields).await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanFilter {
    /// Required: the project whose plans to list.
    #[param(required = true, value_type = u64)]
    pub project_id: Option<String>,
}

/// A required integer query parameter (seed 001 filters lists by it).
fn required_id(name: &str, value: Option<&str>) -> ApiResult<u64> {
    match value {
        None | Some("") => Err(ApiError::bad_request(format!("{name} is required"))),
        // Ids are documented as int64, as they come from the store's counters.
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|v| i64::try_from(*v).is_ok())
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer"))),
    }
}

/// Plans of a project.
#[utoipa::path(get, path = "/api/performance/plans/", tag = "performance", params(PlanFilter, PageQuery),
    responses((status = 200, body = Page<LoadTestItem>), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_plans(
    State(state): State<AppState>,
    _c: Caller,
    Query(f): Query<PlanFilter>,
    Query(p): Query<PageQuery>,
) -> ApiResult<Json<Page<LoadTestItem>>> {
    p.check()?;
    let project = required_id("project_id", f.project_id.as_deref())?;
    Ok(Json(p.apply(control::plans_of(&state, project).await?)))
}

/// One plan.
#[utoipa::path(get, path = "/api/performance/plans/{plan_id}/", tag = "performance",
    params(("plan_id" = u64, Path)),
    responses((status = 200, body = LoadTest), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_plan(
    State(state): State<AppState>,
    _c: Caller,
    Path(plan_id): Path<String>,
) -> ApiResult<Json<LoadTest>> {
    Ok(Json(load_plan(&state, &plan_id).await?))
}

/// Update a plan (name, description, config; project_id optional).
#[utoipa::path(put, path = "/api/performance/plans/{plan_id}/", tag = "performance",
    params(("plan_id" = u64, Path)), request_body = LoadTestInput,
    responses((status = 200, body = LoadTest), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_plan(
    State(state): State<AppState>,
    c: Caller,
    Path(plan_id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Json<LoadTest>> {
    let plan = own_plan(&state, &c, &plan_id).await?;
    let fields = validate(&state, &body, false).await?;
    Ok(Json(control::update_plan(&state, plan.id, fields).await?))
}

/// Delete a plan (refused while it runs).
#[utoipa::path(delete, path = "/api/performance/plans/{plan_id}/", tag = "performance",
    params(("plan_id" = u64, Path)),
    responses((status = 200, body = Message), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_plan(
    State(state): State<AppState>,
    c: Caller,
    Path(plan_id): Path<String>,
) -> ApiResult<Json<Message>> {
    let plan = own_plan(&state, &c, &plan_id).await?;
    control::delete_plan(&state, &plan).await?;
    Ok(Json(Message {
        message: format!("plan {} deleted", plan.id),
    }))
}

/// Start the plan on the agents carrying the `load` plugin.
#[utoipa::path(post, path = "/api/performance/plans/{plan_id}/start/", tag = "performance",
    params(("plan_id" = u64, Path)),
    responses((status = 200, body = StartResponse), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    c: Caller,
    headers: HeaderMap,
    Path(plan_id): Path<String>,
) -> ApiResult<Json<StartResponse>> {
    c.require(Role::Operator)?;
    let plan = load_plan(&state, &plan_id).await?;
    let (profile, sel) = config::read(&plan.config).map_err(ApiError::validation)?;
    let Started {
        execution_id,
        start_time,
    } = control::start(&state, &c.name, &plan, profile, &sel).await?;

    // Scoped to this execution's stream and read-only: the URL gets
    // passed around, a session token must not be.
    let token = state
        .auth
        .issue_stream(&c, &format!("/ws/performance/{execution_id}/"))?;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    // The same scheme the client reached us by: a TLS server's stream
    // must not be advertised as plain `ws://`.
    let scheme = if state.settings.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    Ok(Json(StartResponse {
        websocket_url: format!("{scheme}://{host}/ws/performance/{execution_id}/?token={token}"),
        execution_id,
        status: PerfStatus::Running,
        start_time,
    }))
}

/// Stop, pause or resume the plan's current execution as an operator who
/// may act on it: the execution's id and when it moved.
async fn act(
    state: &AppState,
    c: &Caller,
    plan_id: &str,
    action: Action,
) -> ApiResult<(String, DateTime<Utc>)> {
    c.require(Role::Operator)?;
    let plan = load_plan(state, plan_id).await?;
    let (exec, at) = control::act(state, &plan, action, |e| {
        c.require_owner(&e.created_by, &format!("execution {}", e.execution_id))
    })
    .await?;
    Ok((exec.execution_id, at))
}

/// Stop the running (or paused) execution; its report is still produced.
#[utoipa::path(post, path = "/api/performance/plans/{plan_id}/stop/", tag = "performance",
    params(("plan_id" = u64, Path)),
    responses((status = 200, body = StopResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    c: Caller,
    Path(plan_id): Path<String>,
) -> ApiResult<Json<StopResponse>> {
    let (execution_id, stop_time) = act(&state, &c, &plan_id, Action::Stop).await?;
    let status = Action::Stop.to();
    Ok(Json(StopResponse {
        execution_id,
        status,
        stop_time,
    }))
}

/// Pause the running execution: no new requests until resumed.
#[utoipa::path(post, path = "/api/performance/plans/{plan_id}/pause/", tag = "performance",
    params(("plan_id" = u64, Path)),
    responses((status = 200, body = PauseResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    c: Caller,
    Path(plan_id): Path<String>,
) -> ApiResult<Json<PauseResponse>> {
    let (execution_id, pause_time) = act(&state, &c, &plan_id, Action::Pause).await?;
    let status = Action::Pause.to();
    Ok(Json(PauseResponse {
        execution_id,
        status,
        pause_time,
    }))
}

/// Resume the paused execution; the remaining schedule continues.
#[utoipa::path(post, path = "/api/performance/plans/{plan_id}/resume/", tag = "performance",
    params(("plan_id" = u64, Path)),
    responses((status = 200, body = ResumeResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    c: Caller,
    Path(plan_id): Path<String>,
) -> ApiResult<Json<ResumeResponse>> {
    let (execution_id, resume_time) = act(&state, &c, &plan_id, Action::Resume).await?;
    let status = Action::Resume.to();
    Ok(Json(ResumeResponse {
        execution_id,
        status,
        resume_time,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportFilter {
    /// Required: the plan whose reports to list.
    #[param(required = true, value_type = u64)]
    pub plan_id: Option<String>,
}

/// Reports of a plan.
#[utoipa::path(get, path = "/api/performance/reports/", tag = "performance", params(ReportFilter, PageQuery),
    responses((status = 200, body = Page<ReportItem>), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_reports(
    State(state): State<AppState>,
    _c: Caller,
    Query(f): Query<ReportFilter>,
    Query(p): Query<PageQuery>,
) -> ApiResult<Json<Page<ReportItem>>> {
    p.check()?;
    let plan = required_id("plan_id", f.plan_id.as_deref())?;
    Ok(Json(p.apply(control::reports_of(&state, plan).await?)))
}

/// One report with its series.
#[utoipa::path(get, path = "/api/performance/reports/{report_id}/", tag = "performance",
    params(("report_id" = u64, Path)),
    responses((status = 200, body = PerfReport), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_report(
    State(state): State<AppState>,
    _c: Caller,
    Path(report_id): Path<String>,
) -> ApiResult<Json<PerfReport>> {
    let id = parse_int_id(&report_id, "report")?;
    Ok(Json(control::load_report(&state, id).await?))
}

/// Delete a report (and its stored windows).
#[utoipa::path(delete, path = "/api/performance/reports/{report_id}/", tag = "performance",
    params(("report_id" = u64, Path)),
    responses((status = 200, body = Message), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_report(
    State(state): State<AppState>,
    c: Caller,
    Path(report_id): Path<String>,
) -> ApiResult<Json<Message>> {
    c.require(Role::Operator)?;
    let id = parse_int_id(&report_id, "report")?;
    control::delete_report(&state, id, |owner| {
        c.require_owner(owner, &format!("report {id}"))
    })
    .await?;
    Ok(Json(Message {
        message: format!("report {id} deleted"),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// response_time, throughput, error_rate or system (default: all).
    #[param(pattern = r"^(response_time|throughput|error_rate|system)$")]
    pub metric_type: Option<String>,
    /// Only the last this many seconds (default: the whole execution).
    pub time_range: Option<u64>,
}

/// Current metrics of an execution.
#[utoipa::path(get, path = "/api/performance/metrics/{execution_id}/", tag = "performance",
    params(("execution_id" = String, Path), MetricsQuery),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    _c: Caller,
    Path(execution_id): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<Json<Value>> {
    let types = perf::METRIC_TYPES;
    if let Some(t) = q.metric_type.as_deref().filter(|t| !types.contains(t)) {
        return Err(ApiError::field(
            "metric_type",
            format!("unknown metric type `{t}` (expected {})", types.join(", ")),
        ));
    }
    let exec = load_execution(&state, &execution_id).await?;
    let (windows, system) = perf::series(&state, &exec, q.time_range).await;
    Ok(Json(json!({
        "execution_id": exec.execution_id,
        "status": exec.status,
        "timestamp": testbed_core::now(),
        "metrics": perf::metrics_body(&windows, &system, q.metric_type.as_deref()),
    })))
}

/// Live metrics: a `metrics` message per second while the execution runs,
/// then a `finished` message with the summary. Bearer header or `?token=`.
#[utoipa::path(get, path = "/ws/performance/{execution_id}/", tag = "performance",
    params(("execution_id" = String, Path)),
    responses((status = 101, description = "WebSocket of JSON messages"), (status = 400, description = "not a WebSocket upgrade request"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn live(
    State(state): State<AppState>,
    _c: Caller,
    Path(execution_id): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    load_execution(&state, &execution_id).await?;
    Ok(ws
        // Viewers only listen: anything they send is small or a mistake.
        .max_message_size(crate::api::CLIENT_WS_MAX_MESSAGE)
        .on_upgrade(move |socket| {
            state
                .metrics
                .clone()
                .track_ws("performance_live", stream_live(state, execution_id, socket))
        }))
}

async fn send_json(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(WsMessage::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn stream_live(state: AppState, execution_id: String, mut socket: WebSocket) {
    let mut next_index: u64 = 0;
    loop {
        let exec = match load_execution(&state, &execution_id).await {
            Ok(e) => e,
            Err(_) => return,
        };
        let ended = exec.report_id.is_some();
        if let Ok(live) =
            perf::live_since(&state, &execution_id, next_index, exec.tasks.len()).await
        {
            let newest = live.points.keys().next_back().copied();
            let expected = live.expected.max(1);
            for (idx, p) in live.points.range(next_index..) {
                // A second is complete when every agent's window is in, or
                // a later one exists (an agent finished or was lost).
                let complete = p.contributors >= expected || Some(*idx) != newest || ended;
                if !complete {
                    break;
                }
                if !send_json(&mut socket, &perf::metrics_message(p, &exec)).await {
                    return;
                }
                next_index = idx + 1;
            }
        }
        if ended {
            let _ = send_json(&mut socket, &perf::finished_message(&state, &exec).await).await;
            let _ = socket
                .send(WsMessage::Close(Some(CloseFrame {
                    code: 1000,
                    reason: exec.status.as_str().into(),
                })))
                .await;
            return;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            msg = socket.recv() => {
                if matches!(msg, None | Some(Err(_)) | Some(Ok(WsMessage::Close(_)))) {
                    return;
                }
            }
        }
    }
}
