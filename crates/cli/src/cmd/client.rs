//! Client commands: `login`, `agents`, `exec`, `tasks`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Client, Credentials, IdKind};
use crate::output::{self, cell};
use testbed_api::agents::AgentInfo;
use testbed_api::tasks::{SubmitRequest, Submitted, TaskPage, TaskView};
use testbed_core::task::TaskStatus;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server URL (default: $TESTBED_SERVER or the last one logged in to);
    /// `127.0.0.1:8774` means http://127.0.0.1:8774.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The user to log in as.
    #[arg(long, short, default_value = "admin")]
    pub username: String,
    /// Read the password from the first line of standard input (else
    /// $TESTBED_PASSWORD, else a prompt that does not echo).
    #[arg(long)]
    pub password_stdin: bool,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let (raw, what) = match args.server {
        Some(s) => (s, "--server"),
        None if std::env::var_os("TESTBED_SERVER").is_some() => {
            (client::default_server(), "TESTBED_SERVER")
        }
        None => (client::default_server(), "the saved login's server"),
    };
    let server = client::server_url(&raw, what)?;
    let password = if args.password_stdin {
        read_line().context("--password-stdin: reading standard input")?
    } else if let Ok(p) = std::env::var("TESTBED_PASSWORD") {
        p
    } else if std::io::stdin().is_terminal() {
        // Typed at a terminal: never echoed.
        rpassword::prompt_password(format!("password for {} at {server}: ", args.username))
            .context("reading the password from the terminal")?
    } else {
        // Piped in without --password-stdin (`echo pw | testbed login`):
        // nothing to hide, read it as --password-stdin would.
        read_line().context("reading the password from standard input")?
    };
    if password.is_empty() {
        bail!("no password given (type it at the prompt, pipe it with --password-stdin, or set TESTBED_PASSWORD)");
    }
    let token = client::login(&server, &args.username, &password).await?;
    let path = client::save_credentials(&Credentials {
        server: server.clone(),
        token,
    })?;
    println!(
        "logged in to {server} as {} (token saved in {})",
        args.username,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn logout() -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    c.post_empty("/api/auth/logout").await?;
    client::forget_credentials()
        .with_context(|| format!("removing {}", client::credentials_path().display()))?;
    println!(
        "logged out of {}: every session of this user has ended",
        c.server
    );
    Ok(ExitCode::SUCCESS)
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    /// List agents.
    #[command(visible_alias = "list")]
    Ls {
        /// Print a JSON array of agents instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one agent and the methods of its plugins.
    Show {
        /// The agent's numeric id, uuid or name.
        id: String,
        /// Print the agent as a JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

pub async fn agents(cmd: AgentsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    match cmd {
        AgentsCmd::Ls { json } => {
            let raw: Vec<Value> = c.get("/api/agents").await?;
            if json {
                output::print_json_list(&raw)?;
                return Ok(ExitCode::SUCCESS);
            }
            let list: Vec<AgentInfo> = client::decode("GET /api/agents", Value::Array(raw))?;
            let mut table = output::table([
                "ID", "NAME", "HOST", "STATUS", "PLUGINS", "LABELS", "TASKS", "CPU %", "MEM",
            ]);
            for a in &list {
                let plugins = a
                    .plugins
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                let labels = a
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let (cpu, mem) = match &a.metrics {
                    Some(m) => (
                        format!("{:.0}", m.cpu_percent),
                        format!(
                            "{:.1}/{:.1} GiB",
                            m.memory_used_bytes as f64 / 1073741824.0,
                            m.memory_total_bytes as f64 / 1073741824.0
                        ),
                    ),
                    None => ("-".into(), "-".into()),
                };
                table.add_row([
                    a.id.to_string(),
                    a.name.clone(),
                    a.host.clone(),
                    output::text(&a.status),
                    plugins,
                    labels,
                    a.outstanding.to_string(),
                    cpu,
                    mem,
                ]);
            }
            println!("{table}");
        }
        AgentsCmd::Show { id, json } => {
            let path = format!("/api/agents/{id}");
            let raw: Value = c.get(&path).await?;
            if json {
                output::print_json(&raw)?;
                return Ok(ExitCode::SUCCESS);
            }
            let a: AgentInfo = client::decode(&format!("GET {path}"), raw)?;
            println!("{} (id {}, {})", a.name, a.id, a.uuid);
            println!("  host:   {}", a.host);
            println!("  status: {}", output::text(&a.status));
            for p in &a.plugins {
                println!("  plugin {}", p.name);
                for m in &p.methods {
                    println!("    {:<20} {}", m.name, m.description);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The plugin whose method to run (`testbed agents show` lists them).
    #[arg(long, default_value = "linux_system")]
    pub plugin: String,
    /// An agent's host, name or uuid.
    #[arg(long)]
    pub host: String,
    /// The plugin method to run.
    #[arg(long, default_value = "run_shell")]
    pub method: String,
    /// Parameters as a JSON object (for methods other than run_shell).
    #[arg(long)]
    pub params: Option<String>,
    /// Print the task id and return without following.
    #[arg(long)]
    pub detach: bool,
    /// Print the final task as JSON.
    #[arg(long)]
    pub json: bool,
    /// For run_shell: the command and its arguments.
    #[arg(last = true)]
    pub argv: Vec<String>,
}

pub async fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    let mut parameters: Value = match &args.params {
        Some(p) => serde_json::from_str(p).context("--params is not valid JSON")?,
        None => json!({}),
    };
    if !args.argv.is_empty() {
        let Some(obj) = parameters.as_object_mut() else {
            bail!("--params must be a JSON object");
        };
        obj.insert("command".into(), json!(args.argv[0]));
        if args.argv.len() > 1 {
            obj.insert("args".into(), json!(shell_words::join(&args.argv[1..])));
        }
    }
    let submitted: Submitted = c
        .post(
            "/v2.1/testcases",
            &SubmitRequest {
                plugin: args.plugin,
                host: args.host,
                method: args.method,
                parameters,
            },
        )
        .await?;
    let id = submitted.task_id.to_string();
    if args.detach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("task {id} on {}", submitted.agent_name);
    // A task that cannot start yet says what it waits for, rather than
    // showing nothing until it starts.
    if let Ok(t) = c.get::<TaskView>(&format!("/api/tasks/{id}")).await {
        if let Some(reason) = t
            .task
            .reason
            .as_deref()
            .filter(|_| t.task.status == TaskStatus::Queued)
        {
            eprintln!(
                "task {id} is waiting: {}",
                output::reason_only("pending", reason)
            );
        }
    }
    follow_log(&c, &id).await?;
    finish(&c, &id, args.json).await
}

/// Streams the task's log to stdout until the task ends.
async fn follow_log(c: &Client, id: &str) -> anyhow::Result<()> {
    let mut req = c
        .ws_url(&format!("/ws/tasks/{id}/log"))
        .into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", c.token))?,
    );
    let (mut ws, _) = crate::client::ws_connect(req)
        .await
        .context("opening the live log")?;
    let mut out = std::io::stdout();
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(t) => {
                out.write_all(t.as_bytes())?;
                out.flush()?;
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// Prints the outcome and maps it to the exit code.
async fn finish(c: &Client, id: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let path = format!("/api/tasks/{id}");
    let request = format!("GET {path}");
    // The log closes when the task ends; poll briefly in case of a race.
    let mut raw: Value = c.get(&path).await?;
    let mut task: TaskView = client::decode(&request, raw.clone())?;
    for _ in 0..50 {
        if task.task.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        raw = c.get(&path).await?;
        task = client::decode(&request, raw.clone())?;
    }
    if as_json {
        output::print_json(&raw)?;
    }
    let t = &task.task;
    eprintln!(
        "task {id}: {}{}{}",
        t.status,
        t.exit_code
            .map(|e| format!(", exit code {e}"))
            .unwrap_or_default(),
        t.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    Ok(match t.status {
        TaskStatus::Succeeded => ExitCode::SUCCESS,
        TaskStatus::Failed => ExitCode::from(t.exit_code.map_or(1, |e| e.clamp(1, 255) as u8)),
        _ => ExitCode::from(2),
    })
}

#[derive(Subcommand, Debug)]
pub enum TasksCmd {
    /// List recent tasks, newest first.
    #[command(visible_alias = "list")]
    Ls {
        /// Only tasks in this status.
        #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "error", "cancelled", "lost"])]
        status: Option<String>,
        /// Only tasks of this agent (name or uuid).
        #[arg(long)]
        agent: Option<String>,
        /// How many tasks to list (1–1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Print a JSON array of tasks instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a task: status, agent, timings, result.
    Show {
        /// The task's id, or a unique prefix of it.
        id: String,
        /// Print the task as a JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's log; `-f` follows it until the task ends.
    Logs {
        /// The task's id, or a unique prefix of it.
        id: String,
        /// Keep printing the log as it grows, until the task ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a task.
    Cancel {
        /// The task's id, or a unique prefix of it.
        id: String,
    },
}

pub async fn tasks(cmd: TasksCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    match cmd {
        TasksCmd::Ls {
            status,
            agent,
            limit,
            json,
        } => {
            let mut path = format!("/api/tasks?page_size={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={}", query_value(&s)));
            }
            if let Some(a) = agent {
                path.push_str(&format!("&agent={}", query_value(&a)));
            }
            let Some(page) = c.list_page::<TaskPage>(&path, json).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let mut table =
                output::table(["ID", "PLUGIN.METHOD", "AGENT", "STATUS", "EXIT", "CREATED"]);
            for TaskView { task: t, .. } in &page.results {
                table.add_row([
                    t.id.to_string(),
                    format!("{}.{}", t.plugin, t.method),
                    t.agent_name.clone(),
                    t.status.to_string(),
                    t.exit_code.map(|e| e.to_string()).unwrap_or_default(),
                    output::text(&t.created_at),
                ]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Show { id, json } => {
            let id = c.resolve(IdKind::Task, &id).await?;
            let path = format!("/api/tasks/{id}");
            let raw: Value = c.get(&path).await?;
            if json {
                output::print_json(&raw)?;
            } else {
                print_task(&client::decode(&format!("GET {path}"), raw)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Logs { id, follow } => {
            let id = c.resolve(IdKind::Task, &id).await?;
            if follow {
                follow_log(&c, &id).await?;
            } else {
                let (text, _) = c.get_text(&format!("/api/tasks/{id}/log")).await?;
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Cancel { id } => {
            let id = c.resolve(IdKind::Task, &id).await?;
            let t: TaskView = c
                .post(&format!("/api/tasks/{id}/cancel"), &json!({}))
                .await?;
            println!("cancel requested; task is {}", t.task.status);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A query-string value, percent-encoded.
pub fn query_value(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `tasks show` for humans: the fields a user asks about, as `agents show`
/// prints an agent.
fn print_task(view: &TaskView) {
    let t = &view.task;
    println!("task {} ({}.{})", t.id, t.plugin, t.method);
    let mut status = t.status.to_string();
    if let Some(code) = t.exit_code {
        status.push_str(&format!(", exit code {code}"));
    }
    println!("  status:     {status}");
    if let Some(reason) = &t.reason {
        println!("  reason:     {reason}");
    }
    if let Some(error) = &t.error {
        println!("  error:      {error}");
    }
    println!(
        "  agent:      {} (asked for host `{}`)",
        t.agent_name, t.host
    );
    println!("  by:         {}", t.created_by);
    println!("  created:    {}", output::text(&t.created_at));
    if let Some(at) = &t.started_at {
        println!("  started:    {}", output::text(at));
    }
    if let Some(at) = &t.finished_at {
        println!("  finished:   {}", output::text(at));
    }
    if let Some(ms) = view.duration_ms {
        println!("  duration:   {:.3} s", ms as f64 / 1000.0);
    }
    if let Some(run) = &t.run {
        println!(
            "  run:        {} step `{}` (instance {}, attempt {})",
            run.run_id, run.step, run.instance, run.attempt
        );
    }
    if let Some(params) = t.parameters.as_object().filter(|p| !p.is_empty()) {
        println!("  parameters:");
        for (k, v) in params {
            println!("    {k}: {}", cell(v));
        }
    }
    println!(
        "  log:        {} bytes (`testbed tasks logs {}`)",
        t.log_bytes, t.id
    );
    for a in &t.artifacts {
        println!("  artifact:   {} ({} bytes)", a.name, a.size);
    }
    if let Some(result) = t.result.as_ref().and_then(Value::as_object) {
        println!("  result:");
        for (k, v) in result {
            let text = cell(v);
            // Multi-line values (stdout tails) stay readable, indented.
            let mut lines = text.lines();
            println!("    {k}: {}", lines.next().unwrap_or_default());
            for l in lines {
                println!("      {l}");
            }
        }
    }
}
