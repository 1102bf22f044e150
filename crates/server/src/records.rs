//! Typed JSON records over the raw key-value store, with the
//! compare-and-swap update loop every writer uses so concurrent replicas
//! never overwrite each other's changes.

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
        let next = current + 1;
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
