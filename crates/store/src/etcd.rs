//! The cluster backend: a client of an etcd v3 cluster.
//!
//! It speaks etcd's JSON gRPC-gateway (`POST /v3/...`) over plain HTTP(S)
//! rather than gRPC. That keeps `protoc` and generated code out of the build
//! (one `cargo build` on any machine), and the gateway is built into every
//! etcd server (under `/v3/` since etcd 3.4), so nothing extra needs
//! deploying. The price is handling
//! the gateway's JSON conventions, done in the wire types at the bottom of
//! this file: bytes are base64, int64s are strings, and fields holding their
//! default value (0, false, empty, the PUT event type) are omitted.
//!
//! Failover follows etcd's own client: endpoints are tried in order starting
//! from the last one that worked; a request that certainly did not reach
//! etcd (connection refused, "no leader") moves on to the next endpoint, while
//! a write whose outcome is unknown (timeout, dropped connection) is *not*
//! replayed, because a replayed put or compare-and-swap could apply twice or
//! report a false conflict. Such a write — typically one sent just as the
//! leader died — fails with [`StoreError::Unavailable`], and callers re-read
//! and retry as after any transient failure.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::types::{validate_key, validate_txn};
use crate::{
    Compare, Event, EventKind, KeyValue, LeaseId, Page, Result, Store, StoreError, TxnOp,
    WatchStream,
};

/// How long a request keeps cycling through the endpoints before it reports
/// [`StoreError::Unavailable`]. Long enough to ride out a leader election
/// (etcd's default election timeout is 1 s), short enough that a dead
/// cluster is reported rather than hung on.
const RETRY_WINDOW: Duration = Duration::from_secs(5);

/// Upper bound for one unary request. etcd itself gives up on a proposal
/// after a few seconds, so anything longer means a dead peer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

const WATCH_CHANNEL: usize = 256;

/// Connection options for [`EtcdStore`] beyond the endpoint list.
#[derive(Default, Clone)]
pub struct EtcdOptions {
    /// etcd user (etcd's user/role auth); requires `password`.
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA bundle (PEM) that signed the etcd servers' certificates, for
    /// `etcds://` with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`; needs
    /// `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, RSA or SEC1) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Prepended to every key and stripped from every result, so several
    /// Testbed installations can share one etcd cluster. Default empty, so
    /// other etcd clients see the documented key layout as is.
    pub prefix: String,
}

/// Hand-written so the password never ends up in a log line.
impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The etcd [`Store`] backend.
pub struct EtcdStore {
    conn: Arc<Conn>,
    /// Dropped with the store, which tells every watch task to stop: their
    /// streams end when the store goes away, as with the embedded backend.
    _shutdown: watch::Sender<()>,
    shutdown_rx: watch::Receiver<()>,
}

struct Conn {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last; requests start there so a
    /// dead first endpoint costs one failed connect, not one per request.
    preferred: AtomicUsize,
    root: Vec<u8>,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    describe: String,
}

/// Why one attempt on one endpoint failed.
enum Failure {
    /// The request did not reach etcd, or etcd refused it before acting on
    /// it: safe to send anywhere again.
    NotSent(String),
    /// The request may or may not have been applied.
    Ambiguous(String),
    /// The auth token is missing, expired or was invalidated.
    Auth(String),
    /// etcd answered with an error that retrying will not change.
    Status { code: i64, message: String },
}

impl EtcdStore {
    /// Connects to the cluster named by `spec` (`etcd://h1:2379,h2:2379`,
    /// or `etcds://…` for TLS; the port defaults to 2379), authenticating
    /// when a username is given. Fails unless some endpoint answers, so a
    /// misconfiguration is reported at startup rather than on first use.
    pub async fn connect(spec: &str, opts: EtcdOptions) -> Result<Self> {
        let (tls, endpoints) = parse_spec(spec)?;
        let http = build_client(tls, &opts)?;
        let credentials = match (opts.username, opts.password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(StoreError::InvalidSpec(
                    "an etcd username needs a password".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(StoreError::InvalidSpec(
                    "an etcd password needs a username".into(),
                ))
            }
        };
        let conn = Arc::new(Conn {
            http,
            describe: format!(
                "{}://{}",
                if tls { "etcds" } else { "etcd" },
                endpoints
                    .iter()
                    .map(|e| e.split_once("://").map_or(e.as_str(), |(_, h)| h))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            endpoints,
            preferred: AtomicUsize::new(0),
            root: opts.prefix.into_bytes(),
            credentials,
            token: Mutex::new(None),
        });
        if conn.credentials.is_some() {
            conn.authenticate().await?;
        }
        conn.revision().await?;
        let (tx, rx) = watch::channel(());
        Ok(EtcdStore {
            conn,
            _shutdown: tx,
            shutdown_rx: rx,
        })
    }
}

fn parse_spec(spec: &str) -> Result<(bool, Vec<String>)> {
    let (tls, rest) = if let Some(rest) = spec.strip_prefix("etcds://") {
        (true, rest)
    } else if let Some(rest) = spec.strip_prefix("etcd://") {
        (false, rest)
    } else {
        return Err(StoreError::InvalidSpec(format!(
            "`{spec}`: expected etcd://HOST:PORT[,HOST:PORT…] or etcds://…"
        )));
    };
    let scheme = if tls { "https" } else { "http" };
    let mut endpoints = Vec::new();
    for host in rest.trim_end_matches('/').split(',').map(str::trim) {
        if host.is_empty() {
            continue;
        }
        let bad = |why: &str| StoreError::InvalidSpec(format!("`{spec}`: endpoint `{host}` {why}"));
        if host.contains(['/', '@', '?', '#']) {
            return Err(bad("must be HOST or HOST:PORT"));
        }
        let mut url = url::Url::parse(&format!("{scheme}://{host}"))
            .map_err(|e| bad(&format!("is not a valid host: {e}")))?;
        if url.port().is_none() {
            url.set_port(Some(2379))
                .map_err(|()| bad("is not a valid host"))?;
        }
        endpoints.push(url.as_str().trim_end_matches('/').to_owned());
    }
    if endpoints.is_empty() {
        return Err(StoreError::InvalidSpec(format!(
            "`{spec}`: no etcd endpoint given"
        )));
    }
    Ok((tls, endpoints))
}

fn build_client(tls: bool, opts: &EtcdOptions) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(30))
        // Every etcd version serves the gateway over HTTP/1.1; pinning it
        // avoids depending on how a version routes HTTP/2 requests on the
        // port it shares with gRPC when TLS (ALPN) would offer HTTP/2.
        .http1_only();
    let uses_tls_files =
        opts.ca_file.is_some() || opts.cert_file.is_some() || opts.key_file.is_some();
    if uses_tls_files && !tls {
        return Err(StoreError::InvalidSpec(
            "TLS files are configured but the etcd spec uses etcd:// (plain HTTP); use etcds://"
                .into(),
        ));
    }
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| {
            StoreError::InvalidSpec(format!("cannot read etcd {what} {}: {e}", path.display()))
        })
    };
    if let Some(ca) = &opts.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read(ca, "CA file")?)
            .map_err(|e| StoreError::InvalidSpec(format!("etcd CA file {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(StoreError::InvalidSpec(format!(
                "etcd CA file {} holds no certificate",
                ca.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = pem_blocks(&read(cert, "client certificate")?);
            pem.extend(pem_blocks(&read(key, "client key")?));
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                StoreError::InvalidSpec(format!(
                    "etcd client certificate {} / key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::InvalidSpec(
                "an etcd client certificate and its key must be given together".into(),
            ))
        }
    }
    builder
        .build()
        .map_err(|e| StoreError::InvalidSpec(format!("cannot set up the etcd HTTP client: {e}")))
}

/// Keeps only the certificate and private-key blocks of a PEM file: keys
/// made by `openssl ecparam -genkey` carry an `EC PARAMETERS` block that the
/// TLS library would otherwise reject.
fn pem_blocks(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let mut out = String::new();
    let mut keep = None::<bool>;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            keep = Some(label == "CERTIFICATE" || label.ends_with("PRIVATE KEY"));
        }
        if keep == Some(true) {
            out.push_str(line);
            out.push('\n');
        }
        if line.starts_with("-----END ") {
            keep = None;
        }
    }
    out.into_bytes()
}

// --- requests -------------------------------------------------------------------

impl Conn {
    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = self.root.clone();
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// The keys under `prefix` as an etcd `[key, range_end)` pair.
    fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        if start.is_empty() {
            // etcd's "every key": key "\0", range_end "\0".
            return (vec![0], vec![0]);
        }
        (start.clone(), prefix_end(start))
    }

    fn strip(&self, key: &[u8]) -> Option<String> {
        key.strip_prefix(self.root.as_slice())
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    fn endpoint_order(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| (start + i) % n)
    }

    fn current_token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_token(&self, token: Option<String>) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// The token to send, authenticating first when credentials are set but
    /// no token is held (at start, or after etcd rejected the last one).
    async fn token(&self) -> Result<Option<String>> {
        if self.credentials.is_none() {
            return Ok(None);
        }
        if let Some(token) = self.current_token() {
            return Ok(Some(token));
        }
        self.authenticate().await.map(Some)
    }

    async fn authenticate(&self) -> Result<String> {
        let Some((user, password)) = &self.credentials else {
            return Err(StoreError::Etcd(
                "etcd requires authentication: configure an etcd username and password".into(),
            ));
        };
        let body = Bytes::from(json!({ "name": user, "password": password }).to_string());
        let bytes = self
            .send_with_failover("/v3/auth/authenticate", body, true, None)
            .await
            .map_err(|e| match e {
                SendError::TokenRejected(m) | SendError::Store(StoreError::Etcd(m)) => {
                    StoreError::Etcd(format!("authenticating as etcd user `{user}`: {m}"))
                }
                SendError::Store(other) => other,
            })?;
        let resp: AuthResp = parse(&bytes)?;
        if resp.token.is_empty() {
            return Err(StoreError::Etcd(format!(
                "authenticating as etcd user `{user}`: etcd returned no token (is auth enabled?)"
            )));
        }
        self.set_token(Some(resp.token.clone()));
        Ok(resp.token)
    }

    /// One POST to one endpoint; `timeout` is `None` for watch streams,
    /// which stay open indefinitely.
    async fn post_once(
        &self,
        idx: usize,
        path: &str,
        body: Bytes,
        token: Option<&str>,
        timeout: Option<Duration>,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let url = format!("{}{path}", self.endpoints[idx]);
        // `hasleader` makes a member without a raft leader (partitioned, or
        // mid-election) refuse the request at once with "no leader", which
        // is safe to retry elsewhere, instead of queueing it until it times
        // out with an ambiguous result; for a watch it also cancels the
        // stream if the member later loses its leader, rather than leaving
        // us on a member that will never see new writes.
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Grpc-Metadata-hasleader", "true")
            .body(body);
        if let Some(token) = token {
            req = req.header(reqwest::header::AUTHORIZATION, token);
        }
        if let Some(timeout) = timeout {
            req = req.timeout(timeout);
        }
        let resp = req.send().await.map_err(classify_transport)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(classify_status(status, &text))
    }

    /// Calls `path` with a request naming only `key`, and decodes the answer.
    async fn call_key<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        idempotent: bool,
    ) -> Result<T> {
        let body = json!({ "key": B64.encode(self.key(key)) });
        parse(&self.call(path, body, idempotent).await?)
    }

    /// Calls `path` with a request naming only `lease`; an error says when
    /// the lease is gone.
    async fn call_lease(&self, path: &str, lease: LeaseId, idempotent: bool) -> Result<Bytes> {
        self.call(path, json!({ "ID": lease.to_string() }), idempotent)
            .await
            .map_err(|e| for_lease(e, lease))
    }

    /// POSTs `body` to `path`, failing over between endpoints and retrying
    /// within [`RETRY_WINDOW`]. `idempotent` requests are also retried when
    /// their outcome is unknown. Re-authenticates once if the token is
    /// rejected (etcd's simple tokens expire, and are invalidated when the
    /// member restarts).
    async fn call(&self, path: &str, body: Value, idempotent: bool) -> Result<Bytes> {
        let body = Bytes::from(body.to_string());
        let mut reauthenticated = false;
        loop {
            let token = self.token().await?;
            let rejected = match self
                .send_with_failover(path, body.clone(), idempotent, token.as_deref())
                .await
            {
                Ok(bytes) => return Ok(bytes),
                Err(SendError::Store(e)) => return Err(e),
                Err(SendError::TokenRejected(m)) => m,
            };
            if self.credentials.is_none() {
                return Err(StoreError::Etcd(format!(
                    "{rejected}: etcd requires authentication; configure an etcd username and password"
                )));
            }
            if reauthenticated {
                return Err(StoreError::Etcd(rejected));
            }
            tracing::debug!("etcd rejected the auth token ({rejected}); re-authenticating");
            reauthenticated = true;
            self.set_token(None);
        }
    }

    async fn send_with_failover(
        &self,
        path: &str,
        body: Bytes,
        idempotent: bool,
        token: Option<&str>,
    ) -> std::result::Result<Bytes, SendError> {
        let started = Instant::now();
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut last = String::new();
            for idx in self.endpoint_order().collect::<Vec<_>>() {
                let endpoint = &self.endpoints[idx];
                let attempt = match self
                    .post_once(idx, path, body.clone(), token, Some(REQUEST_TIMEOUT))
                    .await
                {
                    Ok(resp) => resp.bytes().await.map_err(classify_transport),
                    Err(f) => Err(f),
                };
                match attempt {
                    Ok(bytes) => {
                        self.preferred.store(idx, Ordering::Relaxed);
                        return Ok(bytes);
                    }
                    Err(Failure::NotSent(m)) => last = format!("{endpoint}: {m}"),
                    Err(Failure::Ambiguous(m)) if idempotent => last = format!("{endpoint}: {m}"),
                    Err(Failure::Ambiguous(m)) => {
                        return Err(SendError::Store(StoreError::Unavailable(format!(
                            "{path} on {endpoint}: {m} (the write may or may not have been applied)"
                        ))))
                    }
                    Err(Failure::Auth(m)) => return Err(SendError::TokenRejected(m)),
                    Err(Failure::Status { code, message }) => {
                        return Err(SendError::Store(status_error(code, message)))
                    }
                }
            }
            if started.elapsed() + backoff > RETRY_WINDOW {
                return Err(SendError::Store(StoreError::Unavailable(format!(
                    "no endpoint of {} answered {path}; last error: {last}",
                    self.describe
                ))));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn revision(&self) -> Result<i64> {
        // A count-only read of one key under our prefix: linearizable, and
        // allowed for a user whose role only covers that prefix.
        let key = if self.root.is_empty() {
            vec![0]
        } else {
            self.root.clone()
        };
        let resp: RangeResp = parse(
            &self
                .call(
                    "/v3/kv/range",
                    json!({ "key": B64.encode(key), "count_only": true }),
                    true,
                )
                .await?,
        )?;
        Ok(resp.header.revision)
    }

    /// Which lease of a failed transaction etcd did not know: its error does
    /// not say, and callers act on the id ("register again").
    async fn missing_lease(&self, ops: &[TxnOp]) -> LeaseId {
        let mut leases: Vec<LeaseId> = ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Put {
                    lease: Some(lease), ..
                } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .collect();
        leases.sort_unstable();
        leases.dedup();
        if leases.len() > 1 {
            for &lease in &leases {
                let resp = self.call_lease("/v3/lease/timetolive", lease, true).await;
                // A missing lease comes back with TTL -1.
                if let Ok(resp) = resp.and_then(|bytes| parse::<KeepAliveResp>(&bytes)) {
                    if resp.ttl < 0 {
                        return lease;
                    }
                }
            }
        }
        // One lease (or none found missing any more: it expired in between,
        // or the lookup failed): the first is the best answer there is.
        leases.first().copied().unwrap_or(0)
    }

    fn to_kv(&self, kv: JsonKv) -> Result<Option<KeyValue>> {
        let key = decode_b64(&kv.key)?;
        let Some(key) = self.strip(&key) else {
            return Ok(None);
        };
        Ok(Some(KeyValue {
            key,
            value: decode_b64(&kv.value)?,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }))
    }
}

/// What `send_with_failover` reports: a rejected token is kept apart so
/// `call` can log in again and retry instead of failing.
enum SendError {
    TokenRejected(String),
    Store(StoreError),
}

fn classify_transport(e: reqwest::Error) -> Failure {
    if e.is_connect() || e.is_builder() {
        Failure::NotSent(e.to_string())
    } else {
        Failure::Ambiguous(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// gRPC status codes etcd's gateway reports.
const CODE_INVALID_ARGUMENT: i64 = 3;
const CODE_DEADLINE_EXCEEDED: i64 = 4;
const CODE_NOT_FOUND: i64 = 5;
const CODE_RESOURCE_EXHAUSTED: i64 = 8;
const CODE_FAILED_PRECONDITION: i64 = 9;
const CODE_UNAVAILABLE: i64 = 14;
const CODE_UNAUTHENTICATED: i64 = 16;

fn classify_status(status: reqwest::StatusCode, body: &str) -> Failure {
    let Ok(err) = serde_json::from_str::<GatewayError>(body) else {
        let msg = format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        );
        return if status.is_server_error() {
            Failure::Ambiguous(msg)
        } else {
            Failure::Status {
                code: -1,
                message: msg,
            }
        };
    };
    classify_code(err.code, err.message())
}

fn classify_code(code: i64, message: String) -> Failure {
    let is_auth = code == CODE_UNAUTHENTICATED
        || message.contains("invalid auth token")
        || message.contains("user name is empty")
        || message.contains("revision of auth store is old")
        || (code == CODE_FAILED_PRECONDITION && message.contains("auth"));
    if is_auth {
        return Failure::Auth(message);
    }
    match code {
        // Refused before being proposed to raft.
        CODE_UNAVAILABLE if message.contains("no leader") => Failure::NotSent(message),
        CODE_RESOURCE_EXHAUSTED => Failure::NotSent(message),
        CODE_UNAVAILABLE | CODE_DEADLINE_EXCEEDED => Failure::Ambiguous(message),
        _ => Failure::Status { code, message },
    }
}

fn status_error(code: i64, message: String) -> StoreError {
    if code == CODE_NOT_FOUND && message.contains("lease not found") {
        // The caller knows which lease; see `for_lease`.
        StoreError::LeaseNotFound(0)
    } else if code == CODE_INVALID_ARGUMENT && message.contains("key is not provided") {
        StoreError::InvalidArgument(message)
    } else {
        StoreError::Etcd(message)
    }
}

fn for_lease(e: StoreError, lease: LeaseId) -> StoreError {
    match e {
        StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease),
        other => other,
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`).
fn prefix_end(mut prefix: Vec<u8>) -> Vec<u8> {
    while let Some(last) = prefix.pop() {
        if last < 0xff {
            prefix.push(last + 1);
            return prefix;
        }
    }
    // All 0xff: no upper bound.
    vec![0]
}

fn decode_b64(s: &str) -> Result<Vec<u8>> {
    B64.decode(s)
        .map_err(|e| StoreError::Etcd(format!("etcd sent invalid base64: {e}")))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Etcd(format!(
            "unexpected response from etcd ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })
}

/// The first message of a gateway stream response (`{"result":…}` or
/// `{"error":…}` per line).
fn first_stream_message<T: DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<std::result::Result<T, Failure>> {
    let line = bytes
        .split(|b| *b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default();
    let msg: StreamMsg<T> = parse(line)?;
    Ok(match (msg.result, msg.error) {
        (_, Some(err)) => Err(classify_code(err.code(), err.message())),
        (Some(result), None) => Ok(result),
        (None, None) => Ok(T::default()),
    })
}

// --- the Store ------------------------------------------------------------------

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let c = &self.conn;
        let resp: RangeResp = c.call_key("/v3/kv/range", key, true).await?;
        match resp.kvs.into_iter().next() {
            Some(kv) => c.to_kv(kv),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64> {
        validate_key(key)?;
        let c = &self.conn;
        let lease = lease.unwrap_or(0);
        let body = json!({
            "key": B64.encode(c.key(key)),
            "value": B64.encode(&value),
            "lease": lease.to_string(),
        });
        let resp: HeaderOnly = parse(
            &c.call("/v3/kv/put", body, false)
                .await
                .map_err(|e| for_lease(e, lease))?,
        )?;
        Ok(resp.header.revision)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let resp: DeleteResp = self.conn.call_key("/v3/kv/deleterange", key, false).await?;
        Ok(resp.deleted > 0)
    }

    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let c = &self.conn;
        let (mut start, end) = c.prefix_range(prefix);
        if let Some(after) = after {
            // Strictly after `after`: the next possible key is after + "\0".
            let mut next = c.key(after);
            next.push(0);
            if next > start {
                start = next;
            }
        }
        let resp: RangeResp = parse(
            &c.call(
                "/v3/kv/range",
                json!({
                    "key": B64.encode(&start),
                    "range_end": B64.encode(&end),
                    "limit": limit.to_string(),
                }),
                true,
            )
            .await?,
        )?;
        let mut kvs = Vec::with_capacity(resp.kvs.len());
        for kv in resp.kvs {
            kvs.extend(c.to_kv(kv)?);
        }
        Ok(Page {
            kvs,
            more: resp.more,
            revision: resp.header.revision,
        })
    }

    async fn txn(&self, compares: &[(String, Compare)], ops: Vec<TxnOp>) -> Result<Option<i64>> {
        validate_txn(compares, &ops)?;
        let c = &self.conn;
        let compare: Vec<Value> = compares
            .iter()
            .map(|(key, cmp)| compare_json(&B64.encode(c.key(key)), *cmp))
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => json!({ "request_put": {
                    "key": B64.encode(c.key(key)),
                    "value": B64.encode(value),
                    "lease": lease.unwrap_or(0).to_string(),
                }}),
                TxnOp::Delete { key } => json!({ "request_delete_range": {
                    "key": B64.encode(c.key(key)),
                }}),
            })
            .collect();
        let body = json!({ "compare": compare, "success": success });
        let bytes = match c.call("/v3/kv/txn", body, false).await {
            Ok(bytes) => bytes,
            Err(StoreError::LeaseNotFound(_)) => {
                return Err(StoreError::LeaseNotFound(c.missing_lease(&ops).await))
            }
            Err(e) => return Err(e),
        };
        let resp: TxnResp = parse(&bytes)?;
        // A successful transaction that changed nothing reports the current
        // revision, as the contract asks.
        Ok(resp.succeeded.then_some(resp.header.revision))
    }

    async fn revision(&self) -> Result<i64> {
        self.conn.revision().await
    }

    /// A `from_revision` of 0 (or less) means "changes after now"; it is
    /// pinned to a concrete revision here so a reconnect cannot skip events.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let next = if from_revision <= 0 {
            self.conn.revision().await? + 1
        } else {
            from_revision
        };
        let (key, end) = self.conn.prefix_range(prefix);
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let watcher = Watcher {
            conn: self.conn.clone(),
            shutdown: self.shutdown_rx.clone(),
            out: tx,
            key,
            end,
            next,
        };
        tokio::spawn(watcher.run());
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidArgument(
                "lease TTL must be positive".into(),
            ));
        }
        // etcd counts whole seconds; round up so a lease never expires early.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        // Retrying a grant is harmless: a duplicate lease has no keys and
        // simply expires.
        let resp: GrantResp = parse(
            &self
                .conn
                .call("/v3/lease/grant", json!({ "TTL": secs.to_string() }), true)
                .await?,
        )?;
        if !resp.error.is_empty() {
            return Err(StoreError::Etcd(format!(
                "granting a lease: {}",
                resp.error
            )));
        }
        if resp.id <= 0 {
            return Err(StoreError::Etcd(
                "etcd granted a lease without an ID".into(),
            ));
        }
        Ok(resp.id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        // LeaseKeepAlive is a stream in gRPC; through the gateway one request
        // line gets one response line. Errors arrive inside the 200 response.
        let mut reauthenticated = false;
        loop {
            let bytes = self
                .conn
                .call_lease("/v3/lease/keepalive", lease, true)
                .await?;
            match first_stream_message::<KeepAliveResp>(&bytes)? {
                Ok(resp) if resp.ttl > 0 => return Ok(()),
                // An expired or unknown lease comes back with TTL 0.
                Ok(_) => return Err(StoreError::LeaseNotFound(lease)),
                Err(Failure::Auth(m)) if !reauthenticated && self.conn.credentials.is_some() => {
                    tracing::debug!("etcd rejected the auth token ({m}); re-authenticating");
                    reauthenticated = true;
                    self.conn.set_token(None);
                }
                Err(Failure::Auth(m)) => return Err(StoreError::Etcd(m)),
                Err(Failure::NotSent(m) | Failure::Ambiguous(m)) => {
                    return Err(StoreError::Unavailable(format!("lease keep-alive: {m}")))
                }
                Err(Failure::Status { code, message }) => {
                    return Err(for_lease(status_error(code, message), lease))
                }
            }
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.conn
            .call_lease("/v3/lease/revoke", lease, false)
            .await?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.conn.describe.clone()
    }
}

fn compare_json(key: &str, compare: Compare) -> Value {
    // A missing key has mod_revision 0, so "absent" is "mod_revision == 0"
    // and "present" is "mod_revision > 0".
    let (result, revision) = match compare {
        Compare::Absent => ("EQUAL", 0),
        Compare::ModRevision(rev) => ("EQUAL", rev),
        Compare::Present => ("GREATER", 0),
    };
    json!({
        "key": key,
        "target": "MOD",
        "result": result,
        "mod_revision": revision.to_string(),
    })
}

// --- watch ----------------------------------------------------------------------

/// One watch, re-established whenever its HTTP stream ends.
///
/// `next` is the first revision not yet delivered. etcd never splits one
/// revision's events across two watch responses, so after each response
/// everything below `next` is delivered, and re-watching from `next` on any
/// endpoint neither skips nor repeats an event.
struct Watcher {
    conn: Arc<Conn>,
    shutdown: watch::Receiver<()>,
    out: mpsc::Sender<Result<Event>>,
    key: Vec<u8>,
    end: Vec<u8>,
    next: i64,
}

enum Flow {
    Continue,
    Reconnect,
    Stop,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut shutdown = self.shutdown.clone();
        let out = self.out.clone();
        loop {
            let opened = tokio::select! {
                _ = shutdown.changed() => return,
                _ = out.closed() => return,
                r = self.open() => r,
            };
            match opened {
                Ok((idx, resp)) => {
                    match self.read(resp).await {
                        Flow::Stop => return,
                        Flow::Continue => backoff = MIN_BACKOFF,
                        Flow::Reconnect => {}
                    }
                    // Start the next attempt on another member: this one may
                    // have lost its leader or be shutting down.
                    if self.conn.endpoints.len() > 1 {
                        let _ = self.conn.preferred.compare_exchange(
                            idx,
                            (idx + 1) % self.conn.endpoints.len(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                }
                Err(Some(fatal)) => {
                    let _ = self.out.send(Err(fatal)).await;
                    return;
                }
                Err(None) => {}
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = out.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Opens the watch stream on the first endpoint that accepts it.
    /// `Err(None)` means "no endpoint now, try again later".
    async fn open(&self) -> std::result::Result<(usize, reqwest::Response), Option<StoreError>> {
        let token = match self.conn.token().await {
            Ok(t) => t,
            Err(StoreError::Unavailable(m)) => {
                tracing::warn!("etcd watch: cannot authenticate: {m}");
                return Err(None);
            }
            Err(e) => return Err(Some(e)),
        };
        let body = Bytes::from(
            json!({ "create_request": {
                "key": B64.encode(&self.key),
                "range_end": B64.encode(&self.end),
                "start_revision": self.next.to_string(),
            }})
            .to_string(),
        );
        for idx in self.conn.endpoint_order().collect::<Vec<_>>() {
            let failure = match self
                .conn
                .post_once(idx, "/v3/watch", body.clone(), token.as_deref(), None)
                .await
            {
                Ok(resp) => return Ok((idx, resp)),
                Err(failure) => failure,
            };
            match failure {
                Failure::NotSent(m) | Failure::Ambiguous(m) => {
                    tracing::debug!(endpoint = %self.conn.endpoints[idx], "etcd watch: {m}");
                }
                Failure::Auth(m) => {
                    tracing::debug!("etcd watch: token rejected ({m}); re-authenticating");
                    self.conn.set_token(None);
                    return Err(None);
                }
                Failure::Status { code, message } => return Err(Some(status_error(code, message))),
            }
        }
        tracing::warn!(
            "etcd watch: no endpoint of {} reachable; retrying from revision {}",
            self.conn.describe,
            self.next
        );
        Err(None)
    }

    /// Delivers the events of one HTTP stream. `Continue` means the stream
    /// worked and ended (connection drop); reconnecting is always next
    /// unless `Stop`.
    async fn read(&mut self, resp: reqwest::Response) -> Flow {
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        // Bytes of `buf` known to hold no newline: a large replay arrives in
        // many chunks, and rescanning from the start would be quadratic.
        let mut scanned = 0;
        let mut delivered_any = false;
        loop {
            let chunk = tokio::select! {
                _ = self.shutdown.changed() => return Flow::Stop,
                _ = self.out.closed() => return Flow::Stop,
                c = body.next() => c,
            };
            match chunk {
                Some(Ok(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    while let Some(pos) = buf[scanned..].iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=scanned + pos).collect();
                        scanned = 0;
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        match self.handle(&line).await {
                            Flow::Continue => delivered_any = true,
                            other => return other,
                        }
                    }
                    scanned = buf.len();
                }
                Some(Err(e)) => {
                    tracing::debug!("etcd watch stream broke: {}", error_chain(&e));
                    break;
                }
                None => break,
            }
        }
        if delivered_any {
            Flow::Continue
        } else {
            Flow::Reconnect
        }
    }

    async fn handle(&mut self, line: &[u8]) -> Flow {
        let msg: StreamMsg<WatchResp> = match serde_json::from_slice(line) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("etcd watch: unreadable message ({e}); reconnecting");
                return Flow::Reconnect;
            }
        };
        if let Some(err) = msg.error {
            return match classify_code(err.code(), err.message()) {
                Failure::Auth(_) => {
                    self.conn.set_token(None);
                    Flow::Reconnect
                }
                Failure::Status { code, message } if code == CODE_INVALID_ARGUMENT => {
                    let _ = self.out.send(Err(StoreError::Etcd(message))).await;
                    Flow::Stop
                }
                _ => Flow::Reconnect,
            };
        }
        let Some(resp) = msg.result else {
            return Flow::Continue;
        };
        if resp.compact_revision > 0 {
            let _ = self
                .out
                .send(Err(StoreError::Compacted {
                    requested: self.next,
                    oldest: resp.compact_revision,
                }))
                .await;
            return Flow::Stop;
        }
        if resp.canceled {
            let reason = resp.cancel_reason;
            if reason.contains("auth") || reason.contains("token") {
                self.conn.set_token(None);
                return Flow::Reconnect;
            }
            if reason.contains("no leader") || reason.is_empty() {
                return Flow::Reconnect;
            }
            let _ = self
                .out
                .send(Err(StoreError::Etcd(format!("watch canceled: {reason}"))))
                .await;
            return Flow::Stop;
        }
        let mut last = None;
        for ev in resp.events {
            let revision = ev.kv.mod_revision;
            if revision < self.next {
                continue;
            }
            let kind = if ev.is_delete() {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            let kv = match self.conn.to_kv(ev.kv) {
                Ok(Some(kv)) => kv,
                Ok(None) => continue,
                Err(e) => {
                    let _ = self.out.send(Err(e)).await;
                    return Flow::Stop;
                }
            };
            last = Some(revision);
            if self.out.send(Ok(Event { kind, kv })).await.is_err() {
                return Flow::Stop;
            }
        }
        if let Some(last) = last {
            self.next = last + 1;
        }
        Flow::Continue
    }
}

// --- wire types -------------------------------------------------------------------

/// int64 fields arrive as JSON strings (and as numbers from some proxies).
fn int<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Num(i64),
        Str(String),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HeaderOnly {
    header: Header,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonKv {
    key: String,
    value: String,
    #[serde(deserialize_with = "int")]
    create_revision: i64,
    #[serde(deserialize_with = "int")]
    mod_revision: i64,
    #[serde(deserialize_with = "int")]
    version: i64,
    #[serde(deserialize_with = "int")]
    lease: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RangeResp {
    header: Header,
    kvs: Vec<JsonKv>,
    more: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeleteResp {
    #[serde(deserialize_with = "int")]
    deleted: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TxnResp {
    header: Header,
    succeeded: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GrantResp {
    #[serde(rename = "ID", deserialize_with = "int")]
    id: i64,
    error: String,
}

/// Also the answer of `LeaseTimeToLive`, whose TTL is -1 for a missing
/// lease.
#[derive(Deserialize, Default)]
#[serde(default)]
struct KeepAliveResp {
    #[serde(rename = "TTL", deserialize_with = "int")]
    ttl: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthResp {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WatchResp {
    canceled: bool,
    #[serde(deserialize_with = "int")]
    compact_revision: i64,
    cancel_reason: String,
    events: Vec<JsonEvent>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonEvent {
    /// "PUT" is the default and so omitted; accept the number form too.
    #[serde(rename = "type")]
    kind: Value,
    kv: JsonKv,
}

impl JsonEvent {
    fn is_delete(&self) -> bool {
        self.kind == "DELETE" || self.kind == 1
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct StreamMsg<T> {
    result: Option<T>,
    error: Option<GatewayError>,
}

impl<T> Default for StreamMsg<T> {
    fn default() -> Self {
        Self {
            result: None,
            error: None,
        }
    }
}

/// The gateway's error body: `{"error": "...", "message": "...", "code": N}`
/// for unary calls, `{"grpc_code": N, "message": "...", ...}` inside stream
/// messages.
#[derive(Deserialize, Default)]
#[serde(default)]
struct GatewayError {
    #[serde(deserialize_with = "int")]
    code: i64,
    #[serde(deserialize_with = "int")]
    grpc_code: i64,
    message: String,
    error: Value,
}

impl GatewayError {
    fn code(&self) -> i64 {
        if self.code != 0 {
            self.code
        } else {
            self.grpc_code
        }
    }

    fn message(&self) -> String {
        if !self.message.is_empty() {
            return self.message.clone();
        }
        match &self.error {
            Value::String(s) => s.clone(),
            Value::Null => "unknown etcd error".into(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a".to_vec()), b"/b".to_vec());
        assert_eq!(prefix_end(vec![b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(vec![0xff, 0xff]), vec![0]);
    }

    #[test]
    fn specs_parse() {
        let (tls, eps) = parse_spec("etcd://h1:2379, h2 ,[::1]:4000/").unwrap();
        assert!(!tls);
        assert_eq!(
            eps,
            ["http://h1:2379", "http://h2:2379", "http://[::1]:4000"]
        );
        let (tls, eps) = parse_spec("etcds://h1").unwrap();
        assert!(tls);
        assert_eq!(eps, ["https://h1:2379"]);
        assert!(parse_spec("etcd://").is_err());
        assert!(parse_spec("etcd://u:p@h1").is_err());
        assert!(parse_spec("http://h1").is_err());
    }

    #[test]
    fn omitted_defaults_parse() {
        let r: RangeResp = parse(br#"{"header":{"revision":"7"}}"#).unwrap();
        assert_eq!(r.header.revision, 7);
        assert!(r.kvs.is_empty() && !r.more);
        let w: StreamMsg<WatchResp> = parse(
            br#"{"result":{"events":[{"kv":{"key":"YQ==","mod_revision":"3"}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"4"}}]}}"#,
        )
        .unwrap();
        let events = w.result.unwrap().events;
        assert!(!events[0].is_delete());
        assert!(events[1].is_delete());
        assert_eq!(events[1].kv.mod_revision, 4);
    }

    #[test]
    fn pem_blocks_drop_ec_parameters() {
        let pem = b"-----BEGIN EC PARAMETERS-----\nBggq\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n";
        let out = String::from_utf8(pem_blocks(pem)).unwrap();
        assert_eq!(
            out,
            "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n"
        );
    }

    #[test]
    fn debug_redacts_password() {
        let opts = EtcdOptions {
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{opts:?}").contains("hunter2"));
    }
}
