//! `testbed`: the all-in-one platform (`up`), a server replica (`server`),
//! an agent (`agent`) and the client commands, in one binary.
//!
//! Exit codes: 0 all passed, 1 a test (task) failed, 2 usage or
//! infrastructure error.

mod client;
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "testbed",
    version,
    about = "Distributed test platform: server, agents and client in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an all-in-one platform: server, embedded store and local agents.
    Up(cmd::up::UpArgs),
    /// Run one server replica (API, agent hub, controller).
    Server(cmd::server::ServerArgs),
    /// Local recovery on a stopped server's store (reset a lost password).
    #[command(subcommand)]
    Admin(cmd::admin::AdminCmd),
    /// Run an agent (test device) that serves a server.
    Agent(cmd::agent::AgentArgs),
    /// Log in and remember the token for the other client commands.
    Login(cmd::client::LoginArgs),
    /// End every session of the logged-in user and forget the saved token.
    Logout,
    /// List and inspect agents.
    #[command(subcommand)]
    Agents(cmd::client::AgentsCmd),
    /// Run one plugin method on an agent and follow its log.
    Exec(cmd::client::ExecArgs),
    /// Inspect, follow and cancel tasks.
    #[command(subcommand)]
    Tasks(cmd::client::TasksCmd),
    /// Generate HTTP load against a URL and report latency percentiles (like wrk/oha).
    Load(cmd::load::LoadArgs),
    /// Performance plans on a server's load agents (seed-001 API), followed live.
    #[command(subcommand)]
    Perf(cmd::perf::PerfCmd),
    /// Run a test plan and follow it live (exit 0 passed, 1 failed, 2 error).
    Run(cmd::run::RunArgs),
    /// List, inspect, follow and cancel plan runs.
    #[command(subcommand)]
    Runs(cmd::runs::RunsCmd),
    /// Show stored reports or convert report files.
    #[command(subcommand)]
    Report(cmd::report::ReportCmd),
    /// API tests: YAML suites, Postman collections, OpenAPI contract checks.
    #[command(subcommand)]
    Api(cmd::api::ApiCmd),
    /// Compatibility kits: run TAP scripts, mask known-broken tests, compare reports.
    #[command(subcommand)]
    Tck(cmd::tck::TckCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESTBED_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(a) => cmd::up::run(a).await,
            Command::Server(a) => cmd::server::run(a).await,
            Command::Admin(a) => cmd::admin::admin(a).await,
            Command::Agent(a) => cmd::agent::run(a).await,
            Command::Login(a) => cmd::client::login(a).await,
            Command::Logout => cmd::client::logout().await,
            Command::Agents(a) => cmd::client::agents(a).await,
            Command::Exec(a) => cmd::client::exec(a).await,
            Command::Tasks(a) => cmd::client::tasks(a).await,
            Command::Load(a) => cmd::load::run(a).await,
            Command::Run(a) => cmd::run::run(a).await,
            Command::Perf(a) => cmd::perf::perf(a).await,
            Command::Runs(a) => cmd::runs::runs(a).await,
            Command::Report(a) => cmd::report::report(a).await,
            Command::Tck(a) => cmd::tck::tck(a).await,
            Command::Api(a) => cmd::api::api(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
