//! Seed 002's API, verbatim: `/v2.1/slaves/detail`, `/v2.1/slaves/{id}`,
//! `POST /v2.1/testcases`.
//!
//! What seed 002 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-002-compute-nodes-and-test-cases.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use testbed_core::agent::AgentStatus;
use testbed_core::user::Role;

use crate::auth::Caller;
use crate::dispatch::{self, AgentView};
use crate::error::{ApiError, ApiResult, ErrorBody, Json};
use crate::state::AppState;
use testbed_api::agents::Slave;
use testbed_api::tasks::{SubmitRequest, Submitted};

fn slave(a: &AgentView, with_uuid: bool) -> Slave {
    Slave {
        compute_node_method: a.record.compute_node_method(),
        compute_node_type: a.record.compute_node_type(),
        host: a.record.profile.host.clone(),
        id: a.record.id,
        uuid: with_uuid.then_some(a.record.uuid),
        name: a.record.profile.name.clone(),
        labels: a.record.profile.labels.clone(),
        groups: a.record.profile.groups.clone(),
        status: if a.alive.is_some() {
            AgentStatus::Online
        } else {
            AgentStatus::Offline
        },
    }
}

/// Live compute nodes, keyed by uuid.
#[utoipa::path(get, path = "/v2.1/slaves/detail", tag = "seed-002",
    responses((status = 200, body = BTreeMap<String, Slave>), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<BTreeMap<String, Slave>>> {
    let agents = dispatch::agents(&state.store).await?;
    Ok(Json(
        agents
            .iter()
            .filter(|a| a.alive.is_some())
            .map(|a| (a.record.uuid.to_string(), slave(a, false)))
            .collect(),
    ))
}

/// One compute node by numeric id or uuid (online or offline).
#[utoipa::path(get, path = "/v2.1/slaves/{id}", tag = "seed-002",
    params(("id" = String, Path, description = "numeric id or uuid")),
    responses((status = 200, body = Slave), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Slave>> {
    let agents = dispatch::agents(&state.store).await?;
    let found = super::agents::find(&agents, &id)
        .ok_or_else(|| ApiError::not_found(format!("no slave `{id}`")))?;
    Ok(Json(slave(found, true)))
}

/// Run one plugin method on an agent (seed 002's test-case mode). Returns at
/// once with the task id.
#[utoipa::path(post, path = "/v2.1/testcases", tag = "seed-002",
    request_body = SubmitRequest,
    responses(
        (status = 201, body = Submitted),
        (status = 400, body = ErrorBody, description = "malformed JSON"),
        (status = 403, body = ErrorBody, description = "viewer"),
        (status = 409, body = ErrorBody, description = "the matching agents are offline"),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "unknown plugin/method/host or bad parameters"),
    ),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<SubmitRequest>,
) -> ApiResult<(StatusCode, HeaderMap, Json<Submitted>)> {
    caller.require(Role::Operator)?;
    let task = dispatch::submit(&state, req, &caller.name).await?;
    let url = format!("/api/tasks/{}", task.id);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&url) {
        headers.insert(header::LOCATION, v);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(Submitted {
            task_id: task.id,
            status: task.status,
            agent_uuid: task.agent_uuid,
            agent_name: task.agent_name,
            log_url: format!("{url}/log"),
            log_ws: format!("/ws/tasks/{}/log", task.id),
            url,
        }),
    ))
}
