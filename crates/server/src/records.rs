//! Typed JSON records over the raw key-value store, with the
//! compare-and-swap update loop every writer uses so concurrent replicas
//! never overwrite each other's changes.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use testbed_store::{Compare, DynStore, KeyValue, LeaseId, StoreError, TxnOp};
use thiserror::Error;

use crate::error::ApiError;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("record {key} is unreadable: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    #[error("encoding record {key}: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    #[error("{key} changed concurrently too often; try again")]
    Contended { key: String },
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(s) => s.into(),
            RecordError::Contended { .. } => ApiError::conflict(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, RecordError>;

pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| RecordError::Decode {
        key: key.to_string(),
        source,
    })
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| RecordError::Encode {
        key: key.to_string(),
        source,
    })
}

/// A transaction's put of `value` at `key`, without a lease.
pub fn put_op<T: Serialize>(key: String, value: &T) -> Result<TxnOp> {
    Ok(TxnOp::Put {
        value: encode(&key, value)?,
        key,
        lease: None,
    })
}

/// The record at `key` and its `mod_revision`.
pub async fn get<T: DeserializeOwned>(store: &DynStore, key: &str) -> Result<Option<(T, i64)>> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((decode(key, &kv.value)?, kv.mod_revision))),
        None => Ok(None),
    }
}

pub async fn put<T: Serialize>(
    store: &DynStore,
    key: &str,
    value: &T,
    lease: Option<LeaseId>,
) -> Result<i64> {
    Ok(store.put(key, encode(key, value)?, lease).await?)
}

/// Creates `key` only if it does not exist. Returns whether it was created.
pub async fn create<T: Serialize>(
    store: &DynStore,
    key: &str,
    value: &T,
    lease: Option<LeaseId>,
) -> Result<bool> {
    Ok(store
        .txn_put(key, Compare::Absent, encode(key, value)?, lease)
        .await?
        .is_some())
}

/// Read-modify-write with compare-and-swap, retried on conflict. `change`
/// returns `false` to leave the record as it is. Returns the record as
/// written (or as found, when unchanged); `None` when the key is absent.
pub async fn update<T, F>(store: &DynStore, key: &str, change: F) -> Result<Option<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(&mut T) -> bool,
{
    Ok(update_rev(store, key, change)
        .await?
        .map(|(value, _)| value))
}

/// [`update`], also returning the record's `mod_revision` after it (the
/// revision written, or the one found when unchanged).
pub async fn update_rev<T, F>(
    store: &DynStore,
    key: &str,
    mut change: F,
) -> Result<Option<(T, i64)>>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(&mut T) -> bool,
{
    for _ in 0..64 {
        let Some((mut value, rev)) = get::<T>(store, key).await? else {
            return Ok(None);
        };
        if !change(&mut value) {
            return Ok(Some((value, rev)));
        }
        let bytes = encode(key, &value)?;
        let lease = None;
        if let Some(written) = store
            .txn_put(key, Compare::ModRevision(rev), bytes, lease)
            .await?
        {
            return Ok(Some((value, written)));
        }
    }
    Err(RecordError::Contended {
        key: key.to_string(),
    })
}

/// The key-values under a prefix, read a page at a time so that no single
/// read is unbounded: `while let Some(kvs) = pages.next().await? { … }`.
pub struct Pages<'a> {
    store: &'a DynStore,
    prefix: &'a str,
    size: usize,
    /// The last key read; the next page starts after it.
    after: Option<String>,
    done: bool,
}

impl<'a> Pages<'a> {
    /// Pages of up to `size` key-values under `prefix`.
    pub fn new(store: &'a DynStore, prefix: &'a str, size: usize) -> Self {
        Pages {
            store,
            prefix,
            size,
            after: None,
            done: false,
        }
    }

    /// Starts after `key` (keys sort bytewise) instead of at the prefix's
    /// first key; `None` reads from the start.
    pub fn starting_after(mut self, key: Option<String>) -> Self {
        self.after = key;
        self
    }

    /// The next page, `None` once every key has been read.
    pub async fn next(&mut self) -> std::result::Result<Option<Vec<KeyValue>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .range(self.prefix, self.after.as_deref(), self.size)
            .await?;
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => self.after = Some(last.key.clone()),
            _ => self.done = true,
        }
        Ok(Some(page.kvs))
    }
}

/// Every record under `prefix` whose key satisfies `keep`.
pub async fn list<T: DeserializeOwned>(
    store: &DynStore,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    let mut pages = Pages::new(store, prefix, 500);
    while let Some(kvs) = pages.next().await? {
        for kv in kvs.into_iter().filter(|kv| keep(&kv.key)) {
            let value = decode(&kv.key, &kv.value)?;
            out.push((kv.key, value));
        }
    }
    Ok(out)
}

/// How many keys are under `prefix`.
pub async fn count(store: &DynStore, prefix: &str) -> Result<usize> {
    let mut n = 0;
    let mut pages = Pages::new(store, prefix, 1000);
    while let Some(kvs) = pages.next().await? {
        n += kvs.len();
    }
    Ok(n)
}

/// Atomically increments the counter at `key`, returning the new value.
pub async fn next_counter(store: &DynStore, key: &str) -> Result<u64> {
    add_to_counter(store, key, 1).await
}

/// Atomically adds `n` to the counter at `key`, returning the new value (so
/// the numbers `new - n + 1 ..= new` are the caller's).
async fn add_to_counter(store: &DynStore, key: &str, n: u64) -> Result<u64> {
    for _ in 0..64 {
        let (current, compare) = match store.get(key).await? {
            Some(kv) => (
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0),
                Compare::ModRevision(kv.mod_revision),
            ),
            None => (0, Compare::Absent),
        };
        let next = current + n;
        if store
            .txn_put(key, compare, next.to_string().into_bytes(), None)
            .await?
            .is_some()
        {
            return Ok(next);
        }
    }
    Err(RecordError::Contended {
        key: key.to_string(),
    })
}

/// Numbers from store counters, for callers that may ask for many at once
/// (a fleet of agents registering). Each caller doing its own
/// read-and-compare-and-swap makes all but one of them fail per commit and
/// retry, so that under a few hundred concurrent registrations most gave up
/// after their 64 tries and the agents backed off and reconnected. Here the
/// requests for one counter made on this replica meanwhile are served
/// together: one leader adds their number to the counter with one
/// compare-and-swap and hands out the numbers in between, so the numbers
/// stay consecutive and only other replicas contend for the key.
#[derive(Default)]
pub struct Counters {
    queues: CounterQueues,
}

/// Requests waiting for the next compare-and-swap of one counter.
#[derive(Default)]
struct CounterQueue {
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64>>>,
}

type CounterQueues = std::sync::Arc<std::sync::Mutex<HashMap<String, CounterQueue>>>;

fn lock_queues(queues: &CounterQueues) -> std::sync::MutexGuard<'_, HashMap<String, CounterQueue>> {
    // Every critical section is a single map operation: a poisoned lock
    // holds nothing half-done.
    queues.lock().unwrap_or_else(|p| p.into_inner())
}

impl Counters {
    /// The next number of the counter at `key` (as [`next_counter`]).
    pub async fn next(&self, store: &DynStore, key: &str) -> Result<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut queues = lock_queues(&self.queues);
            match queues.get_mut(key) {
                // A leader is at work on this counter: it takes this request
                // with its next batch.
                Some(q) => {
                    q.waiting.push(tx);
                    false
                }
                None => {
                    queues.insert(key.to_string(), CounterQueue { waiting: vec![tx] });
                    true
                }
            }
        };
        if lead {
            // On a task of its own, so a caller that stops waiting (its
            // connection dropped) does not strand the others.
            tokio::spawn(serve_counter(
                self.queues.clone(),
                store.clone(),
                key.to_string(),
            ));
        }
        match rx.await {
            Ok(answer) => answer,
            // The leader task died (a panic) before answering.
            Err(_) => Err(RecordError::Store(StoreError::Unavailable(format!(
                "taking a number from {key} failed"
            )))),
        }
    }
}

/// Serves the requests queued for `key` a batch at a time until none is
/// left, then removes the queue (the next request starts a new leader).
async fn serve_counter(queues: CounterQueues, store: DynStore, key: String) {
    // A panic in here removes the queue, so later requests are not left
    // behind a leader that is gone; requests still queued then see their
    // sender dropped. (Disarmed on the normal way out, which removes the
    // queue under the same lock that saw it empty: a new leader may have
    // queued since.)
    struct Remove<'a>(&'a CounterQueues, &'a str, bool);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            if self.2 {
                lock_queues(self.0).remove(self.1);
            }
        }
    }
    let mut guard = Remove(&queues, &key, true);
    loop {
        let batch = {
            let mut map = lock_queues(&queues);
            match map.get_mut(&key) {
                Some(q) if !q.waiting.is_empty() => std::mem::take(&mut q.waiting),
                _ => {
                    map.remove(&key);
                    guard.2 = false;
                    return;
                }
            }
        };
        let n = batch.len() as u64;
        match add_to_counter(&store, &key, n).await {
            Ok(last) => {
                for (i, w) in batch.into_iter().enumerate() {
                    // An error only means that caller stopped waiting: its
                    // number is skipped, as a failed registration's is.
                    let _ = w.send(Ok(last - n + 1 + i as u64));
                }
            }
            Err(e) => {
                // The first request gets the error itself, the others its
                // like (a store error is not `Clone`).
                let like = || match &e {
                    RecordError::Contended { key } => RecordError::Contended { key: key.clone() },
                    other => RecordError::Store(StoreError::Unavailable(other.to_string())),
                };
                let mut rest = batch.into_iter();
                let first = rest.next();
                for w in rest {
                    let _ = w.send(Err(like()));
                }
                if let Some(w) = first {
                    let _ = w.send(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A fleet registering at once: every request gets a number, the
    /// numbers are consecutive and distinct, and the counter ends at their
    /// count. Each caller doing its own compare-and-swap failed most of
    /// these with `Contended`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_get_consecutive_numbers() {
        let dir = std::env::temp_dir().join(format!("testbed-counters-{}", uuid::Uuid::new_v4()));
        let store: DynStore = Arc::new(testbed_store::RedbStore::open(dir.join("s.redb")).unwrap());
        let counters = Arc::new(Counters::default());
        let key = "/counters/test";
        let mut joins = Vec::new();
        for _ in 0..500 {
            let (store, counters) = (store.clone(), counters.clone());
            joins.push(tokio::spawn(
                async move { counters.next(&store, key).await },
            ));
        }
        let mut got = Vec::new();
        for j in joins {
            got.push(j.await.unwrap().unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (1..=500).collect::<Vec<u64>>());
        // The queue is gone once served, and a later request carries on.
        assert!(lock_queues(&counters.queues).is_empty());
        assert_eq!(counters.next(&store, key).await.unwrap(), 501);
        assert_eq!(next_counter(&store, key).await.unwrap(), 502);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
