//! The embedded backend: the whole store in one redb file.
//!
//! `testbed up` must work with nothing installed, so this backend re-creates
//! the parts of etcd the rest of Testbed relies on — revisions, an event
//! history for gap-free watches, and leases — on top of redb's ACID
//! transactions. Every write is one redb write transaction, committed with
//! redb's default (immediate, fsync'd) durability, so a process killed at any
//! moment loses no write that was acknowledged.
//!
//! Layout (all in one file):
//!
//! | table        | key              | value                                   |
//! | ------------ | ---------------- | --------------------------------------- |
//! | `kv`         | key              | record: revisions, version, lease, value |
//! | `meta`       | name             | current revision, oldest kept event, next lease id |
//! | `events`     | revision         | the event written at that revision      |
//! | `leases`     | lease id         | TTL in milliseconds                     |
//! | `lease_keys` | lease id (multi) | keys attached to the lease              |
//!
//! Lease *deadlines* are deliberately not persisted: like etcd after a leader
//! change, a restarted store gives every lease a full TTL again, so agents are
//! not declared dead just because the server was down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    Database, DatabaseError, MultimapTableDefinition, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::types::validate_key;
use crate::{
    Compare, Event, EventKind, KeyValue, LeaseId, Page, Result, Store, StoreError, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const EVENTS: TableDefinition<i64, &[u8]> = TableDefinition::new("events");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const LEASE_KEYS: MultimapTableDefinition<i64, &str> = MultimapTableDefinition::new("lease_keys");

const META_REVISION: &str = "revision";
const META_OLDEST_EVENT: &str = "oldest_event";
const META_NEXT_LEASE: &str = "next_lease";

/// How often expired leases are looked for. Leases are liveness signals with
/// TTLs of seconds, so 100 ms of slack is invisible to users while keeping
/// the idle cost negligible.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// Events read from the history table per blocking call while a watcher
/// catches up; bounds the memory one watcher can pin.
const CATCH_UP_BATCH: usize = 512;

/// Events buffered between a watcher's task and its consumer.
const WATCH_CHANNEL: usize = 256;

/// How long `open` waits for a handle of the same file in this process to
/// finish closing (see [`RedbStore::open`]).
const ALREADY_OPEN_GRACE: Duration = Duration::from_secs(1);

/// Tuning knobs of [`RedbStore`]; the defaults are what Testbed uses.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// How many of the newest revisions keep their event in the history
    /// table. Watchers further behind than this get [`StoreError::Compacted`]
    /// and must re-list, exactly as with etcd's compaction; without a bound
    /// the file would grow with every write forever.
    pub history_revisions: i64,
    /// Capacity of the in-process broadcast of committed events. A watcher
    /// that falls further behind than this is not lost: it re-reads the
    /// history table, so this only trades memory for fewer history reads.
    pub watch_buffer: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            history_revisions: 100_000,
            watch_buffer: 4096,
        }
    }
}

/// The embedded [`Store`] backend.
///
/// Needs a tokio runtime (with timers enabled) for its async methods, as
/// every store call runs its redb work on the blocking pool. `open` itself is
/// synchronous and may be called outside a runtime: the lease reaper then
/// starts on the first store call made inside one.
pub struct RedbStore {
    inner: Arc<Inner>,
    clock: Arc<LeaseClock>,
    reaper_started: AtomicBool,
}

struct Inner {
    db: Database,
    path: PathBuf,
    history: i64,
    /// Compaction runs only once this many events are beyond the history
    /// bound, so its cost is amortised over many writes instead of paid on
    /// every one.
    compact_batch: i64,
    /// Held from `begin_write` until the committed events are broadcast, so
    /// the broadcast carries events in revision order even with concurrent
    /// writers (redb serialises write transactions anyway, so this costs no
    /// concurrency).
    write_lock: Mutex<()>,
    events: broadcast::Sender<Event>,
}

/// In-memory lease deadlines, shared with the reaper task. Kept outside
/// [`Inner`] so the reaper can check deadlines every tick without holding a
/// strong reference to the database, which would keep the file open (and
/// locked) after the store is dropped.
#[derive(Default)]
struct LeaseClock {
    deadlines: Mutex<HashMap<LeaseId, Deadline>>,
}

#[derive(Clone, Copy)]
struct Deadline {
    ttl: Duration,
    at: Instant,
}

impl Deadline {
    /// A TTL so large that `now + ttl` overflows `Instant` means "never"
    /// in practice; a century stands in for it rather than panicking.
    fn after(now: Instant, ttl: Duration) -> Self {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let at = now
            .checked_add(ttl)
            .or_else(|| now.checked_add(CENTURY))
            .unwrap_or(now);
        Deadline { ttl, at }
    }
}

impl LeaseClock {
    fn lock(&self) -> MutexGuard<'_, HashMap<LeaseId, Deadline>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single map operation), so a poisoned
        // lock is safe to keep using.
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_live(&self, lease: LeaseId, now: Instant) -> bool {
        self.lock().get(&lease).is_some_and(|d| d.at > now)
    }

    /// Removes and returns the leases past their deadline. Removing them
    /// here, before their keys are deleted, makes a racing `keep_alive` fail
    /// instead of "reviving" a lease whose keys are about to go.
    fn take_expired(&self, now: Instant) -> Vec<LeaseId> {
        let mut map = self.lock();
        let expired: Vec<LeaseId> = map
            .iter()
            .filter(|(_, d)| d.at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            map.remove(id);
        }
        expired
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store file at `path`, creating missing
    /// parent directories.
    ///
    /// redb locks the file, so a second open of the same file fails with
    /// [`StoreError::Embedded`] naming the path. Because background tasks of
    /// a just-dropped handle in this process may hold the file for a few more
    /// milliseconds, an "already open" result is retried for up to a second
    /// before it is reported.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RedbOptions::default())
    }

    /// [`RedbStore::open`] with explicit [`RedbOptions`].
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Embedded(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let db = open_database(&path)?;
        let leases = init_tables(&db).map_err(|e| in_file(&path, e))?;

        let now = Instant::now();
        let clock = Arc::new(LeaseClock::default());
        {
            let mut map = clock.lock();
            for (id, ttl_ms) in leases {
                map.insert(id, Deadline::after(now, Duration::from_millis(ttl_ms)));
            }
        }
        let history = options.history_revisions.max(1);
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let store = RedbStore {
            inner: Arc::new(Inner {
                db,
                path,
                history,
                compact_batch: (history / 64).clamp(1, 1024),
                write_lock: Mutex::new(()),
                events,
            }),
            clock,
            reaper_started: AtomicBool::new(false),
        };
        store.ensure_reaper();
        Ok(store)
    }

    /// Starts the lease reaper on the current tokio runtime, once. Called from
    /// `open` and from every store call so the reaper runs whether or not
    /// `open` happened inside a runtime.
    fn ensure_reaper(&self) {
        if self.reaper_started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(reap_leases(Arc::downgrade(&self.inner), self.clock.clone()));
    }

    /// Runs `f` on the blocking pool: redb calls do file I/O and fsync, which
    /// must not stall the async worker threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        self.ensure_reaper();
        run_blocking(self.inner.clone(), f).await
    }
}

async fn run_blocking<T, F>(inner: Arc<Inner>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&inner))
        .await
        .map_err(|e| StoreError::Embedded(format!("store task failed: {e}")))?
}

fn open_database(path: &Path) -> Result<Database> {
    let started = Instant::now();
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < ALREADY_OPEN_GRACE => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Embedded(format!(
                    "{} is already open (by another process, or by another store handle in this \
                     process); only one Testbed server may use a data directory at a time",
                    path.display()
                )));
            }
            Err(e) => return Err(in_file(path, e)),
        }
    }
}

fn in_file(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(format!("{}: {e}", path.display()))
}

/// Creates the tables of a new file (reads in redb fail on tables that were
/// never created) and returns the persisted leases with their TTLs.
fn init_tables(db: &Database) -> Result<Vec<(LeaseId, u64)>> {
    let txn = db.begin_write()?;
    let leases = {
        txn.open_table(KV)?;
        txn.open_table(EVENTS)?;
        txn.open_multimap_table(LEASE_KEYS)?;
        let mut meta = txn.open_table(META)?;
        for (name, initial) in [
            (META_REVISION, 0),
            (META_OLDEST_EVENT, 1),
            (META_NEXT_LEASE, 1),
        ] {
            if meta.get(name)?.is_none() {
                meta.insert(name, initial)?;
            }
        }
        let table = txn.open_table(LEASES)?;
        let mut leases = Vec::new();
        for item in table.iter()? {
            let (id, ttl) = item?;
            leases.push((id.value(), ttl.value()));
        }
        leases
    };
    txn.commit()?;
    Ok(leases)
}

macro_rules! embedded_errors {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for StoreError {
            fn from(e: $ty) -> Self {
                StoreError::Embedded(e.to_string())
            }
        }
    )*};
}

embedded_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
);

// --- record encoding -------------------------------------------------------
//
// A fixed little-endian layout instead of a serde format: values are opaque
// bytes (JSON documents in practice) and a self-describing encoding would
// only add size and a dependency.

const RECORD_HEADER: usize = 32;

fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + kv.value.len());
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&kv.value);
    out
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    if bytes.len() < RECORD_HEADER {
        return Err(StoreError::Embedded(format!(
            "corrupt record for key {key:?}"
        )));
    }
    let int = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        i64::from_le_bytes(b)
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: bytes[RECORD_HEADER..].to_vec(),
        create_revision: int(0),
        mod_revision: int(1),
        version: int(2),
        lease: int(3),
    })
}

/// Event layout: kind (1 byte), key length (u32), key, record.
fn encode_event(ev: &Event) -> Vec<u8> {
    let key = ev.kv.key.as_bytes();
    let record = encode_record(&ev.kv);
    let mut out = Vec::with_capacity(5 + key.len() + record.len());
    out.push(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&record);
    out
}

fn decode_event(revision: i64, bytes: &[u8]) -> Result<Event> {
    let corrupt = || StoreError::Embedded(format!("corrupt history event at revision {revision}"));
    let kind = match bytes.first() {
        Some(0) => EventKind::Put,
        Some(1) => EventKind::Delete,
        _ => return Err(corrupt()),
    };
    let len_bytes: [u8; 4] = bytes
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let key = bytes.get(5..5 + len).ok_or_else(corrupt)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?;
    let kv = decode_record(key, &bytes[5 + len..])?;
    Ok(Event { kind, kv })
}

// --- writes -----------------------------------------------------------------

/// The changes of one write transaction: each key change takes the next
/// revision and leaves an event in the history table, collected here to be
/// broadcast once the transaction is durable.
struct Batch<'t> {
    txn: &'t WriteTransaction,
    revision: i64,
    events: Vec<Event>,
}

impl Batch<'_> {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let table = self.txn.open_table(KV)?;
        let found = table.get(key)?;
        found.map(|v| decode_record(key, v.value())).transpose()
    }

    fn record(&mut self, event: Event) -> Result<i64> {
        let revision = event.kv.mod_revision;
        let mut events = self.txn.open_table(EVENTS)?;
        events.insert(revision, encode_event(&event).as_slice())?;
        self.events.push(event);
        Ok(revision)
    }

    fn put(&mut self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64> {
        if lease != 0 {
            // The lease table, not the in-memory clock, decides: it is changed
            // in the same serialised transactions as the keys, so a key can
            // never be attached to a lease whose keys were already deleted.
            let leases = self.txn.open_table(LEASES)?;
            if leases.get(lease)?.is_none() {
                return Err(StoreError::LeaseNotFound(lease));
            }
        }
        let old = self.get(key)?;
        let revision = self.revision + 1;
        self.revision = revision;
        let (create_revision, version, old_lease) = match &old {
            Some(o) => (o.create_revision, o.version + 1, o.lease),
            None => (revision, 1, 0),
        };
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
            version,
            lease,
        };
        self.txn
            .open_table(KV)?
            .insert(key, encode_record(&kv).as_slice())?;
        if old_lease != lease {
            let mut index = self.txn.open_multimap_table(LEASE_KEYS)?;
            if old_lease != 0 {
                index.remove(old_lease, key)?;
            }
            if lease != 0 {
                index.insert(lease, key)?;
            }
        }
        self.record(Event {
            kind: EventKind::Put,
            kv,
        })
    }

    fn delete(&mut self, key: &str) -> Result<bool> {
        let Some(old) = self.get(key)? else {
            return Ok(false);
        };
        let revision = self.revision + 1;
        self.revision = revision;
        self.txn.open_table(KV)?.remove(key)?;
        if old.lease != 0 {
            self.txn
                .open_multimap_table(LEASE_KEYS)?
                .remove(old.lease, key)?;
        }
        self.record(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                lease: 0,
            },
        })?;
        Ok(true)
    }

    /// Removes a lease and deletes its keys (each deletion its own revision).
    /// Returns whether the lease existed.
    fn revoke(&mut self, lease: LeaseId) -> Result<bool> {
        let existed = self.txn.open_table(LEASES)?.remove(lease)?.is_some();
        let keys = {
            let mut index = self.txn.open_multimap_table(LEASE_KEYS)?;
            let mut keys = Vec::new();
            for key in index.remove_all(lease)? {
                keys.push(key?.value().to_owned());
            }
            keys
        };
        for key in keys {
            self.delete(&key)?;
        }
        Ok(existed)
    }

    fn compare(&self, key: &str, compare: Compare) -> Result<bool> {
        let current = self.get(key)?.map(|kv| kv.mod_revision).unwrap_or(0);
        Ok(match compare {
            Compare::Absent => current == 0,
            Compare::ModRevision(rev) => current == rev,
        })
    }
}

struct HistoryBatch {
    events: Vec<Event>,
    oldest: i64,
}

impl Inner {
    /// Runs `f` in one write transaction. The revision counter and history
    /// compaction are updated only when `f` changed keys, so reads, failed
    /// compares and lease bookkeeping never consume a revision. Events are
    /// broadcast after the commit (so a watcher never sees a change that
    /// could still be lost) and before the write lock is released (so they
    /// go out in revision order).
    fn write<T>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<T>) -> Result<T> {
        let _serial = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let txn = self.db.begin_write()?;
        let start = read_meta(&txn.open_table(META)?, META_REVISION, 0)?;
        let mut batch = Batch {
            txn: &txn,
            revision: start,
            events: Vec::new(),
        };
        let out = match f(&mut batch) {
            Ok(out) => out,
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!(path = %self.path.display(), "aborting a store transaction failed: {abort}");
                }
                return Err(e);
            }
        };
        let Batch {
            revision, events, ..
        } = batch;
        if revision != start {
            txn.open_table(META)?.insert(META_REVISION, revision)?;
            self.compact(&txn, revision)?;
        }
        txn.commit()?;
        for event in events {
            // An error only means nobody is watching right now.
            let _ = self.events.send(event);
        }
        Ok(out)
    }

    fn compact(&self, txn: &WriteTransaction, revision: i64) -> Result<()> {
        let keep_from = revision - self.history + 1;
        let mut meta = txn.open_table(META)?;
        let oldest = read_meta(&meta, META_OLDEST_EVENT, 1)?;
        if keep_from - oldest >= self.compact_batch {
            txn.open_table(EVENTS)?
                .retain_in(..keep_from, |_, _| false)?;
            meta.insert(META_OLDEST_EVENT, keep_from)?;
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let found = table.get(key)?;
        found.map(|v| decode_record(key, v.value())).transpose()
    }

    fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let txn = self.db.begin_read()?;
        let revision = read_meta(&txn.open_table(META)?, META_REVISION, 0)?;
        let table = txn.open_table(KV)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut page = Page {
            kvs: Vec::new(),
            more: false,
            revision,
        };
        for item in table.range(start..)? {
            let (key, value) = item?;
            let key = key.value();
            if Some(key) == after {
                continue;
            }
            if !key.starts_with(prefix) {
                break;
            }
            if limit > 0 && page.kvs.len() == limit {
                page.more = true;
                break;
            }
            page.kvs.push(decode_record(key, value.value())?);
        }
        Ok(page)
    }

    fn revision_and_oldest(&self) -> Result<(i64, i64)> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok((
            read_meta(&meta, META_REVISION, 0)?,
            read_meta(&meta, META_OLDEST_EVENT, 1)?,
        ))
    }

    /// Up to `max` events from revision `from` on, with the oldest revision
    /// still in history, read from one snapshot so the two agree.
    fn history(&self, from: i64, max: usize) -> Result<HistoryBatch> {
        let txn = self.db.begin_read()?;
        let oldest = read_meta(&txn.open_table(META)?, META_OLDEST_EVENT, 1)?;
        let table = txn.open_table(EVENTS)?;
        let mut events = Vec::new();
        for item in table.range(from..)?.take(max) {
            let (revision, bytes) = item?;
            events.push(decode_event(revision.value(), bytes.value())?);
        }
        Ok(HistoryBatch { events, oldest })
    }

    fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.write(|b| {
            let mut meta = b.txn.open_table(META)?;
            let id = read_meta(&meta, META_NEXT_LEASE, 1)?;
            meta.insert(META_NEXT_LEASE, id + 1)?;
            b.txn.open_table(LEASES)?.insert(id, ttl_ms)?;
            Ok(id)
        })
    }
}

fn read_meta(
    table: &impl ReadableTable<&'static str, i64>,
    name: &str,
    default: i64,
) -> Result<i64> {
    Ok(table.get(name)?.map(|v| v.value()).unwrap_or(default))
}

// --- background tasks ---------------------------------------------------------

/// Expires leases. Holds only a weak reference to the database, so it stops
/// (and releases the file) once the store is dropped.
async fn reap_leases(inner: Weak<Inner>, clock: Arc<LeaseClock>) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if inner.strong_count() == 0 {
            return;
        }
        let expired = clock.take_expired(Instant::now());
        if expired.is_empty() {
            continue;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let ids = expired.clone();
        let result = run_blocking(strong, move |inner| {
            inner.write(|b| {
                for id in &ids {
                    b.revoke(*id)?;
                }
                Ok(())
            })
        })
        .await;
        if let Err(e) = result {
            // Put them back with an elapsed deadline so the next tick retries:
            // forgetting them would leave their keys alive until a restart.
            tracing::warn!("expiring leases {expired:?} failed, will retry: {e}");
            let mut map = clock.lock();
            let now = Instant::now();
            for id in expired {
                map.entry(id).or_insert(Deadline {
                    ttl: Duration::ZERO,
                    at: now,
                });
            }
        }
    }
}

/// Feeds one watcher: first history from the events table, then the live
/// broadcast, going back to the table whenever the broadcast lagged.
///
/// `next` is the next revision this watcher needs (of any key: the filter is
/// applied afterwards), which is what makes the hand-over gap- and
/// duplicate-free: broadcast events below `next` were already read from
/// history, and an event above `next` means some were missed, so history is
/// read again.
async fn feed_watcher(
    inner: Weak<Inner>,
    mut live: broadcast::Receiver<Event>,
    prefix: String,
    mut next: i64,
    out: mpsc::Sender<Result<Event>>,
) {
    let mut catching_up = true;
    loop {
        if catching_up {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let from = next;
            let batch = match run_blocking(strong, move |i| i.history(from, CATCH_UP_BATCH)).await {
                Ok(batch) => batch,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            };
            if next < batch.oldest {
                let _ = out
                    .send(Err(StoreError::Compacted {
                        requested: next,
                        oldest: batch.oldest,
                    }))
                    .await;
                return;
            }
            catching_up = batch.events.len() == CATCH_UP_BATCH;
            for event in batch.events {
                if event.revision() < next {
                    continue;
                }
                next = event.revision() + 1;
                if event.kv.key.starts_with(&prefix) && out.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            continue;
        }
        let received = tokio::select! {
            _ = out.closed() => return,
            r = live.recv() => r,
        };
        match received {
            Ok(event) if event.revision() < next => {}
            Ok(event) if event.revision() > next => catching_up = true,
            Ok(event) => {
                next = event.revision() + 1;
                if event.kv.key.starts_with(&prefix) && out.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => catching_up = true,
            // The store was dropped.
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.blocking(move |i| i.get(&key)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64> {
        validate_key(key)?;
        let lease = lease.unwrap_or(0);
        if lease != 0 && !self.clock.is_live(lease, Instant::now()) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let key = key.to_owned();
        self.blocking(move |i| i.write(|b| b.put(&key, value, lease)))
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |i| i.write(|b| b.delete(&key))).await
    }

    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        self.blocking(move |i| i.range(&prefix, after.as_deref(), limit))
            .await
    }

    async fn txn_put(
        &self,
        key: &str,
        compare: Compare,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Option<i64>> {
        validate_key(key)?;
        let lease = lease.unwrap_or(0);
        if lease != 0 && !self.clock.is_live(lease, Instant::now()) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let key = key.to_owned();
        self.blocking(move |i| {
            i.write(|b| {
                if b.compare(&key, compare)? {
                    b.put(&key, value, lease).map(Some)
                } else {
                    Ok(None)
                }
            })
        })
        .await
    }

    async fn txn_delete(&self, key: &str, compare: Compare) -> Result<bool> {
        let key = key.to_owned();
        self.blocking(move |i| {
            i.write(|b| {
                if b.compare(&key, compare)? {
                    b.delete(&key)
                } else {
                    Ok(false)
                }
            })
        })
        .await
    }

    async fn revision(&self) -> Result<i64> {
        self.blocking(|i| i.revision_and_oldest().map(|(rev, _)| rev))
            .await
    }

    /// A `from_revision` of 0 (or less) means "changes after now".
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        // Subscribe before reading anything, so every event committed after
        // the reads below is also in the subscription: no gap.
        let live = self.inner.events.subscribe();
        let (current, oldest) = self.blocking(|i| i.revision_and_oldest()).await?;
        let next = if from_revision <= 0 {
            current + 1
        } else {
            from_revision
        };
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        if next < oldest {
            let _ = tx.try_send(Err(StoreError::Compacted {
                requested: next,
                oldest,
            }));
        } else {
            tokio::spawn(feed_watcher(
                Arc::downgrade(&self.inner),
                live,
                prefix.to_owned(),
                next,
                tx,
            ));
        }
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidArgument(
                "lease TTL must be positive".into(),
            ));
        }
        let id = self.blocking(move |i| i.grant(ttl)).await?;
        self.clock
            .lock()
            .insert(id, Deadline::after(Instant::now(), ttl));
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.ensure_reaper();
        let now = Instant::now();
        let mut map = self.clock.lock();
        match map.get_mut(&lease) {
            Some(d) if d.at > now => {
                *d = Deadline::after(now, d.ttl);
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.clock.lock().remove(&lease);
        let existed = self.blocking(move |i| i.write(|b| b.revoke(lease))).await?;
        if existed {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    fn describe(&self) -> String {
        format!("redb:{}", self.inner.path.display())
    }
}
