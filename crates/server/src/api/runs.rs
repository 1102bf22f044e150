//! Plans, runs, results and reports.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use testbed_core::keys;
use testbed_core::plan::{self, PlanSpec, Problem};
use testbed_core::run::{PlanRecord, ReportRecord, ResultRecord, Run, RunStatus};
use testbed_core::schema::FieldError;
use testbed_core::user::Role;
use utoipa::IntoParams;
use uuid::Uuid;

use super::page::{Page, PageQuery};
use crate::auth::Caller;
use crate::dispatch;
use crate::engine;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::records;
use crate::state::AppState;
use testbed_api::reports::CaseRow;
use testbed_api::runs::CreateRun;

fn problems(ps: Vec<Problem>) -> ApiError {
    ApiError::validation(
        ps.into_iter()
            .map(|p| FieldError {
                // A whole-document problem (YAML syntax, input limits) has
                // no path; the position alone says where.
                field: match (p.line, p.column, p.path.is_empty()) {
                    (Some(l), Some(c), true) => format!("line {l}, column {c}"),
                    (Some(l), Some(c), false) => format!("{} (line {l}, column {c})", p.path),
                    _ => p.path.clone(),
                },
                message: p.message,
            })
            .collect(),
    )
}

/// Parses and checks a plan, statically and against the registered agents.
async fn validate_plan(state: &AppState, source: &str) -> ApiResult<PlanSpec> {
    let text = source.to_string();
    let spec = super::parse::off_runtime(move || plan::parse(&text))
        .await?
        .map_err(problems)?;
    let agents = dispatch::agents(&state.store).await?;
    let mut ps = engine::check_against_agents(&spec, &agents);
    if !ps.is_empty() {
        plan::locate(source, &mut ps);
        return Err(problems(ps));
    }
    Ok(spec)
}

/// A plan as YAML text, or `{"source": "…yaml…"}`.
fn plan_source(headers: &HeaderMap, body: &Bytes) -> ApiResult<String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the plan is not UTF-8"))?;
    if ct.starts_with("application/json") {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrapped {
            source: String,
        }
        let w: Wrapped = serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!(
                "malformed JSON: {e}; send {{\"source\": \"<yaml>\"}} or the YAML itself"
            ))
        })?;
        return Ok(w.source);
    }
    Ok(text.to_string())
}

/// Store a plan (YAML body, or JSON `{"source": …}`); 422 lists every problem with line:column.
#[utoipa::path(post, path = "/api/plans", tag = "plans",
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 201, body = PlanRecord), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_plan(
    State(state): State<AppState>,
    c: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<PlanRecord>)> {
    c.require(Role::Operator)?;
    let source = plan_source(&headers, &body)?;
    let spec = validate_plan(&state, &source).await?;
    let now = testbed_core::now();
    let rec = PlanRecord {
        id: Uuid::new_v4(),
        name: spec.name.clone(),
        source,
        spec,
        created_by: c.name,
        created_at: now,
        updated_at: now,
    };
    records::put(&state.store, &keys::plan(&rec.id), &rec, None).await?;
    Ok((StatusCode::CREATED, Json(rec)))
}

/// `?id_prefix=`: how clients accept an id shortened to a unique prefix
/// (`testbed tasks show 3f2a`) without listing everything themselves.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdPrefix {
    /// Only items whose id starts with this (case-insensitive), e.g. `3f2a`.
    pub id_prefix: Option<String>,
}

impl IdPrefix {
    pub fn matches(&self, id: &Uuid) -> bool {
        self.id_prefix.as_ref().is_none_or(|p| {
            // Uuids print in lowercase.
            id.to_string().starts_with(p.to_ascii_lowercase().as_str())
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanFilter {
    /// Only plans whose name contains this.
    pub q: Option<String>,
}

/// Stored plans.
#[utoipa::path(get, path = "/api/plans", tag = "plans", params(PageQuery, PlanFilter, IdPrefix),
    responses((status = 200, body = Page<PlanRecord>)), security(("bearer" = [])))]
pub async fn list_plans(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
    Query(f): Query<PlanFilter>,
    Query(idp): Query<IdPrefix>,
) -> ApiResult<Json<Page<PlanRecord>>> {
    p.check()?;
    let mut all: Vec<PlanRecord> = records::list::<PlanRecord>(&state.store, keys::PLANS, |_| true)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .filter(|r| f.q.as_ref().is_none_or(|q| r.name.contains(q.as_str())))
        .filter(|r| idp.matches(&r.id))
        .collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    Ok(Json(p.apply(all)))
}

fn parse_uuid(what: &str, id: &str) -> ApiResult<Uuid> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no {what} `{id}`")))
}

/// One plan.
#[utoipa::path(get, path = "/api/plans/{id}", tag = "plans", params(("id" = String, Path)),
    responses((status = 200, body = PlanRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_plan(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PlanRecord>> {
    let id = parse_uuid("plan", &id)?;
    records::get::<PlanRecord>(&state.store, &keys::plan(&id))
        .await?
        .map(|(p, _)| Json(p))
        .ok_or_else(|| ApiError::not_found(format!("no plan {id}")))
}

/// Replace a plan's source.
#[utoipa::path(put, path = "/api/plans/{id}", tag = "plans", params(("id" = String, Path)),
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 200, body = PlanRecord), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_plan(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<PlanRecord>> {
    c.require(Role::Operator)?;
    let id = parse_uuid("plan", &id)?;
    plan_owner_check(&state, &c, &id).await?;
    let source = plan_source(&headers, &body)?;
    let spec = validate_plan(&state, &source).await?;
    let rec = records::update::<PlanRecord, _>(&state.store, &keys::plan(&id), |r| {
        r.name = spec.name.clone();
        r.spec = spec.clone();
        r.source = source.clone();
        r.updated_at = testbed_core::now();
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no plan {id}")))?;
    Ok(Json(rec))
}

async fn plan_owner_check(state: &AppState, c: &Caller, id: &Uuid) -> ApiResult<()> {
    let (plan, _) = records::get::<PlanRecord>(&state.store, &keys::plan(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no plan {id}")))?;
    c.require_owner(&plan.created_by, &format!("plan {id}"))
}

async fn run_owner_check(state: &AppState, c: &Caller, id: &Uuid) -> ApiResult<Run> {
    let (run, _) = records::get::<Run>(&state.store, &keys::run(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    c.require_owner(&run.created_by, &format!("run {id}"))?;
    Ok(run)
}

/// Delete a plan (its runs stay).
#[utoipa::path(delete, path = "/api/plans/{id}", tag = "plans", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_plan(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.require(Role::Operator)?;
    let id = parse_uuid("plan", &id)?;
    plan_owner_check(&state, &c, &id).await?;
    if !state.store.delete(&keys::plan(&id)).await? {
        return Err(ApiError::not_found(format!("no plan {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Start a run of a plan.
#[utoipa::path(post, path = "/api/runs", tag = "runs", request_body = CreateRun,
    responses((status = 201, body = Run), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_run(
    State(state): State<AppState>,
    c: Caller,
    Json(req): Json<CreateRun>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    c.require(Role::Operator)?;
    let (spec, plan_id) = match (&req.plan_id, &req.plan) {
        (Some(id), None) => {
            let (p, _) = records::get::<PlanRecord>(&state.store, &keys::plan(id))
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no plan {id}")))?;
            (p.spec, Some(*id))
        }
        (None, Some(src)) => (validate_plan(&state, src).await?, None),
        _ => {
            return Err(ApiError::field(
                "/plan_id",
                "give exactly one of `plan_id` and `plan`",
            ))
        }
    };
    let params = spec.resolve_params(&req.params).map_err(problems)?;
    let environment = req.environment.clone().or_else(|| spec.environment.clone());
    if let Some(env) = &environment {
        if state.store.get(&keys::environment(env)).await?.is_none() {
            return Err(ApiError::field(
                "/environment",
                format!("no environment `{env}`"),
            ));
        }
    }
    for s in &spec.steps {
        if let Some(tc) = &s.testcase {
            if state.store.get(&keys::testcase(tc)).await?.is_none() {
                return Err(ApiError::field(
                    "/plan",
                    format!("step `{}`: no test case `{tc}`", s.id),
                ));
            }
        }
    }
    let run = engine::create_run(&state, spec, plan_id, params, environment, &c.name).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub plan_id: Option<Uuid>,
    /// Only runs created at or after this instant (RFC 3339, e.g.
    /// `2026-12-03T00:00:00Z`).
    // A string here, parsed in the handler: a bad value is then a 422 naming
    // the parameter rather than the extractor's generic 400.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub since: Option<String>,
    /// Only runs created before this instant (RFC 3339). A range whose
    /// `until` is not after its `since` holds no runs.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub until: Option<String>,
}

/// `?since=` / `?until=` as an instant, or a 422 naming the parameter.
fn instant(name: &str, v: &Option<String>) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    v.as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    ApiError::field(
                        name,
                        format!(
                            "{s:?} is not an RFC 3339 date-time ({e}); e.g. 2026-12-03T14:00:00Z"
                        ),
                    )
                })
        })
        .transpose()
}

pub use crate::engine::run_store::RunSummary;

/// Runs, newest first.
#[utoipa::path(get, path = "/api/runs", tag = "runs", params(PageQuery, RunFilter, IdPrefix),
    responses((status = 200, body = Page<RunSummary>), (status = 422, body = ErrorBody, description = "`since` or `until` is not an RFC 3339 date-time")),
    security(("bearer" = [])))]
pub async fn list_runs(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
    Query(f): Query<RunFilter>,
    Query(idp): Query<IdPrefix>,
) -> ApiResult<Json<Page<RunSummary>>> {
    p.check()?;
    let since = instant("since", &f.since)?;
    let until = instant("until", &f.until)?;
    // From the summaries alone: neither plans nor steps are read.
    let mut all: Vec<RunSummary> = engine::run_store::summaries(&state.store)
        .await?
        .into_iter()
        .filter(|r| f.status.is_none_or(|s| r.status == s))
        .filter(|r| since.is_none_or(|t| r.created_at >= t))
        .filter(|r| until.is_none_or(|t| r.created_at < t))
        .filter(|r| f.plan_id.is_none_or(|id| r.plan_id == Some(id)))
        .filter(|r| idp.matches(&r.id))
        .collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    Ok(Json(p.apply(all)))
}

/// A run with every step's state.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_run(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Run>> {
    let id = parse_uuid("run", &id)?;
    engine::run_store::load(&state.store, &id)
        .await?
        .map(|l| Json(l.run))
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))
}

/// Cancel a run: running tasks are cancelled on their agents.
#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    responses((status = 202, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn cancel_run(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    c.require(Role::Operator)?;
    let id = parse_uuid("run", &id)?;
    run_owner_check(&state, &c, &id).await?;
    let engine::Cancelled { run, already_ended } = engine::cancel_run(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    if already_ended {
        return Err(ApiError::conflict(format!(
            "run {id} already ended ({:?})",
            run.status
        )));
    }
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// Delete a finished run (its tasks, logs and report stay).
#[utoipa::path(delete, path = "/api/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "still running")),
    security(("bearer" = [])))]
pub async fn delete_run(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.require(Role::Operator)?;
    let id = parse_uuid("run", &id)?;
    let (run, rev) = records::get::<Run>(&state.store, &keys::run(&id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    c.require_owner(&run.created_by, &format!("run {id}"))?;
    if !run.status.is_terminal() {
        return Err(ApiError::conflict(format!(
            "run {id} is still {:?}; cancel it first",
            run.status
        )));
    }
    if !engine::run_store::delete(&state.store, &id, rev).await? {
        return Err(ApiError::conflict(format!("run {id} changed; try again")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultFilter {
    pub testcase: Option<String>,
    pub environment: Option<String>,
    /// pass, fail, error, skip.
    pub status: Option<String>,
}

/// Latest result of each test case in each environment.
#[utoipa::path(get, path = "/api/results", tag = "results", params(PageQuery, ResultFilter),
    responses((status = 200, body = Page<ResultRecord>)), security(("bearer" = [])))]
pub async fn list_results(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
    Query(f): Query<ResultFilter>,
) -> ApiResult<Json<Page<ResultRecord>>> {
    p.check()?;
    // Results are one per test case and environment, so there may be very
    // many: they are read a store page at a time and only the asked-for
    // page is kept. A test case's results share a key prefix.
    let prefix = match &f.testcase {
        Some(t) if keys::is_valid_name(t, 200) => format!("{}{t}/", keys::RESULTS),
        _ => keys::RESULTS.to_string(),
    };
    let mut page = p.collector();
    let mut pages = records::Pages::new(&state.store, &prefix, 500);
    while let Some(kvs) = pages.next().await? {
        for kv in kvs {
            let r: ResultRecord = records::decode(&kv.key, &kv.value)?;
            if f.testcase.as_ref().is_none_or(|t| &r.testcase == t)
                && f.environment.as_ref().is_none_or(|e| &r.environment == e)
                && f.status.as_ref().is_none_or(|s| &r.status == s)
            {
                page.offer(r);
            }
        }
    }
    Ok(Json(page.finish()))
}

/// The latest result of a test case in an environment.
#[utoipa::path(get, path = "/api/results/{testcase}/{environment}", tag = "results",
    params(("testcase" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = ResultRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_result(
    State(state): State<AppState>,
    _c: Caller,
    Path((tc, env)): Path<(String, String)>,
) -> ApiResult<Json<ResultRecord>> {
    records::get::<ResultRecord>(&state.store, &keys::result(&tc, &env))
        .await?
        .map(|(r, _)| Json(r))
        .ok_or_else(|| ApiError::not_found(format!("no result for `{tc}` in `{env}`")))
}

/// Reports, newest first.
#[utoipa::path(get, path = "/api/reports", tag = "reports", params(PageQuery, IdPrefix),
    responses((status = 200, body = Page<ReportRecord>)), security(("bearer" = [])))]
pub async fn list_reports(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
    Query(idp): Query<IdPrefix>,
) -> ApiResult<Json<Page<ReportRecord>>> {
    p.check()?;
    let mut all: Vec<ReportRecord> =
        records::list::<ReportRecord>(&state.store, keys::REPORTS, |_| true)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| idp.matches(&r.id))
            .collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    Ok(Json(p.apply(all)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// json (default), junit, tap, summary or html.
    pub format: Option<String>,
}

/// Load a stored report's canonical JSON (gzip-compressed or not) into the
/// compact form, read as it streams: a report of a million cases takes
/// megabytes here, not the gigabyte its cases would as records.
pub async fn load_report(state: &AppState, id: &Uuid) -> ApiResult<testbed_report::CompactReport> {
    let body = state
        .blobs
        .get(&keys::report_blob(id))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no report {id}")))?;
    testbed_report::read_stored(&body).map_err(|e| ApiError::internal(format!("report {id}: {e}")))
}

/// A report in any format: `?format=json|junit|tap|summary|html`.
#[utoipa::path(get, path = "/api/reports/{id}", tag = "reports", params(("id" = String, Path), FormatQuery),
    responses((status = 200, description = "the report in the requested format"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_report(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
) -> ApiResult<Response> {
    let id = parse_uuid("report", &id)?;
    let format = match q.format.as_deref().unwrap_or("json") {
        "json" => testbed_report::Format::Json,
        "junit" | "xml" => testbed_report::Format::Junit,
        "tap" => testbed_report::Format::Tap,
        "summary" | "text" => testbed_report::Format::Summary,
        "html" => testbed_report::Format::Html,
        other => {
            return Err(ApiError::field(
                "/format",
                format!("unknown format `{other}` (json, junit, tap, summary, html)"),
            ))
        }
    };
    let report = load_report(&state, &id).await?;
    let ct = match format {
        // As before: no charset on these two.
        testbed_report::Format::Json => "application/json",
        testbed_report::Format::Junit => "application/xml",
        f => f.content_type(),
    };
    let body = streamed(move |w| format.write(&report, w));
    Ok(([(header::CONTENT_TYPE, ct)], body).into_response())
}

/// Bytes of rendered output sent to the client at a time.
const CHUNK: usize = 64 * 1024;

/// A response body rendered by `render` on a blocking thread as the client
/// reads it: a few chunks are in flight at a time, so a report of a million
/// cases costs its compact form here, not its rendered size (hundreds of MB
/// of HTML or JUnit). The status and headers go out before rendering starts;
/// a rendering error then cuts the body short (the client sees an incomplete
/// response) and is logged.
fn streamed<F>(render: F) -> axum::body::Body
where
    F: FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let done = render(&mut w).and_then(|()| std::io::Write::flush(&mut w));
        if let Err(e) = done {
            // A client that went away is not worth a warning.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "rendering a response body failed part-way");
                let _ = w.tx.blocking_send(Err(e));
            }
        }
    });
    axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Collects rendered output into [`CHUNK`]-sized pieces for [`streamed`];
/// blocks while the client is behind, and fails with `BrokenPipe` once the
/// response is dropped, which stops the rendering.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CasesQuery {
    /// Only cases with this outcome: pass, fail, error, skip, xfail or xpass;
    /// `problems` for fail and error.
    pub outcome: Option<String>,
    /// Only cases whose name contains this text (case-insensitive).
    pub q: Option<String>,
    /// Only the cases of the suite with this display name (`name [platform]`).
    pub suite: Option<String>,
}

/// A report's cases, a page at a time, in report order, optionally filtered by
/// outcome, suite and name: the way to read a report of a million cases.
#[utoipa::path(get, path = "/api/reports/{id}/cases", tag = "reports",
    params(("id" = String, Path), PageQuery, CasesQuery),
    responses((status = 200, body = Page<CaseRow>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report_cases(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
    Query(p): Query<PageQuery>,
    Query(f): Query<CasesQuery>,
) -> ApiResult<Json<Page<CaseRow>>> {
    use testbed_report::{Outcome, View};
    p.check()?;
    let id = parse_uuid("report", &id)?;
    let wanted: Option<Vec<Outcome>> = match f.outcome.as_deref() {
        None | Some("") => None,
        Some("problems") => Some(vec![Outcome::Fail, Outcome::Error]),
        Some(o) => Some(vec![Outcome::ALL
            .into_iter()
            .find(|x| x.as_str() == o)
            .ok_or_else(|| {
                ApiError::field(
                    "/outcome",
                    format!(
                        "unknown outcome `{o}` (pass, fail, error, skip, xfail, xpass, problems)"
                    ),
                )
            })?]),
    };
    let q =
        f.q.as_deref()
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase);
    let report = load_report(&state, &id).await?;
    let skip = (p.page - 1).saturating_mul(p.page_size);
    let mut total = 0usize;
    let mut results = Vec::new();
    for (s, suite) in report.head().suites.iter().enumerate() {
        let sname = suite.display_name();
        if f.suite.as_deref().is_some_and(|want| want != sname) {
            continue;
        }
        for i in 0..report.case_count(s) {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.contains(&report.case_outcome(s, i)))
            {
                continue;
            }
            if q.as_deref()
                .is_some_and(|q| !report.case_name(s, i).to_lowercase().contains(q))
            {
                continue;
            }
            if total >= skip && results.len() < p.page_size {
                results.push(CaseRow {
                    suite: sname.clone(),
                    number: i + 1,
                    case: report.case(s, i).into_owned(),
                });
            }
            total += 1;
        }
    }
    Ok(Json(Page {
        total,
        page: p.page,
        page_size: p.page_size,
        results,
    }))
}

/// Delete a report.
#[utoipa::path(delete, path = "/api/reports/{id}", tag = "reports", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_report(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.require(Role::Operator)?;
    let id = parse_uuid("report", &id)?;
    // A report belongs to whoever started its run.
    let (report, _) = records::get::<ReportRecord>(&state.store, &keys::report(&id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no report {id}")))?;
    match report.run_id {
        Some(run) => {
            let owner = records::get::<Run>(&state.store, &keys::run(&run))
                .await?
                .map(|(r, _)| r.created_by)
                .unwrap_or_default();
            c.require_owner(&owner, &format!("report {id}"))?;
        }
        None => c.require_owner("", &format!("report {id}"))?,
    }
    if !state.store.delete(&keys::report(&id)).await? {
        return Err(ApiError::not_found(format!("no report {id}")));
    }
    let _ = state.blobs.delete(&keys::report_blob(&id)).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// json (default), text or html.
    pub format: Option<String>,
    /// Relative duration change worth listing, e.g. `20%` (default 20 %).
    pub threshold: Option<String>,
}

/// Compare two stored reports: regressions (pass → fail), fixes, new and
/// removed tests, significant duration changes. Tests are keyed by suite,
/// platform and case, so matrix runs compare platform by platform.
#[utoipa::path(get, path = "/api/reports/{id}/compare/{other}", tag = "reports",
    params(("id" = String, Path, description = "the earlier report"), ("other" = String, Path, description = "the later report"), CompareQuery),
    responses((status = 200, description = "the comparison"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn compare_reports(
    State(state): State<AppState>,
    _c: Caller,
    Path((id, other)): Path<(String, String)>,
    Query(q): Query<CompareQuery>,
) -> ApiResult<Response> {
    let a = load_report(&state, &parse_uuid("report", &id)?).await?;
    let b = load_report(&state, &parse_uuid("report", &other)?).await?;
    let mut t = testbed_report::compare::Thresholds::default();
    if let Some(th) = &q.threshold {
        t.percent = testbed_report::compare::parse_percent(th).ok_or_else(|| {
            ApiError::field("/threshold", format!("`{th}` is not a percentage like 20%"))
        })?;
    }
    use testbed_report::compare::{write_html, write_json, write_text, Comparison};
    type Writer = fn(&Comparison, &mut dyn std::io::Write) -> std::io::Result<()>;
    let (ct, write): (&str, Writer) = match q.format.as_deref().unwrap_or("json") {
        "json" => ("application/json", write_json),
        "text" => ("text/plain; charset=utf-8", write_text),
        "html" => ("text/html; charset=utf-8", write_html),
        other => {
            return Err(ApiError::field(
                "/format",
                format!("unknown format `{other}` (json, text, html)"),
            ))
        }
    };
    let c = testbed_report::compare::compare(&a, &b, t);
    // The reports are done with: only the differences are kept for the body.
    drop((a, b));
    Ok((
        [(header::CONTENT_TYPE, ct)],
        streamed(move |w| write(&c, w)),
    )
        .into_response())
}
