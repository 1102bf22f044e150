//! Authentication: argon2 password hashes, HS256 JWTs, roles, the agents'
//! join token, and the login rate limit.
//!
//! The signing secret and the join token live in the store (`/config/…`), so
//! every server replica issues and accepts the same tokens.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
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
    /// The role when the token was issued. Informational only: requests are
    /// authorised with the role in the user's current record.
    pub role: Role,
    pub typ: Subject,
    pub iat: i64,
    pub exp: i64,
    /// The user's token generation at issue time (see
    /// [`UserRecord::token_generation`]); a token from an older generation is
    /// revoked.
    #[serde(default)]
    pub gen: u64,
    /// A stream token: valid only for this one WebSocket path, read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub join_token: String,
    pub token_ttl: Duration,
    limiter: LoginLimiter,
}

/// How long a stream token (`?token=` of a WebSocket URL) is valid: long
/// enough to open the socket, short enough that one leaked in a log or a
/// browser history is soon worthless.
pub const STREAM_TOKEN_TTL: Duration = Duration::from_secs(300);

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

    fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::default(), claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing token: {e}")))
    }

    fn claims(sub: &str, role: Role, typ: Subject, ttl: Duration) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: sub.to_string(),
            role,
            typ,
            iat: now,
            exp: now + ttl.as_secs() as i64,
            gen: 0,
            scope: None,
        }
    }

    /// An agent's credential (its uuid as subject).
    pub fn issue_agent(&self, uuid: &uuid::Uuid, ttl: Duration) -> Result<String, ApiError> {
        self.sign(&Self::claims(
            &uuid.to_string(),
            Role::Viewer,
            Subject::Agent,
            ttl,
        ))
    }

    /// A session token for a user, bound to the user's current generation.
    pub fn issue_user(&self, user: &UserRecord) -> Result<String, ApiError> {
        let mut claims = Self::claims(&user.name, user.role, Subject::User, self.token_ttl);
        claims.gen = user.token_generation;
        self.sign(&claims)
    }

    /// A short-lived, read-only token for one WebSocket path, to put in a URL.
    pub fn issue_stream(&self, caller: &Caller, path: &str) -> Result<String, ApiError> {
        let mut claims = Self::claims(&caller.name, Role::Viewer, Subject::User, STREAM_TOKEN_TTL);
        claims.gen = caller.generation;
        claims.scope = Some(path.to_string());
        self.sign(&claims)
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

/// An authenticated user calling the API, as their record stands now.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The user's current token generation.
    pub generation: u64,
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

    /// May this caller change (cancel, delete, edit) something `owner`
    /// created? Operators act on their own things, admins on everyone's.
    pub fn require_owner(&self, owner: &str, what: &str) -> Result<(), ApiError> {
        self.require(Role::Operator)?;
        if self.role >= Role::Admin || (!owner.is_empty() && owner == self.name) {
            return Ok(());
        }
        let by = if owner.is_empty() {
            "an unknown user".to_string()
        } else {
            format!("`{owner}`")
        };
        Err(ApiError::forbidden(format!(
            "{what} belongs to {by}; only its owner or an admin may change it"
        )))
    }
}

/// Where a request's token came from: only WebSocket upgrades (paths under
/// `/ws/`) may carry it in the query, because browsers cannot set headers
/// there; everywhere else a token in a URL would only end up in logs.
pub fn bearer(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let s = h.to_str().ok()?;
        let t = s
            .strip_prefix("Bearer ")
            .or_else(|| s.strip_prefix("bearer "))?;
        return Some(t.trim().to_string());
    }
    if !parts.uri.path().starts_with("/ws/") {
        return None;
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    })
}

/// Paths compared without their trailing slash (`/ws/performance/x/`).
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The browser console's session cookie: it holds the same JWT as
/// `POST /api/auth/login` returns, so a cookie session is checked exactly like
/// a Bearer token (user exists, role from the record, token generation).
pub const SESSION_COOKIE: &str = "testbed_session";

/// The header a cookie-authenticated change must carry (or else an `Origin`
/// equal to the server's own): a cross-site page cannot set it without a CORS
/// preflight, which the server never grants.
pub const CSRF_HEADER: &str = "x-testbed-csrf";

/// The value of the session cookie, if the request carries one.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// Does the request's `Origin` name this server (the host it was sent to,
/// or the one a reverse proxy says it was sent to in `X-Forwarded-Host` — a
/// header no cross-site page can set without a CORS preflight)? `None` when
/// there is no `Origin` header.
fn same_origin(parts: &Parts) -> Option<bool> {
    let origin = parts.headers.get(axum::http::header::ORIGIN)?;
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    let Some(origin_host) = origin_host else {
        return Some(false);
    };
    let names_us = |name: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(','))
            .any(|h| h.trim().eq_ignore_ascii_case(origin_host))
    };
    Some(names_us("host") || names_us("x-forwarded-host"))
}

/// The cross-site checks of a cookie-authenticated request: a change (any
/// method but GET/HEAD/OPTIONS) carries [`CSRF_HEADER`] or a same-origin
/// `Origin`; a WebSocket upgrade (which browsers make with cookies from any
/// page) carries a same-origin `Origin`; any request with a foreign
/// `Origin` is refused.
fn check_cookie_request(parts: &Parts) -> Result<(), ApiError> {
    let origin = same_origin(parts);
    if origin == Some(false) {
        return Err(ApiError::forbidden(
            "cross-origin request with a session cookie refused",
        ));
    }
    if parts.uri.path().starts_with("/ws/") && origin != Some(true) {
        return Err(ApiError::forbidden(
            "a WebSocket opened with the session cookie must come from this server's own page \
             (same Origin); other clients send `Authorization: Bearer <token>` or a stream token",
        ));
    }
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe && origin != Some(true) && !parts.headers.contains_key(CSRF_HEADER) {
        return Err(ApiError::forbidden(format!(
            "a change made with the session cookie must carry the `{CSRF_HEADER}: 1` header \
             (cross-site request forgery protection)"
        )));
    }
    Ok(())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // A Bearer header (or a stream token in a WebSocket URL) wins over
        // the cookie: a client that sends one chose it.
        let (token, from_cookie) =
            match bearer(parts) {
                Some(t) => (t, false),
                None => match session_cookie(parts) {
                    Some(t) => (t, true),
                    None => return Err(ApiError::unauthorized(
                        "missing `Authorization: Bearer <token>` (or the console's session cookie)",
                    )),
                },
            };
        if from_cookie {
            check_cookie_request(parts)?;
        }
        let claims = state.auth.verify(&token)?;
        if claims.typ != Subject::User {
            return Err(ApiError::unauthorized("not a user token"));
        }
        if from_cookie && claims.scope.is_some() {
            return Err(ApiError::unauthorized("a stream token is not a session"));
        }
        // A token in a URL ends up in logs and browser history, so only a
        // stream token (short-lived, one path, read-only) may travel there.
        let from_query = !from_cookie
            && !parts
                .headers
                .contains_key(axum::http::header::AUTHORIZATION);
        if from_query && claims.scope.is_none() {
            return Err(ApiError::unauthorized(
                "a session token may not be sent in the URL; get a stream token from \
                 POST /api/auth/stream-token or send `Authorization: Bearer <token>`",
            ));
        }
        if let Some(scope) = &claims.scope {
            if !same_path(scope, parts.uri.path()) {
                return Err(ApiError::unauthorized(format!(
                    "this token is only valid for {scope}"
                )));
            }
        }
        // The user as stored now: deletion, demotion and revocation take
        // effect on the next request, not when the token expires.
        let (user, _) = records::get::<UserRecord>(&state.store, &keys::user(&claims.sub))
            .await?
            .ok_or_else(|| ApiError::unauthorized("user no longer exists"))?;
        if user.token_generation != claims.gen {
            return Err(ApiError::unauthorized("token revoked; log in again"));
        }
        let role = if claims.scope.is_some() {
            user.role.min(Role::Viewer)
        } else {
            user.role
        };
        Ok(Caller {
            name: user.name,
            role,
            generation: user.token_generation,
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
        // A deleted agent's credential dies with its record.
        if state.store.get(&keys::agent(&uuid)).await?.is_none() {
            return Err(ApiError::unauthorized("agent no longer registered"));
        }
        Ok(AgentCaller { uuid })
    }
}

/// Password hashing is the one thing an anonymous client can make the server
/// do (argon2 with 19 MiB per hash), so it runs on a few dedicated threads
/// fed by a bounded queue: memory stays bounded whatever the number of logins
/// in flight (each hashing thread keeps one malloc arena; hashing on the
/// blocking pool would leave 19 MiB behind in every pool thread's arena), and
/// a full queue is refused at once with 429.
struct HashPool {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

/// Password checks allowed to wait for a hashing thread.
pub const HASH_QUEUE: usize = 32;

static HASH_POOL: LazyLock<Option<HashPool>> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(HASH_QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..threads {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("testbed-hash-{i}"))
            .spawn(move || loop {
                let job = {
                    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                    rx.recv()
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
        if spawned.is_ok() {
            started += 1;
        }
    }
    (started > 0).then_some(HashPool { jobs: tx })
});

async fn with_hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let pool = HASH_POOL
        .as_ref()
        .ok_or_else(|| ApiError::internal("no password hashing thread could be started"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = tx.send(work());
    });
    pool.jobs.try_send(job).map_err(|e| match e {
        std::sync::mpsc::TrySendError::Full(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many password checks in progress; retry in a few seconds",
        ),
        std::sync::mpsc::TrySendError::Disconnected(_) => {
            ApiError::internal("password hashing threads are gone")
        }
    })?;
    rx.await
        .map_err(|_| ApiError::internal("password hashing failed"))
}

pub async fn hash_password(password: String) -> Result<String, ApiError> {
    with_hashing(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(format!("hashing password: {e}")))
    })
    .await?
}

/// Checks a password against a stored hash; `None` stands for an unknown
/// user, checked against a fixed hash so the answer takes as long either way
/// and timing does not tell which usernames exist.
pub async fn verify_password(hash: Option<String>, password: String) -> Result<bool, ApiError> {
    with_hashing(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await
}

static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(b"no such user", &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

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
        let record = UserRecord::new("admin", Role::Admin, hash_password(password).await?);
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

/// What [`reset_password`] did.
#[derive(Debug)]
pub struct PasswordReset {
    /// The user did not exist and was created (as an admin).
    pub created: bool,
}

/// Sets a user's password straight in the store, for an operator with
/// local access who lost it (`testbed admin reset-password`). Ends the
/// user's sessions (their token generation moves on); a missing user is
/// created as an admin, so a data dir whose admin nobody can log in as is
/// always recoverable.
pub async fn reset_password(
    store: &DynStore,
    name: &str,
    password: String,
) -> Result<PasswordReset, ApiError> {
    let key = keys::user(name);
    let hash = hash_password(password).await?;
    loop {
        let updated = records::update::<UserRecord, _>(store, &key, |u| {
            u.password_hash = hash.clone();
            u.token_generation += 1;
            true
        })
        .await?;
        if updated.is_some() {
            return Ok(PasswordReset { created: false });
        }
        let record = UserRecord::new(name, Role::Admin, hash.clone());
        if records::create(store, &key, &record, None).await? {
            return Ok(PasswordReset { created: true });
        }
        // Created meanwhile by a running replica: set its password instead.
    }
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

/// Refuses logins after too many attempts, counted when an attempt starts
/// (so a burst of concurrent guesses cannot slip past the count) and kept
/// when it fails; a successful login takes its attempt back.
///
/// Two windows: failures of one user from one address (a guesser is stopped
/// without locking the real user out from elsewhere), and attempts from one
/// address whatever the user (a sprayer is stopped). IPv6 addresses count by
/// their /64, which one client usually owns whole.
#[derive(Default)]
pub struct LoginLimiter {
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// `testbed_login_failures_total`: attempts that ended without
    /// [`Attempt::succeeded`], and refusals by the limit.
    failures: crate::metrics::LoginFailures,
}

pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
pub const LOGIN_MAX_PER_USER_ADDRESS: usize = 10;
pub const LOGIN_MAX_PER_ADDRESS: usize = 30;
/// Distinct addresses and user/address pairs remembered in one window; past
/// it, new ones are refused until the window moves on, so a flood from many
/// addresses cannot grow the table without bound.
pub const LOGIN_MAX_TRACKED: usize = 100_000;

/// One login attempt in progress; dropped without [`Attempt::succeeded`], it
/// stays counted as a failure.
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: Vec<String>,
    at: Instant,
    succeeded: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.succeeded {
            self.limiter
                .failures
                .inc(crate::metrics::LoginFailure::Credentials);
        }
    }
}

impl Attempt<'_> {
    pub fn succeeded(mut self) {
        self.succeeded = true;
        let mut map = self.limiter.lock();
        for key in &self.keys {
            if let Some(q) = map.get_mut(key) {
                if let Some(pos) = q.iter().rposition(|t| *t == self.at) {
                    q.remove(pos);
                }
                if q.is_empty() {
                    map.remove(key);
                }
            }
        }
    }
}

fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failure counter, for the metrics registry.
    pub fn failures(&self) -> crate::metrics::LoginFailures {
        self.failures.clone()
    }

    /// Starts an attempt; `Err(retry_after)` when over a limit (counted as
    /// a rate-limited login failure).
    pub fn begin(&self, ip: IpAddr, user: &str) -> Result<Attempt<'_>, Duration> {
        let started = self.begin_inner(ip, user);
        if started.is_err() {
            self.failures.inc(crate::metrics::LoginFailure::RateLimited);
        }
        started
    }

    fn begin_inner(&self, ip: IpAddr, user: &str) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, q| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= LOGIN_WINDOW)
            {
                q.pop_front();
            }
            !q.is_empty()
        });
        let addr = address_key(ip);
        let addr_key = format!("ip:{addr}");
        let user_key = format!("user:{user}@{addr}");
        let limits = [
            (&addr_key, LOGIN_MAX_PER_ADDRESS),
            (&user_key, LOGIN_MAX_PER_USER_ADDRESS),
        ];
        for (key, max) in limits {
            if let Some(q) = map.get(key.as_str()).filter(|q| q.len() >= max) {
                let first = q.front().copied().unwrap_or(now);
                return Err(LOGIN_WINDOW.saturating_sub(now.duration_since(first)));
            }
        }
        let new_keys = limits
            .iter()
            .filter(|(k, _)| !map.contains_key(k.as_str()))
            .count();
        if map.len() + new_keys > LOGIN_MAX_TRACKED {
            return Err(Duration::from_secs(1));
        }
        for (key, _) in limits {
            map.entry(key.clone()).or_default().push_back(now);
        }
        Ok(Attempt {
            limiter: self,
            keys: vec![addr_key, user_key],
            at: now,
            succeeded: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let p = parts(
            "GET",
            "/api/auth/me",
            &[("cookie", "a=1; testbed_session=tok.en; b=2")],
        );
        assert_eq!(session_cookie(&p).as_deref(), Some("tok.en"));
        let p = parts("GET", "/", &[("cookie", "testbed_session=")]);
        assert_eq!(session_cookie(&p), None);
        let p = parts("GET", "/", &[("cookie", "xtestbed_session=1")]);
        assert_eq!(session_cookie(&p), None);
    }

    #[test]
    fn cookie_changes_need_the_header_or_our_origin() {
        let host = ("host", "testbed:8774");
        let ok = |m, path, h: &[(&str, &str)]| check_cookie_request(&parts(m, path, h)).is_ok();
        assert!(ok("GET", "/api/runs", &[host]));
        assert!(!ok("POST", "/api/runs", &[host]));
        assert!(ok("POST", "/api/runs", &[host, ("x-testbed-csrf", "1")]));
        assert!(ok(
            "POST",
            "/api/runs",
            &[host, ("origin", "http://testbed:8774")]
        ));
        assert!(ok(
            "DELETE",
            "/api/runs/x",
            &[host, ("origin", "https://TESTBED:8774")]
        ));
        assert!(!ok(
            "POST",
            "/api/runs",
            &[
                host,
                ("origin", "http://evil:8774"),
                ("x-testbed-csrf", "1")
            ]
        ));
        assert!(!ok(
            "GET",
            "/api/runs",
            &[host, ("origin", "http://testbed:9999")]
        ));
        assert!(!ok("POST", "/api/runs", &[host, ("origin", "null")]));
        // Behind a proxy that rewrites Host.
        let proxied = [
            ("host", "127.0.0.1:8774"),
            ("x-forwarded-host", "testbed.example"),
        ];
        assert!(ok(
            "POST",
            "/api/runs",
            &[
                proxied[0],
                proxied[1],
                ("origin", "https://testbed.example")
            ]
        ));
        // WebSockets: the Origin must be ours, a header is not enough.
        assert!(!ok(
            "GET",
            "/ws/tasks/x/log",
            &[host, ("x-testbed-csrf", "1")]
        ));
        assert!(ok(
            "GET",
            "/ws/tasks/x/log",
            &[host, ("origin", "http://testbed:8774")]
        ));
    }

    #[test]
    fn attempts_count_when_they_start() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // Ten concurrent attempts in flight: the eleventh is refused before
        // any of them has finished.
        let held: Vec<_> = (0..LOGIN_MAX_PER_USER_ADDRESS)
            .map(|_| l.begin(ip, "admin").unwrap())
            .collect();
        assert!(l.begin(ip, "admin").is_err());
        drop(held);
        assert!(l.begin(ip, "admin").is_err(), "failures stay counted");
    }

    #[test]
    fn a_guesser_does_not_lock_the_user_out_elsewhere() {
        let l = LoginLimiter::default();
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..LOGIN_MAX_PER_USER_ADDRESS {
            drop(l.begin(attacker, "admin").unwrap());
        }
        assert!(l.begin(attacker, "admin").is_err());
        let admin: IpAddr = "10.0.0.2".parse().unwrap();
        l.begin(admin, "admin").unwrap().succeeded();
    }

    #[test]
    fn success_takes_its_attempt_back() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 * LOGIN_MAX_PER_ADDRESS {
            l.begin(ip, "ci").unwrap().succeeded();
        }
    }

    #[test]
    fn spraying_users_from_one_address_is_limited() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..LOGIN_MAX_PER_ADDRESS {
            drop(l.begin(ip, &format!("u{i}")).unwrap());
        }
        assert!(l.begin(ip, "fresh").is_err());
    }

    #[test]
    fn ipv6_counts_by_prefix() {
        let l = LoginLimiter::default();
        for i in 0..LOGIN_MAX_PER_USER_ADDRESS {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            drop(l.begin(ip, "admin").unwrap());
        }
        let other: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(l.begin(other, "admin").is_err());
    }
}
