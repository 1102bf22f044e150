//! Seed-003 resources with full CRUD: test cases, environments and groups
//! (with their members and reservation).
//!
//! What seed 003 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-003-the-store.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use testbed_core::agent::AgentRecord;
use testbed_core::keys;
use testbed_core::run::{Environment, Group, GroupLock, TestCase};
use testbed_core::user::Role;
use utoipa::IntoParams;
use uuid::Uuid;

use super::page::{check_name, Page, PageQuery};
use crate::auth::Caller;
use crate::dispatch;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::records;
use crate::state::AppState;
use testbed_api::resources::{GroupMember, GroupView};

async fn list_all<T: DeserializeOwned>(state: &AppState, prefix: &str) -> ApiResult<Vec<T>> {
    // Only direct children: `/groups/g/lock` is not a group.
    let items: Vec<(String, T)> =
        records::list(&state.store, prefix, |k| !k[prefix.len()..].contains('/')).await?;
    Ok(items.into_iter().map(|(_, v)| v).collect())
}

async fn get_one<T: DeserializeOwned>(state: &AppState, key: &str, what: &str) -> ApiResult<T> {
    records::get::<T>(&state.store, key)
        .await?
        .map(|(v, _)| v)
        .ok_or_else(|| ApiError::not_found(format!("no {what}")))
}

async fn create_one<T: Serialize>(
    state: &AppState,
    key: &str,
    value: &T,
    what: &str,
) -> ApiResult<()> {
    if !records::create(&state.store, key, value, None).await? {
        return Err(ApiError::conflict(format!("{what} exists")));
    }
    Ok(())
}

async fn delete_one(state: &AppState, key: &str, what: &str) -> ApiResult<StatusCode> {
    if !state.store.delete(key).await? {
        return Err(ApiError::not_found(format!("no {what}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NameFilter {
    /// Only names containing this text.
    pub q: Option<String>,
    /// Only items with this tag (test cases).
    pub tag: Option<String>,
}

// ---- test cases -------------------------------------------------------

fn check_testcase(tc: &TestCase) -> ApiResult<()> {
    check_name("/name", &tc.name)?;
    if tc.plugin.trim().is_empty() || tc.method.trim().is_empty() {
        return Err(ApiError::field(
            "/plugin",
            "a test case needs `plugin` and `method`",
        ));
    }
    if !tc.parameters.is_object() {
        return Err(ApiError::field("/parameters", "must be an object"));
    }
    if let Some(t) = &tc.timeout {
        if humantime::parse_duration(t).is_err() {
            return Err(ApiError::field(
                "/timeout",
                format!("`{t}` is not a duration like 30s or 5m"),
            ));
        }
    }
    Ok(())
}

/// Test cases (filter by `q` and `tag`).
#[utoipa::path(get, path = "/api/testcases", tag = "testcases",
    params(PageQuery, NameFilter),
    responses((status = 200, body = Page<TestCase>)), security(("bearer" = [])))]
pub async fn list_testcases(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
    Query(f): Query<NameFilter>,
) -> ApiResult<Json<Page<TestCase>>> {
    p.check()?;
    let items: Vec<TestCase> = list_all(&state, keys::TESTCASES)
        .await?
        .into_iter()
        .filter(|t: &TestCase| f.q.as_ref().is_none_or(|q| t.name.contains(q.as_str())))
        .filter(|t| f.tag.as_ref().is_none_or(|g| t.tags.contains(g)))
        .collect();
    Ok(Json(p.apply(items)))
}

/// Create a test case.
#[utoipa::path(post, path = "/api/testcases", tag = "testcases", request_body = TestCase,
    responses((status = 201, body = TestCase), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_testcase(
    State(state): State<AppState>,
    c: Caller,
    Json(mut tc): Json<TestCase>,
) -> ApiResult<(StatusCode, Json<TestCase>)> {
    c.require(Role::Operator)?;
    check_testcase(&tc)?;
    tc.created_at = testbed_core::now();
    tc.updated_at = tc.created_at;
    create_one(
        &state,
        &keys::testcase(&tc.name),
        &tc,
        &format!("test case `{}`", tc.name),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tc)))
}

/// One test case.
#[utoipa::path(get, path = "/api/testcases/{name}", tag = "testcases", params(("name" = String, Path)),
    responses((status = 200, body = TestCase), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_testcase(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TestCase>> {
    Ok(Json(
        get_one(
            &state,
            &keys::testcase(&name),
            &format!("test case `{name}`"),
        )
        .await?,
    ))
}

/// Replace a test case (created if missing).
#[utoipa::path(put, path = "/api/testcases/{name}", tag = "testcases", params(("name" = String, Path)), request_body = TestCase,
    responses((status = 200, body = TestCase), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_testcase(
    State(state): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Json(mut tc): Json<TestCase>,
) -> ApiResult<Json<TestCase>> {
    c.require(Role::Operator)?;
    if tc.name != name {
        return Err(ApiError::field(
            "/name",
            format!("must match the path (`{name}`)"),
        ));
    }
    check_testcase(&tc)?;
    if let Some((old, _)) = records::get::<TestCase>(&state.store, &keys::testcase(&name)).await? {
        tc.created_at = old.created_at;
    }
    tc.updated_at = testbed_core::now();
    records::put(&state.store, &keys::testcase(&name), &tc, None).await?;
    Ok(Json(tc))
}

/// Delete a test case.
#[utoipa::path(delete, path = "/api/testcases/{name}", tag = "testcases", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_testcase(
    State(state): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.require(Role::Operator)?;
    delete_one(
        &state,
        &keys::testcase(&name),
        &format!("test case `{name}`"),
    )
    .await
}

// ---- environments -----------------------------------------------------

/// Environments (filter by `q`).
#[utoipa::path(get, path = "/api/environments", tag = "environments", params(PageQuery, NameFilter),
    responses((status = 200, body = Page<Environment>)), security(("bearer" = [])))]
pub async fn list_environments(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
    Query(f): Query<NameFilter>,
) -> ApiResult<Json<Page<Environment>>> {
    p.check()?;
    let items: Vec<Environment> = list_all(&state, keys::ENVIRONMENTS)
        .await?
        .into_iter()
        .filter(|e: &Environment| f.q.as_ref().is_none_or(|q| e.name.contains(q.as_str())))
        .collect();
    Ok(Json(p.apply(items)))
}

/// Create an environment.
#[utoipa::path(post, path = "/api/environments", tag = "environments", request_body = Environment,
    responses((status = 201, body = Environment), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_environment(
    State(state): State<AppState>,
    c: Caller,
    Json(mut e): Json<Environment>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    c.require(Role::Operator)?;
    check_name("/name", &e.name)?;
    e.created_at = testbed_core::now();
    e.updated_at = e.created_at;
    create_one(
        &state,
        &keys::environment(&e.name),
        &e,
        &format!("environment `{}`", e.name),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(e)))
}

/// One environment.
#[utoipa::path(get, path = "/api/environments/{name}", tag = "environments", params(("name" = String, Path)),
    responses((status = 200, body = Environment), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_environment(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Environment>> {
    Ok(Json(
        get_one(
            &state,
            &keys::environment(&name),
            &format!("environment `{name}`"),
        )
        .await?,
    ))
}

/// Replace an environment (created if missing).
#[utoipa::path(put, path = "/api/environments/{name}", tag = "environments", params(("name" = String, Path)), request_body = Environment,
    responses((status = 200, body = Environment), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_environment(
    State(state): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Json(mut e): Json<Environment>,
) -> ApiResult<Json<Environment>> {
    c.require(Role::Operator)?;
    if e.name != name {
        return Err(ApiError::field(
            "/name",
            format!("must match the path (`{name}`)"),
        ));
    }
    check_name("/name", &e.name)?;
    if let Some((old, _)) =
        records::get::<Environment>(&state.store, &keys::environment(&name)).await?
    {
        e.created_at = old.created_at;
    }
    e.updated_at = testbed_core::now();
    records::put(&state.store, &keys::environment(&name), &e, None).await?;
    Ok(Json(e))
}

/// Delete an environment.
#[utoipa::path(delete, path = "/api/environments/{name}", tag = "environments", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_environment(
    State(state): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.require(Role::Operator)?;
    delete_one(
        &state,
        &keys::environment(&name),
        &format!("environment `{name}`"),
    )
    .await
}

// ---- groups -----------------------------------------------------------

async fn group_view(state: &AppState, group: Group) -> ApiResult<GroupView> {
    let agents = dispatch::agents(&state.store)
        .await?
        .into_iter()
        .filter(|a| a.record.profile.groups.contains(&group.name))
        .map(|a| GroupMember {
            uuid: a.record.uuid,
            id: a.record.id,
            name: a.record.profile.name.clone(),
            online: a.alive.is_some(),
        })
        .collect();
    let reserved_by = records::get::<GroupLock>(&state.store, &keys::group_lock(&group.name))
        .await?
        .map(|(l, _)| l.run_id);
    Ok(GroupView {
        name: group.name,
        description: group.description,
        created_at: group.created_at,
        agents,
        reserved_by,
    })
}

/// Groups of agents.
#[utoipa::path(get, path = "/api/groups", tag = "groups", params(PageQuery),
    responses((status = 200, body = Page<GroupView>)), security(("bearer" = [])))]
pub async fn list_groups(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
) -> ApiResult<Json<Page<GroupView>>> {
    p.check()?;
    let mut out = Vec::new();
    for g in list_all::<Group>(&state, keys::GROUPS).await? {
        out.push(group_view(&state, g).await?);
    }
    Ok(Json(p.apply(out)))
}

/// Create a group.
#[utoipa::path(post, path = "/api/groups", tag = "groups", request_body = Group,
    responses((status = 201, body = GroupView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_group(
    State(state): State<AppState>,
    c: Caller,
    Json(mut g): Json<Group>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    c.require(Role::Operator)?;
    check_name("/name", &g.name)?;
    g.created_at = testbed_core::now();
    create_one(
        &state,
        &keys::group(&g.name),
        &g,
        &format!("group `{}`", g.name),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(group_view(&state, g).await?)))
}

/// One group with its members and reservation.
#[utoipa::path(get, path = "/api/groups/{name}", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, body = GroupView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_group(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<GroupView>> {
    let g: Group = get_one(&state, &keys::group(&name), &format!("group `{name}`")).await?;
    Ok(Json(group_view(&state, g).await?))
}

/// Delete a group (its agents leave it).
#[utoipa::path(delete, path = "/api/groups/{name}", tag = "groups", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "reserved by a run")),
    security(("bearer" = [])))]
pub async fn delete_group(
    State(state): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.require(Role::Operator)?;
    if let Some((lock, _)) =
        records::get::<GroupLock>(&state.store, &keys::group_lock(&name)).await?
    {
        return Err(ApiError::conflict(format!(
            "group `{name}` is reserved by run {}",
            lock.run_id
        )));
    }
    let status = delete_one(&state, &keys::group(&name), &format!("group `{name}`")).await?;
    for a in dispatch::agents(&state.store).await? {
        if a.record.profile.groups.contains(&name) {
            set_membership(&state, a.record.uuid, &name, false).await?;
        }
    }
    Ok(status)
}

async fn set_membership(
    state: &AppState,
    agent: Uuid,
    group: &str,
    member: bool,
) -> ApiResult<AgentRecord> {
    records::update::<AgentRecord, _>(&state.store, &keys::agent(&agent), |r| {
        let has = r.profile.groups.iter().any(|g| g == group);
        match (has, member) {
            (false, true) => {
                r.profile.groups.push(group.to_string());
                true
            }
            (true, false) => {
                r.profile.groups.retain(|g| g != group);
                true
            }
            _ => false,
        }
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no agent {agent}")))
}

async fn member_target(state: &AppState, group: &str, agent: &str) -> ApiResult<Uuid> {
    if records::get::<Group>(&state.store, &keys::group(group))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no group `{group}`")));
    }
    let agents = dispatch::agents(&state.store).await?;
    super::agents::find(&agents, agent)
        .map(|a| a.record.uuid)
        .ok_or_else(|| ApiError::not_found(format!("no agent `{agent}`")))
}

/// Add an agent (numeric id, uuid or name) to a group.
#[utoipa::path(put, path = "/api/groups/{name}/agents/{agent}", tag = "groups",
    params(("name" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = GroupView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn add_member(
    State(state): State<AppState>,
    c: Caller,
    Path((name, agent)): Path<(String, String)>,
) -> ApiResult<Json<GroupView>> {
    c.require(Role::Operator)?;
    let uuid = member_target(&state, &name, &agent).await?;
    set_membership(&state, uuid, &name, true).await?;
    let g: Group = get_one(&state, &keys::group(&name), &format!("group `{name}`")).await?;
    Ok(Json(group_view(&state, g).await?))
}

/// Remove an agent from a group.
#[utoipa::path(delete, path = "/api/groups/{name}/agents/{agent}", tag = "groups",
    params(("name" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = GroupView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    c: Caller,
    Path((name, agent)): Path<(String, String)>,
) -> ApiResult<Json<GroupView>> {
    c.require(Role::Operator)?;
    let uuid = member_target(&state, &name, &agent).await?;
    set_membership(&state, uuid, &name, false).await?;
    let g: Group = get_one(&state, &keys::group(&name), &format!("group `{name}`")).await?;
    Ok(Json(group_view(&state, g).await?))
}
