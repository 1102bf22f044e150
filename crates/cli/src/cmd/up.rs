//! `testbed up`: the whole platform in one process, nothing to install.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use testbed_agent::config::parse_labels;
use testbed_agent::{Agent, AgentConfig};
use tokio_util::sync::CancellationToken;

use super::server::{ConnArgs, MetricsArgs, ServerArgs, StoreArgs};

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    testbed up --agents 2\n  \
    testbed up --agent-labels arch=x86_64,os=linux --agent-groups lab-a\n  \
    sudo testbed up --run-as testbed   # tasks drop root privileges\n\n\
    Every local agent gets the same labels and groups; plan steps reach them\n\
    with `target: {labels: arch=x86_64}` or `target: {group: lab-a}`.")]
pub struct UpArgs {
    /// Address to serve the API and WebSockets on.
    #[arg(long, default_value = "127.0.0.1:8774")]
    pub listen: String,
    /// Where the embedded store, logs and artifacts live.
    #[arg(long, default_value = "testbed-data")]
    pub data_dir: PathBuf,
    /// Where logs, artifacts, reports and load-test series go:
    /// `s3://BUCKET/PREFIX` (AWS_* variables for credentials, region and
    /// endpoint), `file:///PATH` or a directory. Default: DATA_DIR/blobs.
    #[arg(long, env = "TESTBED_BLOBS", value_name = "URL|DIR")]
    pub blobs: Option<String>,
    /// Local agents to start.
    #[arg(long, default_value_t = 1)]
    pub agents: u32,
    /// Seconds an agent may stay silent before it is declared gone.
    #[arg(long, default_value_t = 10)]
    pub lease_ttl: u64,
    /// Let the local agents' run_shell use /bin/sh on request.
    #[arg(long)]
    pub allow_shell: bool,
    /// Built-in plugins the local agents carry.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linux_system,build_server,load,tap,api"
    )]
    pub plugins: Vec<String>,
    /// Directory of exec plugins for the local agents.
    #[arg(long)]
    pub plugin_dir: Option<PathBuf>,
    #[command(flatten)]
    pub tags: LocalAgentTags,
    /// When started as root, the local agents run tasks as this user
    /// (without it, tasks run as root and a warning says so).
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub traces: super::server::TraceArgs,
    /// Serve plain HTTP on a non-loopback --listen address (tokens,
    /// commands and logs then cross the network in clear text).
    #[arg(long)]
    pub insecure: bool,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.conn.tls_cert.is_none() && !args.insecure && !super::server::is_loopback(&args.listen) {
        anyhow::bail!(
            "--listen {} is reachable from other hosts and would serve plain HTTP: the join \
             token, logins and every command would cross the network in clear text. Give \
             --tls-cert FILE --tls-key FILE, or --insecure to accept that",
            args.listen
        );
    }
    // Secrets (signing key, join token) and logs live here: service user only.
    testbed_store::private::ensure_private_dir(&args.data_dir)
        .with_context(|| format!("preparing {}", args.data_dir.display()))?;
    let server_args = ServerArgs {
        listen: args.listen.clone(),
        store: StoreArgs {
            store: format!("redb:{}", args.data_dir.join("testbed.redb").display()),
            etcd_user: None,
            etcd_password: None,
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_prefix: String::new(),
        },
        blobs: Some(
            args.blobs
                .clone()
                .unwrap_or_else(|| args.data_dir.join("blobs").display().to_string()),
        ),
        lease_ttl: args.lease_ttl,
        token_hours: 12,
        max_body: 1024 * 1024,
        replica: None,
        conn: args.conn.clone(),
        metrics: args.metrics.clone(),
        traces: args.traces.clone(),
    };
    let (labels, groups) = args.tags.parse()?;
    if let Some(user) = &args.run_as {
        testbed_agent::process::resolve_run_as(user)
            .map_err(|e| anyhow::anyhow!("--run-as: {e}"))?;
    }
    let server = super::server::start(&server_args).await?;
    super::server::print_banner(&server, &format!("--data-dir {}", args.data_dir.display()));

    let shutdown = CancellationToken::new();
    let mut agents = Vec::new();
    for i in 1..=args.agents {
        let name = format!("local-{i}");
        let mut cfg = AgentConfig::new(&server.url(), &server.join_token, &name);
        cfg.plugins = args.plugins.clone();
        cfg.state_dir = args.data_dir.join("agents").join(&name);
        cfg.allow_shell = args.allow_shell;
        cfg.plugin_dir = args.plugin_dir.clone();
        cfg.labels = labels.clone();
        cfg.groups = groups.clone();
        cfg.run_as = args.run_as.clone();
        if let Some(store) = server.tls.clone() {
            // The local agents trust the certificate the server serves at
            // the time, renewals included.
            let pin = move || testbed_agent::tls::parse_fingerprint(&store.fingerprint()).ok();
            cfg.tls = Some(testbed_agent::tls::pinned_config(pin)?);
        }
        let agent = Agent::build(cfg).await?;
        let stop = shutdown.clone();
        agents.push(tokio::spawn(async move {
            if let Err(e) = agent.run(stop).await {
                tracing::error!(agent = %name, "{e}");
            }
        }));
    }
    println!(
        "{} local agent(s) started; Ctrl-C stops everything",
        args.agents
    );

    super::terminated().await;
    println!("shutting down");
    shutdown.cancel();
    for a in agents {
        let _ = a.await;
    }
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Labels and groups of local agents, for `up` and `run --local` alike.
#[derive(Args, Clone, Debug, Default)]
pub struct LocalAgentTags {
    /// Labels every local agent carries, `k=v[,k2=v2]` (plan targets
    /// select them with `labels: k=v`).
    #[arg(long, value_name = "K=V[,K=V]", default_value = "")]
    pub agent_labels: String,
    /// Groups every local agent belongs to, comma-separated (plan targets
    /// select them with `group: NAME`).
    #[arg(long, value_name = "G1[,G2]", value_delimiter = ',')]
    pub agent_groups: Vec<String>,
}

impl LocalAgentTags {
    /// The labels and groups, checked before anything starts: a bad label
    /// names the flag.
    pub fn parse(&self) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
        let labels =
            parse_labels(&self.agent_labels).map_err(|e| anyhow::anyhow!("--agent-labels: {e}"))?;
        let groups = self
            .agent_groups
            .iter()
            .map(|g| g.trim())
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        Ok((labels, groups))
    }
}
