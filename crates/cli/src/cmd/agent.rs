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
    /// Server URL, e.g. http://127.0.0.1:8774.
    #[arg(long, env = "TESTBED_SERVER")]
    pub server: Option<String>,
    /// Join token the server printed.
    #[arg(long, env = "TESTBED_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    /// Benchmark mode: run N simulated agents (`NAME-1`…`NAME-N`) that
    /// register, carry only the `noop` plugin and heartbeat without metrics.
    #[arg(long, value_name = "N")]
    pub simulate: Option<u32>,
}

impl AgentArgs {
    pub fn to_config(&self) -> anyhow::Result<AgentConfig> {
        if let Some(path) = &self.config {
            let mut cfg = AgentConfig::from_file(path)?;
            if let Ok(t) = std::env::var("TESTBED_JOIN_TOKEN") {
                if cfg.token.is_empty() {
                    cfg.token = t;
                }
            }
            return Ok(cfg);
        }
        let server = self
            .server
            .clone()
            .context("--server (or TESTBED_SERVER) is required")?;
        let token = self
            .token
            .clone()
            .context("--token (or TESTBED_JOIN_TOKEN) is required")?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(testbed_agent::metrics::hostname);
        let mut cfg = AgentConfig::new(&server, &token, &name);
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
