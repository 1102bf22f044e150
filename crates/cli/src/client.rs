//! A small HTTP client for the Testbed API, with the server and token taken
//! from `TESTBED_SERVER` / `TESTBED_TOKEN` or from `testbed login`'s file.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(c)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub fn default_server() -> String {
    std::env::var("TESTBED_SERVER").unwrap_or_else(|_| {
        load_file()
            .map(|c| c.server)
            .unwrap_or_else(|| "http://127.0.0.1:8774".into())
    })
}

fn load_file() -> Option<Credentials> {
    let bytes = std::fs::read(credentials_path()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

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
    pub details: serde_json::Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// From the environment or the saved login.
    pub fn from_env() -> anyhow::Result<Client> {
        let saved = load_file();
        let server = std::env::var("TESTBED_SERVER")
            .ok()
            .or_else(|| saved.as_ref().map(|c| c.server.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8774".into());
        let token = std::env::var("TESTBED_TOKEN")
            .ok()
            .or_else(|| saved.map(|c| c.token))
            .context("not logged in: run `testbed login` or set TESTBED_TOKEN")?;
        Ok(Client::new(&server, &token))
    }

    pub fn new(server: &str, token: &str) -> Client {
        Client {
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
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

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        Err(ApiFailure {
            status: status.as_u16(),
            message,
            details: parsed
                .and_then(|v| v.get("details").cloned())
                .unwrap_or(serde_json::Value::Null),
        }
        .into())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        Ok(Self::check(resp).await?.json().await?)
    }

    pub async fn get_text(&self, path: &str) -> anyhow::Result<(String, Option<String>)> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        let resp = Self::check(resp).await?;
        let status = resp
            .headers()
            .get("x-task-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((resp.text().await?, status))
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        Ok(Self::check(resp).await?.json().await?)
    }
}

/// Logs in; returns the token.
pub async fn login(server: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/auth/login", server.trim_end_matches('/')))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let resp = Client::check(resp).await?;
    let v: serde_json::Value = resp.json().await?;
    match v.get("token").and_then(|t| t.as_str()) {
        Some(t) => Ok(t.to_string()),
        None => bail!("login answered without a token"),
    }
}
