//! Which agents a step may run on: selectors, plugin capability, liveness,
//! and group reservations held by other runs.

use std::collections::{BTreeMap, BTreeSet};

use testbed_core::keys;
use testbed_core::plan::TargetSpec;
use testbed_core::run::GroupLock;
use testbed_store::DynStore;
use uuid::Uuid;

use crate::dispatch::AgentView;
use crate::records::{self, RecordError};

/// Does the agent match the selector?
pub fn matches(a: &AgentView, sel: &TargetSpec) -> bool {
    let r = &a.record;
    if let Some(h) = &sel.host {
        if &r.host != h {
            return false;
        }
    }
    if let Some(id) = &sel.agent {
        let by_id = id.parse::<u64>().is_ok_and(|n| n == r.id);
        if !(by_id || r.matches_host(id)) {
            return false;
        }
    }
    if let Some(g) = &sel.group {
        if !r.groups.contains(g) {
            return false;
        }
    }
    if let Some(labels) = &sel.labels {
        if !labels.iter().all(|(k, v)| r.labels.get(k) == Some(v)) {
            return false;
        }
    }
    true
}

/// Groups reserved by some run: group name → run id.
pub async fn locks(store: &DynStore) -> Result<BTreeMap<String, Uuid>, RecordError> {
    let mut out = BTreeMap::new();
    let all: Vec<(String, GroupLock)> =
        records::list(store, keys::GROUPS, |k| k.ends_with("/lock")).await?;
    for (key, lock) in all {
        if let Some(name) = key
            .strip_prefix(keys::GROUPS)
            .and_then(|k| k.strip_suffix("/lock"))
        {
            out.insert(name.to_string(), lock.run_id);
        }
    }
    Ok(out)
}

/// Why work waits for a group a run holds.
pub fn reserved_reason(group: &str, holder: &Uuid) -> String {
    format!("pending: group `{group}` is reserved by run {holder}")
}

/// Agents that belong to a group reserved by a run other than `run`, each
/// with why it takes no other work.
pub fn reservations(
    agents: &[AgentView],
    locks: &BTreeMap<String, Uuid>,
    run: Option<Uuid>,
) -> BTreeMap<Uuid, String> {
    agents
        .iter()
        .filter_map(|a| {
            a.record.groups.iter().find_map(|g| {
                locks
                    .get(g)
                    .filter(|holder| Some(**holder) != run)
                    .map(|holder| (a.record.uuid, reserved_reason(g, holder)))
            })
        })
        .collect()
}

/// The agents of [`reservations`] alone.
pub fn reserved_elsewhere(
    agents: &[AgentView],
    locks: &BTreeMap<String, Uuid>,
    run: Option<Uuid>,
) -> BTreeSet<Uuid> {
    reservations(agents, locks, run).into_keys().collect()
}

/// Live agents that match, carry `plugin.method`, and are not reserved by
/// another run.
pub fn eligible<'a>(
    agents: &'a [AgentView],
    sel: &TargetSpec,
    plugin: &str,
    method: &str,
    excluded: &BTreeSet<Uuid>,
) -> Vec<&'a AgentView> {
    agents
        .iter()
        .filter(|a| a.alive.is_some())
        .filter(|a| !excluded.contains(&a.record.uuid))
        .filter(|a| {
            a.record
                .plugin(plugin)
                .and_then(|p| p.method(method))
                .is_some()
        })
        .filter(|a| matches(a, sel))
        .collect()
}

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
                .flat_map(|r| r.labels.iter().map(|(k, v)| format!("{k}={v}")))
                .collect(),
        )
    } else if sel.group.is_some() {
        list("groups", records.flat_map(|r| r.groups.clone()).collect())
    } else if sel.host.is_some() {
        list("hosts", records.map(|r| r.host.clone()).collect())
    } else {
        list("names", records.map(|r| r.name.clone()).collect())
    }
}
