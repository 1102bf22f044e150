//! The embedded backend: the whole store in one redb file.
//!
//! `testbed up` must work with nothing installed, so this backend re-creates
//! the parts of etcd the rest of Testbed relies on — revisions, an event
//! history for gap-free watches, and leases — on top of redb's ACID
//! transactions.
//!
//! Writes use group commit: every write request is queued for one writer
//! thread, which takes everything queued so far, applies it in order in one
//! redb write transaction and commits that with redb's default (immediate,
//! fsync'd) durability before it answers any of them. An fsync costs the same
//! for one write as for fifty, so concurrent writers share it instead of
//! queueing for one each, and a process killed at any moment still loses no
//! write that was acknowledged. Each request keeps its own revision, its own
//! compares (evaluated against the state left by the requests before it) and
//! its own result.
//!
//! Layout (all in one file):
//!
//! | table        | key              | value                                   |
//! | ------------ | ---------------- | --------------------------------------- |
//! | `kv`         | key              | record: revisions, version, lease, value |
//! | `meta`       | name             | current revision, oldest kept event, next lease id |
//! | `events`     | revision         | the events written at that revision, in order |
//! | `leases`     | lease id         | TTL in milliseconds                     |
//! | `lease_keys` | lease id (multi) | keys attached to the lease              |
//!
//! The history keeps one row per revision, holding all of that revision's
//! events, so a watcher catching up can never read half of a transaction.
//!
//! Lease *deadlines* are deliberately not persisted: like etcd after a leader
//! change, a restarted store gives every lease a full TTL again, so agents are
//! not declared dead just because the server was down.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    Database, DatabaseError, MultimapTableDefinition, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::types::validate_txn;
use crate::{
    Compare, Event, EventKind, KeyValue, LeaseId, Page, Result, Store, StoreError, TxnOp,
    WatchStream,
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

/// Revisions read from the history table per blocking call while a watcher
/// catches up; bounds the memory one watcher can pin.
const CATCH_UP_BATCH: usize = 512;

/// The most write requests one group commit takes. Bounds the size of one
/// redb transaction (and so the wait of the requests in it) far above the
/// writers Testbed has in flight at once.
const MAX_GROUP: usize = 512;

/// redb's page cache. Its default (1 GiB) lets the cache grow with every
/// page ever written, and a fleet's heartbeats touch many: the server's RSS
/// then grows with the fleet for no benefit, as the pages that matter are
/// few and the OS page cache keeps the file's hot pages anyway.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

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
    /// Capacity, in revisions, of the in-process broadcast of committed
    /// events. A watcher that falls further behind than this is not lost: it
    /// re-reads the history table, so this only trades memory for fewer
    /// history reads.
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
/// range reads run on the blocking pool (single-key reads, which take
/// microseconds, run inline) and the lease reaper and watchers are
/// tasks; writes go to the store's own writer thread. `open` itself is
/// synchronous and may be called outside a runtime: the lease reaper then
/// starts on the first store call made inside one. Dropping the last handle
/// waits for the writer to finish what is queued (a commit at most).
pub struct RedbStore {
    inner: Arc<Inner>,
    clock: Arc<LeaseClock>,
    reaper_started: AtomicBool,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    /// The queue of the writer thread, the only place writes happen. `None`
    /// only while dropping.
    writes: Option<std_mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    events: broadcast::Sender<Arc<Revision>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit;
        // waiting for it releases the file when the last handle goes rather
        // than at some later moment, so the file can be reopened at once.
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "the store's writer thread panicked");
            }
        }
    }
}

/// Everything one revision changed, in operation order: the unit of the
/// history table and of the broadcast, so no watcher can observe part of a
/// revision and then move past it.
#[derive(Debug)]
struct Revision {
    revision: i64,
    events: Vec<Event>,
}

/// One write request for the writer thread.
struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<Outcome>>,
}

enum WriteOp {
    Txn {
        compares: Vec<(String, Compare)>,
        ops: Vec<TxnOp>,
    },
    Grant {
        ttl_ms: u64,
    },
    Revoke {
        lease: LeaseId,
    },
}

enum Outcome {
    /// `None`: a compare failed.
    Txn(Option<TxnDone>),
    Granted(LeaseId),
    Revoked(bool),
}

struct TxnDone {
    /// The transaction's revision, or the current one if it changed nothing.
    revision: i64,
    changed: bool,
}

fn writer_gone() -> StoreError {
    StoreError::Embedded("the store's writer thread has stopped".into())
}

/// The writer answers every request it takes, except when applying its group
/// panicked.
fn write_panicked() -> StoreError {
    StoreError::Embedded("the store write failed: its transaction panicked".into())
}

fn mismatched_outcome() -> StoreError {
    StoreError::Embedded("the store's writer answered a different request".into())
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
            if !parent.exists() {
                crate::private::ensure_private_dir(parent).map_err(|e| {
                    StoreError::Embedded(format!(
                        "cannot create directory {}: {e}",
                        parent.display()
                    ))
                })?;
            }
        }
        // The file holds the token-signing secret and the join token.
        crate::private::ensure_private_file(&path)
            .map_err(|e| StoreError::Embedded(format!("{}: {e}", path.display())))?;
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
        let db = Arc::new(db);
        let (writes, queue) = std_mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            path: path.clone(),
            history,
            compact_batch: (history / 64).clamp(1, 1024),
            events: events.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("testbed-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| in_file(&path, format!("cannot start the writer thread: {e}")))?;
        let store = RedbStore {
            inner: Arc::new(Inner {
                db,
                path,
                writes: Some(writes),
                writer: Some(writer),
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

    /// Queues a write for the writer thread and waits for its commit.
    async fn write(&self, op: WriteOp) -> Result<Outcome> {
        self.ensure_reaper();
        let answer = self.inner.enqueue(op)?;
        answer.await.map_err(|_| write_panicked())?
    }

    async fn write_txn(
        &self,
        compares: Vec<(String, Compare)>,
        ops: Vec<TxnOp>,
    ) -> Result<Option<TxnDone>> {
        validate_txn(&compares, &ops)?;
        let now = Instant::now();
        for op in &ops {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
            {
                if *lease != 0 && !self.clock.is_live(*lease, now) {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
        }
        match self.write(WriteOp::Txn { compares, ops }).await? {
            Outcome::Txn(done) => Ok(done),
            _ => Err(mismatched_outcome()),
        }
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
        match redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
        {
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
    let corrupt = || corrupt_history(revision);
    let kind = match bytes.first() {
        Some(0) => EventKind::Put,
        Some(1) => EventKind::Delete,
        _ => return Err(corrupt()),
    };
    let len = read_u32(bytes, 1).ok_or_else(corrupt)?;
    let key = bytes.get(5..5 + len).ok_or_else(corrupt)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?;
    let kv = decode_record(key, &bytes[5 + len..])?;
    Ok(Event { kind, kv })
}

/// Tags a history row holding several events. A row with one event (most
/// revisions) keeps the one-event layout above, so files written before
/// transactions existed read the same.
const MULTI_EVENT: u8 = 2;

/// A revision's history row: one event as is; several as `MULTI_EVENT`, a
/// count (u32), then each event prefixed by its length (u32).
fn encode_events(events: &[Event]) -> Vec<u8> {
    if let [event] = events {
        return encode_event(event);
    }
    let mut out = vec![MULTI_EVENT];
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        let bytes = encode_event(event);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_events(revision: i64, bytes: &[u8]) -> Result<Vec<Event>> {
    if bytes.first() != Some(&MULTI_EVENT) {
        return Ok(vec![decode_event(revision, bytes)?]);
    }
    let corrupt = || corrupt_history(revision);
    let count = read_u32(bytes, 1).ok_or_else(corrupt)?;
    let mut pos = 5;
    // Not `with_capacity(count)`: a corrupt count must not allocate wildly.
    let mut events = Vec::new();
    for _ in 0..count {
        let len = read_u32(bytes, pos).ok_or_else(corrupt)?;
        let event = bytes.get(pos + 4..pos + 4 + len).ok_or_else(corrupt)?;
        events.push(decode_event(revision, event)?);
        pos += 4 + len;
    }
    if pos != bytes.len() {
        return Err(corrupt());
    }
    Ok(events)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b) as usize)
}

fn corrupt_history(revision: i64) -> StoreError {
    StoreError::Embedded(format!("corrupt history event at revision {revision}"))
}

// --- writes -----------------------------------------------------------------

/// What a group commit produced: each request's result, in request order,
/// and the revisions to publish, in revision order.
type Applied = (Vec<Result<Outcome>>, Vec<Arc<Revision>>);

/// The writer thread: the one place where write transactions happen.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    history: i64,
    /// Compaction runs only once this many events are beyond the history
    /// bound, so its cost is amortised over many writes instead of paid on
    /// every one.
    compact_batch: i64,
    events: broadcast::Sender<Arc<Revision>>,
}

impl Writer {
    /// Serves the queue until every sender is gone (the store was dropped),
    /// after answering everything queued before that.
    fn run(self, queue: std_mpsc::Receiver<WriteRequest>) {
        while let Ok(first) = queue.recv() {
            // Only what is already queued: waiting for more to arrive would
            // make a lone writer slower, and under load the queue refills
            // while a commit is in progress anyway.
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            // A panic (a redb bug, say) drops this group's replies, so its
            // callers get an error, and aborts its transaction while
            // unwinding; the writer carries on, as a panicking request on the
            // blocking pool would not take the store down either.
            let committed = std::panic::catch_unwind(AssertUnwindSafe(|| self.commit(group)));
            if committed.is_err() {
                tracing::error!(path = %self.path.display(), "a store write transaction panicked");
            }
        }
    }

    /// Applies `group` in order in one transaction, commits it, and only
    /// then publishes its revisions (so a watcher never sees a change that
    /// could still be lost; in revision order, as this is the only writer)
    /// and answers the requests (so an acknowledged write is durable).
    fn commit(&self, group: Vec<WriteRequest>) {
        let (ops, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|r| (r.op, r.reply)).unzip();
        match self.apply(ops) {
            Ok((outcomes, revisions)) => {
                for revision in revisions {
                    // An error only means nobody is watching right now.
                    let _ = self.events.send(revision);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // An error only means the caller stopped waiting.
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "a store write transaction failed: {e}");
                let message = e.to_string();
                let mut first = Some(e);
                for reply in replies {
                    let error = first
                        .take()
                        .unwrap_or_else(|| StoreError::Embedded(message.clone()));
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    /// The outer error means nothing was committed and fails every request
    /// of the group: it comes from the file, not from any one request. The
    /// per-request results are in the returned list, in order.
    fn apply(&self, ops: Vec<WriteOp>) -> Result<Applied> {
        let txn = self.db.begin_write()?;
        match self.apply_in(&txn, ops) {
            Ok(out) => {
                txn.commit()?;
                Ok(out)
            }
            Err(e) => {
                if let Err(abort) = txn.abort() {
                    tracing::warn!(path = %self.path.display(), "aborting a store transaction failed: {abort}");
                }
                Err(e)
            }
        }
    }

    fn apply_in(&self, txn: &WriteTransaction, ops: Vec<WriteOp>) -> Result<Applied> {
        let start = read_meta(&txn.open_table(META)?, META_REVISION, 0)?;
        let mut batch = Batch {
            txn,
            revision: start,
            pending: Vec::new(),
            done: Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(batch.apply(op)?);
        }
        let Batch { revision, done, .. } = batch;
        // Reads, failed compares and lease bookkeeping take no revision, so
        // a group of only those leaves the counter and history alone.
        if revision != start {
            txn.open_table(META)?.insert(META_REVISION, revision)?;
            self.compact(txn, revision)?;
        }
        Ok((outcomes, done))
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
}

/// The requests of one group commit, applied one after another to one write
/// transaction. Each request that changes keys takes the next revision; its
/// events go to the history table as one row and are collected here to be
/// broadcast once the transaction is durable.
struct Batch<'t> {
    txn: &'t WriteTransaction,
    /// The latest revision, counting the requests applied so far.
    revision: i64,
    /// The events of the request being applied, all at `revision + 1`.
    pending: Vec<Event>,
    done: Vec<Arc<Revision>>,
}

impl Batch<'_> {
    /// Applies one request. The outer error is fatal to the whole group (the
    /// transaction may hold part of this request); the inner result is the
    /// request's own, and a request that fails there has written nothing.
    fn apply(&mut self, op: WriteOp) -> Result<Result<Outcome>> {
        match op {
            WriteOp::Txn { compares, ops } => {
                let olds = match self.check(&compares, &ops) {
                    Ok(Some(olds)) => olds,
                    Ok(None) => return Ok(Ok(Outcome::Txn(None))),
                    Err(e) => return Ok(Err(e)),
                };
                for (op, old) in ops.into_iter().zip(olds) {
                    match (op, old) {
                        (TxnOp::Put { key, value, lease }, old) => {
                            self.put(&key, value, lease.unwrap_or(0), old)?
                        }
                        (TxnOp::Delete { key }, Some(old)) => self.delete(&key, &old)?,
                        (TxnOp::Delete { .. }, None) => {}
                    }
                }
                let changed = self.seal()?;
                Ok(Ok(Outcome::Txn(Some(TxnDone {
                    revision: self.revision,
                    changed,
                }))))
            }
            WriteOp::Grant { ttl_ms } => Ok(Ok(Outcome::Granted(self.grant(ttl_ms)?))),
            WriteOp::Revoke { lease } => Ok(Ok(Outcome::Revoked(self.revoke(lease)?))),
        }
    }

    /// Everything that can make a transaction fail on its own — compares,
    /// leases, unreadable records — checked before it writes anything, so a
    /// failed request leaves no trace for the others in the group. Returns
    /// the current record of each op's key, or `None` if a compare failed.
    fn check(
        &self,
        compares: &[(String, Compare)],
        ops: &[TxnOp],
    ) -> Result<Option<Vec<Option<KeyValue>>>> {
        for (key, compare) in compares {
            if !self.compare(key, *compare)? {
                return Ok(None);
            }
        }
        // The lease table, not the in-memory clock, decides: it is changed by
        // the same serialised transactions as the keys, so a key can never be
        // attached to a lease whose keys were already deleted.
        let leases = self.txn.open_table(LEASES)?;
        let mut olds = Vec::with_capacity(ops.len());
        for op in ops {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
            {
                if *lease != 0 && leases.get(*lease)?.is_none() {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
            olds.push(self.get(op.key())?);
        }
        Ok(Some(olds))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let table = self.txn.open_table(KV)?;
        let found = table.get(key)?;
        found.map(|v| decode_record(key, v.value())).transpose()
    }

    fn compare(&self, key: &str, compare: Compare) -> Result<bool> {
        let current = self.get(key)?.map(|kv| kv.mod_revision).unwrap_or(0);
        Ok(match compare {
            Compare::Absent => current == 0,
            Compare::ModRevision(rev) => current == rev,
            Compare::Present => current > 0,
        })
    }

    /// Writes `key`, whose current record is `old`, at the pending revision.
    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
        old: Option<KeyValue>,
    ) -> Result<()> {
        let revision = self.revision + 1;
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
        self.pending.push(Event {
            kind: EventKind::Put,
            kv,
        });
        Ok(())
    }

    /// Deletes `key`, whose current record is `old`, at the pending revision.
    fn delete(&mut self, key: &str, old: &KeyValue) -> Result<()> {
        let revision = self.revision + 1;
        self.txn.open_table(KV)?.remove(key)?;
        if old.lease != 0 {
            self.txn
                .open_multimap_table(LEASE_KEYS)?
                .remove(old.lease, key)?;
        }
        self.pending.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                lease: 0,
            },
        });
        Ok(())
    }

    /// Ends the request being applied: if it changed anything, its changes
    /// take the next revision, as one history row and one broadcast message.
    /// Returns whether it changed anything.
    fn seal(&mut self) -> Result<bool> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        let revision = self.revision + 1;
        let events = std::mem::take(&mut self.pending);
        self.txn
            .open_table(EVENTS)?
            .insert(revision, encode_events(&events).as_slice())?;
        self.revision = revision;
        self.done.push(Arc::new(Revision { revision, events }));
        Ok(true)
    }

    fn grant(&mut self, ttl_ms: u64) -> Result<LeaseId> {
        let mut meta = self.txn.open_table(META)?;
        let id = read_meta(&meta, META_NEXT_LEASE, 1)?;
        meta.insert(META_NEXT_LEASE, id + 1)?;
        self.txn.open_table(LEASES)?.insert(id, ttl_ms)?;
        Ok(id)
    }

    /// Removes a lease and deletes its keys, all at one revision (as etcd
    /// does). Returns whether the lease existed.
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
            if let Some(old) = self.get(&key)? {
                self.delete(&key, &old)?;
            }
        }
        self.seal()?;
        Ok(existed)
    }
}

// --- reads ----------------------------------------------------------------------

struct HistoryBatch {
    revisions: Vec<Revision>,
    oldest: i64,
}

impl Inner {
    fn enqueue(&self, op: WriteOp) -> Result<oneshot::Receiver<Result<Outcome>>> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(WriteRequest { op, reply })
            .map_err(|_| writer_gone())?;
        Ok(answer)
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

    /// Up to `max` revisions from `from` on, with the oldest revision still
    /// in history, read from one snapshot so the two agree.
    fn history(&self, from: i64, max: usize) -> Result<HistoryBatch> {
        let txn = self.db.begin_read()?;
        let oldest = read_meta(&txn.open_table(META)?, META_OLDEST_EVENT, 1)?;
        let table = txn.open_table(EVENTS)?;
        let mut revisions = Vec::new();
        for item in table.range(from..)?.take(max) {
            let (revision, bytes) = item?;
            let revision = revision.value();
            revisions.push(Revision {
                revision,
                events: decode_events(revision, bytes.value())?,
            });
        }
        Ok(HistoryBatch { revisions, oldest })
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
        // Queued together, so they share one commit; the strong reference is
        // not held while waiting, so dropping the store is not delayed.
        let answers: Vec<_> = expired
            .iter()
            .map(|&lease| (lease, strong.enqueue(WriteOp::Revoke { lease })))
            .collect();
        drop(strong);
        let mut failed = Vec::new();
        for (lease, answer) in answers {
            let result = match answer {
                Ok(answer) => answer.await.unwrap_or_else(|_| Err(write_panicked())),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!("expiring lease {lease} failed, will retry: {e}");
                failed.push(lease);
            }
        }
        if !failed.is_empty() {
            // Put them back with an elapsed deadline so the next tick retries:
            // forgetting them would leave their keys alive until a restart.
            let mut map = clock.lock();
            let now = Instant::now();
            for lease in failed {
                map.entry(lease).or_insert(Deadline {
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
/// duplicate-free: broadcast revisions below `next` were already read from
/// history, and one above `next` means some were missed, so history is read
/// again. Both sources hand over whole revisions, and `next` moves past a
/// revision only once all its events were sent, so a revision is never split.
async fn feed_watcher(
    inner: Weak<Inner>,
    mut live: broadcast::Receiver<Arc<Revision>>,
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
            catching_up = batch.revisions.len() == CATCH_UP_BATCH;
            for revision in &batch.revisions {
                if revision.revision < next {
                    continue;
                }
                if !deliver(revision, &prefix, &out).await {
                    return;
                }
                next = revision.revision + 1;
            }
            continue;
        }
        let received = tokio::select! {
            _ = out.closed() => return,
            r = live.recv() => r,
        };
        match received {
            Ok(revision) if revision.revision < next => {}
            Ok(revision) if revision.revision > next => catching_up = true,
            Ok(revision) => {
                if !deliver(&revision, &prefix, &out).await {
                    return;
                }
                next = revision.revision + 1;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => catching_up = true,
            // The store was dropped.
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends the events of `revision` under `prefix`, in order; false once the
/// consumer is gone.
async fn deliver(revision: &Revision, prefix: &str, out: &mpsc::Sender<Result<Event>>) -> bool {
    for event in revision
        .events
        .iter()
        .filter(|e| e.kv.key.starts_with(prefix))
    {
        if out.send(Ok(event.clone())).await.is_err() {
            return false;
        }
    }
    true
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // Inline, not on the blocking pool: one key from a read snapshot
        // takes microseconds (redb readers never wait for the writer's
        // fsync: it drops its lock before flushing), less than the two
        // thread wake-ups a hand-off costs, and every API request makes
        // this read (the caller's user record).
        self.ensure_reaper();
        self.inner.get(key)
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64> {
        let op = TxnOp::Put {
            key: key.to_owned(),
            value,
            lease,
        };
        match self.write_txn(Vec::new(), vec![op]).await? {
            Some(done) => Ok(done.revision),
            None => Err(mismatched_outcome()),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let op = TxnOp::Delete {
            key: key.to_owned(),
        };
        match self.write_txn(Vec::new(), vec![op]).await? {
            Some(done) => Ok(done.changed),
            None => Err(mismatched_outcome()),
        }
    }

    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        let prefix = prefix.to_owned();
        let after = after.map(str::to_owned);
        self.blocking(move |i| i.range(&prefix, after.as_deref(), limit))
            .await
    }

    async fn txn(&self, compares: &[(String, Compare)], ops: Vec<TxnOp>) -> Result<Option<i64>> {
        let done = self.write_txn(compares.to_vec(), ops).await?;
        Ok(done.map(|d| d.revision))
    }

    async fn txn_delete(&self, key: &str, compare: Compare) -> Result<bool> {
        let op = TxnOp::Delete {
            key: key.to_owned(),
        };
        let done = self
            .write_txn(vec![(key.to_owned(), compare)], vec![op])
            .await?;
        Ok(done.is_some_and(|d| d.changed))
    }

    async fn revision(&self) -> Result<i64> {
        // Inline for the same reason as `get`: two meta rows.
        self.ensure_reaper();
        self.inner.revision_and_oldest().map(|(rev, _)| rev)
    }

    /// A `from_revision` of 0 (or less) means "changes after now".
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        // Subscribe before reading anything, so every revision committed
        // after the reads below is also in the subscription: no gap.
        let live = self.inner.events.subscribe();
        self.ensure_reaper();
        let (current, oldest) = self.inner.revision_and_oldest()?;
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
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let id = match self.write(WriteOp::Grant { ttl_ms }).await? {
            Outcome::Granted(id) => id,
            _ => return Err(mismatched_outcome()),
        };
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
        match self.write(WriteOp::Revoke { lease }).await? {
            Outcome::Revoked(true) => Ok(()),
            Outcome::Revoked(false) => Err(StoreError::LeaseNotFound(lease)),
            _ => Err(mismatched_outcome()),
        }
    }

    fn describe(&self) -> String {
        format!("redb:{}", self.inner.path.display())
    }

    /// redb locks the file for the process that opened it.
    fn exclusive(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, key: &str, value: &[u8], revision: i64) -> Event {
        Event {
            kind,
            kv: KeyValue {
                key: key.into(),
                value: value.to_vec(),
                create_revision: 1,
                mod_revision: revision,
                version: 2,
                lease: 7,
            },
        }
    }

    #[test]
    fn one_event_keeps_the_one_event_layout() {
        let e = event(EventKind::Put, "/k", b"v", 3);
        assert_eq!(encode_events(std::slice::from_ref(&e)), encode_event(&e));
        assert_eq!(decode_events(3, &encode_event(&e)).unwrap(), vec![e]);
    }

    #[test]
    fn several_events_round_trip_in_order() {
        let events = vec![
            event(EventKind::Put, "/b", b"1", 4),
            event(EventKind::Delete, "/a", b"", 4),
            event(EventKind::Put, "/c", &[0, 1, 2], 4),
        ];
        let bytes = encode_events(&events);
        assert_eq!(bytes[0], MULTI_EVENT);
        assert_eq!(decode_events(4, &bytes).unwrap(), events);
    }

    #[test]
    fn truncated_or_padded_rows_are_corrupt() {
        let events = vec![
            event(EventKind::Put, "/a", b"1", 5),
            event(EventKind::Put, "/b", b"2", 5),
        ];
        let bytes = encode_events(&events);
        for cut in [1, 5, 9, bytes.len() - 1] {
            assert!(decode_events(5, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode_events(5, &padded).is_err());
        assert!(decode_events(5, &[]).is_err());
    }
}
