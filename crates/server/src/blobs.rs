//! Blobs: task logs and artifacts, anything that grows without bound and so
//! never goes into the store. Backed by `object_store` (a local or shared
//! directory today; S3-compatible stores through the same trait).
//!
//! A running task's log is a set of chunk objects named by byte offset, so
//! every write is a whole new object (object stores cannot append) and a
//! chunk the agent resends after a reconnect simply overlaps: readers merge
//! chunks by offset. When the task ends the chunks are folded into one
//! object.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use testbed_core::keys;
use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum BlobError {
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
    #[error("blob directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    describe: String,
}

impl Blobs {
    /// Blobs as files under `dir` (created if missing).
    pub fn local(dir: &FsPath) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Blobs {
            store: Arc::new(store),
            describe: format!("file:{}", dir.display()),
        })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), BlobError> {
        self.store.put(&Path::from(path), data.into()).await?;
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<Option<Bytes>, BlobError> {
        match self.store.get(&Path::from(path)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn size(&self, path: &str) -> Result<Option<u64>, BlobError> {
        match self.store.head(&Path::from(path)).await {
            Ok(meta) => Ok(Some(meta.size as u64)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, path: &str) -> Result<(), BlobError> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Object paths under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let prefix = Path::from(prefix.trim_end_matches('/'));
        let mut out: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }

    /// Stores one chunk of a task's log.
    pub async fn put_log_chunk(
        &self,
        task: &Uuid,
        offset: u64,
        data: &str,
    ) -> Result<(), BlobError> {
        self.put(
            &keys::log_chunk_blob(task, offset),
            Bytes::copy_from_slice(data.as_bytes()),
        )
        .await
    }

    /// A task's log from byte `from` on: the folded log if the task ended,
    /// else the merge of its chunks.
    pub async fn read_log(&self, task: &Uuid, from: u64) -> Result<Bytes, BlobError> {
        if let Some(full) = self.get(&keys::log_blob(task)).await? {
            let start = (from as usize).min(full.len());
            return Ok(full.slice(start..));
        }
        let merged = self.merge_chunks(task).await?;
        if merged.is_empty() {
            // The chunks may have just been folded into the whole log.
            if let Some(full) = self.get(&keys::log_blob(task)).await? {
                let start = (from as usize).min(full.len());
                return Ok(full.slice(start..));
            }
        }
        let start = (from as usize).min(merged.len());
        Ok(Bytes::from(merged).slice(start..))
    }

    async fn merge_chunks(&self, task: &Uuid) -> Result<Vec<u8>, BlobError> {
        let mut chunks = Vec::new();
        for path in self.list(&keys::log_chunks_prefix(task)).await? {
            let Some(offset) = path.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if let Some(data) = self.get(&path).await? {
                chunks.push((offset, data));
            }
        }
        Ok(merge(chunks))
    }

    /// Folds a finished task's chunks into one object and drops the chunks.
    /// Returns the log's length.
    pub async fn finish_log(&self, task: &Uuid) -> Result<u64, BlobError> {
        let merged = self.merge_chunks(task).await?;
        if merged.is_empty() {
            // Folded before (a duplicate result), or a task that printed
            // nothing: readers treat a missing log as empty.
            return Ok(self.size(&keys::log_blob(task)).await?.unwrap_or(0));
        }
        let len = merged.len() as u64;
        self.put(&keys::log_blob(task), Bytes::from(merged)).await?;
        for path in self.list(&keys::log_chunks_prefix(task)).await? {
            self.delete(&path).await?;
        }
        Ok(len)
    }
}

/// Merges possibly overlapping, possibly duplicated chunks by offset.
pub fn merge(mut chunks: Vec<(u64, Bytes)>) -> Vec<u8> {
    chunks.sort_by_key(|(o, _)| *o);
    let mut out: Vec<u8> = Vec::new();
    for (offset, data) in chunks {
        let offset = offset as usize;
        let end = offset + data.len();
        if end <= out.len() {
            continue;
        }
        if offset > out.len() {
            // A gap: bytes the agent never delivered. Keep what we have in
            // order rather than inventing content.
            out.extend_from_slice(&data);
        } else {
            out.extend_from_slice(&data[out.len() - offset..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_duplicate_chunks() {
        let chunks = vec![
            (5, Bytes::from_static(b"fghij")),
            (0, Bytes::from_static(b"abcdefgh")),
            (0, Bytes::from_static(b"abcde")),
            (10, Bytes::from_static(b"k")),
        ];
        assert_eq!(merge(chunks), b"abcdefghijk");
    }

    #[tokio::test]
    async fn log_round_trip_and_fold() {
        let dir = std::env::temp_dir().join(format!("testbed-blobs-{}", Uuid::new_v4()));
        let blobs = Blobs::local(&dir).unwrap();
        let t = Uuid::new_v4();
        blobs.put_log_chunk(&t, 0, "hello ").await.unwrap();
        blobs.put_log_chunk(&t, 6, "world\n").await.unwrap();
        blobs.put_log_chunk(&t, 0, "hello ").await.unwrap();
        assert_eq!(&blobs.read_log(&t, 0).await.unwrap()[..], b"hello world\n");
        assert_eq!(&blobs.read_log(&t, 6).await.unwrap()[..], b"world\n");
        assert_eq!(blobs.finish_log(&t).await.unwrap(), 12);
        assert!(blobs
            .list(&keys::log_chunks_prefix(&t))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(&blobs.read_log(&t, 0).await.unwrap()[..], b"hello world\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
