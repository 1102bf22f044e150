//! `countdown`: counts down in the task log, then may run a program.

use std::time::Duration;

use crate::plugin::{
    async_trait, json, method, parse_only, run_process, CommandSpec, Deserialize, JsonSchema,
    Plugin, PluginError, PluginOutput, PluginResult, PluginSpec, TaskContext, TaskStatus, Value,
};

/// The plugin. It keeps no state; the registration table builds it with
/// `Default`.
#[derive(Debug, Default)]
pub struct Countdown;

/// The parameters of `count`. The doc comments become the schema's
/// descriptions; `deny_unknown_fields` makes the schema refuse a typo.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Count {
    /// Where to start counting down.
    #[schemars(range(min = 1, max = 100))]
    from: u32,
    /// Milliseconds between two numbers.
    #[serde(default)]
    pause_ms: u64,
    /// A program to run at zero, in the task's work directory.
    then: Option<String>,
}

#[async_trait]
impl Plugin for Countdown {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: "countdown".into(),
            methods: vec![method::<Count>(
                "count",
                "Counts down from `from` in the task log, then runs `then`.",
            )],
        }
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        let p: Count = parse_only(&self.spec(), method, params)?;
        for n in (1..=p.from).rev() {
            ctx.log.line(&n.to_string());
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(p.pause_ms)) => {}
                _ = ctx.cancel.cancelled() => return Err(PluginError::Cancelled),
            }
        }
        let Some(program) = p.then else {
            return Ok(PluginOutput::success(json!({"counted": p.from})));
        };
        let command = CommandSpec::new(program).cwd(&ctx.work_dir);
        let outcome = run_process(command, ctx).await?;
        if outcome.cancelled {
            return Err(PluginError::Cancelled);
        }
        Ok(PluginOutput {
            status: if outcome.success() {
                TaskStatus::Succeeded
            } else {
                TaskStatus::Failed
            },
            exit_code: outcome.exit_code,
            result: json!({"counted": p.from, "then": outcome.exit_code}),
        })
    }
}
