//! `api`: runs API test suites and Postman collections on this agent with
//! `testbed-apitest`, so a plan step reaches systems that only this agent can
//! reach (a Docker socket, a QMP socket, a lab vCenter). The suite can be a
//! path on the agent or travel inline in the plan.
//!
//! Cases are written to an unlinked file in the task's work directory as
//! they end ([`files::run_streamed`]) and the report is rendered from there,
//! so a collection of many iterations holds a few bytes a case on the agent;
//! a report over the inline size goes up as a blob ([`PluginOutput::from_report`]).

use std::path::PathBuf;
use std::sync::Arc;

use testbed_apitest::files::{self, Options};

use crate::plugin::{
    async_trait, method, parse_only, Deserialize, JsonSchema, Map, Plugin, PluginError,
    PluginOutput, PluginResult, PluginSpec, TaskContext, Value,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct Api;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["path"]}, {"required": ["suite"]}]))]
struct RunSuite {
    /// suite, collection or directory on the agent
    #[schemars(length(min = 1))]
    path: Option<String>,
    /// an inline suite: YAML text or the suite as an object
    suite: Option<Value>,
    /// a suite environment's name, or a variables file on the agent
    environment: Option<String>,
    /// variables that win over the suite's
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    skip_tags: Vec<String>,
    #[serde(default)]
    insecure: bool,
    /// files run at the same time
    #[schemars(range(min = 1, max = 64))]
    jobs: Option<u64>,
    /// iterations of each collection (newman's `-n`); by default one per
    /// data row, or one
    #[schemars(range(min = 1))]
    iterations: Option<u64>,
    /// iteration data for collections on the agent (newman's `-d`): a JSON
    /// array of objects or a CSV file
    #[schemars(length(min = 1))]
    data: Option<String>,
}

#[async_trait]
impl Plugin for Api {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: "api".into(),
            methods: vec![method::<RunSuite>(
                "run_suite",
                "Runs API test suites or Postman collections here; the result is their report.",
            )],
        }
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        let p: RunSuite = parse_only(&self.spec(), method, params)?;
        let inline = p.suite.is_some();
        let path = match (p.path, p.suite) {
            (Some(path), None) => PathBuf::from(path),
            (None, Some(inline)) => {
                let text = match inline {
                    Value::String(s) => s,
                    other => serde_json::to_string_pretty(&other)
                        .map_err(|e| PluginError::invalid("suite", e))?,
                };
                std::fs::create_dir_all(&ctx.work_dir)
                    .map_err(|e| PluginError::Failed(e.to_string()))?;
                let file = ctx.work_dir.join("suite.yaml");
                std::fs::write(&file, text).map_err(|e| PluginError::Failed(e.to_string()))?;
                file
            }
            _ => {
                return Err(PluginError::invalid(
                    "path",
                    "give one of `path` or `suite`",
                ))
            }
        };
        let log = ctx.log.clone();
        let opts = Options {
            environment: p.environment,
            vars: p.vars,
            tags: p.tags,
            skip_tags: p.skip_tags,
            insecure: p.insecure,
            script_timeout: std::time::Duration::from_secs(5),
            jobs: p
                .jobs
                .map_or(1, |j| usize::try_from(j).unwrap_or(usize::MAX)),
            iterations: p
                .iterations
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            data: p.data.map(PathBuf::from),
            echo: Some(Arc::new(move |l: &str| {
                for line in l.lines() {
                    log.line(line);
                }
            })),
            ..Options::default()
        };
        let loaded = files::load(std::slice::from_ref(&path), &opts).map_err(|problems| {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            PluginError::invalid(if inline { "suite" } else { "path" }, all.join("\n"))
        })?;
        // Unlinked at once: nothing is left behind, whatever becomes of the task.
        let spool = std::fs::create_dir_all(&ctx.work_dir)
            .and_then(|()| tempfile::tempfile_in(&ctx.work_dir))
            .map_err(|e| {
                let at = ctx.work_dir.display();
                PluginError::io(format!("creating a file for the cases in {at}"), e)
            })?;
        let ran = tokio::select! {
            r = files::run_streamed(&loaded, &opts, spool, None) => r,
            _ = ctx.cancel.cancelled() => return Err(PluginError::Cancelled),
        }
        .map_err(|e| PluginError::io("writing the run's cases to disk", e))?;
        PluginOutput::from_report(&ran.report, ctx)
    }
}
