//! `tap`: runs a compatibility kit (TAP scripts) on this agent with the
//! harness of `testbed-tap`, so a plan step with `each:` runs the same kit on
//! every agent of a group — each agent being one platform of the matrix.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use testbed_core::agent::{MethodSpec, PluginSpec};
use testbed_tap::{Expectations, KitConfig, RunConfig};

use super::linux_system::unknown_method;
use crate::plugin::{Plugin, PluginError, PluginOutput, TaskContext};

#[derive(Debug, Clone, Copy, Default)]
pub struct Tap;

pub const NAME: &str = "tap";

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "kit directory or script on the agent"},
            "config": {"type": "string", "description": "kit.toml on the agent"},
            "expect": {"type": "string", "description": "known-broken file on the agent"},
            "jobs": {"type": "integer", "minimum": 1, "maximum": 64},
            "timeout": {"type": "string", "description": "per script, e.g. 60s"}
        },
        "additionalProperties": false
    })
}

#[async_trait]
impl Plugin for Tap {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: NAME.to_string(),
            methods: vec![MethodSpec {
                name: "run".into(),
                description: "Runs a TAP compatibility kit here; the result is its report (one suite per script).".into(),
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
        if method != "run" {
            return Err(unknown_method(method, &self.spec()));
        }
        let text = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_string);
        let path = text("path").ok_or_else(|| PluginError::InvalidParams {
            field: "path".into(),
            message: "required".into(),
        })?;
        let mut cfg = RunConfig::new(vec![PathBuf::from(&path)]);
        if let Some(c) = text("config") {
            cfg.kit = KitConfig::load(std::path::Path::new(&c)).map_err(|e| {
                PluginError::InvalidParams {
                    field: "config".into(),
                    message: e.to_string(),
                }
            })?;
        }
        if let Some(j) = params.get("jobs").and_then(Value::as_u64) {
            cfg.jobs = j as usize;
        }
        if let Some(t) = text("timeout") {
            cfg.timeout =
                humantime::parse_duration(&t).map_err(|e| PluginError::InvalidParams {
                    field: "timeout".into(),
                    message: e.to_string(),
                })?;
        } else {
            cfg.timeout = Duration::from_secs(300);
        }
        let expect = match text("expect") {
            Some(e) => Some(Expectations::load(std::path::Path::new(&e)).map_err(|err| {
                PluginError::InvalidParams {
                    field: "expect".into(),
                    message: err.to_string(),
                }
            })?),
            None => None,
        };
        ctx.log.line(&format!("running kit {path}"));
        let mut report = tokio::select! {
            r = testbed_tap::run_kit(&cfg) => r.map_err(|e| PluginError::Failed(e.to_string()))?,
            _ = ctx.cancel.cancelled() => return Err(PluginError::Cancelled),
        };
        if let Some(e) = &expect {
            e.apply(&mut report);
        }
        PluginOutput::from_report(&report, &ctx.log)
    }
}
