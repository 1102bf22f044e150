//! `POST /api/auth/login`, the console's session cookie
//! (`/api/auth/session`), `GET /api/auth/me` and user management.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{HeaderName, CACHE_CONTROL, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use testbed_core::keys;
use testbed_core::schema::FieldError;
use testbed_core::user::{Role, UserRecord};

use crate::auth::{hash_password, verify_password, Caller, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult, ErrorBody, Json};
use crate::records;
use crate::state::AppState;
use testbed_api::auth::{
    CreateUser, LoginRequest, LoginResponse, SessionView, StreamTokenRequest, StreamTokenResponse,
    UpdateUser, UserView,
};

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
    let user = check_password(&state, addr, req).await?;
    let token = state.auth.issue_user(&user)?;
    Ok(Json(LoginResponse {
        token,
        token_type: "Bearer".into(),
        expires_in: state.auth.token_ttl.as_secs(),
        username: user.name,
        role: user.role,
    }))
}

/// The user whose password this is, behind the login rate limit (shared by
/// `login` and `create_session`, so the cookie sign-in is no way around it).
async fn check_password(
    state: &AppState,
    addr: SocketAddr,
    req: LoginRequest,
) -> ApiResult<UserRecord> {
    let attempt = state
        .auth
        .limiter()
        .begin(addr.ip(), &req.username)
        .map_err(|wait| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many login attempts; retry in {} s",
                    wait.as_secs().max(1)
                ),
            )
        })?;
    let user = if valid_username(&req.username) {
        records::get::<UserRecord>(&state.store, &keys::user(&req.username)).await?
    } else {
        None
    };
    let hash = user.as_ref().map(|(u, _)| u.password_hash.clone());
    let ok = verify_password(hash, req.password).await?;
    let Some((user, _)) = user.filter(|_| ok) else {
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    attempt.succeeded();
    Ok(user)
}

/// The `Set-Cookie` of a session: `HttpOnly` (no script reads it),
/// `SameSite=Strict` (no other site's page sends it), `Secure` over HTTPS.
fn session_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    // A JWT is base64url and dots: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static(""))
}

fn over_tls(state: &AppState, headers: &HeaderMap) -> bool {
    state.settings.tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// Sign in for the web console: the same check (and rate limit) as
/// `POST /api/auth/login`, but the token goes into the `testbed_session`
/// cookie instead of the body. Requests that change something with the
/// cookie must carry `X-Testbed-Csrf: 1` (or a same-origin `Origin`).
#[utoipa::path(post, path = "/api/auth/session", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = SessionView, headers(
            ("set-cookie" = String, description = "`testbed_session=…; Path=/; HttpOnly; SameSite=Strict` (and `Secure` over HTTPS)"))),
        (status = 400, body = ErrorBody, description = "malformed JSON"),
        (status = 401, body = ErrorBody, description = "wrong username or password"),
        (status = 429, body = ErrorBody, description = "too many attempts"),
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<([(HeaderName, HeaderValue); 2], Json<SessionView>)> {
    let user = check_password(&state, addr, req).await?;
    let token = state.auth.issue_user(&user)?;
    let ttl = state.auth.token_ttl.as_secs();
    Ok((
        [
            (
                SET_COOKIE,
                session_cookie(&token, ttl, over_tls(&state, &headers)),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Json(SessionView {
            username: user.name,
            role: user.role,
            expires_in: ttl,
        }),
    ))
}

/// Sign out of the web console: clears the session cookie. (To end every
/// session of the user, everywhere, use `POST /api/auth/logout`.)
#[utoipa::path(delete, path = "/api/auth/session", tag = "auth",
    responses((status = 204, headers(
        ("set-cookie" = String, description = "an expired `testbed_session` cookie")))))]
pub async fn delete_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ([(HeaderName, HeaderValue); 1], StatusCode) {
    (
        [(
            SET_COOKIE,
            session_cookie("", 0, over_tls(&state, &headers)),
        )],
        StatusCode::NO_CONTENT,
    )
}

fn valid_username(name: &str) -> bool {
    keys::is_valid_name(name, 64)
}

/// Log out: every token of the calling user stops working at once (all
/// sessions, including ones on other machines).
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    revoke_tokens(&state, &caller.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_tokens(state: &AppState, name: &str) -> ApiResult<()> {
    let found = records::update::<UserRecord, _>(&state.store, &keys::user(name), |u| {
        u.token_generation += 1;
        true
    })
    .await?;
    if found.is_none() {
        return Err(ApiError::not_found(format!("no user `{name}`")));
    }
    Ok(())
}

/// A short-lived, read-only token for one WebSocket path, for clients (such
/// as browsers) that cannot send an `Authorization` header on a WebSocket.
#[utoipa::path(post, path = "/api/auth/stream-token", tag = "auth",
    request_body = StreamTokenRequest,
    responses((status = 200, body = StreamTokenResponse), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stream_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<StreamTokenRequest>,
) -> ApiResult<Json<StreamTokenResponse>> {
    if !req.path.starts_with("/ws/") || req.path == "/ws/agent" || req.path.contains("..") {
        return Err(ApiError::field(
            "/path",
            "a WebSocket path under /ws/ (e.g. /ws/tasks/{id}/log)",
        ));
    }
    Ok(Json(StreamTokenResponse {
        token: state.auth.issue_stream(&caller, &req.path)?,
        expires_in: crate::auth::STREAM_TOKEN_TTL.as_secs(),
    }))
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
    if !valid_username(&req.username) {
        problems.push(FieldError {
            field: "/username".into(),
            message: keys::name_rule(64),
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
    let record = UserRecord::new(&req.username, req.role, hash_password(req.password).await?);
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

/// Change a user's role or password. An admin may change anyone; a user may
/// change their own password. A new password ends the user's sessions; a new
/// role takes effect on the user's next request.
#[utoipa::path(put, path = "/api/users/{name}", tag = "users",
    params(("name" = String, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    if caller.name != name || req.role.is_some() {
        caller.require(Role::Admin)?;
    }
    if name == caller.name && req.role.is_some_and(|r| r < Role::Admin) {
        return Err(ApiError::conflict(
            "you cannot demote yourself; ask another admin",
        ));
    }
    if req.role.is_none() && req.password.is_none() {
        return Err(ApiError::field("/", "give `role`, `password` or both"));
    }
    let hash = match req.password {
        Some(p) if p.chars().count() < 8 => {
            return Err(ApiError::field("/password", "at least 8 characters"))
        }
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    let updated = records::update::<UserRecord, _>(&state.store, &keys::user(&name), |u| {
        if let Some(role) = req.role {
            u.role = role;
        }
        if let Some(h) = &hash {
            u.password_hash = h.clone();
            u.token_generation += 1;
        }
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no user `{name}`")))?;
    Ok(Json(updated.into()))
}

/// End every session of a user (admin): their tokens stop working at once.
#[utoipa::path(post, path = "/api/users/{name}/revoke", tag = "users",
    params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    revoke_tokens(&state, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
