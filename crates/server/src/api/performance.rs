//! Seed-001 performance-test API: plans, execution control (start, stop,
//! pause, resume), reports, metrics and the live WebSocket. Paths keep the
//! seed's trailing slashes.
//!
//! What seed 001 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-001-http-api-and-performance-tests.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use testbed_core::keys;
use testbed_core::schema::FieldError;
use testbed_core::user::Role;
use testbed_load::{SeedConfig, Window};
use utoipa::IntoParams;

use super::page::{Page, PageQuery};
use super::projects::{field_error, parse_int_id, Message};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::performance::control::{self, load_execution, AgentSel, Started};
use crate::performance::{
    self as perf, plan_key, report_key, round2, Execution, LoadTest, PerfReport, PerfStatus,
};
use crate::records;
use crate::state::AppState;
use testbed_api::performance::{
    LoadTestInput, LoadTestItem, PauseResponse, ReportItem, ResumeResponse, StartResponse,
    StopResponse,
};

fn agent_sel(config: &Value, errs: &mut Vec<FieldError>) -> AgentSel {
    let mut sel = AgentSel {
        count: 1,
        ..Default::default()
    };
    let bad_count = |errs: &mut Vec<FieldError>| {
        errs.push(field_error(
            "/config/agents",
            "count must be an integer from 1 to 1000",
        ))
    };
    let count = |v: &Value, errs: &mut Vec<FieldError>| match v.as_u64() {
        Some(n) if (1..=1000).contains(&n) => n as usize,
        _ => {
            bad_count(errs);
            1
        }
    };
    match config.get("agents") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Number(_)) => sel.count = count(v, errs),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match k.as_str() {
                    "count" => sel.count = count(v, errs),
                    "group" => match v.as_str() {
                        Some(g) if !g.is_empty() => sel.group = Some(g.to_string()),
                        _ => errs.push(field_error("/config/agents/group", "must be a group name")),
                    },
                    "labels" => match serde_json::from_value::<BTreeMap<String, String>>(v.clone())
                    {
                        Ok(l) => sel.labels = l,
                        Err(_) => errs.push(field_error(
                            "/config/agents/labels",
                            "must be an object of string labels",
                        )),
                    },
                    other => errs.push(field_error(
                        &format!("/config/agents/{other}"),
                        "unknown field (expected count, group or labels)",
                    )),
                }
            }
        }
        Some(_) => errs.push(field_error(
            "/config/agents",
            "must be a number of agents or an object {count, group, labels}",
        )),
    }
    sel
}

/// Every problem with the config, each naming its field under `/config/`.
fn check_config(config: &Value, errs: &mut Vec<FieldError>) -> Option<testbed_load::LoadProfile> {
    if !config.is_object() {
        errs.push(field_error("/config", "must be an object"));
        return None;
    }
    agent_sel(config, errs);
    let field = |f: &str| format!("/config/{}", f.replace('.', "/"));
    match SeedConfig::from_json(config) {
        Err(e) => {
            errs.extend(
                e.errors
                    .iter()
                    .map(|x| field_error(&field(&x.field), x.message.clone())),
            );
            None
        }
        Ok(cfg) => {
            let unknown: Vec<&String> = cfg.extra.keys().filter(|k| *k != "agents").collect();
            for k in unknown {
                errs.push(field_error(&field(k), "unknown field"));
            }
            match cfg.to_plan() {
                Ok(p) => Some(p),
                Err(e) => {
                    errs.extend(
                        e.errors
                            .iter()
                            .map(|x| field_error(&field(&x.field), x.message.clone())),
                    );
                    None
                }
            }
        }
    }
}

struct ValidPlan {
    name: String,
    description: String,
    project_id: Option<u64>,
    config: Value,
}

async fn validate(state: &AppState, body: &Value, creating: bool) -> ApiResult<ValidPlan> {
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
            check_config(c, &mut errs);
            c.clone()
        }
    };
    if !errs.is_empty() {
        return Err(ApiError::validation(errs));
    }
    Ok(ValidPlan {
        name,
        description,
        project_id,
        config,
    })
}

async fn load_plan(state: &AppState, raw: &str) -> ApiResult<LoadTest> {
    let id = parse_int_id(raw, "plan")?;
    records::get::<LoadTest>(&state.store, &plan_key(id))
        .await?
        .map(|(p, _)| p)
        .ok_or_else(|| ApiError::not_found(format!("no plan {id}")))
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
    let v = validate(&state, &body, true).await?;
    let id = records::next_counter(&state.store, &keys::counter("performance_plan_id")).await?;
    let now = testbed_core::now();
    let plan = LoadTest {
        id,
        name: v.name,
        description: v.description,
        project_id: v.project_id.unwrap_or_default(),
        config: v.config,
        status: PerfStatus::Created,
        created_at: now,
        updated_at: now,
        last_execution: None,
        created_by: c.name.clone(),
    };
    if !records::create(&state.store, &plan_key(id), &plan, None).await? {
        return Err(ApiError::conflict(format!("plan {id} exists")));
    }
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
    let mut plans: Vec<LoadTest> = records::list(&state.store, perf::PLANS, |_| true)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .filter(|p: &LoadTest| p.project_id == project)
        .collect();
    plans.sort_by_key(|p| p.id);
    let items = plans
        .into_iter()
        .map(|p| LoadTestItem {
            id: p.id,
            name: p.name,
            description: p.description,
            project_id: p.project_id,
            status: p.status,
            created_at: p.created_at,
        })
        .collect();
    Ok(Json(p.apply(items)))
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
    c.require(Role::Operator)?;
    let current = load_plan(&state, &plan_id).await?;
    c.require_owner(&current.created_by, &format!("plan {}", current.id))?;
    let v = validate(&state, &body, false).await?;
    let now = testbed_core::now();
    let updated = records::update::<LoadTest, _>(&state.store, &plan_key(current.id), |p| {
        p.name = v.name.clone();
        p.description = v.description.clone();
        if let Some(project) = v.project_id {
            p.project_id = project;
        }
        p.config = v.config.clone();
        p.updated_at = now;
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no plan {}", current.id)))?;
    Ok(Json(updated))
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
    c.require(Role::Operator)?;
    let plan = load_plan(&state, &plan_id).await?;
    c.require_owner(&plan.created_by, &format!("plan {}", plan.id))?;
    if plan.status.is_active() {
        return Err(ApiError::conflict(format!(
            "plan {} is {}; stop it first",
            plan.id, plan.status
        )));
    }
    if !state.store.delete(&plan_key(plan.id)).await? {
        return Err(ApiError::not_found(format!("no plan {}", plan.id)));
    }
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
    let mut errs = Vec::new();
    let engine_plan = check_config(&plan.config, &mut errs);
    let sel = agent_sel(&plan.config, &mut errs);
    let Some(engine_plan) = engine_plan.filter(|_| errs.is_empty()) else {
        return Err(ApiError::validation(errs));
    };
    let Started {
        execution_id,
        start_time: now,
    } = control::start(&state, &c.name, &plan, engine_plan, &sel).await?;

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
        start_time: now,
    }))
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
    c.require(Role::Operator)?;
    let plan = load_plan(&state, &plan_id).await?;
    let (exec, now) = control::stop(&state, &plan, |e| {
        c.require_owner(&e.created_by, &format!("execution {}", e.execution_id))
    })
    .await?;
    Ok(Json(StopResponse {
        execution_id: exec.execution_id,
        status: PerfStatus::Stopped,
        stop_time: now,
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
    c.require(Role::Operator)?;
    let plan = load_plan(&state, &plan_id).await?;
    let (exec, now) = control::pause(&state, &plan, |e| {
        c.require_owner(&e.created_by, &format!("execution {}", e.execution_id))
    })
    .await?;
    Ok(Json(PauseResponse {
        execution_id: exec.execution_id,
        status: PerfStatus::Paused,
        pause_time: now,
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
    c.require(Role::Operator)?;
    let plan = load_plan(&state, &plan_id).await?;
    let (exec, now) = control::resume(&state, &plan, |e| {
        c.require_owner(&e.created_by, &format!("execution {}", e.execution_id))
    })
    .await?;
    Ok(Json(ResumeResponse {
        execution_id: exec.execution_id,
        status: PerfStatus::Running,
        resume_time: now,
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
    let mut reports: Vec<PerfReport> = records::list(&state.store, perf::REPORTS, |_| true)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .filter(|r: &PerfReport| r.plan_id == plan)
        .collect();
    reports.sort_by_key(|r| std::cmp::Reverse(r.id));
    let items = reports
        .into_iter()
        .map(|r| ReportItem {
            id: r.id,
            plan_id: r.plan_id,
            execution_id: r.execution_id,
            start_time: r.start_time,
            end_time: r.end_time,
            status: r.status,
            summary: r.summary,
        })
        .collect();
    Ok(Json(p.apply(items)))
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
    records::get::<PerfReport>(&state.store, &report_key(id))
        .await?
        .map(|(r, _)| Json(r))
        .ok_or_else(|| ApiError::not_found(format!("no report {id}")))
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
    let Some((report, _)) = records::get::<PerfReport>(&state.store, &report_key(id)).await? else {
        return Err(ApiError::not_found(format!("no report {id}")));
    };
    // A report belongs to whoever ran its execution.
    let owner = load_execution(&state, &report.execution_id)
        .await
        .map(|e| e.created_by)
        .unwrap_or_default();
    c.require_owner(&owner, &format!("report {id}"))?;
    state.store.delete(&report_key(id)).await?;
    if let Err(e) = state
        .blobs
        .delete(&perf::windows_blob(&report.execution_id))
        .await
    {
        tracing::debug!("deleting windows of report {id}: {e}");
    }
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

/// The execution's series: live (from every replica, through the store)
/// while it runs, else the stored windows.
async fn series(state: &AppState, exec: &Execution) -> (Vec<Window>, Vec<(f64, f64, f64)>) {
    if let Ok(live) = perf::live_since(state, &exec.execution_id, 0, exec.tasks.len()).await {
        if !live.points.is_empty() {
            let windows = live.points.values().map(|p| p.window.clone()).collect();
            let system = live
                .points
                .values()
                .map(|p| perf::system_point(&p.system))
                .collect();
            return (windows, system);
        }
    }
    let windows = match state
        .blobs
        .get(&perf::windows_blob(&exec.execution_id))
        .await
    {
        Ok(Some(bytes)) => serde_json::from_slice::<Vec<Window>>(&bytes).unwrap_or_default(),
        _ => Vec::new(),
    };
    (windows, Vec::new())
}

fn metrics_body(windows: &[Window], system: &[(f64, f64, f64)]) -> Value {
    let agg = perf::aggregate(windows);
    let last = windows.last();
    let h = &agg.latency;
    let ms = |us: u64| round2(us as f64 / 1000.0);
    let active = windows.iter().filter(|w| !w.paused).count().max(1) as f64;
    let (cpu, mem, net) = system.last().copied().unwrap_or_default();
    json!({
        "response_time": {
            "current": last.map(perf::window_avg_ms).unwrap_or(0.0),
            "avg": if h.is_empty() { 0.0 } else { round2(h.mean() / 1000.0) },
            "min": if h.is_empty() { 0.0 } else { ms(h.min()) },
            "max": if h.is_empty() { 0.0 } else { ms(h.max()) },
            "p95": perf::percentiles(&agg).p95,
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
    })
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        round2(a as f64 * 100.0 / b as f64)
    }
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
    const TYPES: &[&str] = &["response_time", "throughput", "error_rate", "system"];
    if let Some(t) = &q.metric_type {
        if !TYPES.contains(&t.as_str()) {
            return Err(ApiError::field(
                "metric_type",
                format!("unknown metric type `{t}` (expected {})", TYPES.join(", ")),
            ));
        }
    }
    let exec = load_execution(&state, &execution_id).await?;
    let (mut windows, mut system) = series(&state, &exec).await;
    if let Some(range) = q.time_range {
        if let Some(last) = windows.last().map(|w| w.index) {
            let from = last.saturating_sub(range.saturating_sub(1));
            let keep = windows.iter().position(|w| w.index >= from).unwrap_or(0);
            windows.drain(..keep);
            if system.len() > windows.len() {
                system.drain(..system.len() - windows.len());
            }
        }
    }
    let mut body = metrics_body(&windows, &system);
    if let (Some(t), Some(all)) = (&q.metric_type, body.as_object()) {
        let one = all.get(t.as_str()).cloned().unwrap_or(Value::Null);
        body = json!({ t.as_str(): one });
    }
    Ok(Json(json!({
        "execution_id": exec.execution_id,
        "status": exec.status,
        "timestamp": testbed_core::now(),
        "metrics": body,
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

fn metrics_message(p: &perf::LivePoint, exec: &Execution) -> Value {
    let w = &p.window;
    let (cpu, mem, net) = perf::system_point(&p.system);
    let agents: Vec<Value> = perf::system_by_agent(p, &exec.tasks)
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
            "response_time": perf::window_avg_ms(w),
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
    (!w.latency.is_empty()).then(|| round2(w.latency.value_at_quantile(q) as f64 / 1000.0))
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
            let expected = if live.expected == 0 {
                usize::MAX
            } else {
                live.expected
            };
            for (idx, p) in live.points.range(next_index..) {
                // A second is complete when every agent's window is in, or
                // a later one exists (an agent finished or was lost).
                let complete = p.contributors >= expected || Some(*idx) != newest || ended;
                if !complete {
                    break;
                }
                if !send_json(&mut socket, &metrics_message(p, &exec)).await {
                    return;
                }
                next_index = idx + 1;
            }
        }
        if ended {
            let report = match exec.report_id {
                Some(id) => records::get::<PerfReport>(&state.store, &report_key(id))
                    .await
                    .ok()
                    .flatten()
                    .map(|(r, _)| r),
                None => None,
            };
            let msg = json!({
                "type": "finished",
                "timestamp": testbed_core::now().timestamp(),
                "execution_id": exec.execution_id,
                "status": exec.status,
                "report_id": exec.report_id,
                "lost_agents": exec.lost_agents,
                "summary": report.map(|r| serde_json::to_value(r.summary).unwrap_or(Value::Null)),
            });
            let _ = send_json(&mut socket, &msg).await;
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
