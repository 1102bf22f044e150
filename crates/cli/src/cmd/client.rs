//! Client commands: `login`, `agents`, `exec`, `tasks`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Client, Credentials};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server URL (default: $TESTBED_SERVER or the last one logged in to).
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long, short, default_value = "admin")]
    pub username: String,
    /// Read the password from standard input (else $TESTBED_PASSWORD, else
    /// a prompt).
    #[arg(long)]
    pub password_stdin: bool,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let server = args.server.unwrap_or_else(client::default_server);
    let password = if args.password_stdin {
        read_line()?
    } else if let Ok(p) = std::env::var("TESTBED_PASSWORD") {
        p
    } else {
        eprint!("password for {}: ", args.username);
        std::io::stderr().flush().ok();
        read_line()?
    };
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
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one agent (numeric id, uuid or name).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn agents(cmd: AgentsCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    match cmd {
        AgentsCmd::Ls { json } => {
            let list: Vec<Value> = c.get("/api/agents").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header([
                "ID", "NAME", "HOST", "STATUS", "PLUGINS", "LABELS", "TASKS", "CPU %", "MEM",
            ]);
            for a in &list {
                let plugins = a["plugins"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["name"].as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let labels = a["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let (cpu, mem) = match a.get("metrics").filter(|m| !m.is_null()) {
                    Some(m) => (
                        format!("{:.0}", m["cpu_percent"].as_f64().unwrap_or(0.0)),
                        format!(
                            "{:.1}/{:.1} GiB",
                            m["memory_used_bytes"].as_f64().unwrap_or(0.0) / 1073741824.0,
                            m["memory_total_bytes"].as_f64().unwrap_or(0.0) / 1073741824.0
                        ),
                    ),
                    None => ("-".into(), "-".into()),
                };
                table.add_row([
                    a["id"].to_string(),
                    a["name"].as_str().unwrap_or_default().to_string(),
                    a["host"].as_str().unwrap_or_default().to_string(),
                    a["status"].as_str().unwrap_or_default().to_string(),
                    plugins,
                    labels,
                    a["outstanding"].to_string(),
                    cpu,
                    mem,
                ]);
            }
            println!("{table}");
        }
        AgentsCmd::Show { id, json } => {
            let a: Value = c.get(&format!("/api/agents/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!(
                    "{} (id {}, {})",
                    a["name"].as_str().unwrap_or_default(),
                    a["id"],
                    a["uuid"].as_str().unwrap_or_default()
                );
                println!("  host:   {}", a["host"].as_str().unwrap_or_default());
                println!("  status: {}", a["status"].as_str().unwrap_or_default());
                for p in a["plugins"].as_array().into_iter().flatten() {
                    println!("  plugin {}", p["name"].as_str().unwrap_or_default());
                    for m in p["methods"].as_array().into_iter().flatten() {
                        println!(
                            "    {:<20} {}",
                            m["name"].as_str().unwrap_or_default(),
                            m["description"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(long, default_value = "linux_system")]
    pub plugin: String,
    /// An agent's host, name or uuid.
    #[arg(long)]
    pub host: String,
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
    let submitted: Value = c
        .post(
            "/v2.1/testcases",
            &json!({"plugin": args.plugin, "host": args.host, "method": args.method, "parameters": parameters}),
        )
        .await?;
    let id = submitted["task_id"]
        .as_str()
        .context("no task_id in the answer")?
        .to_string();
    if args.detach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "task {id} on {}",
        submitted["agent_name"].as_str().unwrap_or("?")
    );
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
    // The log closes when the task ends; poll briefly in case of a race.
    let mut task: Value = c.get(&format!("/api/tasks/{id}")).await?;
    for _ in 0..50 {
        if !matches!(task["status"].as_str(), Some("queued" | "running")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        task = c.get(&format!("/api/tasks/{id}")).await?;
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&task)?);
    }
    let status = task["status"].as_str().unwrap_or("?");
    let exit = task["exit_code"].as_i64();
    eprintln!(
        "task {id}: {status}{}{}",
        exit.map(|e| format!(", exit code {e}")).unwrap_or_default(),
        task["error"]
            .as_str()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    Ok(match status {
        "succeeded" => ExitCode::SUCCESS,
        "failed" => ExitCode::from(exit.map_or(1, |e| e.clamp(1, 255) as u8)),
        _ => ExitCode::from(2),
    })
}

#[derive(Subcommand, Debug)]
pub enum TasksCmd {
    /// List recent tasks.
    Ls {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a task.
    Show { id: String },
    /// Print a task's log; `-f` follows it until the task ends.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a task.
    Cancel { id: String },
}

pub async fn tasks(cmd: TasksCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_env()?;
    match cmd {
        TasksCmd::Ls { status, json } => {
            let path = match status {
                Some(s) => format!("/api/tasks?page_size=50&status={s}"),
                None => "/api/tasks?page_size=50".to_string(),
            };
            let page: Value = c.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(["ID", "PLUGIN.METHOD", "AGENT", "STATUS", "EXIT", "CREATED"]);
            for t in page["results"].as_array().into_iter().flatten() {
                table.add_row([
                    t["id"].as_str().unwrap_or_default().to_string(),
                    format!(
                        "{}.{}",
                        t["plugin"].as_str().unwrap_or_default(),
                        t["method"].as_str().unwrap_or_default()
                    ),
                    t["agent_name"].as_str().unwrap_or_default().to_string(),
                    t["status"].as_str().unwrap_or_default().to_string(),
                    t["exit_code"]
                        .as_i64()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                    t["created_at"].as_str().unwrap_or_default().to_string(),
                ]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Show { id } => {
            let t: Value = c.get(&format!("/api/tasks/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&t)?);
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Logs { id, follow } => {
            if follow {
                follow_log(&c, &id).await?;
            } else {
                let (text, _) = c.get_text(&format!("/api/tasks/{id}/log")).await?;
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCmd::Cancel { id } => {
            let t: Value = c
                .post(&format!("/api/tasks/{id}/cancel"), &json!({}))
                .await?;
            println!(
                "cancel requested; task is {}",
                t["status"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
