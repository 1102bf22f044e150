//! `testbed server`: one server replica over redb or etcd.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use testbed_server::blobs::Blobs;
use testbed_server::tls::TlsFiles;
use testbed_server::{ServerConfig, Settings};
use testbed_store::EtcdOptions;

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// `redb:PATH` or `etcd://HOST:PORT[,HOST:PORT…]` (`etcds://` for TLS).
    #[arg(long, default_value = "redb:testbed-data/testbed.redb")]
    pub store: String,
    /// etcd user (with --etcd-password).
    #[arg(long, env = "TESTBED_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// etcd password (with --etcd-user).
    #[arg(long, env = "TESTBED_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// CA certificate that signed etcd's server certificate.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate and key for etcd mutual TLS.
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    /// Private key of --etcd-cert (PEM).
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
    /// Root prefix of every key in etcd.
    #[arg(long, default_value = "")]
    pub etcd_prefix: String,
}

impl StoreArgs {
    pub fn etcd_options(&self) -> EtcdOptions {
        EtcdOptions {
            username: self.etcd_user.clone(),
            password: self.etcd_password.clone(),
            ca_file: self.etcd_ca.clone(),
            cert_file: self.etcd_cert.clone(),
            key_file: self.etcd_key.clone(),
            prefix: self.etcd_prefix.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to serve the API and WebSockets on.
    #[arg(long, default_value = "127.0.0.1:8774")]
    pub listen: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where logs, artifacts, reports and load-test series go, shared by
    /// all replicas of a cluster: `s3://BUCKET/PREFIX` (any S3-compatible
    /// store; AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL), `file:///PATH` or a directory. Defaults to `blobs/`
    /// beside a redb file, else `testbed-blobs`.
    #[arg(long, env = "TESTBED_BLOBS", value_name = "URL|DIR")]
    pub blobs: Option<String>,
    /// Seconds an agent may stay silent before it is declared gone.
    #[arg(long, default_value_t = 10)]
    pub lease_ttl: u64,
    /// Hours a login token stays valid.
    #[arg(long, default_value_t = 12)]
    pub token_hours: u64,
    /// Largest JSON request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body: usize,
    /// Name of this replica (default: host:port it listens on).
    #[arg(long)]
    pub replica: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub traces: TraceArgs,
}

/// Where `server`, `up` and `agent` send their traces (docs/operations.md,
/// "Traces and logs"); read by `main` before logging starts.
#[derive(Args, Debug, Clone, Default)]
pub struct TraceArgs {
    /// Export traces (OTLP over HTTP, protobuf) to the collector at URL,
    /// e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended); else
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full URL) or
    /// OTEL_EXPORTER_OTLP_ENDPOINT. Off when none is set.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// Who may read `/metrics`, shared by `server` and `up` (docs/operations.md).
/// The token itself is never a flag (`ps` would show it): a file, or
/// `TESTBED_METRICS_TOKEN`.
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve /metrics on the API port to `Authorization: Bearer <token>`,
    /// the token read from FILE (or from TESTBED_METRICS_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve /metrics, without auth, on this separate address (for the
    /// scraper's network only).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
}

/// Shortest metrics token accepted: it is the only thing between the
/// network and the metrics.
const MIN_METRICS_TOKEN: usize = 16;

impl MetricsArgs {
    pub fn settings(&self) -> anyhow::Result<testbed_server::metrics::MetricsSettings> {
        let from_env = std::env::var("TESTBED_METRICS_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let token = match (&self.metrics_token_file, from_env) {
            (Some(_), Some(_)) => anyhow::bail!(
                "--metrics-token-file and TESTBED_METRICS_TOKEN are both set: give one"
            ),
            (Some(file), None) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("--metrics-token-file: reading {}", file.display()))?;
                Some(check_metrics_token(
                    text.trim(),
                    &format!("--metrics-token-file {}", file.display()),
                )?)
            }
            (None, Some(t)) => Some(check_metrics_token(t.trim(), "TESTBED_METRICS_TOKEN")?),
            (None, None) => None,
        };
        if let Some(addr) = self.metrics_listen.as_deref().filter(|a| !is_loopback(a)) {
            tracing::warn!(
                "--metrics-listen {addr}: /metrics is served there without auth; only the \
                 scraper should reach that address (docs/operations.md)"
            );
        }
        Ok(testbed_server::metrics::MetricsSettings {
            token,
            listen: self.metrics_listen.clone(),
        })
    }
}

fn check_metrics_token(token: &str, source: &str) -> anyhow::Result<String> {
    if token.len() < MIN_METRICS_TOKEN || token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        anyhow::bail!(
            "{source}: the metrics token must be at least {MIN_METRICS_TOKEN} characters with no \
             spaces or control characters (e.g. `openssl rand -hex 32`)"
        );
    }
    Ok(token.to_string())
}

/// HTTPS and connection limits, shared by `server` and `up`.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); re-read
    /// when the file changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connections open at once (WebSockets included); more are closed at
    /// once. Lowered to fit the open-file limit.
    #[arg(long, default_value_t = Settings::default().max_connections)]
    pub max_connections: usize,
    /// Connections open at once from one client address (agents behind
    /// one NAT address count together).
    #[arg(long, default_value_t = Settings::default().max_connections_per_address)]
    pub max_connections_per_address: usize,
    /// Seconds a connection has to send a complete request header (also
    /// how long an idle keep-alive connection is kept).
    #[arg(long, value_name = "SECONDS", default_value_t = Settings::default().header_read_timeout.as_secs())]
    pub header_read_timeout: u64,
}

impl ConnArgs {
    fn tls(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// Every address `listen` names is a loopback one. A name that does not
/// resolve counts as not loopback: the bind will report it.
pub fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

pub fn default_blobs(store: &str) -> PathBuf {
    match store.strip_prefix("redb:") {
        Some(path) => PathBuf::from(path)
            .parent()
            .map(|p| p.join("blobs"))
            .unwrap_or_else(|| PathBuf::from("blobs")),
        None => PathBuf::from("testbed-blobs"),
    }
}

pub async fn start(args: &ServerArgs) -> anyhow::Result<testbed_server::Server> {
    if args.lease_ttl == 0 {
        anyhow::bail!("--lease-ttl must be at least 1 second");
    }
    if args.conn.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    if args.conn.max_connections_per_address == 0 {
        anyhow::bail!("--max-connections-per-address must be at least 1");
    }
    if args.conn.header_read_timeout == 0 {
        anyhow::bail!("--header-read-timeout must be at least 1 second");
    }
    let store = testbed_store::open(&args.store.store, args.store.etcd_options())
        .await
        .with_context(|| format!("opening store {}", args.store.store))?;
    let blob_spec = args
        .blobs
        .clone()
        .unwrap_or_else(|| default_blobs(&args.store.store).display().to_string());
    // Checked now (a probe object written, read and deleted): a wrong
    // bucket or credential must stop the start, not lose the first logs.
    let blobs = Blobs::open(&blob_spec)
        .await
        .context("--blobs (TESTBED_BLOBS)")?;
    let config = ServerConfig {
        listen: args.listen.clone(),
        store,
        blobs,
        settings: Settings {
            lease_ttl: Duration::from_secs(args.lease_ttl),
            max_body: args.max_body,
            max_connections: args.conn.max_connections,
            max_connections_per_address: args.conn.max_connections_per_address,
            header_read_timeout: Duration::from_secs(args.conn.header_read_timeout),
            tls: args.conn.tls(),
            metrics: args.metrics.settings()?,
            ..Settings::default()
        },
        admin_password: std::env::var("TESTBED_ADMIN_PASSWORD").ok(),
        join_token: std::env::var("TESTBED_JOIN_TOKEN").ok(),
        token_ttl: Duration::from_secs(args.token_hours.max(1) * 3600),
        replica: args.replica.clone().unwrap_or_else(|| args.listen.clone()),
    };
    Ok(testbed_server::start(config).await?)
}

/// `where_` names the store as `testbed admin reset-password` takes it
/// (`--data-dir DIR` or `--store SPEC`), for the hint printed when
/// TESTBED_ADMIN_PASSWORD cannot take effect.
pub fn print_banner(server: &testbed_server::Server, where_: &str) {
    println!("Testbed is listening on {}", server.url());
    match &server.generated_admin_password {
        Some(p) => println!("admin login: admin / {p}   (generated; shown only this once)"),
        None if server.admin_created => println!("admin login: admin / $TESTBED_ADMIN_PASSWORD"),
        None => {
            println!("admin login: admin (existing user; password unchanged)");
            // The admin was created by an earlier start: the variable only
            // sets the first password, and saying nothing here locks out
            // whoever expects it to work.
            if std::env::var("TESTBED_ADMIN_PASSWORD").is_ok_and(|p| !p.is_empty()) {
                println!(
                    "  TESTBED_ADMIN_PASSWORD is ignored: it only sets the password of a new \
                     admin. To set it now, stop Testbed and run \
                     `testbed admin reset-password {where_}`"
                );
            }
        }
    }
    println!("agent join token: {}", server.join_token);
    if let Some(fp) = server.tls_fingerprint() {
        println!("TLS certificate SHA-256 fingerprint: {fp}");
    }
    if let Some(addr) = server.metrics_addr {
        println!("metrics (no auth): http://{addr}/metrics");
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let server = start(&args).await?;
    if server.tls.is_none() && !is_loopback(&args.listen) {
        tracing::warn!(
            "serving plain HTTP on {}: the join token, logins, commands and logs cross the \
             network in clear text; give --tls-cert and --tls-key (docs/security.md)",
            args.listen
        );
    }
    print_banner(&server, &format!("--store {}", args.store.store));
    super::terminated().await;
    println!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
