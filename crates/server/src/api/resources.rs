//! Seed-003 resources with full CRUD: test cases, environments and groups
//! (with their members and reservation).
//!
//! What seed 003 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-003-the-store.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
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

/// A seed-003 resource kept under its name (`/testcases/{name}`, …): what
/// the generic create, get, replace and delete below need to know of it, so
/// each resource's handlers differ only in their types and documentation.
trait Named: Serialize + DeserializeOwned {
    /// What an error message calls one ("test case").
    const WHAT: &'static str;
    fn key(name: &str) -> String;
    fn name(&self) -> &str;
    /// The checks a schema cannot make; the name's by default.
    fn check(&self) -> ApiResult<()> {
        check_name("/name", self.name())
    }
    fn created_at(&self) -> DateTime<Utc>;
    /// Sets the times kept with it: when it was created (the replaced
    /// one's, on a replace) and `now`, the time of this change.
    fn stamp(&mut self, created: DateTime<Utc>, now: DateTime<Utc>);
}

fn described<T: Named>(name: &str) -> String {
    format!("{} `{name}`", T::WHAT)
}

async fn list_all<T: DeserializeOwned>(state: &AppState, prefix: &str) -> ApiResult<Vec<T>> {
    // Only direct children: `/groups/g/lock` is not a group.
    let items: Vec<(String, T)> =
        records::list(&state.store, prefix, |k| !k[prefix.len()..].contains('/')).await?;
    Ok(items.into_iter().map(|(_, v)| v).collect())
}

async fn stored<T: Named>(state: &AppState, name: &str) -> ApiResult<Option<T>> {
    Ok(records::get::<T>(&state.store, &T::key(name))
        .await?
        .map(|(v, _)| v))
}

async fn get_one<T: Named>(state: &AppState, name: &str) -> ApiResult<T> {
    stored(state, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {}", described::<T>(name))))
}

/// Checks and stores a new `value`; 409 when its name is taken.
async fn create_one<T: Named>(state: &AppState, mut value: T) -> ApiResult<T> {
    value.check()?;
    let now = testbed_core::now();
    value.stamp(now, now);
    let name = value.name().to_string();
    if !records::create(&state.store, &T::key(&name), &value, None).await? {
        return Err(ApiError::conflict(format!(
            "{} exists",
            described::<T>(&name)
        )));
    }
    Ok(value)
}

/// Checks and stores `value` as `name` (the path's), keeping the creation
/// time of the one it replaces.
async fn put_one<T: Named>(state: &AppState, name: &str, mut value: T) -> ApiResult<T> {
    if value.name() != name {
        return Err(ApiError::field(
            "/name",
            format!("must match the path (`{name}`)"),
        ));
    }
    value.check()?;
    let created = match stored::<T>(state, name).await? {
        Some(old) => old.created_at(),
        None => value.created_at(),
    };
    value.stamp(created, testbed_core::now());
    records::put(&state.store, &T::key(name), &value, None).await?;
    Ok(value)
}

async fn delete_one<T: Named>(state: &AppState, name: &str) -> ApiResult<StatusCode> {
    if !state.store.delete(&T::key(name)).await? {
        return Err(ApiError::not_found(format!("no {}", described::<T>(name))));
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

impl Named for TestCase {
    const WHAT: &'static str = "test case";
    fn key(name: &str) -> String {
        keys::testcase(name)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self) -> ApiResult<()> {
        check_testcase(self)
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn stamp(&mut self, created: DateTime<Utc>, now: DateTime<Utc>) {
        self.created_at = created;
        self.updated_at = now;
    }
}

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
    Json(tc): Json<TestCase>,
) -> ApiResult<(StatusCode, Json<TestCase>)> {
    c.require(Role::Operator)?;
    Ok((StatusCode::CREATED, Json(create_one(&state, tc).await?)))
}

/// One test case.
#[utoipa::path(get, path = "/api/testcases/{name}", tag = "testcases", params(("name" = String, Path)),
    responses((status = 200, body = TestCase), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_testcase(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TestCase>> {
    Ok(Json(get_one(&state, &name).await?))
}

/// Replace a test case (created if missing).
#[utoipa::path(put, path = "/api/testcases/{name}", tag = "testcases", params(("name" = String, Path)), request_body = TestCase,
    responses((status = 200, body = TestCase), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_testcase(
    State(state): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Json(tc): Json<TestCase>,
) -> ApiResult<Json<TestCase>> {
    c.require(Role::Operator)?;
    Ok(Json(put_one(&state, &name, tc).await?))
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
    delete_one::<TestCase>(&state, &name).await
}

// ---- environments -----------------------------------------------------

impl Named for Environment {
    const WHAT: &'static str = "environment";
    fn key(name: &str) -> String {
        keys::environment(name)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    fn stamp(&mut self, created: DateTime<Utc>, now: DateTime<Utc>) {
        self.created_at = created;
        self.updated_at = now;
    }
}

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
    Json(e): Json<Environment>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    c.require(Role::Operator)?;
    Ok((StatusCode::CREATED, Json(create_one(&state, e).await?)))
}

/// One environment.
#[utoipa::path(get, path = "/api/environments/{name}", tag = "environments", params(("name" = String, Path)),
    responses((status = 200, body = Environment), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_environment(
    State(state): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Environment>> {
    Ok(Json(get_one(&state, &name).await?))
}

/// Replace an environment (created if missing).
#[utoipa::path(put, path = "/api/environments/{name}", tag = "environments", params(("name" = String, Path)), request_body = Environment,
    responses((status = 200, body = Environment), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_environment(
    State(state): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Json(e): Json<Environment>,
) -> ApiResult<Json<Environment>> {
    c.require(Role::Operator)?;
    Ok(Json(put_one(&state, &name, e).await?))
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
    delete_one::<Environment>(&state, &name).await
}

// ---- groups -----------------------------------------------------------

impl Named for Group {
    const WHAT: &'static str = "group";
    fn key(name: &str) -> String {
        keys::group(name)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// A group is never replaced, so it keeps no time of change.
    fn stamp(&mut self, created: DateTime<Utc>, _now: DateTime<Utc>) {
        self.created_at = created;
    }
}

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
    Json(g): Json<Group>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    c.require(Role::Operator)?;
    let g = create_one(&state, g).await?;
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
    let g: Group = get_one(&state, &name).await?;
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
    let status = delete_one::<Group>(&state, &name).await?;
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
    if stored::<Group>(state, group).await?.is_none() {
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
    let g: Group = get_one(&state, &name).await?;
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
    let g: Group = get_one(&state, &name).await?;
    Ok(Json(group_view(&state, g).await?))
}
