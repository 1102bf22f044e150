//! `linux_system`: run a command, describe the machine (seed 002).
//!
//! The method implementations are `pub(crate)` so `build_server`, which
//! offers the same two methods, runs exactly this code.
//!
//! What seed 002 fixes here (names, paths, fields) is summarised in
//! docs/seed-interfaces.md#seed-002-compute-nodes-and-test-cases.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sysinfo::{CpuRefreshKind, System};

use crate::plugin::{
    async_trait, checked_env, json, method, parse_params, run_process, seconds, shell_command,
    split_words, Args, CommandSpec, Deserialize, JsonSchema, MethodSpec, Plugin, PluginError,
    PluginOutput, PluginResult, PluginSpec, ProcessOutcome, TaskContext, TaskStatus, Value,
};

/// Seed 002's description of `run_shell`, kept verbatim because clients of
/// `/v2.1/slaves` show it.
pub const SEED_DESCRIPTION: &str =
    "parameters is dict. command key is linux cmd. args key is parameters of linux cmd";

/// What `system_information` does (seed 002 gave it `run_shell`'s text,
/// which described a method it is not).
pub const SYSTEM_INFORMATION_DESCRIPTION: &str =
    "Describe the machine: hostname, OS, kernel, CPU, memory, swap, load and uptime. \
     Optional: command (and args) is also run, its result returned as command_output";

/// The plugin `linux_system`: `run_shell` and `system_information`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxSystem;

#[async_trait]
impl Plugin for LinuxSystem {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: "linux_system".into(),
            methods: vec![run_shell_method(), system_information_method()],
        }
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        match method {
            "run_shell" => run_shell(params, ctx).await,
            "system_information" => system_information(params, ctx).await,
            _ => Err(PluginError::unknown_method(method, &self.spec())),
        }
    }
}

/// `run_shell`'s parameters.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunShell {
    /// The program to run, looked up in PATH (not a command line: arguments go in `args`).
    #[schemars(length(min = 1))]
    command: String,
    /// Arguments: a string split like a shell splits words (quotes, backslashes; no variables, globs or operators), or an array of strings passed as they are.
    args: Option<Args>,
    /// Working directory; relative to the task's work directory, which is the default.
    #[schemars(length(min = 1))]
    cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Seconds after which the command and everything it started are killed.
    #[schemars(extend("exclusiveMinimum" = 0))]
    timeout: Option<f64>,
    /// Run `command args` through /bin/sh -c. Refused unless the agent allows shell mode (allow_shell).
    #[serde(default)]
    shell: bool,
    /// Text written to the command's standard input (otherwise it reads /dev/null).
    stdin: Option<String>,
}

/// `system_information`'s parameters.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SystemInformationParams {
    /// Optionally also run this program (as run_shell does); its result is returned under `command_output`.
    #[schemars(length(min = 1))]
    command: Option<String>,
    /// Arguments of `command`, split like shell words.
    args: Option<String>,
}

pub(crate) fn run_shell_method() -> MethodSpec {
    method::<RunShell>("run_shell", SEED_DESCRIPTION)
}

pub(crate) fn system_information_method() -> MethodSpec {
    method::<SystemInformationParams>("system_information", SYSTEM_INFORMATION_DESCRIPTION)
}

/// `run_shell`: runs one command; the task succeeds iff it exits with 0.
pub(crate) async fn run_shell(params: Value, ctx: &TaskContext) -> PluginResult {
    let p: RunShell = parse_params(params)?;
    if p.command.is_empty() {
        return Err(PluginError::invalid("command", "must not be empty"));
    }
    if let Some(Args::Words(words)) = &p.args {
        // Split now so unbalanced quotes are reported before anything
        // runs, even in shell mode where sh would choke.
        split_words("args", words)?;
    }
    let request = ShellRequest {
        command: p.command,
        args: p.args,
        cwd: p.cwd.map(PathBuf::from),
        env: checked_env("env", p.env)?,
        timeout: seconds("timeout", p.timeout)?,
        shell: p.shell,
        stdin: p.stdin,
    };
    request.run(ctx).await
}

/// One command to run on behalf of a task, as `run_shell` takes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShellRequest {
    pub command: String,
    pub args: Option<Args>,
    /// Relative paths are taken from the task's work directory.
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub shell: bool,
    pub stdin: Option<String>,
}

impl ShellRequest {
    /// The command to run, or why it may not run.
    pub fn to_command(&self, ctx: &TaskContext) -> Result<CommandSpec, PluginError> {
        let mut spec = if self.shell {
            shell_command(&self.command, self.args.as_ref(), ctx)?
        } else {
            let args = match &self.args {
                None => Vec::new(),
                Some(Args::Words(words)) => split_words("args", words)?,
                Some(Args::List(list)) => list.clone(),
            };
            CommandSpec::new(&self.command).args(args)
        };
        spec.cwd = Some(match &self.cwd {
            Some(dir) => ctx.work_dir.join(dir),
            None => ctx.work_dir.clone(),
        });
        spec.env = self.env.clone();
        spec.stdin = self.stdin.as_ref().map(|s| s.as_bytes().to_vec());
        spec.timeout = self.timeout;
        Ok(spec)
    }

    pub async fn run(&self, ctx: &TaskContext) -> PluginResult {
        let spec = self.to_command(ctx)?;
        let argv = spec.argv();
        let outcome = run_process(spec, ctx).await.map_err(|e| self.explain(e))?;
        if outcome.cancelled {
            return Err(PluginError::Cancelled);
        }
        Ok(command_output(&outcome, &argv))
    }

    /// The seed's examples put a program in `command` and its arguments in
    /// `args`; someone writing `"command": "ls -l"` needs to be told that.
    fn explain(&self, e: PluginError) -> PluginError {
        match e {
            PluginError::Failed(msg)
                if !self.shell
                    && msg.starts_with("command not found")
                    && self.command.contains(char::is_whitespace) =>
            {
                PluginError::Failed(format!(
                    "{msg} (`command` is one program; put its arguments in `args`)"
                ))
            }
            e => e,
        }
    }
}

/// The result of a finished command, as `run_shell` reports it.
pub(crate) fn command_output(outcome: &ProcessOutcome, argv: &[String]) -> PluginOutput {
    PluginOutput {
        status: if outcome.success() {
            TaskStatus::Succeeded
        } else {
            TaskStatus::Failed
        },
        exit_code: outcome.exit_code,
        result: json!({
            "exit_code": outcome.exit_code,
            "signal": outcome.signal,
            "timed_out": outcome.timed_out,
            "stdout_tail": outcome.stdout_tail,
            "duration_ms": outcome.duration_ms,
            "command": argv,
        }),
    }
}

/// `system_information`: a description of the machine, optionally with the
/// output of a command.
pub(crate) async fn system_information(params: Value, ctx: &TaskContext) -> PluginResult {
    let SystemInformationParams { command, args } = parse_params(params)?;
    if command.as_deref() == Some("") {
        return Err(PluginError::invalid("command", "must not be empty"));
    }

    let info = tokio::task::spawn_blocking(collect_system_information)
        .await
        .map_err(|e| PluginError::Failed(format!("collecting system information failed: {e}")))?;
    for line in info.summary() {
        ctx.log.line(&line);
    }
    let mut result = info.to_json();

    let Some(command) = command else {
        return Ok(PluginOutput::success(result));
    };
    let output = ShellRequest {
        command,
        args: args.map(Args::Words),
        ..ShellRequest::default()
    }
    .run(ctx)
    .await?;
    if let Value::Object(map) = &mut result {
        map.insert("command_output".to_string(), output.result);
    }
    Ok(PluginOutput {
        status: output.status,
        exit_code: output.exit_code,
        result,
    })
}

struct SystemInformation {
    hostname: String,
    os_name: Option<String>,
    os_version: Option<String>,
    long_os_version: Option<String>,
    kernel_version: Option<String>,
    arch: String,
    uptime_secs: u64,
    boot_time: u64,
    cpu_count: usize,
    physical_cores: Option<usize>,
    cpu_brand: String,
    cpu_vendor: String,
    cpu_frequency_mhz: u64,
    memory_total: u64,
    memory_used: u64,
    memory_available: u64,
    swap_total: u64,
    swap_used: u64,
    load: (f64, f64, f64),
}

fn collect_system_information() -> SystemInformation {
    let mut sys = System::new();
    sys.refresh_memory();
    sys.refresh_cpu_list(CpuRefreshKind::nothing().with_frequency());
    let cpus = sys.cpus();
    let first = cpus.first();
    let load = System::load_average();
    SystemInformation {
        hostname: System::host_name().unwrap_or_default(),
        os_name: System::name(),
        os_version: System::os_version(),
        long_os_version: System::long_os_version(),
        kernel_version: System::kernel_version(),
        arch: System::cpu_arch(),
        uptime_secs: System::uptime(),
        boot_time: System::boot_time(),
        cpu_count: cpus.len(),
        physical_cores: sys.physical_core_count(),
        cpu_brand: first
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        cpu_vendor: first.map(|c| c.vendor_id().to_string()).unwrap_or_default(),
        cpu_frequency_mhz: first.map(|c| c.frequency()).unwrap_or_default(),
        memory_total: sys.total_memory(),
        memory_used: sys.used_memory(),
        memory_available: sys.available_memory(),
        swap_total: sys.total_swap(),
        swap_used: sys.used_swap(),
        load: (load.one, load.five, load.fifteen),
    }
}

impl SystemInformation {
    fn to_json(&self) -> Value {
        json!({
            "hostname": self.hostname,
            "os": {
                "name": self.os_name,
                "version": self.os_version,
                "long_version": self.long_os_version,
                "kernel_version": self.kernel_version,
                "arch": self.arch,
            },
            "uptime_secs": self.uptime_secs,
            "boot_time": self.boot_time,
            "cpu": {
                "count": self.cpu_count,
                "physical_cores": self.physical_cores,
                "brand": self.cpu_brand,
                "vendor": self.cpu_vendor,
                "frequency_mhz": self.cpu_frequency_mhz,
            },
            "memory": {
                "total_bytes": self.memory_total,
                "used_bytes": self.memory_used,
                "available_bytes": self.memory_available,
                "swap_total_bytes": self.swap_total,
                "swap_used_bytes": self.swap_used,
            },
            "load_average": {
                "one": self.load.0,
                "five": self.load.1,
                "fifteen": self.load.2,
            },
        })
    }

    fn summary(&self) -> Vec<String> {
        let os = self
            .long_os_version
            .clone()
            .or_else(|| self.os_name.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = self.kernel_version.as_deref().unwrap_or("unknown");
        let cores = match self.physical_cores {
            Some(n) => format!(" ({n} physical cores)"),
            None => String::new(),
        };
        vec![
            format!("host:    {}", self.hostname),
            format!("os:      {os}, kernel {kernel}, {}", self.arch),
            format!("uptime:  {}", human_duration(self.uptime_secs)),
            format!(
                "cpu:     {} × {}{cores}",
                self.cpu_count,
                if self.cpu_brand.is_empty() {
                    "unknown"
                } else {
                    &self.cpu_brand
                }
            ),
            format!(
                "memory:  {} used of {} ({} available)",
                human_bytes(self.memory_used),
                human_bytes(self.memory_total),
                human_bytes(self.memory_available)
            ),
            format!(
                "load:    {:.2} {:.2} {:.2}",
                self.load.0, self.load.1, self.load.2
            ),
        ]
    }
}

fn human_duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", secs % 60)
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schemas_say_what_the_parsing_does() {
        let spec = LinuxSystem.spec();
        let run_shell = &spec.methods[0].schema;
        assert_eq!(run_shell["required"], json!(["command"]));
        assert_eq!(run_shell["additionalProperties"], false);
        assert_eq!(
            run_shell["properties"]["args"]["type"],
            json!(["string", "array"])
        );
        assert_eq!(run_shell["properties"]["timeout"]["exclusiveMinimum"], 0);
        assert_eq!(run_shell["properties"]["cwd"]["type"], "string");
    }

    #[test]
    fn params_name_the_field() {
        let field = |r: Result<_, PluginError>| match r {
            Err(PluginError::InvalidParams { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let err = parse_params::<RunShell>(json!({"command": "ls", "bogus": 1}));
        assert_eq!(field(err.map(|_| ())), "bogus");
        assert_eq!(field(seconds("timeout", Some(0.0)).map(|_| ())), "timeout");
        assert_eq!(field(split_words("args", "'a").map(|_| ())), "args");
        let env = BTreeMap::from([("A=B".to_string(), "x".to_string())]);
        assert_eq!(field(checked_env("env", env).map(|_| ())), "env/A=B");
        let err = parse_params::<RunShell>(json!({"command": "ls", "args": ["a", 1]}));
        assert_eq!(field(err.map(|_| ())), "args/1");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_duration(90_061), "1d 1h 1m");
        assert_eq!(human_duration(59), "0m 59s");
    }
}
