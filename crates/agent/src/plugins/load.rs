//! `load`: runs one share of a performance test on the embedded engine
//! (`testbed-load`). Each per-second window goes to the server live (through
//! the task's metric sink) and, all together, into the task's result — the
//! live path is best effort, the result is what reports are built from.

use std::time::{Duration, SystemTime};

use testbed_load::{LoadProfile, RunControl, RunOptions, RunState};

use crate::plugin::{
    async_trait, fixed_control, json, method, parse_only, Control, Deserialize, JsonSchema, Map,
    Plugin, PluginError, PluginOutput, PluginResult, PluginSpec, TaskContext, Value,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct Load;

/// Results carry at most this many windows inline (about 5 minutes); a
/// longer run's windows go up as the artifact [`WINDOWS_ARTIFACT`], so task
/// records stay small enough for any store.
pub const INLINE_WINDOWS: usize = 300;
pub const WINDOWS_ARTIFACT: &str = "windows.json";

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Run {
    /// What to request and how hard: a testbed-load `LoadProfile` (`crates/load`).
    plan: Map<String, Value>,
    /// Unix milliseconds at which to start, so several agents start together.
    start_at_ms: Option<u64>,
    /// The performance execution this share belongs to (the server's).
    // The server reads it back from the task; the engine needs none.
    #[allow(dead_code)]
    execution_id: Option<String>,
    /// Windows kept inline in the result; more go up as an artifact.
    inline_windows: Option<u64>,
}

#[async_trait]
impl Plugin for Load {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: "load".into(),
            methods: vec![method::<Run>(
                "run",
                "Runs a load plan (a testbed-load `LoadProfile`), optionally starting at \
                 `start_at_ms` (Unix ms) so that several agents start together.",
            )],
        }
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        let p: Run = parse_only(&self.spec(), method, params)?;
        let plan: LoadProfile = serde_json::from_value(Value::Object(p.plan))
            .map_err(|e| PluginError::invalid("plan", e))?;
        let start_at = p
            .start_at_ms
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        let mut run = testbed_load::start_with(plan, RunOptions { start_at })
            .map_err(|e| PluginError::Failed(e.to_string()))?;
        let controller = run.control();
        let mut control = ctx.control.clone();
        let mut engine_state = controller.watch();
        let mut engine_open = true;
        let mut want = *control.borrow_and_update();
        apply(&controller, want);
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
                        control = fixed_control();
                        continue;
                    }
                    want = *control.borrow_and_update();
                    let done = apply(&controller, want);
                    ctx.log.line(&format!("[load] {want:?}: {}", if done { "ok" } else { "pending" }));
                }
                changed = engine_state.changed(), if engine_open => {
                    // A pause asked for before the synchronised start takes
                    // effect as soon as the engine runs.
                    if changed.is_err() {
                        engine_open = false;
                    } else {
                        apply(&controller, want);
                    }
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
        let inline = p
            .inline_windows
            .map_or(INLINE_WINDOWS, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut result = json!({
            "requests": report.summary.requests,
            "errors": report.summary.errors,
            "stopped": stopping,
        });
        if windows.len() > inline {
            match upload_windows(ctx, &windows).await {
                Ok(()) => result["windows_artifact"] = json!(WINDOWS_ARTIFACT),
                Err(e) => {
                    ctx.log
                        .line(&format!("[load] {e}; windows kept in the result"));
                    result["windows"] = Value::Array(windows);
                }
            }
        } else {
            result["windows"] = Value::Array(windows);
        }
        Ok(PluginOutput::success(result))
    }
}

/// Brings the engine to the wanted state if it can be now; returns whether
/// it changed anything.
fn apply(controller: &RunControl, want: Control) -> bool {
    match (want, controller.state()) {
        (Control::Pause, RunState::Running) => controller.pause(),
        (Control::Run, RunState::Paused) => controller.resume(),
        _ => false,
    }
}

async fn upload_windows(ctx: &TaskContext, windows: &[Value]) -> Result<(), PluginError> {
    let path = ctx.work_dir.join(WINDOWS_ARTIFACT);
    let bytes = serde_json::to_vec(windows)
        .map_err(|e| PluginError::Failed(format!("encoding windows: {e}")))?;
    tokio::fs::write(&path, bytes)
        .await
        .map_err(|e| PluginError::io(format!("writing {}", path.display()), e))?;
    ctx.artifacts
        .upload(ctx.task_id, WINDOWS_ARTIFACT, &path)
        .await
        .map(|_| ())
}
