//! The shared tier: an object store (S3 and the like) that several replicas read and write, behind
//! each replica's local hot tier.
//!
//! The local store and its index stay what the cache serves hits from and what eviction trims; the
//! shared store is the cache's content for every replica. A local miss looks in the shared store
//! before the upstream (a fill whose first source is the shared store, verified again on the way
//! in, so the hot tier fills itself with what is used). A fill from the upstream writes the hot tier
//! at the upstream's pace ([`SharingWriter`]); once the blob is verified and committed there, it is
//! uploaded to the shared store in the background ([`Shared::upload_later`], at most
//! [`UPLOADS_AT_ONCE`] at a time), hashed again on the way out, so a slow store never slows a miss
//! and nothing unverified reaches it.
//!
//! The shared store is a network service that may be down or slow, and a miss must never wait on it
//! for long: every lookup is bounded by [`LOOKUP_TIMEOUT`], and after a failure the shared store is
//! left alone for a pause ([`Shared::paused`]) during which misses go straight to the upstream and
//! fills write the hot tier only. What could not be uploaded (the store failed, the blob was evicted
//! first, wharf stopped) is not retried: the next fill of the blob (on any replica) uploads it.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, warn};

use futures_util::StreamExt;

use super::{Cache, FillError, ToCommit};
use crate::oci::{media, Digest, Verifier};
use crate::store::{Blob, BlobStore, BlobWriter, StagedBlob};

/// The longest a lookup in the shared store (a `HEAD`, plus the `GET` of a small blob) may take
/// before the miss goes to the upstream instead.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// How many blobs are uploaded to the shared store at once; further ones wait their turn.
pub const UPLOADS_AT_ONCE: usize = 2;

/// How many uploads may wait their turn; beyond that a blob is not uploaded from here (the next
/// fill of it, on any replica, uploads it), so a burst of fills cannot pile up tasks without end.
pub const MAX_PENDING_UPLOADS: usize = 4096;

/// The shared store and its health.
pub struct Shared {
    store: Arc<dyn BlobStore>,
    /// How long to leave the store alone after it failed.
    pause: Duration,
    /// Until when it is left alone.
    paused_until: Mutex<Option<Instant>>,
    /// Fills that read from the store, for metrics.
    reads: AtomicU64,
    /// Blobs and manifests committed to the store, for metrics.
    writes: AtomicU64,
    /// Failures (errors and timeouts), for metrics.
    failures: AtomicU64,
    /// Uploads waiting or running.
    uploading: AtomicUsize,
    /// Woken when the last upload ends.
    uploads_idle: Notify,
    /// Turns to upload.
    upload_turns: Semaphore,
}

/// What the shared tier did since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedCounts {
    /// Fills that read a blob from the shared store.
    pub reads: u64,
    /// Blobs and manifests committed to the shared store.
    pub writes: u64,
    /// Operations on the shared store that failed or timed out.
    pub failures: u64,
}

// === impl Shared ===

impl Shared {
    /// The shared tier on `store`, left alone for `pause` after each failure.
    pub fn new(store: Arc<dyn BlobStore>, pause: Duration) -> Self {
        Self {
            store,
            pause,
            paused_until: Mutex::new(None),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            uploading: AtomicUsize::new(0),
            uploads_idle: Notify::new(),
            upload_turns: Semaphore::new(UPLOADS_AT_ONCE),
        }
    }

    /// Uploads a blob just committed to the local tier (`local`) to the shared store, in the
    /// background: read back, hashed again and committed under its digest only when it matches. A
    /// blob the store already has, or the local tier no longer has, is skipped; a failure pauses
    /// the store. Nothing happens while the store is left alone.
    pub fn upload_later(self: &Arc<Self>, local: Arc<dyn BlobStore>, digest: Digest) {
        if self.paused() {
            return;
        }
        if self.uploading.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_UPLOADS {
            self.uploading.fetch_sub(1, Ordering::SeqCst);
            debug!(%digest, "too many uploads to the shared store waiting; this blob is not uploaded from here");
            return;
        }
        let tier = self.clone();
        tokio::spawn(async move {
            if let Ok(_turn) = tier.upload_turns.acquire().await {
                if !tier.paused() {
                    match tier.upload(local.as_ref(), &digest).await {
                        Ok(true) => {
                            tier.writes.fetch_add(1, Ordering::Relaxed);
                            debug!(%digest, "blob stored in the shared object store");
                        }
                        Ok(false) => {}
                        Err(error) => tier.failed("uploading a blob", &error),
                    }
                }
            }
            if tier.uploading.fetch_sub(1, Ordering::SeqCst) == 1 {
                tier.uploads_idle.notify_waiters();
            }
        });
    }

    /// One upload; `false` when there was nothing to do.
    async fn upload(&self, local: &dyn BlobStore, digest: &Digest) -> io::Result<bool> {
        let Some(blob) = local.open(digest).await? else {
            return Ok(false); // Evicted since.
        };
        let size = blob.size();
        if matches!(
            tokio::time::timeout(LOOKUP_TIMEOUT, self.store.size(digest)).await,
            Ok(Ok(Some(stored))) if stored == size
        ) {
            return Ok(false); // Another replica uploaded it.
        }
        let mut writer = self.store.writer().await?;
        let mut verifier = Verifier::new();
        let mut body = blob.stream_range(0, size);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            verifier.update(&chunk);
            writer.write(std::slice::from_ref(&chunk)).await?;
        }
        let staged = writer.finish().await?;
        if verifier.finish(digest, Some(size)).is_err() {
            // The local copy changed on disk since it was verified: the upload is dropped (not
            // the store's fault, so it is not paused). `wharf check --verify` finds the local copy.
            warn!(%digest, "the local copy no longer matches its digest; not uploaded to the shared store");
            return Ok(false);
        }
        staged.commit(digest).await?;
        Ok(true)
    }

    /// Resolves once no upload is waiting or running.
    pub async fn uploads_idle(&self) {
        loop {
            let notified = self.uploads_idle.notified();
            if self.uploading.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// What the tier did since start.
    pub fn counts(&self) -> SharedCounts {
        SharedCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Counts a fill that reads from the store.
    pub(super) fn read_from(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Whether the store failed recently and is being left alone.
    pub fn paused(&self) -> bool {
        let mut until = self.paused_until.lock();
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Records a failure of the store: it is left alone for the pause.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut until = self.paused_until.lock();
        if until.is_none() {
            warn!(%error, what, pause_s = self.pause.as_secs(), "shared object store failed; misses go to the upstream and fills write the local tier only for a while");
        }
        *until = Some(Instant::now() + self.pause);
    }

    /// The blob, when the shared store has it and answers within [`LOOKUP_TIMEOUT`]. A failure or a
    /// timeout is a miss here (and pauses the store).
    pub async fn open(&self, digest: &Digest) -> Option<Blob> {
        if self.paused() {
            return None;
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.store.open(digest)).await {
            Ok(Ok(blob)) => blob,
            Ok(Err(error)) => {
                self.failed("looking up a blob", &error);
                None
            }
            Err(_) => {
                self.failed("looking up a blob", &"no answer within the lookup timeout");
                None
            }
        }
    }
}

// === impl Cache ===

impl Cache {
    /// Copies a blob (or, when `manifest`, a manifest) that only the shared store has into the local
    /// tier, verified; returns its size, or `None` when the shared store does not have it (or there
    /// is none, or it fails). For work that reads the local tier whole, such as `wharf export`.
    ///
    /// # Errors
    /// Local storage or index failures.
    pub async fn promote(&self, digest: &Digest, manifest: bool) -> Result<Option<u64>, FillError> {
        if let Some(size) = self.index().blob_size(digest)? {
            return Ok(Some(size));
        }
        if manifest {
            let Some(bytes) = self.shared_manifest(digest).await else {
                return Ok(None);
            };
            let Ok(media_type) = media::resolve_manifest_type(&bytes, None) else {
                return Ok(None);
            };
            let len = bytes.len() as u64;
            let kept = self
                .put_manifest_in(digest, bytes, media_type, false)
                .await?;
            return Ok(kept.then_some(len));
        }
        let Some(shared) = self.shared() else {
            return Ok(None);
        };
        let Some(blob) = shared.open(digest).await else {
            return Ok(None);
        };
        let size = blob.size();
        self.health().check_room(size)?;
        let mut writer = self.writer(false).await?;
        let mut verifier = Verifier::new();
        let mut body = blob.stream_range(0, size);
        loop {
            let chunk = match tokio::time::timeout(LOOKUP_TIMEOUT * 10, body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    shared.failed("reading a blob", &error);
                    return Ok(None);
                }
                Err(_) => {
                    shared.failed("reading a blob", &"no data within the read timeout");
                    return Ok(None);
                }
            };
            verifier.update(&chunk);
            writer.write(&[chunk]).await?;
        }
        if let Err(mismatch) = verifier.finish(digest, Some(size)) {
            warn!(%digest, %mismatch, "the shared object store holds a copy that does not match its digest; not copying it");
            return Ok(None);
        }
        let reservation = self.reserve(size);
        self.commit_staged(
            ToCommit::Written(writer),
            digest,
            size,
            None,
            Some(reservation),
        )
        .await?;
        Ok(Some(size))
    }
}

/// Writes a new blob to the local tier; when it is committed there, it is uploaded to the shared
/// store in the background ([`Shared::upload_later`]). The local writer's errors are the writer's.
pub struct SharingWriter {
    local: Box<dyn BlobWriter>,
    local_store: Arc<dyn BlobStore>,
    tier: Arc<Shared>,
}

/// A blob staged locally, to be shared once committed.
struct SharingStaged {
    local: Box<dyn StagedBlob>,
    local_store: Arc<dyn BlobStore>,
    tier: Arc<Shared>,
}

// === impl SharingWriter ===

impl SharingWriter {
    /// Writes with `local` (a writer of `local_store`), sharing through `tier` at commit.
    pub fn new(
        local: Box<dyn BlobWriter>,
        local_store: Arc<dyn BlobStore>,
        tier: Arc<Shared>,
    ) -> Self {
        Self {
            local,
            local_store,
            tier,
        }
    }
}

#[async_trait]
impl BlobWriter for SharingWriter {
    async fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        self.local.write(chunks).await
    }

    fn written(&self) -> u64 {
        self.local.written()
    }

    async fn finish(self: Box<Self>) -> io::Result<Box<dyn StagedBlob>> {
        let Self {
            local,
            local_store,
            tier,
        } = *self;
        Ok(Box::new(SharingStaged {
            local: local.finish().await?,
            local_store,
            tier,
        }))
    }

    fn local_file(&self) -> Option<Arc<std::fs::File>> {
        self.local.local_file()
    }
}

// === impl SharingStaged ===

#[async_trait]
impl StagedBlob for SharingStaged {
    fn size(&self) -> u64 {
        self.local.size()
    }

    async fn read_all(&self) -> io::Result<Bytes> {
        self.local.read_all().await
    }

    /// Commits the local copy, then has it uploaded to the shared store in the background.
    async fn commit(self: Box<Self>, digest: &Digest) -> io::Result<()> {
        let Self {
            local,
            local_store,
            tier,
        } = *self;
        local.commit(digest).await?;
        tier.upload_later(local_store, *digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBlobStore;

    async fn write(writer: Box<dyn BlobWriter>, data: &Bytes) -> Box<dyn StagedBlob> {
        let mut writer = writer;
        writer.write(std::slice::from_ref(data)).await.unwrap();
        writer.finish().await.unwrap()
    }

    #[tokio::test]
    async fn a_shared_blob_is_uploaded_after_the_local_commit_and_not_before() {
        let local = Arc::new(MemoryBlobStore::default());
        let remote = Arc::new(MemoryBlobStore::default());
        let tier = Arc::new(Shared::new(remote.clone(), Duration::from_secs(30)));
        let data = Bytes::from_static(b"layer bytes");
        let digest = Digest::of(&data);
        let writer = SharingWriter::new(local.writer().await.unwrap(), local.clone(), tier.clone());
        let staged = write(Box::new(writer), &data).await;
        tier.uploads_idle().await;
        assert_eq!(
            remote.size(&digest).await.unwrap(),
            None,
            "not before commit"
        );
        assert_eq!(local.size(&digest).await.unwrap(), None);
        staged.commit(&digest).await.unwrap();
        assert_eq!(local.size(&digest).await.unwrap(), Some(data.len() as u64));
        tier.uploads_idle().await;
        assert_eq!(remote.size(&digest).await.unwrap(), Some(data.len() as u64));
        assert!(tier.open(&digest).await.is_some());
        assert_eq!(tier.counts().writes, 1);
    }

    #[tokio::test]
    async fn a_local_copy_that_no_longer_matches_is_not_uploaded() {
        let local = Arc::new(MemoryBlobStore::default());
        let remote = Arc::new(MemoryBlobStore::default());
        let tier = Arc::new(Shared::new(remote.clone(), Duration::from_secs(30)));
        let digest = Digest::of(b"what was verified");
        // The local store holds other bytes under the digest (a disk that changed them).
        let staged = write(local.writer().await.unwrap(), &Bytes::from_static(b"rot")).await;
        staged.commit(&digest).await.unwrap();
        tier.upload_later(local.clone(), digest);
        tier.uploads_idle().await;
        assert_eq!(remote.size(&digest).await.unwrap(), None);
        assert!(!tier.paused(), "the local disk's fault, not the store's");
        assert_eq!(tier.counts().writes, 0);
    }

    #[tokio::test]
    async fn a_failure_pauses_the_shared_store() {
        let tier = Shared::new(
            Arc::new(MemoryBlobStore::default()),
            Duration::from_secs(30),
        );
        assert!(!tier.paused());
        tier.failed("test", &"boom");
        assert!(tier.paused());
        let digest = Digest::of(b"x");
        assert!(tier.open(&digest).await.is_none());
        let short = Shared::new(Arc::new(MemoryBlobStore::default()), Duration::ZERO);
        short.failed("test", &"boom");
        assert!(!short.paused(), "the pause ends");
    }
}
