//! Projects: what performance plans (and later other resources) belong to.
//! Integer ids from a store counter, as the seed's `project_id` expects.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use testbed_core::keys;
use testbed_core::schema::FieldError;
use testbed_core::user::Role;

use super::page::{Page, PageQuery};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::records;
use crate::state::AppState;
pub use testbed_api::projects::{Message, Project, ProjectInput};

pub const PROJECTS: &str = "/projects/";

pub fn project_key(id: u64) -> String {
    format!("{PROJECTS}{id}")
}

/// `name` (required, 1–200 characters) and `description` (optional string)
/// of a JSON body, every problem pushed onto `errs` with its field. Shared
/// by projects and performance plans.
pub(crate) fn name_and_description(body: &Value, errs: &mut Vec<FieldError>) -> (String, String) {
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 200 => s.clone(),
        Some(Value::String(_)) => {
            errs.push(field_error("/name", "must be 1–200 characters"));
            String::new()
        }
        None | Some(Value::Null) => {
            errs.push(field_error("/name", "is required"));
            String::new()
        }
        Some(_) => {
            errs.push(field_error("/name", "must be a string"));
            String::new()
        }
    };
    let description = match body.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errs.push(field_error("/description", "must be a string"));
            String::new()
        }
    };
    (name, description)
}

fn read_input(body: &Value) -> ApiResult<(String, String)> {
    let mut errs = Vec::new();
    let (name, description) = name_and_description(body, &mut errs);
    if !body.is_object() {
        return Err(ApiError::field("/", "the body must be a JSON object"));
    }
    if errs.is_empty() {
        Ok((name, description))
    } else {
        Err(ApiError::validation(errs))
    }
}

pub(crate) fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

pub(crate) fn parse_int_id(raw: &str, what: &str) -> ApiResult<u64> {
    raw.parse::<u64>()
        .map_err(|_| ApiError::not_found(format!("no {what} {raw}")))
}

pub async fn load_project(state: &AppState, id: u64) -> ApiResult<Project> {
    records::get::<Project>(&state.store, &project_key(id))
        .await?
        .map(|(p, _)| p)
        .ok_or_else(|| ApiError::not_found(format!("no project {id}")))
}

/// Projects, paginated.
#[utoipa::path(get, path = "/api/projects", tag = "projects", params(PageQuery),
    responses((status = 200, body = Page<Project>)), security(("bearer" = [])))]
pub async fn list_projects(
    State(state): State<AppState>,
    _c: Caller,
    Query(p): Query<PageQuery>,
) -> ApiResult<Json<Page<Project>>> {
    p.check()?;
    let mut items: Vec<Project> = records::list(&state.store, PROJECTS, |_| true)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    items.sort_by_key(|p: &Project| p.id);
    Ok(Json(p.apply(items)))
}

/// Create a project.
#[utoipa::path(post, path = "/api/projects", tag = "projects", request_body = ProjectInput,
    responses((status = 201, body = Project), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_project(
    State(state): State<AppState>,
    c: Caller,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    c.require(Role::Operator)?;
    let (name, description) = read_input(&body)?;
    let id = records::next_counter(&state.store, &keys::counter("project_id")).await?;
    let now = testbed_core::now();
    let project = Project {
        id,
        name,
        description,
        created_at: now,
        updated_at: now,
    };
    if !records::create(&state.store, &project_key(id), &project, None).await? {
        return Err(ApiError::conflict(format!("project {id} exists")));
    }
    Ok((StatusCode::CREATED, Json(project)))
}

/// One project.
#[utoipa::path(get, path = "/api/projects/{id}", tag = "projects", params(("id" = u64, Path)),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_project(
    State(state): State<AppState>,
    _c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Project>> {
    let id = parse_int_id(&id, "project")?;
    Ok(Json(load_project(&state, id).await?))
}

/// Replace a project's name and description.
#[utoipa::path(put, path = "/api/projects/{id}", tag = "projects", params(("id" = u64, Path)),
    request_body = ProjectInput,
    responses((status = 200, body = Project), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_project(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Project>> {
    c.require(Role::Operator)?;
    let id = parse_int_id(&id, "project")?;
    let (name, description) = read_input(&body)?;
    let now = testbed_core::now();
    let updated = records::update::<Project, _>(&state.store, &project_key(id), |p| {
        p.name = name.clone();
        p.description = description.clone();
        p.updated_at = now;
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no project {id}")))?;
    Ok(Json(updated))
}

/// Delete a project.
#[utoipa::path(delete, path = "/api/projects/{id}", tag = "projects", params(("id" = u64, Path)),
    responses((status = 200, body = Message), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_project(
    State(state): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Message>> {
    c.require(Role::Operator)?;
    let id = parse_int_id(&id, "project")?;
    if !state.store.delete(&project_key(id)).await? {
        return Err(ApiError::not_found(format!("no project {id}")));
    }
    Ok(Json(Message {
        message: format!("project {id} deleted"),
    }))
}
