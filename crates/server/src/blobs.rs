//! Blobs: task logs and artifacts, reports and load-test series — anything
//! that grows without bound and so never goes into the store. Backed by
//! `object_store`: a local or shared directory (the default), or any
//! S3-compatible object store (`--blobs s3://BUCKET/PREFIX`), which is what
//! lets replicas on different machines share logs without a shared
//! filesystem.
//!
//! A running task's log is a set of chunk objects named by byte offset, so
//! every write is a whole new object (object stores cannot append) and a
//! chunk the agent resends after a reconnect simply overlaps: readers merge
//! chunks by offset. When the task ends the chunks are folded into one
//! object.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig, WriteMultipart};
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
    /// The blob setting cannot be used: `spec` is what was given, `what`
    /// says what failed and what to check.
    #[error("{spec}: {what}")]
    Config { spec: String, what: String },
}

/// Blobs above this size are uploaded in parts (S3 takes at most 5 GiB in
/// one PUT, and a part that fails is retried alone).
const MULTIPART_OVER: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Part size of a blob written as it streams in ([`Blobs::writer`]): S3's
/// minimum, so an upload holds little in memory whatever its size.
pub const STREAM_PART: usize = 5 * 1024 * 1024;
/// Parts of a streamed blob in flight at once: with the part being filled,
/// a streamed upload holds at most three parts (15 MiB).
const STREAM_PARTS_IN_FLIGHT: usize = 2;

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

    /// Blobs where `spec` says: `s3://BUCKET[/PREFIX]` (credentials, region
    /// and endpoint from the usual `AWS_*` variables), `file:///PATH`, or a
    /// plain directory path. The store is checked before it is returned (a
    /// probe object is written, read back and deleted), so a wrong bucket,
    /// endpoint or credential stops the start instead of losing logs later.
    pub async fn open(spec: &str) -> Result<Self, BlobError> {
        let blobs = if let Some(rest) = spec.strip_prefix("s3://") {
            Self::s3(spec, rest)?
        } else if let Some(path) = spec.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(config(
                    spec,
                    "a file URL needs an absolute path (file:///var/lib/testbed/blobs); \
                     a relative directory is given without file://",
                ));
            }
            Self::local(FsPath::new(path))?
        } else if let Some((scheme, _)) = spec.split_once("://") {
            return Err(config(
                spec,
                &format!(
                    "unsupported blob store `{scheme}://`: give s3://BUCKET/PREFIX (any \
                     S3-compatible store), file:///PATH or a directory"
                ),
            ));
        } else if spec.is_empty() {
            return Err(config(
                spec,
                "empty: give s3://BUCKET/PREFIX or a directory",
            ));
        } else {
            Self::local(FsPath::new(spec))?
        };
        blobs.probe(spec).await?;
        Ok(blobs)
    }

    fn s3(spec: &str, rest: &str) -> Result<Self, BlobError> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(config(
                spec,
                "no bucket: give s3://BUCKET or s3://BUCKET/PREFIX",
            ));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // Before anything else that sets client options: this call
            // replaces them all.
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            )
            // The default retries for three minutes: too long for a log
            // write an agent waits on, and for a start that should fail.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 4,
                retry_timeout: Duration::from_secs(20),
            });
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if let Some(endpoint) = &endpoint {
            if url::Url::parse(endpoint).is_err() {
                return Err(config(
                    spec,
                    &format!("AWS_ENDPOINT_URL {endpoint:?} is not a URL (http(s)://HOST:PORT)"),
                ));
            }
            // An http:// endpoint is a deliberate choice (a local MinIO,
            // moto, Ceph on a private network); object_store refuses it
            // unless told.
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        let s3 = builder.build().map_err(|e| {
            config(
                spec,
                &format!(
                    "{e} (credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
                          the region from AWS_REGION, the endpoint from AWS_ENDPOINT_URL)"
                ),
            )
        })?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        let mut describe = format!("s3://{bucket}/{prefix}");
        if let Some(endpoint) = endpoint {
            describe.push_str(&format!(" at {endpoint}"));
        }
        Ok(Blobs { store, describe })
    }

    /// Writes, reads back and deletes one object, naming what failed.
    async fn probe(&self, spec: &str) -> Result<(), BlobError> {
        let path = Path::from(format!(".testbed-probe/{}", Uuid::new_v4()));
        let data = Bytes::from_static(b"testbed blob store probe");
        let step = |op: &str, e: object_store::Error| config(spec, &probe_failure(op, &e));
        self.store
            .put(&path, data.clone().into())
            .await
            .map_err(|e| step("writing", e))?;
        let read = self
            .store
            .get(&path)
            .await
            .map_err(|e| step("reading back", e))?
            .bytes()
            .await
            .map_err(|e| step("reading back", e))?;
        if read != data {
            return Err(config(
                spec,
                "a probe object read back differs from what was written",
            ));
        }
        self.store
            .delete(&path)
            .await
            .map_err(|e| step("deleting", e))?;
        Ok(())
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), BlobError> {
        let path = Path::from(path);
        if data.len() <= MULTIPART_OVER {
            self.store.put(&path, data.into()).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.put(data);
        writer.finish().await?;
        Ok(())
    }

    /// A blob written as its data arrives, in [`STREAM_PART`]s. It appears
    /// only when [`BlobWriter::finish`] completes: an upload cut short (or
    /// aborted, or whose writer is dropped) leaves no object behind, and
    /// never part of one under the blob's name.
    pub async fn writer(&self, path: &str) -> Result<BlobWriter, BlobError> {
        let upload = self.store.put_multipart(&Path::from(path)).await?;
        Ok(BlobWriter {
            inner: WriteMultipart::new_with_chunk_size(upload, STREAM_PART),
        })
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

/// A blob read as it streams, from a blocking thread (`std::io::Read`, for
/// parsers that are synchronous): each chunk of the object store's stream is
/// awaited on the runtime, so memory holds one chunk whatever the size.
pub struct SyncBlobReader {
    handle: tokio::runtime::Handle,
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl std::io::Read for SyncBlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// A [`BlobWriter`] written from a blocking thread (`std::io::Write`), handed
/// on in pieces of [`SYNC_PIECE`] bytes.
pub struct SyncBlobWriter {
    handle: tokio::runtime::Handle,
    writer: BlobWriter,
    piece: Vec<u8>,
}

/// What a [`SyncBlobWriter`] gathers before handing it to its writer.
const SYNC_PIECE: usize = 256 * 1024;

impl SyncBlobWriter {
    fn hand_on(&mut self) -> Result<(), BlobError> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(
            &mut self.piece,
            Vec::with_capacity(SYNC_PIECE),
        ));
        self.handle.block_on(self.writer.write(piece))
    }

    /// Makes the blob appear, whole ([`BlobWriter::finish`]).
    pub fn finish(mut self) -> Result<(), BlobError> {
        self.hand_on()?;
        self.handle.block_on(self.writer.finish())
    }

    /// Drops what was written ([`BlobWriter::abort`]).
    pub fn abort(self) {
        self.handle.block_on(self.writer.abort())
    }
}

impl std::io::Write for SyncBlobWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.piece.extend_from_slice(data);
        if self.piece.len() >= SYNC_PIECE {
            self.hand_on().map_err(std::io::Error::other)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Blobs {
    /// The blob at `path` and its size, to read as it streams from a
    /// blocking thread (never from a runtime thread: it waits on `handle`);
    /// `None` when there is none.
    pub fn open_sync(
        &self,
        handle: &tokio::runtime::Handle,
        path: &str,
    ) -> Result<Option<(u64, SyncBlobReader)>, BlobError> {
        match handle.block_on(self.store.get(&Path::from(path))) {
            Ok(r) => Ok(Some((
                r.meta.size as u64,
                SyncBlobReader {
                    handle: handle.clone(),
                    stream: r.into_stream(),
                    chunk: Bytes::new(),
                },
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Blobs::writer`] for a blocking thread (see [`Blobs::open_sync`]).
    pub fn writer_sync(
        &self,
        handle: &tokio::runtime::Handle,
        path: &str,
    ) -> Result<SyncBlobWriter, BlobError> {
        Ok(SyncBlobWriter {
            handle: handle.clone(),
            writer: handle.block_on(self.writer(path))?,
            piece: Vec::with_capacity(SYNC_PIECE),
        })
    }
}

/// See [`Blobs::writer`].
pub struct BlobWriter {
    inner: WriteMultipart,
}

impl BlobWriter {
    /// Adds `data`, first waiting while [`STREAM_PARTS_IN_FLIGHT`] parts
    /// are uploading (back pressure on whoever sends the data).
    pub async fn write(&mut self, data: Bytes) -> Result<(), BlobError> {
        self.inner.wait_for_capacity(STREAM_PARTS_IN_FLIGHT).await?;
        self.inner.put(data);
        Ok(())
    }

    /// Uploads what is left and makes the blob appear, whole.
    pub async fn finish(self) -> Result<(), BlobError> {
        self.inner.finish().await?;
        Ok(())
    }

    /// Drops what was written; the blob does not appear.
    pub async fn abort(self) {
        if let Err(e) = self.inner.abort().await {
            tracing::debug!("aborting a blob upload: {e}");
        }
    }
}

fn config(spec: &str, what: &str) -> BlobError {
    BlobError::Config {
        spec: spec.to_string(),
        what: what.to_string(),
    }
}

/// What a failed probe step means, in the terms of the settings to check.
fn probe_failure(op: &str, e: &object_store::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("NoSuchBucket") || text.contains("bucket does not exist") {
        "the bucket does not exist (create it, or fix the name)"
    } else if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("AccessDenied")
        || text.contains("403")
    {
        "access refused: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the role) \
         and the bucket's policy"
    } else if text.contains("error sending request")
        || text.contains("connect")
        || text.contains("dns error")
    {
        "the store cannot be reached: check AWS_ENDPOINT_URL (or AWS_REGION) and the network"
    } else {
        "check the bucket, AWS_ENDPOINT_URL, AWS_REGION and the credentials"
    };
    format!("{op} a probe object failed: {hint} ({text})")
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
    async fn open_takes_a_directory_or_a_file_url_and_uploads_large_blobs_in_parts() {
        let root = std::env::temp_dir().join(format!("testbed-blobs-{}", Uuid::new_v4()));
        let plain = root.join("plain");
        let blobs = Blobs::open(plain.to_str().unwrap()).await.unwrap();
        blobs.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert!(plain.join("a/b").is_file());
        let url = format!("file://{}", root.join("url").display());
        let blobs = Blobs::open(&url).await.unwrap();
        // Over MULTIPART_OVER: goes through put_multipart.
        let big = Bytes::from(vec![7u8; MULTIPART_OVER + PART_SIZE / 2]);
        blobs.put("big", big.clone()).await.unwrap();
        assert_eq!(blobs.get("big").await.unwrap().unwrap(), big);
        // The probe leaves nothing behind.
        assert!(blobs.list(".testbed-probe").await.unwrap().is_empty());
        for bad in ["", "ftp://x/y", "file://rel", "s3://"] {
            assert!(
                matches!(Blobs::open(bad).await, Err(BlobError::Config { .. })),
                "{bad:?}"
            );
        }
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn a_streamed_blob_appears_only_when_finished() {
        let dir = std::env::temp_dir().join(format!("testbed-blobs-{}", Uuid::new_v4()));
        let blobs = Blobs::local(&dir).unwrap();
        let part = Bytes::from(vec![3u8; STREAM_PART / 2 + 1]);
        let mut w = blobs.writer("r/whole").await.unwrap();
        for _ in 0..5 {
            w.write(part.clone()).await.unwrap();
            assert_eq!(blobs.get("r/whole").await.unwrap(), None);
        }
        w.finish().await.unwrap();
        let got = blobs.get("r/whole").await.unwrap().unwrap();
        assert_eq!(got.len(), part.len() * 5);
        let mut w = blobs.writer("r/cut").await.unwrap();
        w.write(part.clone()).await.unwrap();
        w.write(part).await.unwrap();
        w.abort().await;
        assert_eq!(blobs.get("r/cut").await.unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
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
