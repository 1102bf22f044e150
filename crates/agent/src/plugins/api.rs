//! `api`: runs API test suites and Postman collections on this agent with
//! `testbed-apitest`, so a plan step reaches systems that only this agent can
//! reach (a Docker socket, a QMP socket, a lab vCenter). The suite can be a
//! path on the agent or travel inline in the plan.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use testbed_apitest::files::{self, Options};
use testbed_core::agent::{MethodSpec, PluginSpec};

use super::linux_system::unknown_method;
use crate::plugin::{Plugin, PluginError, PluginOutput, TaskContext};

#[derive(Debug, Clone, Copy, Default)]
pub struct Api;

pub const NAME: &str = "api";

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "suite, collection or directory on the agent"},
            "suite": {"description": "an inline suite: YAML text or the suite as an object"},
            "environment": {"type": "string", "description": "a suite environment's name, or a variables file on the agent"},
            "vars": {"type": "object", "description": "variables that win over the suite's"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "skip_tags": {"type": "array", "items": {"type": "string"}},
            "insecure": {"type": "boolean"},
            "jobs": {"type": "integer", "minimum": 1, "maximum": 64, "description": "files run at the same time"}
        },
        "oneOf": [{"required": ["path"]}, {"required": ["suite"]}],
        "additionalProperties": false
    })
}

fn invalid(field: &str, message: impl Into<String>) -> PluginError {
    PluginError::InvalidParams {
        field: field.into(),
        message: message.into(),
    }
}

fn strings(params: &Value, key: &str) -> Vec<String> {
    params
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait]
impl Plugin for Api {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: NAME.to_string(),
            methods: vec![MethodSpec {
                name: "run_suite".into(),
                description:
                    "Runs API test suites or Postman collections here; the result is their report."
                        .into(),
                schema: schema(),
            }],
        }
    }

    async fn invoke(
        &self,
        method: &str,
        params: Value,
        ctx: &TaskContext,
    ) -> Result<PluginOutput, PluginError> {
        if method != "run_suite" {
            return Err(unknown_method(method, &self.spec()));
        }
        let path = match (
            params.get("path").and_then(Value::as_str),
            params.get("suite"),
        ) {
            (Some(p), None) => PathBuf::from(p),
            (None, Some(inline)) => {
                let text = match inline {
                    Value::String(s) => s.clone(),
                    other => serde_json::to_string_pretty(other)
                        .map_err(|e| invalid("suite", e.to_string()))?,
                };
                std::fs::create_dir_all(&ctx.work_dir)
                    .map_err(|e| PluginError::Failed(e.to_string()))?;
                let file = ctx.work_dir.join("suite.yaml");
                std::fs::write(&file, text).map_err(|e| PluginError::Failed(e.to_string()))?;
                file
            }
            _ => return Err(invalid("path", "give one of `path` or `suite`")),
        };
        let log = ctx.log.clone();
        let opts = Options {
            environment: params
                .get("environment")
                .and_then(Value::as_str)
                .map(str::to_string),
            vars: params
                .get("vars")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            tags: strings(&params, "tags"),
            skip_tags: strings(&params, "skip_tags"),
            insecure: params
                .get("insecure")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            script_timeout: std::time::Duration::from_secs(5),
            jobs: params.get("jobs").and_then(Value::as_u64).unwrap_or(1) as usize,
            echo: Some(Arc::new(move |l: &str| {
                for line in l.lines() {
                    log.line(line);
                }
            })),
            ..Options::default()
        };
        let loaded = files::load(std::slice::from_ref(&path), &opts).map_err(|problems| {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            invalid(
                if params.get("suite").is_some() {
                    "suite"
                } else {
                    "path"
                },
                all.join("\n"),
            )
        })?;
        let report = tokio::select! {
            r = files::run(&loaded, &opts) => r,
            _ = ctx.cancel.cancelled() => return Err(PluginError::Cancelled),
        };
        PluginOutput::from_report(&report, &ctx.log)
    }
}
