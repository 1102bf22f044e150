//! `testbed agent`: a test device serving a server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use testbed_agent::config::parse_labels;
use testbed_agent::{Agent, AgentConfig};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Read the configuration from this TOML file (flags are then ignored).
    #[arg(long, conflicts_with_all = ["server", "name"])]
    pub config: Option<PathBuf>,
    /// Server URL, e.g. https://testbed:8774 or http://127.0.0.1:8774 (a
    /// loopback address without a scheme means http://, another https://).
    #[arg(long, env = "TESTBED_SERVER")]
    pub server: Option<String>,
    /// Refused: a token on the command line is visible to every local user
    /// (`ps`). Set TESTBED_JOIN_TOKEN or use --token-file.
    #[arg(long, hide = true)]
    pub token: Option<String>,
    /// File holding the join token the server printed (else the
    /// TESTBED_JOIN_TOKEN environment variable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (https).
    #[arg(long, value_name = "FILE", env = "TESTBED_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint
    /// (as `testbed server` prints it).
    #[arg(long, value_name = "SHA256", env = "TESTBED_SERVER_FINGERPRINT")]
    pub server_fingerprint: Option<String>,
    /// Agent name (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Host address reported to the server (default: the hostname).
    #[arg(long)]
    pub host: Option<String>,
    /// Labels, `k=v,k2=v2`.
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Groups, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Plugins to carry, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "linux_system")]
    pub plugins: Vec<String>,
    /// Directory of exec plugins.
    #[arg(long)]
    pub plugin_dir: Option<PathBuf>,
    /// Where the agent keeps its identity and in-flight logs.
    #[arg(long, default_value = "testbed-agent")]
    pub state_dir: PathBuf,
    /// Tasks run at once.
    #[arg(long, default_value_t = 4)]
    pub capacity: u32,
    /// Let run_shell use /bin/sh when a task asks for `"shell": true`.
    #[arg(long)]
    pub allow_shell: bool,
    /// When running as root, run tasks as this user.
    #[arg(long)]
    pub run_as: Option<String>,
    /// Serve this agent's Prometheus metrics at /metrics on ADDR (host:port).
    /// No auth: bind it where only the scraper reaches.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Benchmark mode: run N simulated agents (`NAME-1`…`NAME-N`) that
    /// register, carry only the `noop` plugin and heartbeat without metrics.
    #[arg(long, value_name = "N")]
    pub simulate: Option<u32>,
    #[command(flatten)]
    pub traces: super::server::TraceArgs,
}

impl AgentArgs {
    /// The join token from `--token-file`, else `TESTBED_JOIN_TOKEN`.
    fn join_token(&self) -> anyhow::Result<Option<String>> {
        if self.token.is_some() {
            anyhow::bail!(
                "--token is refused: a join token on the command line can be read by every \
                 local user (ps, /proc); set TESTBED_JOIN_TOKEN or pass --token-file FILE"
            );
        }
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file: reading {}", path.display()))?;
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "--token-file: {} is readable by other users (mode {:o}); chmod 600 it",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    );
                }
            }
            let token = text.trim();
            if token.is_empty() {
                anyhow::bail!("--token-file: {} is empty", path.display());
            }
            return Ok(Some(token.to_string()));
        }
        Ok(std::env::var("TESTBED_JOIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()))
    }

    pub fn to_config(&self) -> anyhow::Result<AgentConfig> {
        let token = self.join_token()?;
        if let Some(path) = &self.config {
            let mut cfg = AgentConfig::from_file(path)?;
            if cfg.token.is_empty() {
                if let Some(t) = token {
                    cfg.token = t;
                }
            }
            if self.ca_file.is_some() {
                cfg.ca_file = self.ca_file.clone();
            }
            if self.server_fingerprint.is_some() {
                cfg.server_fingerprint = self.server_fingerprint.clone();
            }
            if self.metrics_listen.is_some() {
                cfg.metrics_listen = self.metrics_listen.clone();
            }
            cfg.validate()?;
            return Ok(cfg);
        }
        let server = self
            .server
            .clone()
            .context("--server (or TESTBED_SERVER) is required")?;
        // `--server 127.0.0.1:8774` as for the client commands.
        let server = crate::client::server_url(&server, "--server")?;
        let token = token.context(
            "the join token is required: set TESTBED_JOIN_TOKEN or pass --token-file FILE",
        )?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(testbed_agent::metrics::hostname);
        let mut cfg = AgentConfig::new(&server, &token, &name);
        cfg.ca_file = self.ca_file.clone();
        cfg.server_fingerprint = self.server_fingerprint.clone();
        cfg.host = self.host.clone();
        cfg.labels = parse_labels(&self.labels).map_err(|e| anyhow::anyhow!("--labels: {e}"))?;
        cfg.groups = self
            .groups
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect();
        cfg.plugins = self
            .plugins
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect();
        cfg.plugin_dir = self.plugin_dir.clone();
        cfg.state_dir = self.state_dir.clone();
        cfg.capacity = self.capacity;
        cfg.allow_shell = self.allow_shell;
        cfg.run_as = self.run_as.clone();
        if self.metrics_listen.is_some() {
            cfg.metrics_listen = self.metrics_listen.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.to_config()?;
    if let Some(n) = args.simulate {
        return simulate(cfg, n).await;
    }
    let agent = Agent::build(cfg.clone()).await?;
    let names: Vec<String> = agent.plugin_specs().into_iter().map(|p| p.name).collect();
    println!(
        "agent `{}` serving {} with plugins: {}",
        cfg.name,
        cfg.server,
        names.join(", ")
    );
    if let Some(addr) = agent.metrics_addr() {
        println!("metrics at http://{addr}/metrics");
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        super::terminated().await;
        stop.cancel();
    });
    agent.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `n` lightweight agents in this process, for load on a server.
async fn simulate(base: AgentConfig, n: u32) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    for i in 1..=n {
        let mut cfg = base.clone();
        cfg.name = format!("{}-{i}", base.name);
        cfg.plugins = vec!["noop".into()];
        cfg.plugin_dir = None;
        cfg.state_dir = base.state_dir.join(format!("sim-{i}"));
        cfg.simulated = true;
        // One process, one address: the simulated fleet has no /metrics.
        cfg.metrics_listen = None;
        let agent = Agent::build(cfg).await?;
        let stop = shutdown.clone();
        handles.push(tokio::spawn(async move { agent.run(stop).await }));
    }
    println!("{n} simulated agents serving {}", base.server);
    super::terminated().await;
    shutdown.cancel();
    for h in handles {
        let _ = h.await;
    }
    Ok(ExitCode::SUCCESS)
}
