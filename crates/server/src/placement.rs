//! Where work runs: which agents may take a task (eligibility) and which of
//! them does (choice). One-off tasks ([`crate::dispatch::submit`]), plan
//! steps and their retries ([`crate::engine`]) and load tests
//! ([`crate::performance`]) all place work here, so they agree on what
//! "eligible" and "least loaded" mean.
//!
//! Eligibility (agent records, their liveness keys, group reservations) of a
//! one-off task is decided on this replica's [`FleetView`], a copy of those
//! keys kept by a store watch, so placing a task reads nothing; the create
//! transaction re-checks in the store what an unheld placement relied on
//! ([`guard`]: the agent is live, none of its groups is reserved), and a
//! decision the view cannot make or the store refuses is made again from a
//! fresh read ([`Fleet::read`]). Plan steps are placed on the same view
//! (the engine guards its tasks alike, a group reserved by the step's own
//! run allowed); load tests still read the store once per decision. Load
//! is not read either: counting every
//! candidate's `/assign/{agent}/…` keys per decision cost one store read per
//! candidate. Each replica keeps the set of outstanding assignments per agent
//! in memory ([`Load`]) instead, fed by the assignment watch every replica
//! already runs (so it sees work placed by the other replicas), re-listed
//! from the store when that watch starts or loses history, and updated at
//! once for the work this replica places itself, so a burst of submissions
//! spreads before the watch catches up.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;

use testbed_core::agent::{AgentLiveness, AgentRecord};
use testbed_core::keys;
use testbed_core::plan::TargetSpec;
use testbed_core::run::GroupLock;
use testbed_store::{Compare, DynStore, Event, EventKind, KeyValue};
use uuid::Uuid;

use crate::records::{self, RecordError};
use crate::state::AppState;

/// An agent registration with its liveness, if live.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub record: AgentRecord,
    pub alive: Option<AgentLiveness>,
    /// The `mod_revision` of the agent record as read (0: unknown), which
    /// [`guard`] checks: the record changes only when the agent registers
    /// again or its groups are edited.
    pub revision: i64,
}

impl AgentView {
    fn carries(&self, plugin: &str, method: &str) -> bool {
        self.record
            .plugin(plugin)
            .and_then(|p| p.method(method))
            .is_some()
    }

    fn running(&self) -> u32 {
        self.alive.as_ref().map_or(0, |l| l.running)
    }
}

/// Every registered agent, with liveness, from one pass over `/agents/`.
pub async fn agents(store: &DynStore) -> Result<Vec<AgentView>, RecordError> {
    let mut records: BTreeMap<Uuid, (AgentRecord, i64)> = BTreeMap::new();
    let mut alive: BTreeMap<Uuid, AgentLiveness> = BTreeMap::new();
    let mut pages = records::Pages::new(store, keys::AGENTS, 500);
    while let Some(kvs) = pages.next().await? {
        for kv in kvs {
            if let Some(uuid) = keys::parse_agent_alive(&kv.key) {
                if let Ok(l) = serde_json::from_slice(&kv.value) {
                    alive.insert(uuid, l);
                }
            } else if let Some(uuid) = keys::parse_agent(&kv.key) {
                let record = records::decode(&kv.key, &kv.value)?;
                records.insert(uuid, (record, kv.mod_revision));
            }
        }
    }
    Ok(paired(records, alive))
}

/// Agent records with their liveness, in registration order (then uuid).
fn paired(
    records: BTreeMap<Uuid, (AgentRecord, i64)>,
    mut alive: BTreeMap<Uuid, AgentLiveness>,
) -> Vec<AgentView> {
    let mut out: Vec<AgentView> = records
        .into_iter()
        .map(|(uuid, (record, revision))| AgentView {
            alive: alive.remove(&uuid),
            record,
            revision,
        })
        .collect();
    out.sort_by_key(|a| a.record.id);
    out
}

/// The uuids of live agents.
pub async fn live_agents(store: &DynStore) -> Result<BTreeSet<Uuid>, RecordError> {
    let mut out = BTreeSet::new();
    let mut pages = crate::records::Pages::new(store, keys::AGENTS, 1000);
    while let Some(kvs) = pages.next().await? {
        out.extend(kvs.iter().filter_map(|kv| keys::parse_agent_alive(&kv.key)));
    }
    Ok(out)
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
            a.record.profile.groups.iter().find_map(|g| {
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

/// Does the agent match the selector (host, name/id/uuid, group, labels)?
pub fn matches(a: &AgentView, sel: &TargetSpec) -> bool {
    let r = &a.record;
    if let Some(h) = &sel.host {
        if &r.profile.host != h {
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
        if !r.profile.groups.contains(g) {
            return false;
        }
    }
    if let Some(labels) = &sel.labels {
        if !labels
            .iter()
            .all(|(k, v)| r.profile.labels.get(k) == Some(v))
        {
            return false;
        }
    }
    true
}

/// Live agents that match, carry `plugin.method`, and are not in
/// `excluded` (reserved by another run).
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
        .filter(|a| a.carries(plugin, method))
        .filter(|a| matches(a, sel))
        .collect()
}

/// What placement needs to know about the fleet for one decision.
#[derive(Default)]
pub struct Fleet {
    pub agents: Vec<AgentView>,
    pub locks: BTreeMap<String, Uuid>,
}

impl Fleet {
    /// The two reads go out together: on etcd each is a round trip, and
    /// waiting for one before sending the other added a round trip to every
    /// placement. (They were never one snapshot, so nothing is lost.)
    pub async fn read(store: &DynStore) -> Result<Fleet, RecordError> {
        let (agents, locks) = tokio::try_join!(agents(store), locks(store))?;
        Ok(Fleet { agents, locks })
    }

    /// Agents reserved by a run other than `run`, with why.
    pub fn reservations(&self, run: Option<Uuid>) -> BTreeMap<Uuid, String> {
        reservations(&self.agents, &self.locks, run)
    }
}

/// What an unheld placement on `agent` relies on, as compares for the
/// transaction that writes the work: the agent is live, its record (its
/// groups, its plugins) is the one the decision read, and none of its
/// groups is reserved. A decision made on a view that was behind the store
/// (an agent that just died or joined a group, a group a run on any replica
/// just reserved) then writes nothing, and is made again from a fresh
/// read, so no replica puts other work on a reserved group however late
/// its view is.
pub fn guard(agent: &AgentView) -> Vec<(String, Compare)> {
    let record = &agent.record;
    let mut out = Vec::with_capacity(2 + record.profile.groups.len());
    out.push((keys::agent_alive(&record.uuid), Compare::Present));
    if agent.revision > 0 {
        out.push((
            keys::agent(&record.uuid),
            Compare::ModRevision(agent.revision),
        ));
    }
    for g in &record.profile.groups {
        out.push((keys::group_lock(g), Compare::Absent));
    }
    out
}

/// The group of a `/groups/{name}/lock` key.
fn lock_group(key: &str) -> Option<&str> {
    key.strip_prefix(keys::GROUPS)?.strip_suffix("/lock")
}

/// This replica's copy of what placement reads from the store (agent
/// records, their liveness, group reservations), kept by [`follow`]: a
/// listing, then a watch of `/agents/` and `/groups/`. Placing a one-off task
/// on it reads nothing from the store; it may be behind the store by the
/// watch's delay, which [`guard`] makes safe.
#[derive(Default)]
pub struct FleetView {
    state: Mutex<ViewState>,
}

#[derive(Default)]
struct ViewState {
    /// The view is built and its watch runs. While not (at start, after a
    /// broken watch) placement reads the store instead.
    following: bool,
    fleet: Fleet,
    /// Where each agent is in `fleet.agents` (kept in registration order).
    index: HashMap<Uuid, usize>,
    /// Liveness records whose agent record is not known (yet).
    orphans: HashMap<Uuid, AgentLiveness>,
}

impl ViewState {
    fn reindex(&mut self, from: usize) {
        for (i, a) in self.fleet.agents.iter().enumerate().skip(from) {
            self.index.insert(a.record.uuid, i);
        }
    }

    fn remove_record(&mut self, uuid: &Uuid) {
        if let Some(i) = self.index.remove(uuid) {
            let gone = self.fleet.agents.remove(i);
            if let Some(alive) = gone.alive {
                self.orphans.insert(*uuid, alive);
            }
            self.reindex(i);
        }
    }

    fn set_record(&mut self, record: AgentRecord, revision: i64) {
        let uuid = record.uuid;
        if let Some(&i) = self.index.get(&uuid) {
            if self.fleet.agents[i].record.id == record.id {
                self.fleet.agents[i].record = record;
                self.fleet.agents[i].revision = revision;
                return;
            }
            self.remove_record(&uuid);
        }
        let alive = self.orphans.remove(&uuid);
        let at = self
            .fleet
            .agents
            .partition_point(|a| (a.record.id, a.record.uuid) < (record.id, uuid));
        self.fleet.agents.insert(
            at,
            AgentView {
                record,
                alive,
                revision,
            },
        );
        self.reindex(at);
    }

    fn set_alive(&mut self, uuid: Uuid, alive: Option<AgentLiveness>) {
        match (self.index.get(&uuid), alive) {
            (Some(&i), alive) => self.fleet.agents[i].alive = alive,
            (None, Some(alive)) => {
                self.orphans.insert(uuid, alive);
            }
            (None, None) => {
                self.orphans.remove(&uuid);
            }
        }
    }

    fn apply(&mut self, kind: EventKind, kv: &KeyValue) {
        let (key, value) = (kv.key.as_str(), kv.value.as_slice());
        let put = kind == EventKind::Put;
        if let Some(uuid) = keys::parse_agent_alive(key) {
            // Unreadable liveness counts as not live, as in `agents`.
            let alive = if put {
                serde_json::from_slice(value).ok()
            } else {
                None
            };
            self.set_alive(uuid, alive);
        } else if let Some(uuid) = keys::parse_agent(key) {
            match put.then(|| serde_json::from_slice::<AgentRecord>(value)) {
                Some(Ok(record)) if record.uuid == uuid => self.set_record(record, kv.mod_revision),
                Some(Ok(_)) | Some(Err(_)) => {
                    // `agents` refuses to place anything then; the view
                    // leaves the agent out (nothing is placed on it).
                    tracing::warn!(%key, "fleet view: unreadable agent record");
                    self.remove_record(&uuid);
                }
                None => self.remove_record(&uuid),
            }
        } else if let Some(group) = lock_group(key) {
            match put.then(|| serde_json::from_slice::<GroupLock>(value)) {
                Some(Ok(lock)) => {
                    self.fleet.locks.insert(group.to_string(), lock.run_id);
                }
                // An unreadable lock: the guard's compare on the key (it
                // must be absent) sends any placement on the group's agents
                // to a store read, which reports it.
                Some(Err(_)) | None => {
                    self.fleet.locks.remove(group);
                }
            }
        }
    }
}

impl FleetView {
    fn lock(&self) -> std::sync::MutexGuard<'_, ViewState> {
        // Every update leaves the state whole, so a panic elsewhere cannot
        // have torn it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the view, or `None` while the view does not follow the
    /// store. `f` runs under the view's lock: keep it short, no waiting.
    pub fn with<R>(&self, f: impl FnOnce(&Fleet) -> R) -> Option<R> {
        let state = self.lock();
        state.following.then(|| f(&state.fleet))
    }

    /// Replaces the view with a listing of `/agents/` and the group locks;
    /// the view follows the store from now on.
    fn reset(&self, agents: Vec<KeyValue>, locks: Vec<KeyValue>) {
        let mut records = BTreeMap::new();
        let mut alive = BTreeMap::new();
        for kv in agents {
            if let Some(uuid) = keys::parse_agent_alive(&kv.key) {
                if let Ok(l) = serde_json::from_slice::<AgentLiveness>(&kv.value) {
                    alive.insert(uuid, l);
                }
            } else if let Some(uuid) = keys::parse_agent(&kv.key) {
                match serde_json::from_slice::<AgentRecord>(&kv.value) {
                    Ok(r) if r.uuid == uuid => {
                        records.insert(uuid, (r, kv.mod_revision));
                    }
                    _ => tracing::warn!(key = %kv.key, "fleet view: unreadable agent record"),
                }
            }
        }
        let mut fresh = ViewState {
            following: true,
            orphans: alive
                .iter()
                .filter(|(uuid, _)| !records.contains_key(uuid))
                .map(|(uuid, l)| (*uuid, l.clone()))
                .collect(),
            fleet: Fleet {
                agents: paired(records, alive),
                locks: BTreeMap::new(),
            },
            index: HashMap::new(),
        };
        fresh.reindex(0);
        for kv in locks {
            fresh.apply(EventKind::Put, &kv);
        }
        *self.lock() = fresh;
    }

    /// Applies one change from the watch.
    fn apply(&self, ev: &Event) {
        self.lock().apply(ev.kind, &ev.kv);
    }

    /// The watch broke: placement reads the store until the view is rebuilt.
    fn stop_following(&self) {
        self.lock().following = false;
    }
}

/// Keeps `state.sessions.fleet` in step with the store until shutdown:
/// lists, then watches from the revision read before the listing (replaying
/// a change the listing already holds converges, as each event sets or
/// removes one key's value); on any error the view stops being used, and is
/// rebuilt after a back-off.
pub async fn follow(state: AppState) {
    let view = &state.sessions.fleet;
    let mut wait = Duration::from_millis(100);
    while !state.shutdown.is_cancelled() {
        match follow_once(&state, view).await {
            Ok(()) => return,
            Err(e) => {
                view.stop_following();
                tracing::warn!("fleet view: {e}; placement reads the store meanwhile");
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Why the fleet view stopped following the store.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Store(#[from] testbed_store::StoreError),
    #[error("the store's watch ended")]
    Ended,
}

async fn follow_once(state: &AppState, view: &FleetView) -> Result<(), FollowError> {
    let from = state.store.revision().await? + 1;
    let mut agents = Vec::new();
    let mut pages = records::Pages::new(&state.store, keys::AGENTS, 1000);
    while let Some(kvs) = pages.next().await? {
        agents.extend(kvs);
    }
    let mut locks = Vec::new();
    let mut pages = records::Pages::new(&state.store, keys::GROUPS, 1000);
    while let Some(kvs) = pages.next().await? {
        locks.extend(kvs.into_iter().filter(|kv| lock_group(&kv.key).is_some()));
    }
    let mut agent_events = state.store.watch(keys::AGENTS, from).await?;
    let mut group_events = state.store.watch(keys::GROUPS, from).await?;
    view.reset(agents, locks);
    loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(()),
            ev = agent_events.next() => ev,
            ev = group_events.next() => ev,
        };
        match next {
            Some(Ok(ev)) => view.apply(&ev),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(FollowError::Ended),
        }
    }
}

/// Why a one-off task has no agent, naming the request field at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Every agent matching the host is registered but offline.
    Offline { host: String },
    /// The field (`/plugin`, `/method`, `/host`) asks for what no live agent
    /// offers; the message says what they do offer.
    Field {
        field: &'static str,
        message: String,
    },
}

/// The agents a one-off task (`plugin.method` on `host`: a host, an agent
/// name or uuid) may go to. Free agents come first: the result is the free
/// ones when there are any, else the reserved ones, with `held` set, and
/// the task waits for a reservation to end.
pub struct Candidates<'a> {
    pub agents: Vec<&'a AgentView>,
    pub held: bool,
}

/// The agents of `from` that `keep` keeps: each placement stage narrows the
/// one before it.
fn narrow<'a>(from: &[&'a AgentView], keep: impl Fn(&AgentView) -> bool) -> Vec<&'a AgentView> {
    from.iter().copied().filter(|a| keep(a)).collect()
}

pub fn for_request<'a>(
    fleet: &'a Fleet,
    plugin: &str,
    method: &str,
    host: &str,
) -> Result<Candidates<'a>, Refusal> {
    fn list(items: impl IntoIterator<Item = String>) -> String {
        let v: BTreeSet<String> = items.into_iter().collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.into_iter().collect::<Vec<_>>().join(", ")
        }
    }
    let all = &fleet.agents;
    let live: Vec<&AgentView> = all.iter().filter(|a| a.alive.is_some()).collect();
    let host_is_live = live.iter().any(|a| a.record.matches_host(host));
    if !host_is_live
        && all
            .iter()
            .any(|a| a.alive.is_none() && a.record.matches_host(host))
    {
        return Err(Refusal::Offline { host: host.into() });
    }
    let carrying = narrow(&live, |a| a.record.plugin(plugin).is_some());
    if carrying.is_empty() {
        return Err(Refusal::Field {
            field: "/plugin",
            message: format!(
                "unknown plugin `{plugin}`; live agents carry: {}",
                list(
                    live.iter().flat_map(|a| a
                        .record
                        .profile
                        .plugins
                        .iter()
                        .map(|p| p.name.clone()))
                )
            ),
        });
    }
    let with_method = narrow(&carrying, |a| a.carries(plugin, method));
    if with_method.is_empty() {
        return Err(Refusal::Field {
            field: "/method",
            message: format!(
                "plugin `{plugin}` has no method `{method}`; it has: {}",
                list(carrying.iter().flat_map(|a| {
                    a.record
                        .plugin(plugin)
                        .map(|p| p.methods.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
                        .unwrap_or_default()
                }))
            ),
        });
    }
    let matching = narrow(&with_method, |a| a.record.matches_host(host));
    if matching.is_empty() {
        let message = if host_is_live {
            format!(
                "no agent matching host `{host}` carries {plugin}.{method}; agents that do: {}",
                list(with_method.iter().map(|a| a.record.profile.host.clone()))
            )
        } else {
            format!(
                "no live agent matches host `{host}`; live hosts: {}",
                list(live.iter().map(|a| a.record.profile.host.clone()))
            )
        };
        return Err(Refusal::Field {
            field: "/host",
            message,
        });
    }
    let reserved = fleet.reservations(None);
    let free = narrow(&matching, |a| !reserved.contains_key(&a.record.uuid));
    Ok(if free.is_empty() {
        Candidates {
            agents: matching,
            held: true,
        }
    } else {
        Candidates {
            agents: free,
            held: false,
        }
    })
}

/// Outstanding assignments per agent, as this replica knows them (see the
/// module documentation for how it stays in step with the store).
#[derive(Default)]
pub struct Load {
    by_agent: Mutex<HashMap<Uuid, HashSet<Uuid>>>,
}

impl Load {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashSet<Uuid>>> {
        // Every operation leaves the map whole, so a panic elsewhere
        // cannot have torn it.
        self.by_agent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `task` is assigned to `agent` (idempotent).
    pub fn assigned(&self, agent: Uuid, task: Uuid) {
        self.lock().entry(agent).or_default().insert(task);
    }

    /// `task` no longer occupies `agent` (idempotent).
    pub fn released(&self, agent: Uuid, task: Uuid) {
        let mut map = self.lock();
        if let Some(set) = map.get_mut(&agent) {
            set.remove(&task);
            if set.is_empty() {
                map.remove(&agent);
            }
        }
    }

    /// Replaces everything known with a fresh listing of `/assign/`.
    pub fn reset(&self, assignments: impl IntoIterator<Item = (Uuid, Uuid)>) {
        let mut fresh: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
        for (agent, task) in assignments {
            fresh.entry(agent).or_default().insert(task);
        }
        *self.lock() = fresh;
    }

    pub fn outstanding(&self, agent: &Uuid) -> usize {
        self.lock().get(agent).map_or(0, |s| s.len())
    }

    /// The candidates ordered least loaded first: outstanding assignments,
    /// then what the agent last said it runs, then registration order.
    pub fn ranked<'a>(&self, candidates: &[&'a AgentView]) -> Vec<&'a AgentView> {
        let map = self.lock();
        let mut ranked: Vec<(usize, u32, u64, &'a AgentView)> = candidates
            .iter()
            .map(|a| {
                let n = map.get(&a.record.uuid).map_or(0, |s| s.len());
                (n, a.running(), a.record.id, *a)
            })
            .collect();
        ranked.sort_by_key(|(n, running, id, _)| (*n, *running, *id));
        ranked.into_iter().map(|(_, _, _, a)| a).collect()
    }

    /// The least loaded candidate; `None` only when there is none.
    pub fn least_loaded<'a>(&self, candidates: &[&'a AgentView]) -> Option<&'a AgentView> {
        self.ranked(candidates).into_iter().next()
    }

    /// `n` distinct agents, least loaded first (for a load test's parts);
    /// fewer when fewer are eligible.
    pub fn pick<'a>(&self, candidates: &[&'a AgentView], n: usize) -> Vec<&'a AgentView> {
        let mut out = self.ranked(candidates);
        out.truncate(n);
        out
    }

    /// Where attempt n+1 of a step instance runs. A failed attempt is
    /// retried on the same agent while it lives; a lost one on the least
    /// loaded other eligible agent, or on the same one if it came back
    /// (restarted) and no other qualifies — its lost attempt died with it,
    /// so nothing overlaps.
    pub fn retry<'a>(
        &self,
        agents: &'a [AgentView],
        eligible: &[&'a AgentView],
        previous: Uuid,
        lost: bool,
    ) -> Option<&'a AgentView> {
        if !lost {
            if let Some(same) = agents
                .iter()
                .find(|a| a.record.uuid == previous && a.alive.is_some())
            {
                return Some(same);
            }
        }
        let others = narrow(eligible, |a| a.record.uuid != previous);
        self.least_loaded(&others)
            .or_else(|| eligible.iter().copied().find(|a| a.record.uuid == previous))
    }
}

/// `n` agents for the parts of a load test: live, carrying `load.run`,
/// matching `sel`, not reserved by a run, least loaded first. Fewer than `n`
/// when fewer qualify (the caller says how many it found).
pub async fn load_agents(
    store: &DynStore,
    load: &Load,
    sel: &TargetSpec,
    n: usize,
) -> Result<Vec<AgentRecord>, RecordError> {
    let fleet = Fleet::read(store).await?;
    let reserved = reserved_elsewhere(&fleet.agents, &fleet.locks, None);
    let eligible = eligible(&fleet.agents, sel, "load", "run", &reserved);
    Ok(load
        .pick(&eligible, n)
        .into_iter()
        .map(|a| a.record.clone())
        .collect())
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod view_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use testbed_core::agent::AgentProfile;

    fn agent(id: u64, running: u32) -> AgentView {
        let now = testbed_core::now();
        AgentView {
            record: AgentRecord {
                kind: AgentRecord::KIND.into(),
                v: 1,
                uuid: Uuid::from_u128(u128::from(id)),
                id,
                profile: AgentProfile {
                    name: format!("a{id}"),
                    host: "h".into(),
                    labels: Default::default(),
                    groups: Vec::new(),
                    plugins: Vec::new(),
                    capacity: 1,
                    version: "0".into(),
                    root: false,
                    run_as: None,
                },
                registered_at: now,
                last_seen_at: now,
            },
            revision: 0,
            alive: Some(AgentLiveness {
                kind: AgentLiveness::KIND.into(),
                v: 1,
                replica: "r".into(),
                connected_at: now,
                heartbeat_at: now,
                running,
                metrics: Default::default(),
            }),
        }
    }

    #[test]
    fn the_least_loaded_agent_is_chosen_and_load_follows_assignments() {
        let agents = [agent(1, 0), agent(2, 0), agent(3, 0)];
        let refs: Vec<&AgentView> = agents.iter().collect();
        let load = Load::default();
        let uuid = |i: usize| agents[i].record.uuid;
        // Ties go to the earliest registered.
        assert_eq!(load.least_loaded(&refs).map(|a| a.record.id), Some(1));
        load.assigned(uuid(0), Uuid::from_u128(100));
        load.assigned(uuid(0), Uuid::from_u128(100));
        load.assigned(uuid(1), Uuid::from_u128(101));
        assert_eq!(load.outstanding(&uuid(0)), 1, "assigning twice counts once");
        assert_eq!(load.least_loaded(&refs).map(|a| a.record.id), Some(3));
        let picked: Vec<u64> = load.pick(&refs, 2).iter().map(|a| a.record.id).collect();
        assert_eq!(picked, vec![3, 1]);
        load.released(uuid(0), Uuid::from_u128(100));
        assert_eq!(load.outstanding(&uuid(0)), 0);
        load.reset([(uuid(2), Uuid::from_u128(7))]);
        assert_eq!(load.outstanding(&uuid(1)), 0, "reset forgets what is gone");
        assert_eq!(load.least_loaded(&refs).map(|a| a.record.id), Some(1));
    }

    #[test]
    fn a_lost_attempt_is_retried_on_the_least_loaded_other_agent() {
        let agents = [agent(1, 0), agent(2, 0), agent(3, 0)];
        let refs: Vec<&AgentView> = agents.iter().collect();
        let load = Load::default();
        let (a1, a2) = (agents[0].record.uuid, agents[1].record.uuid);
        load.assigned(a2, Uuid::from_u128(100));
        let lost = load.retry(&agents, &refs, a1, true).map(|a| a.record.id);
        assert_eq!(
            lost,
            Some(3),
            "not the first other candidate, the least loaded"
        );
        let failed = load.retry(&agents, &refs, a1, false).map(|a| a.record.id);
        assert_eq!(failed, Some(1), "a failed attempt stays on its live agent");
        let only_self = load
            .retry(&agents, &refs[..1], a1, true)
            .map(|a| a.record.id);
        assert_eq!(only_self, Some(1));
    }
}
