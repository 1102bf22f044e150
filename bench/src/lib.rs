//! Shared set-up of the end-to-end benchmarks: a real server and real
//! agents carrying the `noop` plugin, in this process, over loopback.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use testbed_agent::{Agent, AgentConfig};
use testbed_server::blobs::Blobs;
use testbed_server::{ServerConfig, Settings};
use testbed_store::{DynStore, EtcdOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The bench server's `/metrics` token.
const METRICS_TOKEN: &str = "bench-metrics";

/// Sums and counts of the server's latency histograms, by series (name and
/// labels), from one read of `/metrics`.
pub type Timings = std::collections::BTreeMap<String, (f64, f64)>;

pub struct Bench {
    pub server: testbed_server::Server,
    pub store: DynStore,
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// `store` is `redb` (a fresh file) or an etcd spec; each run of an etcd
    /// bench uses a prefix of its own.
    pub async fn start(store: &str, agents: usize) -> anyhow::Result<Bench> {
        let dir = tempfile::tempdir()?;
        let store: DynStore = if store == "redb" {
            testbed_store::open(
                &format!("redb:{}", dir.path().join("bench.redb").display()),
                EtcdOptions::default(),
            )
            .await?
        } else {
            let opts = EtcdOptions {
                prefix: format!("/bench-{}", Uuid::new_v4()),
                ..Default::default()
            };
            testbed_store::open(store, opts).await?
        };
        let server = testbed_server::start(ServerConfig {
            listen: "127.0.0.1:0".into(),
            store: store.clone(),
            blobs: Blobs::local(&dir.path().join("blobs"))?,
            settings: Settings {
                max_body: 16 * 1024 * 1024,
                metrics: testbed_server::metrics::MetricsSettings {
                    token: Some(METRICS_TOKEN.into()),
                    listen: None,
                },
                ..Settings::default()
            },
            admin_password: Some("bench-password".into()),
            join_token: Some("bench-token".into()),
            token_ttl: Duration::from_secs(3600),
            replica: "bench".into(),
        })
        .await?;
        let url = server.url();
        let stop = CancellationToken::new();
        for i in 0..agents {
            let mut cfg = AgentConfig::new(&url, "bench-token", &format!("bench-{i}"));
            cfg.host = Some("bench".into());
            cfg.plugins = vec!["noop".into()];
            cfg.capacity = 256;
            cfg.state_dir = dir.path().join(format!("agent-{i}"));
            let agent = Agent::build(cfg).await?;
            let s = stop.clone();
            tokio::spawn(async move { agent.run(s).await });
        }
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{url}/api/auth/login"))
            .json(&json!({"username": "admin", "password": "bench-password"}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["token"].as_str().context("token")?.to_string();
        loop {
            let d: Value = http
                .get(format!("{url}/v2.1/slaves/detail"))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            if d.as_object().map(|m| m.len()) == Some(agents) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Bench {
            server,
            store,
            url,
            token,
            http,
            stop,
            _dir: dir,
        })
    }

    /// The server's latency histograms whose names contain one of `names`.
    pub async fn timings(&self, names: &[&str]) -> anyhow::Result<Timings> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut out = Timings::new();
        for line in text.lines().filter(|l| names.iter().any(|n| l.contains(n))) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let key = |base: &str| format!("{base}{{{labels}");
            if let Some(base) = name.strip_suffix("_sum") {
                out.entry(key(base)).or_default().0 = v;
            } else if let Some(base) = name.strip_suffix("_count") {
                out.entry(key(base)).or_default().1 = v;
            }
        }
        Ok(out)
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.server.shutdown().await;
    }
}
