//! `POST /api/auth/login`, `GET /api/auth/me` and user management.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use testbed_core::keys;
use testbed_core::schema::FieldError;
use testbed_core::user::{Role, UserRecord};
use utoipa::ToSchema;

use crate::auth::{hash_password, verify_password, Caller, Subject};
use crate::error::{ApiError, ApiResult, ErrorBody, Json};
use crate::records;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    pub username: String,
    pub role: Role,
}

/// Log in and get a JWT.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, body = ErrorBody, description = "malformed JSON"),
        (status = 401, body = ErrorBody, description = "wrong username or password"),
        (status = 429, body = ErrorBody, description = "too many attempts"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    if let Err(wait) = state.auth.limiter().check(Some(addr.ip()), &req.username) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many login attempts; retry in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let user = records::get::<UserRecord>(&state.store, &keys::user(&req.username)).await?;
    let ok = match &user {
        Some((u, _)) => verify_password(u.password_hash.clone(), req.password.clone()).await,
        None => {
            // Spend the same time as a real check so timing does not tell
            // which usernames exist.
            let _ = hash_password(req.password.clone()).await;
            false
        }
    };
    let Some((user, _)) = user.filter(|_| ok) else {
        state.auth.limiter().failed(&req.username);
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    let ttl = state.auth.token_ttl;
    let token = state
        .auth
        .issue(&user.name, user.role, Subject::User, ttl)?;
    Ok(Json(LoginResponse {
        token,
        token_type: "Bearer".into(),
        expires_in: ttl.as_secs(),
        username: user.name,
        role: user.role,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub username: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            username: u.name,
            role: u.role,
            created_at: u.created_at,
        }
    }
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<UserView>> {
    let (user, _) = records::get::<UserRecord>(&state.store, &keys::user(&caller.name))
        .await?
        .ok_or_else(|| ApiError::unauthorized("user no longer exists"))?;
    Ok(Json(user.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    pub role: Role,
}

/// Create a user (admin).
#[utoipa::path(post, path = "/api/users", tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, body = UserView),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "user exists"),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    caller.require(Role::Admin)?;
    let mut problems = Vec::new();
    let name_ok = !req.username.is_empty()
        && req.username.len() <= 64
        && req
            .username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !name_ok {
        problems.push(FieldError {
            field: "/username".into(),
            message: "1–64 characters of letters, digits, `.`, `_`, `-`".into(),
        });
    }
    if req.password.chars().count() < 8 {
        problems.push(FieldError {
            field: "/password".into(),
            message: "at least 8 characters".into(),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let record = UserRecord {
        kind: UserRecord::KIND.into(),
        v: 1,
        name: req.username.clone(),
        role: req.role,
        password_hash: hash_password(req.password).await?,
        created_at: testbed_core::now(),
    };
    if !records::create(&state.store, &keys::user(&req.username), &record, None).await? {
        return Err(ApiError::conflict(format!(
            "user `{}` exists",
            req.username
        )));
    }
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// List users (admin).
#[utoipa::path(get, path = "/api/users", tag = "users",
    responses((status = 200, body = Vec<UserView>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<UserView>>> {
    caller.require(Role::Admin)?;
    let users: Vec<(String, UserRecord)> =
        records::list(&state.store, keys::USERS, |_| true).await?;
    Ok(Json(users.into_iter().map(|(_, u)| u.into()).collect()))
}

/// Delete a user (admin; not yourself).
#[utoipa::path(delete, path = "/api/users/{name}", tag = "users",
    params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    if name == caller.name {
        return Err(ApiError::conflict("you cannot delete yourself"));
    }
    if !state.store.delete(&keys::user(&name)).await? {
        return Err(ApiError::not_found(format!("no user `{name}`")));
    }
    Ok(StatusCode::NO_CONTENT)
}
