//! `/api/auth/…` and `/api/users`: logins, sessions, stream tokens, users.

use serde::{Deserialize, Serialize};
use testbed_core::user::{Role, UserRecord};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    pub username: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub username: String,
    pub role: Role,
    /// Seconds until the session ends (then sign in again).
    pub expires_in: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamTokenRequest {
    /// The WebSocket path the token opens, e.g. `/ws/tasks/{id}/log`.
    #[schema(pattern = r"^/ws/(?!agent$)(?![\s\S]*\.\.)")]
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamTokenResponse {
    /// Put in the WebSocket URL as `?token=`; read-only, valid for `path` only.
    pub token: String,
    /// Seconds until it expires (it only needs to open the socket).
    pub expires_in: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub username: String,
    #[schema(min_length = 8)]
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// A new role (admin only).
    pub role: Option<Role>,
    /// A new password (admin, or the user themself); ends every session of
    /// the user.
    #[schema(min_length = 8)]
    pub password: Option<String>,
}
