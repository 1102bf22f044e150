//! How the plan engine words what a step waits for. Which agents a step may
//! run on (selectors, plugin capability, liveness, group reservations) is
//! decided in [`crate::placement`], shared with one-off tasks and load tests;
//! it is re-exported here for the engine's callers.

use std::collections::BTreeSet;

use testbed_core::plan::TargetSpec;

pub use crate::placement::{
    eligible, locks, matches, reservations, reserved_elsewhere, reserved_reason, AgentView,
};

/// What a waiting step waits for, in words: "an agent with labels
/// arch=x86_64 that carries linux_system.run_shell".
pub fn wanted(sel: &TargetSpec, plugin: &str, method: &str, reserved: bool) -> String {
    let who = if sel.selectors() == 0 {
        "an agent".to_string()
    } else {
        format!("an agent with {}", sel.describe())
    };
    let free = if reserved {
        " that is free: its agents are in a group another run reserved"
    } else {
        ""
    };
    format!("{who} that carries {plugin}.{method}{free}")
}

/// Whole seconds, as a countdown shows them: `12 s`.
pub fn seconds(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs())
}

/// What registered agents offer for the kind of selector given, so a refusal
/// can say what would have matched: `labels arch=arm64, os=linux`.
pub fn known_for(sel: &TargetSpec, agents: &[AgentView]) -> String {
    fn list(what: &str, items: BTreeSet<String>) -> String {
        const MAX: usize = 20;
        if items.is_empty() {
            return format!("no {what}");
        }
        let more = items.len().saturating_sub(MAX);
        let mut s = items.into_iter().take(MAX).collect::<Vec<_>>().join(", ");
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        format!("{what} {s}")
    }
    let records = agents.iter().map(|a| &a.record);
    if sel.labels.is_some() {
        list(
            "labels",
            records
                .flat_map(|r| r.profile.labels.iter().map(|(k, v)| format!("{k}={v}")))
                .collect(),
        )
    } else if sel.group.is_some() {
        list(
            "groups",
            records.flat_map(|r| r.profile.groups.clone()).collect(),
        )
    } else if sel.host.is_some() {
        list("hosts", records.map(|r| r.profile.host.clone()).collect())
    } else {
        list("names", records.map(|r| r.profile.name.clone()).collect())
    }
}
