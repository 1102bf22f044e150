//! `testbed`: the all-in-one platform (`up`), a server replica (`server`),
//! an agent (`agent`) and the client commands, in one binary.
//!
//! Exit codes ([`EXIT_CODES`], docs/cli.md): 0 success, 1 a test (task,
//! threshold) failed, 2 usage or infrastructure error.

mod client;
mod cmd;
mod output;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use testbed_telemetry::otel::{self, Otel, WithTraceIds};

/// Shown at the end of `testbed --help`; docs/cli.md says the same.
const EXIT_CODES: &str = "\
Exit codes:
  0  success: the command did what was asked (every test passed)
  1  a test, task or threshold failed (`exec` passes on the task's own code)
  2  usage error, bad input, or an infrastructure error (server unreachable,
     not logged in, a run cancelled)

Conventions (docs/cli.md): `--json` prints an array for every list; ids may be
shortened to a unique prefix; NO_COLOR or a redirected output turns colour off.";

#[derive(Parser)]
#[command(
    name = "testbed",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("TESTBED_GIT_REVISION"), ")"),
    about = "Distributed test platform: server, agents and client in one binary",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Diagnostics on stderr as `text` (for people) or `json` (one object
    /// per line, for log collectors); also TESTBED_LOG_FORMAT.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TESTBED_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by TESTBED_LOG (default `info`); with `otel`,
/// spans are exported too and lines logged inside one carry its
/// `trace_id` and `span_id`.
fn init_logging(format: LogFormat, otel: Option<&Otel>) {
    use tracing_subscriber::fmt::format::JsonFields;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESTBED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let traced = otel.is_some();
    let text = tracing_subscriber::fmt::format();
    // One JSON object per line: the event's fields flattened beside
    // timestamp, level and target, and the span it happened in.
    let json = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false);
    let fmt = match (format, traced) {
        (LogFormat::Text, false) => layer
            .with_ansi(output::color_enabled(&std::io::stderr()))
            .event_format(text)
            .boxed(),
        // Plain text: the ids are appended after the formatter ran.
        (LogFormat::Text, true) => layer
            .with_ansi(false)
            .event_format(WithTraceIds::new(text, false))
            .boxed(),
        (LogFormat::Json, false) => layer
            .fmt_fields(JsonFields::new())
            .event_format(json)
            .boxed(),
        (LogFormat::Json, true) => layer
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds::new(json, true))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel.map(|o| o.layer()))
        .init();
}

/// Trace export for the commands that run a server or an agent, from
/// `--otlp-endpoint` or the OTEL_* variables; `None` when not configured.
fn init_traces(command: &Command) -> anyhow::Result<Option<Otel>> {
    let (flag, service) = match command {
        Command::Up(a) => (&a.traces, "testbed-server"),
        Command::Server(a) => (&a.traces, "testbed-server"),
        Command::Agent(a) => (&a.traces, "testbed-agent"),
        _ => return Ok(None),
    };
    let endpoint =
        otel::resolve_endpoint(flag.otlp_endpoint.as_deref(), |k| std::env::var(k).ok())?;
    match endpoint {
        Some(url) => Ok(Some(otel::init(&url, service)?)),
        None => Ok(None),
    }
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
    /// Performance plans on a server's load agents, followed live.
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
    /// Print a shell completion script (e.g. `testbed completions bash > /etc/bash_completion.d/testbed`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page of `testbed`, or write one page per command into a directory.
    Man {
        /// Write `testbed.1`, `testbed-runs.1`, … here instead of printing `testbed.1`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl Command {
    /// Commands that serve tasks or write to a child process's stdin, and
    /// so must keep SIGPIPE ignored (see [`output::default_sigpipe`]).
    fn feeds_child_processes(&self) -> bool {
        matches!(
            self,
            Command::Up(_)
                | Command::Server(_)
                | Command::Agent(_)
                | Command::Run(_)
                | Command::Api(_)
                | Command::Tck(_)
        )
    }
}

/// `testbed agent ls`: `agent` runs an agent, and clap would only say that
/// `ls` is unexpected. Points at the list commands instead.
fn misplaced_subcommand(args: &[OsString]) -> Option<String> {
    let word = |i: usize| args.get(i).and_then(|a| a.to_str());
    let (Some("agent"), Some(next)) = (word(1), word(2)) else {
        return None;
    };
    let fix = match next {
        "ls" | "list" => "testbed agents ls",
        "show" => "testbed agents show ID",
        _ => return None,
    };
    Some(format!(
        "`testbed agent` runs an agent on this machine; did you mean `{fix}`?"
    ))
}

/// `testbed completions SHELL`.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "testbed", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `testbed man [--dir DIR]`.
fn man(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!("man pages written to {}", dir.display());
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            use std::io::Write;
            std::io::stdout().write_all(&out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    output::quiet_broken_pipe();
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(hint) = misplaced_subcommand(&args) {
        eprintln!("error: {hint}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse_from(args);
    if !cli.command.feeds_child_processes() {
        output::default_sigpipe();
    }
    let traces = match init_traces(&cli.command) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format, traces.as_ref());
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
            Command::Completions { shell } => Ok(completions(shell)),
            Command::Man { dir } => man(dir),
        }
    });
    // What is still queued goes out before the process ends (blocking:
    // after the runtime is done).
    if let Some(t) = traces {
        drop(runtime);
        t.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument a user can see explains itself in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.is_hide_set() || arg.get_help().is_some() || arg.get_long_help().is_some() {
                    continue;
                }
                let name = match (arg.get_long(), arg.get_short()) {
                    (Some(l), _) => format!("--{l}"),
                    (None, Some(s)) => format!("-{s}"),
                    _ => format!("<{}>", arg.get_id().as_str().to_uppercase()),
                };
                missing.push(format!("{path} {name}"));
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "testbed", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without help:\n{}",
            missing.join("\n")
        );
    }

    /// No internal jargon in what users read.
    #[test]
    fn help_has_no_seed_jargon() {
        fn walk(cmd: &mut clap::Command, out: &mut String) {
            out.push_str(&cmd.render_long_help().to_string());
            for sub in cmd.get_subcommands_mut() {
                walk(sub, out);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut all = String::new();
        walk(&mut cmd, &mut all);
        assert!(
            !all.to_lowercase().contains("seed-00"),
            "seed jargon in --help"
        );
    }

    #[test]
    fn agent_ls_points_at_agents() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let hint = misplaced_subcommand(&args(&["testbed", "agent", "ls"])).unwrap();
        assert!(hint.contains("testbed agents ls"), "{hint}");
        assert!(misplaced_subcommand(&args(&["testbed", "agent", "--server", "x"])).is_none());
    }
}
