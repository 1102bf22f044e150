//! `noop`: a plugin that does nothing, fast. It measures the platform
//! itself — dispatch latency and throughput in `bench/` — and serves as a
//! smoke test that an agent is reachable.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use testbed_core::agent::{MethodSpec, PluginSpec};

use crate::plugin::{Plugin, PluginError, PluginOutput, TaskContext};

#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

pub const NAME: &str = "noop";

#[async_trait]
impl Plugin for Noop {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: NAME.to_string(),
            methods: vec![
                MethodSpec {
                    name: "noop".into(),
                    description: "Returns at once; measures the platform's own overhead.".into(),
                    schema: json!({"type": "object", "additionalProperties": false}),
                },
                MethodSpec {
                    name: "sleep".into(),
                    description: "Waits `ms` milliseconds (cancellable).".into(),
                    schema: json!({
                        "type": "object",
                        "required": ["ms"],
                        "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 86_400_000}},
                        "additionalProperties": false
                    }),
                },
            ],
        }
    }

    async fn invoke(
        &self,
        method: &str,
        params: Value,
        ctx: &TaskContext,
    ) -> Result<PluginOutput, PluginError> {
        match method {
            "noop" => Ok(PluginOutput::success(json!({}))),
            "sleep" => {
                let ms = params.get("ms").and_then(Value::as_u64).ok_or_else(|| {
                    PluginError::InvalidParams {
                        field: "ms".into(),
                        message: "a non-negative integer is required".into(),
                    }
                })?;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(PluginOutput::success(json!({"slept_ms": ms}))),
                    _ = ctx.cancel.cancelled() => Err(PluginError::Cancelled),
                }
            }
            other => Err(PluginError::UnknownMethod {
                method: other.to_string(),
                available: "noop, sleep".into(),
            }),
        }
    }
}
