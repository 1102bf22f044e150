//! How a run is kept in the store: a run-level record at `/runs/{id}`
//! (plan, parameters, status — no step state), one record per step at
//! `/runs/{id}/steps/{step}`, and a summary at `/index/runs/{id}` for
//! listing. A step transition writes its step's record alone; the run-level
//! record and the summary change together, in one transaction, only when
//! the run's own state does (start, end, report, cancel).
//!
//! Records written before this layout (`v: 1`, every step inline in
//! `/runs/{id}`) stay readable: [`load`] assembles either. The controller
//! rewrites them into this layout once, at start ([`migrate`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use testbed_core::keys;
use testbed_core::run::{Run, StepState};
use testbed_store::{Compare, DynStore, TxnOp};
use uuid::Uuid;

use crate::records::{put_op, Pages, RecordError};
pub use testbed_api::runs::RunSummary;

/// The run-level record's schema version in this layout.
pub const RUN_V: u32 = 2;

/// etcd's default cap on the operations (and on the compares) of one
/// transaction is 128; this leaves room for the run-level record's two.
pub const TXN_OPS: usize = 120;

/// Writes that must land in the same transaction as a step's record: the
/// tasks (and their assignments) that the step's new state names, so the
/// record and what it names are stored together or not at all.
#[derive(Debug, Default)]
pub struct Along {
    pub compares: Vec<(String, Compare)>,
    pub ops: Vec<TxnOp>,
}

/// One step's record: its state, plus what names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: String,
    pub v: u32,
    pub run_id: Uuid,
    pub step: String,
    #[serde(flatten)]
    pub state: StepState,
}

impl StepRecord {
    pub const KIND: &'static str = "run_step";

    /// The put that writes step `step` of run `id` in `state`.
    fn put(id: Uuid, step: &str, state: &StepState) -> Result<TxnOp, RecordError> {
        let key = keys::run_step(&id, step);
        let rec = StepRecord {
            kind: StepRecord::KIND.into(),
            v: 1,
            run_id: id,
            step: step.to_string(),
            state: state.clone(),
        };
        put_op(key, &rec)
    }
}

/// A run as read from the store, with the revisions its writes compare on.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Every step filled in (a step with no record yet is pending).
    pub run: Run,
    pub run_rev: i64,
    /// Step id → `mod_revision` of its record (absent: not written yet).
    pub step_revs: HashMap<String, i64>,
    /// A `v: 1` record: its steps are inline in the run-level record.
    pub inline: bool,
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, RecordError> {
    serde_json::from_slice(bytes).map_err(|source| RecordError::Decode {
        key: key.to_string(),
        source,
    })
}

/// The run-level record as stored: the run without its steps.
fn run_level(run: &Run) -> Run {
    Run {
        v: RUN_V,
        steps: Default::default(),
        ..run.clone()
    }
}

/// Reads a run with all its steps, in either layout.
pub async fn load(store: &DynStore, id: &Uuid) -> Result<Option<Loaded>, RecordError> {
    let key = keys::run(id);
    let Some(kv) = store.get(&key).await? else {
        return Ok(None);
    };
    let mut run: Run = decode(&key, &kv.value)?;
    if run.v < RUN_V {
        return Ok(Some(Loaded {
            run,
            run_rev: kv.mod_revision,
            step_revs: HashMap::new(),
            inline: true,
        }));
    }
    let mut step_revs = HashMap::new();
    let prefix = keys::run_steps_prefix(id);
    let mut pages = Pages::new(store, &prefix, 500);
    while let Some(kvs) = pages.next().await? {
        for kv in &kvs {
            let rec: StepRecord = decode(&kv.key, &kv.value)?;
            step_revs.insert(rec.step.clone(), kv.mod_revision);
            run.steps.insert(rec.step, rec.state);
        }
    }
    // A step whose record is not written yet is pending; the API shows
    // every step of the plan, as the single-record layout did.
    for s in &run.spec.steps {
        run.steps.entry(s.id.clone()).or_default();
    }
    run.v = RUN_V;
    Ok(Some(Loaded {
        run,
        run_rev: kv.mod_revision,
        step_revs,
        inline: false,
    }))
}

fn compare(rev: Option<&i64>) -> Compare {
    match rev {
        Some(r) if *r > 0 => Compare::ModRevision(*r),
        _ => Compare::Absent,
    }
}

/// Writes the given steps, and the run-level record (with its summary) when
/// `run_changed`, each compared with the revision it was read at; a step's
/// [`Along`] (the tasks it starts) goes in the same transaction as its
/// record. Steps go first and the run-level record last, so a run is never
/// seen ended with a step still running. Many steps are split into
/// transactions of at most [`TXN_OPS`] operations, a step never across two
/// (a step whose writes exceed that alone is written alone; the engine
/// keeps its steps under it). Returns false when something changed
/// meanwhile (nothing of that transaction written: read again and redo).
pub async fn write(
    store: &DynStore,
    l: &mut Loaded,
    steps: &[String],
    run_changed: bool,
    mut along: HashMap<String, Along>,
) -> Result<bool, RecordError> {
    let id = l.run.id;
    // One unit per step: its record's compare and put, and what goes along.
    let mut units: Vec<(Option<String>, Along)> = Vec::new();
    for s in steps {
        let Some(state) = l.run.steps.get(s) else {
            continue;
        };
        let mut unit = Along {
            compares: vec![(keys::run_step(&id, s), compare(l.step_revs.get(s)))],
            ops: vec![StepRecord::put(id, s, state)?],
        };
        if let Some(a) = along.remove(s) {
            unit.compares.extend(a.compares);
            unit.ops.extend(a.ops);
        }
        units.push((Some(s.clone()), unit));
    }
    // Writes for a step not written (none, as the engine calls this) still
    // go, on their own.
    units.extend(along.into_values().map(|a| (None, a)));
    let mut chunks: Vec<Vec<(Option<String>, Along)>> = Vec::new();
    let (mut n_ops, mut n_cmp) = (0, 0);
    for u in units {
        let (o, c) = (u.1.ops.len(), u.1.compares.len());
        let fits = n_ops + o <= TXN_OPS && n_cmp + c <= TXN_OPS;
        match chunks.last_mut() {
            Some(last) if fits => last.push(u),
            _ => {
                chunks.push(vec![u]);
                (n_ops, n_cmp) = (0, 0);
            }
        }
        n_ops += o;
        n_cmp += c;
    }
    let n = chunks.len();
    let mut prepared = Vec::with_capacity(n);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let last = i + 1 == n;
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut written = Vec::new();
        for (step, unit) in chunk {
            written.extend(step);
            compares.extend(unit.compares);
            ops.extend(unit.ops);
        }
        if last && run_changed {
            add_run_level(l, &mut compares, &mut ops)?;
        }
        prepared.push((compares, ops, written));
    }
    // The steps' transactions are independent of one another and go
    // together (one group commit on the embedded store, pipelined on
    // etcd); the one with the run-level record goes after they all
    // committed.
    let tail = if run_changed { prepared.pop() } else { None };
    let results =
        futures_util::future::join_all(prepared.into_iter().map(
            |(compares, ops, written)| async move { (store.txn(&compares, ops).await, written) },
        ))
        .await;
    let mut refused = false;
    for (result, written) in results {
        match result? {
            Some(rev) => {
                for step in written {
                    l.step_revs.insert(step, rev);
                }
            }
            None => refused = true,
        }
    }
    if refused {
        return Ok(false);
    }
    if let Some((compares, ops, written)) = tail {
        let Some(rev) = store.txn(&compares, ops).await? else {
            return Ok(false);
        };
        for step in written {
            l.step_revs.insert(step, rev);
        }
        l.run_rev = rev;
    }
    if n == 0 && run_changed {
        let (mut compares, mut ops) = (Vec::new(), Vec::new());
        add_run_level(l, &mut compares, &mut ops)?;
        let Some(rev) = store.txn(&compares, ops).await? else {
            return Ok(false);
        };
        l.run_rev = rev;
    }
    Ok(true)
}

fn add_run_level(
    l: &Loaded,
    compares: &mut Vec<(String, Compare)>,
    ops: &mut Vec<TxnOp>,
) -> Result<(), RecordError> {
    let key = keys::run(&l.run.id);
    compares.push((key.clone(), compare(Some(&l.run_rev))));
    ops.push(put_op(key, &run_level(&l.run))?);
    let key = keys::run_index(&l.run.id);
    ops.push(put_op(key, &RunSummary::of(&l.run))?);
    Ok(())
}

/// Stores a new run: its step records (all pending), then its run-level
/// record and summary. A crash before the last write leaves step records
/// no run refers to, which nothing reads.
pub async fn create(store: &DynStore, run: &Run) -> Result<(), RecordError> {
    let mut l = Loaded {
        run: run.clone(),
        run_rev: 0,
        step_revs: HashMap::new(),
        inline: false,
    };
    let steps: Vec<String> = run.steps.keys().cloned().collect();
    if !write(store, &mut l, &steps, true, HashMap::new()).await? {
        return Err(RecordError::Contended {
            key: keys::run(&run.id),
        });
    }
    Ok(())
}

/// Changes run-level fields with compare-and-swap, keeping the summary in
/// step. `change` returns false to write nothing. Returns the run as it is
/// afterwards (run-level fields only; `steps` is empty for this layout).
pub async fn update<F>(
    store: &DynStore,
    id: &Uuid,
    mut change: F,
) -> Result<Option<Run>, RecordError>
where
    F: FnMut(&mut Run) -> bool,
{
    let key = keys::run(id);
    for _ in 0..16 {
        let Some(kv) = store.get(&key).await? else {
            return Ok(None);
        };
        let mut run: Run = decode(&key, &kv.value)?;
        if run.v < RUN_V {
            // Not migrated yet: the record holds its steps; keep them.
            let rev = kv.mod_revision;
            if !change(&mut run) {
                return Ok(Some(run));
            }
            let compares = vec![(key.clone(), Compare::ModRevision(rev))];
            let mut ops = vec![put_op(key.clone(), &run)?];
            let ikey = keys::run_index(id);
            ops.push(put_op(ikey, &RunSummary::of(&run))?);
            if store.txn(&compares, ops).await?.is_some() {
                return Ok(Some(run));
            }
            continue;
        }
        if !change(&mut run) {
            return Ok(Some(run));
        }
        let l = Loaded {
            run,
            run_rev: kv.mod_revision,
            step_revs: HashMap::new(),
            inline: false,
        };
        let (mut compares, mut ops) = (Vec::new(), Vec::new());
        add_run_level(&l, &mut compares, &mut ops)?;
        if store.txn(&compares, ops).await?.is_some() {
            return Ok(Some(l.run));
        }
    }
    Err(RecordError::Contended { key })
}

/// Rewrites a `v: 1` run (steps inline) into this layout: the step records
/// first, then the run-level record with compare-and-swap. A crash in
/// between leaves the old record in charge, and the next attempt rewrites
/// the same step records, so nothing is lost or doubled.
pub async fn split(store: &DynStore, l: &Loaded) -> Result<bool, RecordError> {
    let id = l.run.id;
    let steps: Vec<(String, StepState)> = l
        .run
        .steps
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for chunk in steps.chunks(TXN_OPS) {
        let ops = chunk
            .iter()
            .map(|(s, state)| StepRecord::put(id, s, state))
            .collect::<Result<Vec<_>, _>>()?;
        store.txn(&[], ops).await?;
    }
    let moved = Loaded {
        run: l.run.clone(),
        run_rev: l.run_rev,
        step_revs: HashMap::new(),
        inline: false,
    };
    let (mut compares, mut ops) = (Vec::new(), Vec::new());
    add_run_level(&moved, &mut compares, &mut ops)?;
    Ok(store.txn(&compares, ops).await?.is_some())
}

/// Deletes a run: its run-level record and summary together (compared with
/// `rev`), then its step records. A crash in between leaves step records
/// no one reads, never a listed run without its steps.
pub async fn delete(store: &DynStore, id: &Uuid, rev: i64) -> Result<bool, RecordError> {
    let ops = vec![
        TxnOp::Delete { key: keys::run(id) },
        TxnOp::Delete {
            key: keys::run_index(id),
        },
    ];
    if store
        .txn(&[(keys::run(id), Compare::ModRevision(rev))], ops)
        .await?
        .is_none()
    {
        return Ok(false);
    }
    let prefix = keys::run_steps_prefix(id);
    loop {
        let page = store.range(&prefix, None, TXN_OPS).await?;
        if page.kvs.is_empty() {
            break;
        }
        let ops = page
            .kvs
            .iter()
            .map(|kv| TxnOp::Delete {
                key: kv.key.clone(),
            })
            .collect();
        store.txn(&[], ops).await?;
        if !page.more {
            break;
        }
    }
    Ok(true)
}

/// Every run's summary, from the index alone.
pub async fn summaries(store: &DynStore) -> Result<Vec<RunSummary>, RecordError> {
    Ok(
        crate::records::list::<RunSummary>(store, keys::RUN_INDEX, |_| true)
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect(),
    )
}

/// Brings every run record written before this layout into it, once: step
/// records split out of active runs' records, and a summary for every run.
/// Finished runs keep their inline steps (they never change again, and
/// [`load`] reads them); they only gain a summary. Idempotent, and marked
/// done in `/config/run_layout` so later starts skip the scan.
pub async fn migrate(store: &DynStore) -> Result<usize, RecordError> {
    if store.get(keys::RUN_LAYOUT).await?.is_some() {
        return Ok(0);
    }
    let mut moved = 0;
    let mut pages = Pages::new(store, keys::RUNS, 500);
    while let Some(kvs) = pages.next().await? {
        for kv in &kvs {
            let Some(id) = keys::parse_run(&kv.key) else {
                continue;
            };
            let run: Run = match decode(&kv.key, &kv.value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("run layout: skipping {}: {e}", kv.key);
                    continue;
                }
            };
            if run.v >= RUN_V {
                continue;
            }
            if run.status.is_terminal() {
                let ikey = keys::run_index(&id);
                store
                    .txn(
                        &[(ikey.clone(), Compare::Absent)],
                        vec![put_op(ikey, &RunSummary::of(&run))?],
                    )
                    .await?;
            } else {
                let l = Loaded {
                    run,
                    run_rev: kv.mod_revision,
                    step_revs: HashMap::new(),
                    inline: true,
                };
                // Lost a race with a change: the engine splits it when it
                // next reconciles the run.
                let _ = split(store, &l).await?;
            }
            moved += 1;
        }
    }
    store
        .put(keys::RUN_LAYOUT, RUN_V.to_string().into_bytes(), None)
        .await?;
    Ok(moved)
}
