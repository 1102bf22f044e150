//! A small HTTP client for the Testbed API, with the server and token taken
//! from `TESTBED_SERVER` / `TESTBED_TOKEN` or from `testbed login`'s file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use testbed_agent::tls::ClientConfig;
use testbed_api::auth::{LoginRequest, LoginResponse};
use testbed_api::error::ErrorBody;
use testbed_api::page::Page;
use testbed_core::schema::FieldError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub token: String,
}

pub fn credentials_path() -> PathBuf {
    if let Ok(dir) = std::env::var("TESTBED_CONFIG_DIR") {
        return PathBuf::from(dir).join("credentials.json");
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|_| PathBuf::from("."));
    base.join("testbed").join("credentials.json")
}

pub fn save_credentials(c: &Credentials) -> anyhow::Result<PathBuf> {
    let path = credentials_path();
    if let Some(dir) = path.parent() {
        testbed_store::private::ensure_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // Created 0600 from the first byte: a token is a password for its life.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(c)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The server when nothing names one: the address `testbed up` listens on.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8774";

/// `--server`'s default: `$TESTBED_SERVER`, else the last server logged in
/// to, else [`DEFAULT_SERVER`].
pub fn default_server() -> String {
    std::env::var("TESTBED_SERVER").unwrap_or_else(|_| {
        load_file()
            .map(|c| c.server)
            .unwrap_or_else(|| DEFAULT_SERVER.into())
    })
}

/// A server address as users type it, made a base URL: `127.0.0.1:8774`
/// and `localhost:8774` get `http://` (what `testbed up` serves there);
/// another host without a scheme gets `https://`, so a guess never sends a
/// password in clear text across a network (write `http://` to mean it).
/// A trailing `/` is dropped. `what` names the source in errors
/// (`--server`, `TESTBED_SERVER`).
pub fn server_url(raw: &str, what: &str) -> anyhow::Result<String> {
    let raw = raw.trim().trim_end_matches('/');
    if raw.is_empty() {
        bail!("{what} is empty: give the server's address, e.g. {DEFAULT_SERVER}");
    }
    let full = match raw.split_once("://") {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            raw.to_string()
        }
        Some((scheme, _)) => {
            bail!("{what} `{raw}`: the scheme must be http:// or https://, not {scheme}://")
        }
        None if is_loopback_host(raw) => format!("http://{raw}"),
        None => format!("https://{raw}"),
    };
    let url = reqwest::Url::parse(&full).map_err(|e| {
        anyhow::anyhow!("{what} `{raw}` is not a server address ({e}); e.g. {DEFAULT_SERVER}")
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        bail!("{what} `{raw}` names no host; e.g. {DEFAULT_SERVER}");
    }
    Ok(full)
}

/// Whether `authority` (`host[:port][/…]`, no scheme) names this machine.
fn is_loopback_host(authority: &str) -> bool {
    let authority = authority.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        // [::1]:8774
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => match authority.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        },
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Forgets the saved token (after `testbed logout`).
pub fn forget_credentials() -> std::io::Result<()> {
    match std::fs::remove_file(credentials_path()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn load_file() -> Option<Credentials> {
    let bytes = std::fs::read(credentials_path()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The largest stored report (canonical JSON) the client downloads: a bound
/// on the temporary disk a mistaken or hostile server can make it fill. A
/// passing case is about 40 bytes, so this is some 200 million cases.
pub const MAX_REPORT_BYTES: u64 = 8 << 30;

pub struct Client {
    pub server: String,
    pub token: String,
    http: reqwest::Client,
}

/// An API error, with the server's `{"error": …}` message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
    /// `details` of a 422: one entry per offending field.
    pub details: Vec<FieldError>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiFailure {}

/// Kinds of records whose ids (uuids) commands accept shortened to a
/// unique prefix, with the list endpoint that filters by `id_prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Task,
    Run,
    /// Stored plans: for commands that take a plan id.
    #[allow(dead_code)]
    Plan,
    Report,
}

impl IdKind {
    fn noun(self) -> &'static str {
        match self {
            IdKind::Task => "task",
            IdKind::Run => "run",
            IdKind::Plan => "plan",
            IdKind::Report => "report",
        }
    }

    fn list_path(self) -> &'static str {
        match self {
            IdKind::Task => "/api/tasks",
            IdKind::Run => "/api/runs",
            IdKind::Plan => "/api/plans",
            IdKind::Report => "/api/reports",
        }
    }
}

/// What `resolve` reads of any listed record: every list it asks holds
/// records with a uuid `id` (tasks, runs, plans, reports).
#[derive(Debug, Deserialize)]
struct Identified {
    id: uuid::Uuid,
}

/// Candidates listed when a prefix is ambiguous.
const AMBIGUOUS_SHOWN: usize = 10;

impl Client {
    /// From the environment or the saved login.
    pub fn from_env() -> anyhow::Result<Client> {
        let saved = load_file();
        let server = std::env::var("TESTBED_SERVER")
            .ok()
            .or_else(|| saved.as_ref().map(|c| c.server.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8774".into());
        let server = server_url(
            &server,
            if std::env::var_os("TESTBED_SERVER").is_some() {
                "TESTBED_SERVER"
            } else {
                "the saved login's server"
            },
        )?;
        let token = std::env::var("TESTBED_TOKEN")
            .ok()
            .or_else(|| saved.map(|c| c.token))
            .context("not logged in: run `testbed login` or set TESTBED_TOKEN")?;
        Ok(Client::new(&server, &token))
    }

    /// A client of `server` (a base URL, or an address [`server_url`]
    /// completes; one it cannot complete is kept and fails on first use).
    pub fn new(server: &str, token: &str) -> Client {
        let server = server_url(server, "server")
            .unwrap_or_else(|_| server.trim_end_matches('/').to_string());
        Client {
            http: http_client(&server),
            server,
            token: token.to_string(),
        }
    }

    /// The full id of a `kind` record from an id or a unique prefix of one
    /// (`tasks show 3f2a`). An ambiguous prefix is an error listing the
    /// candidates; one that matches nothing is "not found".
    pub async fn resolve(&self, kind: IdKind, given: &str) -> anyhow::Result<String> {
        let noun = kind.noun();
        if uuid::Uuid::parse_str(given).is_ok() {
            return Ok(given.to_ascii_lowercase());
        }
        if given.is_empty() || !given.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            bail!("no {noun} `{given}`: {noun} ids are uuids (or a unique prefix of one)");
        }
        let prefix = given.to_ascii_lowercase();
        let page: Page<Identified> = self
            .get(&format!(
                "{}?id_prefix={prefix}&page_size={AMBIGUOUS_SHOWN}",
                kind.list_path()
            ))
            .await?;
        // Filtered here too: a server without `id_prefix` lists everything.
        let ids: Vec<String> = page
            .results
            .into_iter()
            .map(|r| r.id.to_string())
            .filter(|id| id.starts_with(&prefix))
            .collect();
        let total = (page.total as u64).max(ids.len() as u64);
        match ids.as_slice() {
            [] => bail!("no {noun} whose id starts with `{given}`"),
            [one] if total == 1 => Ok(one.to_string()),
            many => {
                let more = total.saturating_sub(many.len() as u64);
                bail!(
                    "`{given}` is ambiguous: {total} {noun}s have ids starting with it:\n  {}{}\n\
                     give more characters of the id",
                    many.join("\n  "),
                    if more > 0 {
                        format!("\n  … and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    pub fn ws_url(&self, path: &str) -> String {
        let base = if let Some(r) = self.server.strip_prefix("https://") {
            format!("wss://{r}")
        } else if let Some(r) = self.server.strip_prefix("http://") {
            format!("ws://{r}")
        } else {
            self.server.clone()
        };
        format!("{base}{path}")
    }

    /// [`Self::check`] for a request that carried the token: a 401 says
    /// how to get a fresh one.
    async fn check_authed(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        Self::check(resp)
            .await
            .map_err(|e| match e.downcast::<ApiFailure>() {
                Ok(mut f) if f.status == 401 => {
                    f.message = format!("{}: {}", f.message, relogin_hint());
                    f.into()
                }
                Ok(f) => f.into(),
                Err(e) => e,
            })
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        // Not every failure is the API's `{"error": …}` (a proxy's page, a
        // plain-text 502): then the text itself is the message.
        let (message, details) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error, body.details),
            Err(_) => (text, Vec::new()),
        };
        Err(ApiFailure {
            status: status.as_u16(),
            message,
            details,
        }
        .into())
    }

    /// Sends `request` with the token: the answer when it is a success,
    /// else the API's error (with how to log in again on a 401).
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        Self::check_authed(resp).await
    }

    /// GETs `path` and decodes the answer as `T`: an API type of
    /// [`testbed_api`] where fields are read, `serde_json::Value` where the
    /// answer is passed through as it came (`--json`).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        decode_bytes(&format!("GET {path}"), &resp.bytes().await?)
    }

    /// GETs the paged list at `path` for an `ls` command: with `json` its
    /// `results` are printed as they came, as the `--json` array
    /// (docs/cli.md), and the answer is `None`; otherwise the page is
    /// decoded as `P` for the table.
    pub async fn list_page<P: DeserializeOwned>(
        &self,
        path: &str,
        json: bool,
    ) -> anyhow::Result<Option<P>> {
        let mut page: serde_json::Value = self.get(path).await?;
        if json {
            let rows = page["results"].as_array().cloned().unwrap_or_default();
            crate::output::print_json_list(&rows)?;
            return Ok(None);
        }
        decode(&format!("GET {path}"), page.take()).map(Some)
    }

    pub async fn get_text(&self, path: &str) -> anyhow::Result<(String, Option<String>)> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        let status = resp
            .headers()
            .get("x-task-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((resp.text().await?, status))
    }

    /// GETs `path` into an anonymous temporary file (in the OS temporary
    /// directory, already unlinked, so it goes when the file is closed, even
    /// if this process is killed), chunk by chunk as the answer arrives, and
    /// returns it at its start: a body of any size costs a chunk of memory.
    /// Refuses an answer of more than `limit` bytes, before reading it when
    /// the server says its length; an error answer is the API's error.
    pub async fn download(&self, path: &str, limit: u64) -> anyhow::Result<std::fs::File> {
        use std::io::{Seek, Write};
        let mut resp = self.send(self.http.get(self.url(path))).await?;
        let too_large = |n: u64| {
            anyhow::anyhow!(
                "the answer is {n} bytes or more, over the limit of {limit} bytes ({} MiB)",
                limit >> 20
            )
        };
        if let Some(n) = resp.content_length().filter(|n| *n > limit) {
            return Err(too_large(n));
        }
        let tmp = tempfile::tempfile().context("creating a temporary file for the download")?;
        // Written here rather than through `tokio::fs`, whose writes copy each
        // chunk to a blocking thread: a chunk into the page cache takes
        // microseconds, and the copies cost memory (two downloads at once, as
        // `tck compare` makes, grew the peak by megabytes).
        let mut file = std::io::BufWriter::with_capacity(256 * 1024, tmp);
        let mut written: u64 = 0;
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("reading the answer from {}", self.server))?
        {
            written += chunk.len() as u64;
            if written > limit {
                return Err(too_large(written));
            }
            file.write_all(&chunk)
                .context("writing the download to a temporary file")?;
        }
        let mut file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .context("writing the download to a temporary file")?;
        file.rewind()
            .context("reading back the downloaded temporary file")?;
        Ok(file)
    }

    /// The stored report `id` in the canonical JSON, downloaded with
    /// [`Self::download`] (bounded by [`MAX_REPORT_BYTES`]) for
    /// `testbed_report::read_compact` to read as it would a local file.
    pub async fn download_report(&self, id: &str) -> anyhow::Result<std::fs::File> {
        self.download(&format!("/api/reports/{id}?format=json"), MAX_REPORT_BYTES)
            .await
            .with_context(|| format!("downloading stored report {id}"))
    }

    /// A POST without a body whose answer has none either (204).
    pub async fn post_empty(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.http.post(self.url(path))).await?;
        Ok(())
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self.send(self.http.post(self.url(path)).json(body)).await?;
        decode_bytes(&format!("POST {path}"), &resp.bytes().await?)
    }
}

/// An answer that is not the API type this client expects: a field the
/// server stopped sending, or sends in another shape. Names the request
/// and the field, so a server and client that drifted apart say where.
#[derive(Debug)]
pub struct UnexpectedAnswer {
    /// `GET /api/agents`.
    pub request: String,
    /// Where in the answer, e.g. `results[0]` (`.` for the whole answer).
    pub at: String,
    pub problem: String,
}

impl std::fmt::Display for UnexpectedAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server's answer to {} ", self.request)?;
        if self.at != "." {
            write!(f, "at `{}` ", self.at)?;
        }
        write!(
            f,
            "is not what this client reads: {} (are the client and server the same version?)",
            self.problem
        )
    }
}

impl std::error::Error for UnexpectedAnswer {}

fn unexpected<E: std::fmt::Display>(
    request: &str,
    e: serde_path_to_error::Error<E>,
) -> UnexpectedAnswer {
    UnexpectedAnswer {
        request: request.to_string(),
        at: e.path().to_string(),
        problem: e.into_inner().to_string(),
    }
}

fn decode_bytes<T: DeserializeOwned>(request: &str, body: &[u8]) -> anyhow::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Ok(serde_path_to_error::deserialize(&mut de).map_err(|e| unexpected(request, e))?)
}

/// Decodes an answer already read as JSON (kept raw for `--json`) into its
/// API type, with [`UnexpectedAnswer`]'s errors.
pub fn decode<T: DeserializeOwned>(request: &str, answer: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_path_to_error::deserialize(answer).map_err(|e| unexpected(request, e))?)
}

/// What to do about a refused token: depends on where it came from.
pub fn relogin_hint() -> &'static str {
    if std::env::var_os("TESTBED_TOKEN").is_some() {
        "the token in TESTBED_TOKEN was refused (expired or revoked); set a fresh one, or unset \
         it and run `testbed login`"
    } else {
        "the saved login has expired or was ended; run `testbed login`"
    }
}

/// Logs in; returns the token.
pub async fn login(server: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let resp = http_client(server)
        .post(format!("{}/api/auth/login", server.trim_end_matches('/')))
        .json(&LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
        })
        .send()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let body = Client::check(resp).await?.bytes().await?;
    let answer: LoginResponse = decode_bytes("POST /api/auth/login", &body)?;
    Ok(answer.token)
}

/// Whom the client trusts on an `https://` server, as an agent does:
/// `TESTBED_CA_FILE` (PEM) or `TESTBED_SERVER_FINGERPRINT`, else the public
/// web roots. A setting that cannot be used is reported and nothing is
/// trusted, so the request fails rather than trusting more than asked.
fn tls_for(server: &str) -> Result<Option<Arc<ClientConfig>>, ()> {
    let ca = std::env::var_os("TESTBED_CA_FILE").map(PathBuf::from);
    let pin = std::env::var("TESTBED_SERVER_FINGERPRINT").ok();
    testbed_agent::tls::trust(server, ca.as_deref(), pin.as_deref()).map_err(|e| {
        let e = e.to_string();
        let e = e.replace("ca_file:", "TESTBED_CA_FILE:");
        let e = e.replace("server_fingerprint:", "TESTBED_SERVER_FINGERPRINT:");
        eprintln!("warning: {e}; no server certificate will be trusted");
    })
}

/// The HTTP client for `server`, with [`tls_for`]'s trust.
pub fn http_client(server: &str) -> reqwest::Client {
    let built = match tls_for(server) {
        Ok(None) => return reqwest::Client::new(),
        Ok(Some(tls)) => reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build(),
        Err(()) => reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .build(),
    };
    built.unwrap_or_else(|e| {
        eprintln!("warning: TLS client: {e}");
        reqwest::Client::new()
    })
}

/// Opens a WebSocket (`ws://` or `wss://`) with [`tls_for`]'s trust.
pub async fn ws_connect(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> anyhow::Result<(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
)> {
    let connector = if request.uri().scheme_str() == Some("wss") {
        let tls = tls_for("https://").map_err(|()| anyhow::anyhow!("no trusted TLS settings"))?;
        tls.map(tokio_tungstenite::Connector::Rustls)
    } else {
        None
    };
    match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status().as_u16() == 401 => {
            bail!("invalid token (401): {}", relogin_hint())
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use testbed_api::page::Page;
    use testbed_api::runs::RunSummary;
    use testbed_api::tasks::Submitted;

    use super::decode;

    #[test]
    fn a_field_the_server_stopped_sending_is_named() {
        // A submission answer without `agent_name`.
        let answer = json!({
            "task_id": "3f2a61f4-9c1e-4a57-b0a4-6f0ad1b9c001", "status": "queued",
            "agent_uuid": "8d0c4e52-1b7a-4c1e-9f3a-2e5b6c7d8e02",
            "url": "/api/tasks/x", "log_url": "/api/tasks/x/log", "log_ws": "/ws/tasks/x/log"
        });
        let e = decode::<Submitted>("POST /v2.1/testcases", answer).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("POST /v2.1/testcases"), "{text}");
        assert!(text.contains("missing field `agent_name`"), "{text}");
    }

    #[test]
    fn where_in_a_list_is_named() {
        let answer = json!({"total": 1, "page": 1, "page_size": 50, "results": [{
            "id": "c4d5e6f7-0a1b-4c2d-8e3f-405162738493", "plan_name": "smoke", "plan_id": null,
            "status": "finished", "created_by": "admin",
            "created_at": "2026-12-03T20:08:17Z", "finished_at": null, "report_id": null
        }]});
        let e = decode::<Page<RunSummary>>("GET /api/runs", answer).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("at `results[0].status`"), "{text}");
        assert!(text.contains("unknown variant `finished`"), "{text}");
    }
}
