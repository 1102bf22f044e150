//! `build_server`: check out a repository, run a build, collect artifacts.
//!
//! It also offers `run_shell` and `system_information`, which are
//! `linux_system`'s own implementations.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

// build_server offers linux_system's two methods: the same code, not a copy.
use super::linux_system::{self, run_shell_method, system_information_method};
use crate::plugin::{
    async_trait, checked_env, json, method, parse_params, run_process, seconds, shell_command,
    split_words, type_name, Args, Artifact, CommandSpec, Deserialize, JsonSchema, MethodSpec,
    Plugin, PluginError, PluginOutput, PluginResult, PluginSpec, ProcessOutcome, TaskContext,
    TaskStatus, Value,
};

/// The plugin `build_server`: `run_shell`, `system_information` and `build`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildServer;

/// Where the repository is checked out, inside the task's work directory.
const CHECKOUT_DIR: &str = "src";

#[async_trait]
impl Plugin for BuildServer {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: "build_server".into(),
            methods: vec![
                run_shell_method(),
                system_information_method(),
                build_method(),
            ],
        }
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        match method {
            "run_shell" => linux_system::run_shell(params, ctx).await,
            "system_information" => linux_system::system_information(params, ctx).await,
            "build" => build(params, ctx).await,
            _ => Err(PluginError::unknown_method(method, &self.spec())),
        }
    }
}

/// `build`'s parameters.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Build {
    /// A git URL (https://, ssh://, git@host:path, file://) or an absolute path to a local repository.
    #[schemars(length(min = 1))]
    repo: String,
    /// Branch, tag or commit to build; the remote's default branch when absent.
    #[serde(rename = "ref")]
    #[schemars(length(min = 1))]
    git_ref: Option<String>,
    /// The build command, run in the checkout: a string split like shell words, or an argv array.
    #[schemars(extend("minLength" = 1, "minItems" = 1))]
    command: Args,
    /// Run `command` through /bin/sh -c. Refused unless the agent allows shell mode (allow_shell).
    #[serde(default)]
    shell: bool,
    /// Extra environment variables for the build command.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Seconds the whole build (checkout and command) may take.
    #[schemars(extend("exclusiveMinimum" = 0))]
    timeout: Option<f64>,
    /// Files to upload after a successful build: an object of name → path relative to the checkout, or an array of relative paths (named by their file name).
    #[serde(default)]
    #[schemars(schema_with = "artifacts_schema")]
    artifacts: Option<Value>,
}

fn artifacts_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["object", "array"],
        "additionalProperties": {"type": "string", "minLength": 1},
        "items": {"type": "string", "minLength": 1}
    })
}

fn build_method() -> MethodSpec {
    method::<Build>(
        "build",
        "Checks out a git repository (a local path or a URL) at a ref, runs a build \
         command in the checkout and uploads the files it produced as artifacts.",
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ArtifactSpec {
    name: String,
    /// Relative to the checkout, never leaving it.
    path: PathBuf,
}

async fn build(params: Value, ctx: &TaskContext) -> PluginResult {
    let p: Build = parse_params(params)?;
    let repo = p.repo;
    if repo.is_empty() {
        return Err(PluginError::invalid("repo", "must not be empty"));
    }
    check_repo(&repo)?;
    let git_ref = p.git_ref;
    if let Some(r) = &git_ref {
        check_ref(r)?;
    }
    let mut command = build_command(p.command, p.shell, ctx)?;
    command.env = checked_env("env", p.env)?;
    let timeout = seconds("timeout", p.timeout)?;
    let artifacts = parse_artifacts(p.artifacts)?;

    let started = Instant::now();
    let deadline = timeout.map(|t| Instant::now() + t);
    let checkout = ctx.work_dir.join(CHECKOUT_DIR);
    if tokio::fs::symlink_metadata(&checkout).await.is_ok() {
        return Err(PluginError::Failed(format!(
            "{} already exists in the work directory",
            checkout.display()
        )));
    }

    // A ref that looks like a commit cannot be passed to `clone --branch`;
    // it needs the full history, then a checkout.
    let commit_ref = git_ref.as_deref().filter(|r| looks_like_commit(r));
    let mut clone = vec!["clone".to_string()];
    if commit_ref.is_none() {
        if let Some(r) = &git_ref {
            clone.extend(["--branch".to_string(), r.clone()]);
        }
        // Local clones ignore --depth (with a warning) and are cheap anyway.
        if is_remote(&repo) {
            clone.extend(["--depth".to_string(), "1".to_string()]);
        }
    }
    clone.extend(["--".to_string(), repo.clone(), CHECKOUT_DIR.to_string()]);
    git(ctx, &ctx.work_dir, clone, deadline, Some(&repo)).await?;
    if let Some(r) = commit_ref {
        let args = ["checkout", "--quiet", r, "--"].map(String::from).to_vec();
        git(ctx, &checkout, args, deadline, None).await?;
    }
    let rev = ["rev-parse", "--verify", "HEAD"].map(String::from).to_vec();
    let commit = git(ctx, &checkout, rev, deadline, None)
        .await?
        .stdout_tail
        .trim()
        .to_string();

    ctx.log.line(&format!("$ {}", command.display()));
    command.cwd = Some(checkout.clone());
    command.timeout = remaining(deadline);
    let argv = command.argv();
    let outcome = run_process(command, ctx).await?;
    if outcome.cancelled {
        return Err(PluginError::Cancelled);
    }
    let mut result = json!({
        "commit": commit,
        "ref": git_ref,
        "command": argv,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "timed_out": outcome.timed_out,
        "artifacts": [],
    });
    if !outcome.success() {
        let why = if outcome.timed_out {
            "timed out".to_string()
        } else {
            outcome.describe()
        };
        ctx.log.line(&format!("build failed: {why}"));
        set(
            &mut result,
            "error",
            json!(format!("build command failed: {why}")),
        );
        set(&mut result, "duration_ms", json!(elapsed_ms(started)));
        return Ok(PluginOutput {
            status: TaskStatus::Failed,
            exit_code: outcome.exit_code,
            result,
        });
    }

    let (uploaded, problems) = collect_artifacts(ctx, &checkout, &artifacts).await?;
    let status = if problems.is_empty() {
        TaskStatus::Succeeded
    } else {
        let summary: Vec<String> = problems
            .iter()
            .map(|(a, problem)| format!("artifact `{}` ({}): {problem}", a.name, a.path.display()))
            .collect();
        set(&mut result, "error", json!(summary.join("; ")));
        TaskStatus::Failed
    };
    set(&mut result, "artifacts", json!(uploaded));
    if !problems.is_empty() {
        let list: Vec<Value> = problems
            .iter()
            .map(|(a, problem)| json!({"name": a.name, "path": a.path, "error": problem}))
            .collect();
        set(&mut result, "artifact_errors", Value::Array(list));
    }
    set(&mut result, "duration_ms", json!(elapsed_ms(started)));
    Ok(PluginOutput {
        status,
        exit_code: outcome.exit_code,
        result,
    })
}

fn set(result: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = result {
        map.insert(key.to_string(), value);
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// The build command from `command` (and `shell`).
fn build_command(
    command: Args,
    shell: bool,
    ctx: &TaskContext,
) -> Result<CommandSpec, PluginError> {
    if shell {
        let script = match command {
            Args::Words(s) => s,
            Args::List(items) => shell_words::join(items),
        };
        if script.trim().is_empty() {
            return Err(PluginError::invalid("command", "must not be empty"));
        }
        return shell_command(&script, None, ctx);
    }
    let argv = match command {
        Args::Words(s) => split_words("command", &s)?,
        Args::List(items) => items,
    };
    match argv.split_first() {
        Some((program, args)) if !program.is_empty() => {
            Ok(CommandSpec::new(program.clone()).args(args.iter().cloned()))
        }
        _ => Err(PluginError::invalid("command", "must name a program")),
    }
}

/// Runs one git step, logging it like a shell transcript. A failing step
/// means the build could not even start, hence an error rather than a
/// failed build.
async fn git(
    ctx: &TaskContext,
    cwd: &Path,
    args: Vec<String>,
    deadline: Option<Instant>,
    repo: Option<&str>,
) -> Result<ProcessOutcome, PluginError> {
    let shown: Vec<String> = args
        .iter()
        .map(|a| match repo {
            Some(r) if a == r => redact_url(r),
            _ => a.clone(),
        })
        .collect();
    let step = format!("git {}", shell_words::join(&shown));
    ctx.log.line(&format!("$ {step}"));

    let mut spec = CommandSpec::new("git")
        // `ext::` runs arbitrary commands; git refuses it by default, and
        // this keeps it so whatever the machine's git configuration says.
        .args(["-c", "protocol.ext.allow=never"])
        .args(["-c", "advice.detachedHead=false"])
        .args(args)
        .cwd(cwd)
        // Nobody is there to answer a credential or host-key prompt; fail
        // instead of waiting for the timeout.
        .env("GIT_TERMINAL_PROMPT", "0")
        .timeout(remaining(deadline));
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        spec = spec.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let outcome = run_process(spec, ctx).await?;
    if outcome.cancelled {
        return Err(PluginError::Cancelled);
    }
    if outcome.timed_out {
        return Err(PluginError::Failed(format!(
            "`{step}` timed out (the build's timeout covers the checkout too)"
        )));
    }
    if !outcome.success() {
        return Err(PluginError::Failed(format!(
            "`{step}` failed with {}; see the task log",
            outcome.describe()
        )));
    }
    Ok(outcome)
}

/// Hides a password in a URL before it is written to the task log.
fn redact_url(repo: &str) -> String {
    match url::Url::parse(repo) {
        Ok(mut u) if u.password().is_some() => {
            // Only fails for URLs that cannot have credentials at all.
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => repo.to_string(),
    }
}

fn looks_like_commit(r: &str) -> bool {
    (7..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// URL or scp-like `host:path` (git's own rule: a colon before any slash).
fn is_url(repo: &str) -> bool {
    repo.contains("://")
        || repo
            .find(':')
            .is_some_and(|i| i > 0 && !repo[..i].contains('/'))
}

fn is_remote(repo: &str) -> bool {
    is_url(repo) && !repo.starts_with("file://")
}

fn check_repo(repo: &str) -> Result<(), PluginError> {
    let invalid = |message: String| PluginError::invalid("repo", message);
    if repo.starts_with('-') {
        return Err(invalid("must not start with `-`".to_string()));
    }
    if repo.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters".to_string()));
    }
    // `transport::address` hands the address to a remote helper program.
    if let Some((transport, _)) = repo.split_once("::") {
        if !transport.is_empty() && !transport.contains('/') {
            return Err(invalid(format!(
                "remote helper transports (`{transport}::…`) are not allowed"
            )));
        }
    }
    if !is_url(repo) && !Path::new(repo).is_absolute() {
        return Err(invalid(format!(
            "`{repo}` is neither a URL nor an absolute path to a local repository"
        )));
    }
    Ok(())
}

fn check_ref(r: &str) -> Result<(), PluginError> {
    let invalid = |message: &str| PluginError::invalid("ref", message);
    if r.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if r.starts_with('-') {
        return Err(invalid("must not start with `-`"));
    }
    if r.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("must not contain spaces or control characters"));
    }
    Ok(())
}

fn parse_artifacts(value: Option<Value>) -> Result<Vec<ArtifactSpec>, PluginError> {
    let invalid = |field: String, message: String| PluginError::invalid(field, message);
    let mut specs = Vec::new();
    match value {
        None => {}
        Some(Value::Object(map)) => {
            for (name, path) in map {
                let field = format!("artifacts/{name}");
                check_artifact_name(&field, &name)?;
                let Value::String(path) = path else {
                    return Err(invalid(
                        field,
                        format!("must be a path, not {}", type_name(&path)),
                    ));
                };
                let path = check_artifact_path(&field, &path)?;
                specs.push(ArtifactSpec { name, path });
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let field = format!("artifacts/{i}");
                let Value::String(path) = item else {
                    return Err(invalid(
                        field,
                        format!("must be a path, not {}", type_name(&item)),
                    ));
                };
                let path = check_artifact_path(&field, &path)?;
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| invalid(field.clone(), "must name a file".to_string()))?;
                specs.push(ArtifactSpec { name, path });
            }
        }
        Some(other) => {
            return Err(invalid(
                "artifacts".to_string(),
                format!(
                    "must be an object (name → path) or an array of paths, not {}",
                    type_name(&other)
                ),
            ))
        }
    }
    for (i, a) in specs.iter().enumerate() {
        if specs[..i].iter().any(|b| b.name == a.name) {
            return Err(invalid(
                "artifacts".to_string(),
                format!("two artifacts are named `{}`", a.name),
            ));
        }
    }
    Ok(specs)
}

fn check_artifact_name(field: &str, name: &str) -> Result<(), PluginError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.chars().any(char::is_control)
        || name.len() > 255;
    if bad {
        return Err(PluginError::invalid(
            field,
            format!("`{name}` is not a valid artifact name (a file name: no `/`, not `.` or `..`)"),
        ));
    }
    Ok(())
}

fn check_artifact_path(field: &str, path: &str) -> Result<PathBuf, PluginError> {
    let p = Path::new(path);
    let inside = !path.is_empty()
        && !path.contains('\0')
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(PluginError::invalid(
            field,
            format!("`{path}` must be a path relative to the checkout, without `..` components"),
        ));
    }
    Ok(p.to_path_buf())
}

/// Uploads every artifact that exists; the others are reported back with
/// the reason.
async fn collect_artifacts<'a>(
    ctx: &TaskContext,
    checkout: &Path,
    artifacts: &'a [ArtifactSpec],
) -> Result<(Vec<Artifact>, Vec<(&'a ArtifactSpec, String)>), PluginError> {
    let mut uploaded = Vec::new();
    let mut problems = Vec::new();
    if artifacts.is_empty() {
        return Ok((uploaded, problems));
    }
    let root = tokio::fs::canonicalize(checkout)
        .await
        .map_err(|e| PluginError::io(format!("resolving {}", checkout.display()), e))?;
    for a in artifacts {
        if ctx.cancel.is_cancelled() {
            return Err(PluginError::Cancelled);
        }
        match locate(&root, &a.path).await {
            Ok(path) => {
                let artifact = ctx.artifacts.upload(ctx.task_id, &a.name, &path).await?;
                ctx.log.line(&format!(
                    "artifact {}: {} ({} bytes)",
                    a.name,
                    a.path.display(),
                    artifact.size
                ));
                uploaded.push(artifact);
            }
            Err(problem) => {
                ctx.log.line(&format!(
                    "artifact {}: {}: {problem}",
                    a.name,
                    a.path.display()
                ));
                problems.push((a, problem));
            }
        }
    }
    Ok((uploaded, problems))
}

/// The real path of an artifact, which must be a regular file inside the
/// checkout. The repository's content is not trusted: a symbolic link in it
/// must not turn an artifact into a copy of some file of the agent's.
async fn locate(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let real = match tokio::fs::canonicalize(root.join(relative)).await {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("not found".to_string()),
        Err(e) => return Err(e.to_string()),
    };
    if !real.starts_with(root) {
        return Err("resolves to a file outside the checkout".to_string());
    }
    let meta = tokio::fs::metadata(&real)
        .await
        .map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_schema_is_derived() {
        let s = build_method().schema;
        assert_eq!(s["required"], json!(["repo", "command"]));
        assert_eq!(s["additionalProperties"], false);
        assert!(s["properties"]["ref"].is_object(), "{s}");
        assert_eq!(s["properties"]["command"]["minItems"], 1);
    }

    #[test]
    fn recognises_urls_and_paths() {
        assert!(is_remote("https://example.com/r.git"));
        assert!(is_remote("git@example.com:r.git"));
        assert!(!is_remote("file:///srv/r.git"));
        assert!(!is_url("/srv/r:1"));
        assert!(check_repo("/srv/r").is_ok());
        assert!(check_repo("relative/r").is_err());
        assert!(check_repo("--upload-pack=x").is_err());
        assert!(check_repo("ext::sh -c touch% /tmp/x").is_err());
        assert!(check_repo("fd::3").is_err());
    }

    #[test]
    fn commit_like_refs() {
        assert!(looks_like_commit("0123abc"));
        assert!(!looks_like_commit("v1"));
        assert!(!looks_like_commit("main"));
    }

    #[test]
    fn artifacts_may_not_escape() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "."] {
            assert!(
                parse_artifacts(Some(json!([bad]))).is_err(),
                "{bad} was accepted"
            );
        }
        assert!(parse_artifacts(Some(json!({"../n": "a"}))).is_err());
        assert!(parse_artifacts(Some(json!({"n": "../a"}))).is_err());
        assert!(parse_artifacts(Some(json!(["a/x", "b/x"]))).is_err());
        let ok = parse_artifacts(Some(json!(["out/app.txt"]))).unwrap();
        assert_eq!(ok[0].name, "app.txt");
    }

    #[test]
    fn passwords_are_not_logged() {
        assert_eq!(
            redact_url("https://me:secret@example.com/r.git"),
            "https://me:***@example.com/r.git"
        );
        assert_eq!(redact_url("/srv/r"), "/srv/r");
    }
}
