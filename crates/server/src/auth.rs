//! Authentication: argon2 password hashes, HS256 JWTs, roles, the agents'
//! join token, and the login rate limit.
//!
//! The signing secret and the join token live in the store (`/config/…`), so
//! every server replica issues and accepts the same tokens.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use testbed_core::keys;
use testbed_core::user::{Role, UserRecord};
use testbed_store::DynStore;

use crate::error::ApiError;
use crate::records;
use crate::state::AppState;

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    User,
    Agent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub typ: Subject,
    pub iat: i64,
    pub exp: i64,
}

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub join_token: String,
    pub token_ttl: Duration,
    limiter: LoginLimiter,
}

impl Auth {
    pub fn new(secret: &[u8], join_token: String, token_ttl: Duration) -> Self {
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            join_token,
            token_ttl,
            limiter: LoginLimiter::default(),
        }
    }

    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        typ: Subject,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: sub.to_string(),
            role,
            typ,
            iat: now,
            exp: now + ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing token: {e}")))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::default();
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("token expired; log in again")
                }
                _ => ApiError::unauthorized("invalid token"),
            })
    }

    /// Constant-time comparison with the join token.
    pub fn is_join_token(&self, token: &str) -> bool {
        let a = token.as_bytes();
        let b = self.join_token.as_bytes();
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    pub fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }
}

/// An authenticated user calling the API.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role `{}` may not do this (needs `{}`)",
                self.role.as_str(),
                role.as_str()
            )))
        }
    }
}

/// The bearer token of a request: the `Authorization` header, or — for
/// WebSockets opened by browsers, which cannot set headers — `?token=`.
pub fn bearer(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let s = h.to_str().ok()?;
        let t = s
            .strip_prefix("Bearer ")
            .or_else(|| s.strip_prefix("bearer "))?;
        return Some(t.trim().to_string());
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>`"))?;
        let claims = state.auth.verify(&token)?;
        if claims.typ != Subject::User {
            return Err(ApiError::unauthorized("not a user token"));
        }
        Ok(Caller {
            name: claims.sub,
            role: claims.role,
        })
    }
}

/// An agent calling the API with the credential it got in `welcome`.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub uuid: uuid::Uuid,
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthorized("missing agent credential"))?;
        let claims = state.auth.verify(&token)?;
        if claims.typ != Subject::Agent {
            return Err(ApiError::forbidden("only agents may call this"));
        }
        let uuid = claims
            .sub
            .parse()
            .map_err(|_| ApiError::unauthorized("invalid agent credential"))?;
        Ok(AgentCaller { uuid })
    }
}

pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(format!("hashing password: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

pub async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Secrets shared by all replicas, created by whichever starts first.
pub struct Bootstrap {
    pub secret: Vec<u8>,
    pub join_token: String,
    /// The admin password, when this start generated it (print it once).
    pub generated_admin_password: Option<String>,
    /// The admin user was created by this start.
    pub admin_created: bool,
}

pub async fn bootstrap(
    store: &DynStore,
    admin_password: Option<String>,
    join_token: Option<String>,
) -> Result<Bootstrap, ApiError> {
    let secret = shared_value(store, "jwt_secret", || random_token(48)).await?;
    let join_token = match join_token {
        Some(t) if !t.is_empty() => t,
        _ => shared_value(store, "join_token", || random_token(24)).await?,
    };

    let admin_key = keys::user("admin");
    let mut generated = None;
    let mut admin_created = false;
    if store.get(&admin_key).await?.is_none() {
        let password = match admin_password {
            Some(p) if !p.is_empty() => p,
            _ => {
                let p = random_token(12);
                generated = Some(p.clone());
                p
            }
        };
        let record = UserRecord {
            kind: UserRecord::KIND.into(),
            v: 1,
            name: "admin".into(),
            role: Role::Admin,
            password_hash: hash_password(password).await?,
            created_at: testbed_core::now(),
        };
        admin_created = records::create(store, &admin_key, &record, None).await?;
        if !admin_created {
            // Another replica created it first; its password stands.
            generated = None;
        }
    }
    Ok(Bootstrap {
        secret: secret.into_bytes(),
        join_token,
        generated_admin_password: generated,
        admin_created,
    })
}

/// The value at `/config/{name}`, created from `make` if absent (the first
/// replica to start wins; the others read its value).
async fn shared_value(
    store: &DynStore,
    name: &str,
    make: impl Fn() -> String,
) -> Result<String, ApiError> {
    let key = keys::config(name);
    loop {
        if let Some(kv) = store.get(&key).await? {
            return String::from_utf8(kv.value)
                .map_err(|_| ApiError::internal(format!("{key} is not UTF-8")));
        }
        let value = make();
        if store
            .txn_put(
                &key,
                testbed_store::Compare::Absent,
                value.clone().into_bytes(),
                None,
            )
            .await?
            .is_some()
        {
            return Ok(value);
        }
    }
}

/// Refuses logins after too many attempts from one address or for one user
/// in a sliding window, so passwords cannot be guessed at line rate.
#[derive(Default)]
pub struct LoginLimiter {
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const LOGIN_WINDOW: Duration = Duration::from_secs(60);
const LOGIN_MAX_FAILURES_PER_USER: usize = 10;
const LOGIN_MAX_PER_ADDRESS: usize = 60;

impl LoginLimiter {
    /// Records an attempt; `Err(retry_after)` when over the limit.
    pub fn check(&self, ip: Option<IpAddr>, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, q| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) > LOGIN_WINDOW)
            {
                q.pop_front();
            }
            !q.is_empty()
        });
        let over = |key: &str, max: usize, map: &HashMap<String, VecDeque<Instant>>| {
            map.get(key)
                .filter(|q| q.len() >= max)
                .and_then(|q| q.front())
                .map(|first| LOGIN_WINDOW.saturating_sub(now.duration_since(*first)))
        };
        let user_key = format!("user:{user}");
        if let Some(wait) = over(&user_key, LOGIN_MAX_FAILURES_PER_USER, &map) {
            return Err(wait);
        }
        if let Some(ip) = ip {
            let ip_key = format!("ip:{ip}");
            if let Some(wait) = over(&ip_key, LOGIN_MAX_PER_ADDRESS, &map) {
                return Err(wait);
            }
            map.entry(ip_key).or_default().push_back(now);
        }
        Ok(())
    }

    /// Counts a failed attempt against the user.
    pub fn failed(&self, user: &str) {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(format!("user:{user}"))
            .or_default()
            .push_back(Instant::now());
    }
}
