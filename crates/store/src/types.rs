use std::collections::HashSet;
use std::pin::Pin;

use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::StoreError;

pub type LeaseId = i64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last delete).
    pub create_revision: i64,
    /// Revision of the latest write to the key.
    pub mod_revision: i64,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
    /// The lease the key is attached to, or 0.
    pub lease: LeaseId,
}

/// One page of a [`crate::Store::range`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    /// More keys follow; continue with `after = kvs.last().key`.
    pub more: bool,
    /// The store revision the page was read at.
    pub revision: i64,
}

/// What a compare-and-swap compares the key's `mod_revision` against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(i64),
    /// The key must exist, whatever its revision (a guard on a key that is
    /// rewritten often, such as an agent's liveness record, where any
    /// revision is as good as another).
    Present,
}

/// One write of a multi-key transaction ([`crate::Store::txn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

impl TxnOp {
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete: the key, an empty value, and `mod_revision` = the
    /// revision of the delete.
    pub kv: KeyValue,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// Rejects keys no backend can store, up front, so both backends fail the
/// same way (etcd refuses an empty key; redb would accept it).
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument(
            "the key must not be empty".into(),
        ));
    }
    Ok(())
}

/// Rejects transactions no backend can apply, up front, for the same reason
/// as [`validate_key`]: etcd refuses a transaction that writes one key twice
/// (the order of the two writes would be meaningless), redb would not.
pub(crate) fn validate_txn(
    compares: &[(String, Compare)],
    ops: &[TxnOp],
) -> Result<(), StoreError> {
    for (key, _) in compares {
        validate_key(key)?;
    }
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        validate_key(op.key())?;
        if !seen.insert(op.key()) {
            return Err(StoreError::InvalidArgument(format!(
                "key {:?} is written more than once in one transaction",
                op.key()
            )));
        }
    }
    Ok(())
}
