//! `noop`: a plugin that does nothing, fast. It measures the platform
//! itself — dispatch latency and throughput in `bench/` — and serves as a
//! smoke test that an agent is reachable.

use std::time::Duration;

use crate::plugin::{
    async_trait, json, method, parse_params, Deserialize, JsonSchema, Plugin, PluginError,
    PluginOutput, PluginResult, PluginSpec, TaskContext, Value,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

/// `noop` takes nothing.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Sleep {
    /// Milliseconds to wait.
    #[schemars(range(max = 86_400_000))]
    ms: u64,
}

#[async_trait]
impl Plugin for Noop {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: "noop".into(),
            methods: vec![
                method::<NoParams>(
                    "noop",
                    "Returns at once; measures the platform's own overhead.",
                ),
                method::<Sleep>("sleep", "Waits `ms` milliseconds (cancellable)."),
            ],
        }
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        match method {
            "noop" => {
                let NoParams {} = parse_params(params)?;
                Ok(PluginOutput::success(json!({})))
            }
            "sleep" => {
                let Sleep { ms } = parse_params(params)?;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(PluginOutput::success(json!({"slept_ms": ms}))),
                    _ = ctx.cancel.cancelled() => Err(PluginError::Cancelled),
                }
            }
            other => Err(PluginError::unknown_method(other, &self.spec())),
        }
    }
}
