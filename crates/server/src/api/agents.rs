//! `/api/agents`: every registered agent, online or not.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use testbed_core::agent::AgentStatus;
use testbed_core::keys;
use testbed_core::user::Role;

use crate::auth::Caller;
use crate::dispatch::{self, AgentView};
use crate::error::{ApiError, ApiResult, ErrorBody, Json};
use crate::state::AppState;
use testbed_api::agents::AgentInfo;

async fn info(state: &AppState, a: AgentView) -> ApiResult<AgentInfo> {
    let outstanding = dispatch::outstanding(state, &a.record.uuid).await?;
    let r = a.record;
    let p = r.profile;
    Ok(AgentInfo {
        uuid: r.uuid,
        id: r.id,
        name: p.name,
        host: p.host,
        labels: p.labels,
        groups: p.groups,
        status: if a.alive.is_some() {
            AgentStatus::Online
        } else {
            AgentStatus::Offline
        },
        plugins: p.plugins,
        capacity: p.capacity,
        outstanding,
        running: a.alive.as_ref().map_or(0, |l| l.running),
        metrics: a.alive.as_ref().map(|l| l.metrics.clone()),
        heartbeat_at: a.alive.as_ref().map(|l| l.heartbeat_at),
        replica: a.alive.as_ref().map(|l| l.replica.clone()),
        version: p.version,
        root: p.root,
        run_as: p.run_as,
        registered_at: r.registered_at,
        last_seen_at: r.last_seen_at,
    })
}

/// Every registered agent with its status, load and latest metrics.
/// Finds an agent by numeric id, uuid or name.
pub fn find<'a>(agents: &'a [AgentView], id: &str) -> Option<&'a AgentView> {
    if let Ok(n) = id.parse::<u64>() {
        return agents.iter().find(|a| a.record.id == n);
    }
    if let Ok(u) = id.parse::<uuid::Uuid>() {
        return agents.iter().find(|a| a.record.uuid == u);
    }
    agents.iter().find(|a| a.record.profile.name == id)
}

#[utoipa::path(get, path = "/api/agents", tag = "agents",
    responses((status = 200, body = Vec<AgentInfo>), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<AgentInfo>>> {
    let mut out = Vec::new();
    for a in dispatch::agents(&state.store).await? {
        out.push(info(&state, a).await?);
    }
    Ok(Json(out))
}

/// One agent by numeric id, uuid or name.
#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "numeric id, uuid or name")),
    responses((status = 200, body = AgentInfo), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    let agents = dispatch::agents(&state.store).await?;
    let a = find(&agents, &id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no agent `{id}`")))?;
    Ok(Json(info(&state, a).await?))
}

/// Forget an offline agent (admin).
#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "numeric id, uuid or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "agent is online")),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let agents = dispatch::agents(&state.store).await?;
    let a = find(&agents, &id).ok_or_else(|| ApiError::not_found(format!("no agent `{id}`")))?;
    if a.alive.is_some() {
        return Err(ApiError::conflict(format!(
            "agent `{id}` is online; stop it first"
        )));
    }
    state.store.delete(&keys::agent(&a.record.uuid)).await?;
    Ok(StatusCode::NO_CONTENT)
}
