//! `load`: runs one share of a performance test on the embedded engine
//! (`testbed-load`). Each per-second window goes to the server live (through
//! the task's metric sink) and, all together, into the task's result — the
//! live path is best effort, the result is what reports are built from.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::{json, Value};
use testbed_core::agent::{MethodSpec, PluginSpec};
use testbed_load::{Plan, RunOptions};

use crate::plugin::{Control, Plugin, PluginError, PluginOutput, TaskContext};

#[derive(Debug, Clone, Copy, Default)]
pub struct Load;

pub const NAME: &str = "load";

#[async_trait]
impl Plugin for Load {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: NAME.to_string(),
            methods: vec![MethodSpec {
                name: "run".into(),
                description: "Runs a load plan (a testbed-load `Plan`), optionally starting at \
                              `start_at_ms` (Unix ms) so that several agents start together."
                    .into(),
                schema: json!({
                    "type": "object",
                    "required": ["plan"],
                    "properties": {
                        "plan": {"type": "object"},
                        "start_at_ms": {"type": "integer", "minimum": 0},
                        "execution_id": {"type": "string"}
                    }
                }),
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
            return Err(PluginError::UnknownMethod {
                method: method.to_string(),
                available: "run".into(),
            });
        }
        let plan: Plan = serde_json::from_value(params.get("plan").cloned().unwrap_or(Value::Null))
            .map_err(|e| PluginError::InvalidParams {
                field: "plan".into(),
                message: e.to_string(),
            })?;
        let start_at = params
            .get("start_at_ms")
            .and_then(Value::as_u64)
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        let mut run = testbed_load::start_with(plan, RunOptions { start_at })
            .map_err(|e| PluginError::Failed(e.to_string()))?;
        let controller = run.controller();
        let mut control = ctx.control.clone();
        let mut windows = Vec::new();
        let mut stopping = false;
        ctx.log.line("[load] started");
        loop {
            tokio::select! {
                w = run.next_window() => match w {
                    Some(w) => {
                        match serde_json::to_value(&w) {
                            Ok(v) => {
                                ctx.metrics.send(v.clone());
                                windows.push(v);
                            }
                            Err(e) => ctx.log.line(&format!("[load] window {}: {e}", w.index)),
                        }
                    }
                    None => break,
                },
                changed = control.changed() => {
                    if changed.is_err() {
                        // The runtime dropped the sender: nothing more will come.
                        control = crate::plugin::fixed_control();
                        continue;
                    }
                    let want = *control.borrow_and_update();
                    let done = match want {
                        Control::Pause => controller.pause(),
                        Control::Run => controller.resume(),
                    };
                    ctx.log.line(&format!("[load] {want:?}: {}", if done { "ok" } else { "no change" }));
                }
                _ = ctx.cancel.cancelled(), if !stopping => {
                    // Stop still yields the remaining windows and a report.
                    stopping = true;
                    controller.stop();
                    ctx.log.line("[load] stop requested");
                }
            }
        }
        let report = run
            .report()
            .await
            .map_err(|e| PluginError::Failed(e.to_string()))?;
        ctx.log.line(&format!(
            "[load] done: {} requests, {} errors",
            report.summary.requests, report.summary.errors
        ));
        Ok(PluginOutput::success(json!({
            "windows": windows,
            "requests": report.summary.requests,
            "errors": report.summary.errors,
            "stopped": stopping,
        })))
    }
}
