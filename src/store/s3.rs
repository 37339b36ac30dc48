//! The blob store on an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage), through the
//! Apache Arrow project's `object_store` crate.
//!
//! Keys: a committed blob is the object `<prefix>blobs/sha256/<hex>`; a large blob being written is
//! a multipart upload to `<prefix>staging/<random>`, which is completed, copied under its digest
//! key and removed only in [`StagedBlob::commit`], after the caller verified it. So nothing is
//! visible under a digest key that does not hash to it, even when wharf or the store is killed
//! mid-upload (what a crash leaves is an unfinished upload, which the store expires, or at worst a
//! completed object under `staging/`, never a digest key).
//!
//! Reads: [`BlobStore::open`] is a HEAD, plus one GET for a blob of at most [`SMALL_BLOB`] bytes.
//! Larger blobs stream by ranged GETs of at most [`WINDOW`] bytes, one at a time, each response's
//! chunks passed on as they arrive: a blob is never held whole in memory.
//!
//! Writes buffer up to one [`PART`]: a blob smaller than that is one conditional PUT at commit;
//! a larger one is uploaded part by part as it arrives, with at most [`PARTS_IN_FLIGHT`] parts in
//! flight, so a writer holds a bounded amount of memory.
//!
//! Errors name the bucket and key, never the credentials (`object_store` signs requests in headers
//! and its errors carry the URL and the store's answer, not the headers).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, PutMode,
    PutOptions, PutPayload, RetryConfig,
};
use parking_lot::Mutex;
use tokio::task::JoinSet;

use super::blob::{Blob, BlobRead, BlobStore, BlobWriter, ByteStream, Listed, StagedBlob};
use super::SMALL_BLOB;
use crate::bucket::S3Config;
use crate::oci::Digest;

/// The size of one part of a multipart upload, and the most a writer buffers: above S3's 5 MiB
/// minimum part, and 10,000 parts (S3's maximum) make 78 GiB, more than any image layer.
pub const PART: usize = 8 * 1024 * 1024;

/// Parts of one blob uploaded at once: with the buffer, a writer holds at most three parts.
pub const PARTS_IN_FLIGHT: usize = 2;

/// The most one ranged GET of a streamed read asks for.
pub const WINDOW: u64 = 8 * 1024 * 1024;

/// A blob store in one bucket of an S3-compatible object store.
#[derive(Clone)]
pub struct S3BlobStore {
    inner: Arc<Inner>,
}

/// What every reader, writer and staged blob of a store shares.
struct Inner {
    store: AmazonS3,
    bucket: String,
    prefix: String,
}

/// Reads one committed blob by ranged GETs.
struct S3Read {
    inner: Arc<Inner>,
    path: Path,
    size: u64,
}

/// A blob being written: the bytes of the current part, and the multipart upload once the blob
/// outgrew one part.
struct S3Writer {
    inner: Arc<Inner>,
    buf: BytesMut,
    written: u64,
    upload: Option<Upload>,
}

/// A multipart upload to a staging key; aborted when dropped before it was completed.
struct Upload {
    inner: Arc<Inner>,
    staging: Path,
    /// `None` once completed or aborted. In a mutex only to make the staged blob `Sync`: it is
    /// never held across an await.
    multipart: Mutex<Option<Box<dyn MultipartUpload>>>,
    in_flight: JoinSet<object_store::Result<()>>,
}

/// A finished blob waiting for its digest.
enum S3Staged {
    /// Smaller than one part: PUT whole at commit.
    Single { inner: Arc<Inner>, bytes: Bytes },
    /// Every part uploaded; completed at commit.
    Multipart { upload: Upload, size: u64 },
}

// === impl S3BlobStore ===

impl S3BlobStore {
    /// A store on the bucket `config` names. No request is made: a wrong bucket or credentials show
    /// on the first read or write.
    ///
    /// # Errors
    /// When the configuration cannot make a client (an unusable endpoint or TLS setup).
    pub fn new(config: &S3Config) -> io::Result<Self> {
        let mut builder = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => AmazonS3Builder::new()
                .with_access_key_id(id.expose())
                .with_secret_access_key(secret.expose()),
            // The usual AWS environment variables, web identity or instance role.
            _ => AmazonS3Builder::from_env(),
        };
        builder = builder
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style);
        let mut client = ClientOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(config.connect_timeout);
        if let Some(endpoint) = &config.endpoint {
            let mut url = endpoint.clone();
            if !config.path_style {
                // object_store takes a virtual-hosted endpoint with the bucket in it.
                if let Some(host) = url.host_str() {
                    let host = format!("{}.{host}", config.bucket);
                    url.set_host(Some(&host)).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("s3 endpoint {endpoint} with bucket {}: {e}", config.bucket),
                        )
                    })?;
                }
            }
            let endpoint_text = url.as_str().trim_end_matches('/').to_owned();
            builder = builder.with_endpoint(endpoint_text);
            // The configuration allowed http (loopback or allow_http = true).
            client = client.with_allow_http(url.scheme() == "http");
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: config.timeout.min(Duration::from_secs(30)),
        };
        let store = builder
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("s3 bucket {}: cannot make a client: {e}", config.bucket),
                )
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                bucket: config.bucket.clone(),
                prefix: config.prefix.clone(),
            }),
        })
    }

    /// Every committed blob and its size, listed from the bucket (for `wharf gc` and `check`).
    /// Keys under the blob prefix that are not a digest are skipped (logged at debug).
    ///
    /// # Errors
    /// When the bucket cannot be listed.
    pub async fn list(&self) -> io::Result<Vec<Listed>> {
        let inner = &self.inner;
        let dir = format!("{}blobs/sha256", inner.prefix);
        let prefix = Path::from(dir.as_str());
        let mut listing = inner.store.list(Some(&prefix));
        let mut blobs = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| inner.error(&dir, e))?;
            let key = meta.location.as_ref();
            let digest = key
                .strip_prefix(dir.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|hex| Digest::from_hex(hex).ok());
            match digest {
                Some(digest) => blobs.push(Listed {
                    digest,
                    size: meta.size,
                    stored_at: meta.last_modified.into(),
                }),
                None => tracing::debug!(bucket = %inner.bucket, key, "not a blob key; skipped"),
            }
        }
        Ok(blobs)
    }

    /// Removes the objects under `<prefix>staging/` older than `older_than`: what a process killed
    /// between completing an upload and copying it under its digest left (never visible under a
    /// digest key, but paid for). Uploads never completed are not objects; the store expires them
    /// (an `AbortIncompleteMultipartUpload` lifecycle rule on AWS, `garage bucket
    /// cleanup-incomplete-uploads` on Garage). Returns the count and bytes removed.
    ///
    /// # Errors
    /// When the bucket cannot be listed or an object cannot be removed.
    pub async fn sweep_staging(&self, older_than: Duration) -> io::Result<(u64, u64)> {
        let inner = &self.inner;
        let dir = format!("{}staging", inner.prefix);
        let prefix = Path::from(dir.as_str());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cutoff = i64::try_from(now.saturating_sub(older_than.as_secs())).unwrap_or(i64::MAX);
        let old: Vec<_> = inner
            .store
            .list(Some(&prefix))
            .try_filter(|meta| {
                futures_util::future::ready(meta.last_modified.timestamp() <= cutoff)
            })
            .try_collect()
            .await
            .map_err(|e| inner.error(&dir, e))?;
        let (mut count, mut bytes) = (0, 0);
        for meta in old {
            match inner.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    count += 1;
                    bytes += meta.size;
                }
                Err(e) => return Err(inner.error(meta.location.as_ref(), e)),
            }
        }
        Ok((count, bytes))
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn list_blobs(&self) -> Option<io::Result<Vec<Listed>>> {
        Some(self.list().await)
    }

    async fn size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        let path = self.inner.blob_path(digest);
        match self.inner.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.inner.error(path.as_ref(), e)),
        }
    }

    async fn open(&self, digest: &Digest) -> io::Result<Option<Blob>> {
        let Some(size) = self.size(digest).await? else {
            return Ok(None);
        };
        let path = self.inner.blob_path(digest);
        let contents = if size <= SMALL_BLOB {
            match self.inner.store.get(&path).await {
                Ok(got) => {
                    let bytes = got
                        .bytes()
                        .await
                        .map_err(|e| self.inner.error(path.as_ref(), e))?;
                    if bytes.len() as u64 != size {
                        // Replaced between the HEAD and the GET: what the GET read is the blob.
                        tracing::debug!(bucket = %self.inner.bucket, key = %path, "size changed between HEAD and GET");
                    }
                    Some(bytes)
                }
                // Removed between the HEAD and the GET.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.inner.error(path.as_ref(), e)),
            }
        } else {
            None
        };
        let size = contents.as_ref().map_or(size, |c| c.len() as u64);
        let reader = Arc::new(S3Read {
            inner: self.inner.clone(),
            path,
            size,
        });
        Ok(Some(Blob::new(size, contents, reader)))
    }

    async fn writer(&self) -> io::Result<Box<dyn BlobWriter>> {
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            buf: BytesMut::new(),
            written: 0,
            upload: None,
        }))
    }

    async fn remove(&self, digest: &Digest) -> io::Result<()> {
        let path = self.inner.blob_path(digest);
        match self.inner.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.inner.error(path.as_ref(), e)),
        }
    }
}

// === impl Inner ===

impl Inner {
    fn blob_path(&self, digest: &Digest) -> Path {
        Path::from(format!("{}blobs/sha256/{}", self.prefix, digest.hex()))
    }

    fn staging_path(&self) -> Path {
        let mut id = [0u8; 16];
        // A failing system RNG is not a reason to refuse a write: the time keeps keys apart.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            id = nanos.to_le_bytes();
        }
        Path::from(format!("{}staging/{}", self.prefix, hex::encode(id)))
    }

    /// An `object_store` error as an I/O error naming the bucket and key.
    fn error(&self, key: &str, e: object_store::Error) -> io::Error {
        let kind = match &e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            object_store::Error::NotImplemented | object_store::Error::NotSupported { .. } => {
                io::ErrorKind::Unsupported
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("s3://{}/{key}: {e}", self.bucket))
    }
}

// === impl S3Read ===

#[async_trait]
impl BlobRead for S3Read {
    async fn read_range(self: Arc<Self>, start: u64, end: u64) -> io::Result<Bytes> {
        if start > end || end > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if start == end {
            return Ok(Bytes::new());
        }
        let bytes = self
            .inner
            .store
            .get_range(&self.path, start..end)
            .await
            .map_err(|e| self.inner.error(self.path.as_ref(), e))?;
        if bytes.len() as u64 != end - start {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(bytes)
    }

    fn stream(self: Arc<Self>, start: u64, end: u64) -> Option<ByteStream> {
        if start > end || end > self.size {
            let e: io::Error = io::ErrorKind::UnexpectedEof.into();
            return Some(Box::pin(futures_util::stream::once(async { Err(e) })));
        }
        let windows = (start..end)
            .step_by(usize::try_from(WINDOW).unwrap_or(usize::MAX))
            .map(move |from| (from, end.min(from + WINDOW)));
        let stream = futures_util::stream::iter(windows)
            .then(move |(from, to)| {
                let reader = self.clone();
                async move { reader.window(from, to).await }
            })
            .try_flatten();
        Some(Box::pin(stream))
    }
}

impl S3Read {
    /// One ranged GET, its chunks as they arrive; an error when it ends short.
    async fn window(&self, from: u64, to: u64) -> io::Result<ByteStream> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(from..to)),
            ..GetOptions::default()
        };
        let got = self
            .inner
            .store
            .get_opts(&self.path, options)
            .await
            .map_err(|e| self.inner.error(self.path.as_ref(), e))?;
        let inner = self.inner.clone();
        let key = self.path.clone();
        let expected = to - from;
        // A window that ends before `to` is an error, not a short body.
        let body = futures_util::stream::unfold(
            (got.into_stream(), 0u64, false),
            move |(mut body, seen, done)| {
                let inner = inner.clone();
                let key = key.clone();
                async move {
                    if done {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            let seen = seen + chunk.len() as u64;
                            Some((Ok(chunk), (body, seen, false)))
                        }
                        Some(Err(e)) => {
                            Some((Err(inner.error(key.as_ref(), e)), (body, seen, true)))
                        }
                        None if seen == expected => None,
                        None => Some((
                            Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("s3://{}/{key}: a ranged GET ended short", inner.bucket),
                            )),
                            (body, seen, true),
                        )),
                    }
                }
            },
        );
        Ok(Box::pin(body))
    }
}

// === impl S3Writer ===

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for chunk in chunks {
            let mut rest = chunk.clone();
            while !rest.is_empty() {
                let room = PART - self.buf.len();
                let take = room.min(rest.len());
                self.buf.extend_from_slice(&rest.split_to(take));
                if self.buf.len() == PART {
                    let part = self.buf.split().freeze();
                    self.upload_part(part).await?;
                }
            }
            self.written += chunk.len() as u64;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn finish(mut self: Box<Self>) -> io::Result<Box<dyn StagedBlob>> {
        let size = self.written;
        match self.upload.take() {
            None => Ok(Box::new(S3Staged::Single {
                inner: self.inner.clone(),
                bytes: self.buf.split().freeze(),
            })),
            Some(mut upload) => {
                if !self.buf.is_empty() {
                    upload.put_part(self.buf.split().freeze()).await?;
                }
                upload.drain().await?;
                Ok(Box::new(S3Staged::Multipart { upload, size }))
            }
        }
    }
}

impl S3Writer {
    /// Uploads one full part, starting the multipart upload with the first.
    async fn upload_part(&mut self, part: Bytes) -> io::Result<()> {
        if self.upload.is_none() {
            let staging = self.inner.staging_path();
            let multipart = self
                .inner
                .store
                .put_multipart(&staging)
                .await
                .map_err(|e| self.inner.error(staging.as_ref(), e))?;
            self.upload = Some(Upload {
                inner: self.inner.clone(),
                staging,
                multipart: Mutex::new(Some(multipart)),
                in_flight: JoinSet::new(),
            });
        }
        match &mut self.upload {
            Some(upload) => upload.put_part(part).await,
            None => Err(io::Error::other("multipart upload missing")),
        }
    }
}

// === impl Upload ===

impl Upload {
    /// Starts uploading `part`, after waiting for room among the parts in flight.
    async fn put_part(&mut self, part: Bytes) -> io::Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let part = match self.multipart.get_mut().as_mut() {
            Some(multipart) => multipart.put_part(PutPayload::from(part)),
            None => return Err(io::Error::other("multipart upload already closed")),
        };
        self.in_flight.spawn(part);
        Ok(())
    }

    /// Waits for every part in flight.
    async fn drain(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }

    async fn join_one(&mut self) -> io::Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(self.inner.error(self.staging.as_ref(), e)),
            Some(Err(e)) => Err(io::Error::other(format!(
                "s3://{}/{}: part upload task failed: {e}",
                self.inner.bucket, self.staging
            ))),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(mut multipart) = self.multipart.get_mut().take() else {
            return;
        };
        self.in_flight.abort_all();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to abort on: the store expires the unfinished upload (no key shows it).
            return;
        };
        let bucket = self.inner.bucket.clone();
        let staging = self.staging.clone();
        runtime.spawn(async move {
            if let Err(e) = multipart.abort().await {
                tracing::debug!(%bucket, key = %staging, error = %e, "abort of a multipart upload failed");
            }
        });
    }
}

// === impl S3Staged ===

#[async_trait]
impl StagedBlob for S3Staged {
    fn size(&self) -> u64 {
        match self {
            Self::Single { bytes, .. } => bytes.len() as u64,
            Self::Multipart { size, .. } => *size,
        }
    }

    async fn read_all(&self) -> io::Result<Bytes> {
        match self {
            Self::Single { bytes, .. } => Ok(bytes.clone()),
            Self::Multipart { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a blob staged in parts in the object store is not read back before commit",
            )),
        }
    }

    async fn commit(self: Box<Self>, digest: &Digest) -> io::Result<()> {
        match *self {
            Self::Single { inner, bytes } => {
                let path = inner.blob_path(digest);
                let create = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                let payload = PutPayload::from(bytes.clone());
                match inner.store.put_opts(&path, payload, create).await {
                    // Another writer (or replica) committed the same digest: the same bytes.
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                    // A store without conditional puts: overwriting gives the same bytes.
                    Err(object_store::Error::NotImplemented) => inner
                        .store
                        .put(&path, PutPayload::from(bytes))
                        .await
                        .map(|_| ())
                        .map_err(|e| inner.error(path.as_ref(), e)),
                    Err(e) => Err(inner.error(path.as_ref(), e)),
                }
            }
            Self::Multipart { mut upload, .. } => {
                let inner = upload.inner.clone();
                let path = inner.blob_path(digest);
                match inner.store.head(&path).await {
                    // Already there: the upload is dropped, which aborts it.
                    Ok(_) => return Ok(()),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(inner.error(path.as_ref(), e)),
                }
                let Some(mut multipart) = upload.multipart.get_mut().take() else {
                    return Err(io::Error::other("multipart upload already closed"));
                };
                let staging = upload.staging.clone();
                if let Err(e) = multipart.complete().await {
                    // Not completed: abort it so the store frees the parts.
                    *upload.multipart.get_mut() = Some(multipart);
                    return Err(inner.error(staging.as_ref(), e));
                }
                let copied = inner.store.copy(&staging, &path).await;
                if let Err(e) = inner.store.delete(&staging).await {
                    tracing::debug!(bucket = %inner.bucket, key = %staging, error = %e, "staging object not removed");
                }
                copied.map_err(|e| inner.error(path.as_ref(), e))
            }
        }
    }
}
