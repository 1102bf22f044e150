//! Users and roles.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may do. Ordered: each role includes the rights of the ones
/// before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, runs nothing.
    Viewer,
    /// May run tasks, plans and load tests.
    Operator,
    /// May also manage users and agents.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (expected viewer, operator or admin)"
            )),
        }
    }
}

/// A user record at `/users/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub kind: String,
    pub v: u32,
    pub name: String,
    pub role: Role,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Tokens carry the generation they were issued in; bumping it (logout,
    /// password change, revocation) invalidates every token issued before.
    #[serde(default)]
    pub token_generation: u64,
}

impl UserRecord {
    pub const KIND: &'static str = "user";

    /// A new user. Its token generation is unique per creation, so that
    /// tokens of a deleted user never work for a later user of the same name.
    pub fn new(name: &str, role: Role, password_hash: String) -> Self {
        let created_at = crate::now();
        UserRecord {
            kind: Self::KIND.into(),
            v: 1,
            name: name.to_string(),
            role,
            password_hash,
            token_generation: created_at.timestamp_micros().unsigned_abs(),
            created_at,
        }
    }
}
