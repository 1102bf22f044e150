//! The coordination store behind every Testbed server replica.
//!
//! One trait, [`Store`], with two backends that meet the same contract:
//!
//! * [`RedbStore`] — an embedded, single-process store in one redb file, the
//!   zero-install default of `testbed up`;
//! * [`EtcdStore`] — a client of an etcd v3 cluster, for several server
//!   replicas sharing state.
//!
//! The contract (checked by `tests/conformance.rs` against both):
//!
//! * get / put / delete are linearizable; every write gets a new, strictly
//!   increasing store revision;
//! * [`Store::range`] lists a prefix in key order, at most `limit` entries per
//!   page, continuing after a given key;
//! * [`Store::txn`] applies several puts and deletes atomically, at one
//!   revision shared by all of them, if every compare on a key's
//!   `mod_revision` holds; [`Store::txn_put`] / [`Store::txn_delete`] are its
//!   single-key compare-and-swap forms;
//! * [`Store::watch`] streams every change under a prefix from a revision on,
//!   with no gap and no duplicate, surviving connection loss inside the
//!   backend; if the history it needs was compacted it ends with
//!   [`StoreError::Compacted`] so the caller can resynchronise. The events of
//!   one revision (one transaction) arrive together, in operation order, and
//!   a stream never ends between two events of one revision, so a consumer
//!   may always resume from the revision of the last event it got + 1;
//! * leases have a TTL, are kept alive by [`Store::keep_alive`], and their
//!   expiry (or revocation) deletes every key attached to them at one
//!   revision, which watchers see as delete events.

mod error;
mod etcd;
pub mod private;
mod redb_store;
mod types;

pub use error::StoreError;
pub use etcd::{EtcdOptions, EtcdStore};
pub use redb_store::{RedbOptions, RedbStore};
pub use types::{Compare, Event, EventKind, KeyValue, LeaseId, Page, TxnOp, WatchStream};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A shared handle to whichever backend is configured.
pub type DynStore = Arc<dyn Store>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Sets `key`, attached to `lease` when given. Returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<i64>;

    /// Deletes `key`. Returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Keys starting with `prefix`, in key order, strictly after `after` when
    /// given (the continuation token is the last key of the previous page),
    /// at most `limit` of them (0 means no limit).
    async fn range(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page>;

    /// Applies every op atomically at ONE new revision if every compare
    /// holds (etcd's `Txn` with only a success branch). Every kv written gets
    /// that revision as its `mod_revision` (and `version` + 1); watchers see
    /// the events together, in op order.
    ///
    /// Returns `Some(revision)` on success — the current revision, not bumped,
    /// when no op changed anything (e.g. only deletes of missing keys) — and
    /// `None` when a compare failed, in which case nothing was written.
    /// Writing one key twice is [`StoreError::InvalidArgument`]; a put with an
    /// unknown or expired lease is [`StoreError::LeaseNotFound`] and nothing
    /// is written. etcd caps the ops of one transaction (`--max-txn-ops`, 128
    /// by default), so keep transactions small.
    async fn txn(&self, compares: &[(String, Compare)], ops: Vec<TxnOp>) -> Result<Option<i64>>;

    /// Writes `value` to `key` only if the key's current `mod_revision`
    /// equals `compare` (see [`Compare`]). Returns the new revision on
    /// success and `None` when the comparison failed.
    async fn txn_put(
        &self,
        key: &str,
        compare: Compare,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Option<i64>> {
        let op = TxnOp::Put {
            key: key.to_owned(),
            value,
            lease,
        };
        self.txn(&[(key.to_owned(), compare)], vec![op]).await
    }

    /// Deletes `key` only if its current `mod_revision` equals `compare`.
    /// Returns whether the delete happened.
    async fn txn_delete(&self, key: &str, compare: Compare) -> Result<bool> {
        let op = TxnOp::Delete {
            key: key.to_owned(),
        };
        let held = self
            .txn(&[(key.to_owned(), compare)], vec![op])
            .await?
            .is_some();
        // A compare that held on a revision > 0 (or `Present`) proved the
        // key existed in the same atomic step, so the delete removed it;
        // `Absent` (or a revision of 0) matched a missing key, which deletes
        // nothing.
        Ok(held
            && match compare {
                Compare::ModRevision(rev) => rev > 0,
                Compare::Present => true,
                Compare::Absent => false,
            })
    }

    /// The store's current revision (the revision of the latest write).
    async fn revision(&self) -> Result<i64>;

    /// Every change under `prefix` with a revision ≥ `from_revision`, in
    /// revision order, then live changes as they happen. A `from_revision`
    /// of 0 (or less) means "from now": only changes after the call.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Refreshes a lease. Fails with [`StoreError::LeaseNotFound`] once it
    /// has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// A short name for logs: `redb:/path` or `etcd://h1,h2`.
    fn describe(&self) -> String;

    /// Only this process can use the store while it is open (an embedded,
    /// file-locked store). Then a lease this process did not grant was left
    /// by a process that is gone: its holder may take it over at once instead
    /// of waiting for it to expire. Shared stores (etcd) answer `false`.
    fn exclusive(&self) -> bool {
        false
    }
}

/// Opens a store from a URL-ish spec: `redb:PATH` or
/// `etcd://host1:2379,host2:2379` (see [`EtcdOptions`] for auth and TLS).
pub async fn open(spec: &str, etcd: EtcdOptions) -> Result<DynStore> {
    if let Some(path) = spec.strip_prefix("redb:") {
        // Opening does file I/O (and may wait briefly for a closing handle),
        // so keep it off the async worker threads.
        let path = path.to_owned();
        let store = tokio::task::spawn_blocking(move || RedbStore::open(path))
            .await
            .map_err(|e| StoreError::Embedded(format!("opening the store failed: {e}")))??;
        Ok(Arc::new(store))
    } else if spec.starts_with("etcd://") || spec.starts_with("etcds://") {
        let store = EtcdStore::connect(spec, etcd).await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::InvalidSpec(format!(
            "`{spec}`: expected `redb:PATH` or `etcd://HOST:PORT[,HOST:PORT…]`"
        )))
    }
}
