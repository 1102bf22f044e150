//! `tap`: runs a compatibility kit (TAP scripts) on this agent with the
//! harness of `testbed-tap`, so a plan step with `each:` runs the same kit on
//! every agent of a group — each agent being one platform of the matrix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testbed_tap::{Expectations, KitConfig, RunConfig};

use crate::plugin::{
    async_trait, method, parse_only, Deserialize, JsonSchema, Plugin, PluginError, PluginOutput,
    PluginResult, PluginSpec, TaskContext, Value,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct Tap;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Run {
    /// kit directory or script on the agent
    #[schemars(length(min = 1))]
    path: String,
    /// kit.toml on the agent
    config: Option<String>,
    /// known-broken file on the agent
    expect: Option<String>,
    #[schemars(range(min = 1, max = 64))]
    jobs: Option<u64>,
    /// per script, e.g. 60s
    timeout: Option<String>,
}

#[async_trait]
impl Plugin for Tap {
    fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: "tap".into(),
            methods: vec![method::<Run>(
                "run",
                "Runs a TAP compatibility kit here; the result is its report (one suite per script).",
            )],
        }
    }

    async fn invoke(&self, method: &str, params: Value, ctx: &TaskContext) -> PluginResult {
        let p: Run = parse_only(&self.spec(), method, params)?;
        let mut cfg = RunConfig::new(vec![PathBuf::from(&p.path)]);
        if let Some(c) = &p.config {
            cfg.kit =
                KitConfig::load(Path::new(c)).map_err(|e| PluginError::invalid("config", e))?;
        }
        if let Some(j) = p.jobs {
            cfg.jobs = usize::try_from(j).unwrap_or(usize::MAX);
        }
        cfg.timeout = match &p.timeout {
            Some(t) => {
                humantime::parse_duration(t).map_err(|e| PluginError::invalid("timeout", e))?
            }
            None => Duration::from_secs(300),
        };
        let expect = match &p.expect {
            Some(e) => Some(
                Expectations::load(Path::new(e))
                    .map_err(|err| PluginError::invalid("expect", err))?,
            ),
            None => None,
        };
        ctx.log.line(&format!("running kit {}", p.path));
        let mut report = tokio::select! {
            r = testbed_tap::run_kit_compact(&cfg) => r.map_err(|e| PluginError::Failed(e.to_string()))?,
            _ = ctx.cancel.cancelled() => return Err(PluginError::Cancelled),
        };
        if let Some(e) = &expect {
            e.apply_compact(&mut report);
        }
        PluginOutput::from_report(&report, ctx)
    }
}
