//! The shared tier: an object store (S3 and the like) that several replicas read and write, behind
//! each replica's local hot tier.
//!
//! The local store and its index stay what the cache serves hits from and what eviction trims; the
//! shared store is the cache's content for every replica. A local miss looks in the shared store
//! before the upstream (a fill whose first source is the shared store, verified again on the way
//! in, so the hot tier fills itself with what is used); a fill from the upstream writes both tiers at
//! once ([`TeeWriter`]) and makes the blob visible in the shared store only once it is verified,
//! when the local copy is committed.
//!
//! The shared store is a network service that may be down or slow, and a miss must never wait on it
//! for long: every lookup is bounded by [`LOOKUP_TIMEOUT`], and after a failure the shared store is
//! left alone for a pause ([`Shared::paused`]) during which misses go straight to the upstream and
//! fills write the hot tier only. What a fill could not write there is not retried: the next fill of
//! the blob (on any replica) writes it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tracing::{debug, warn};

use futures_util::StreamExt;

use super::{Cache, FillError, ToCommit};
use crate::oci::{media, Digest, Verifier};
use crate::store::{Blob, BlobStore, BlobWriter, StagedBlob};

/// The longest a lookup in the shared store (a `HEAD`, plus the `GET` of a small blob) may take
/// before the miss goes to the upstream instead.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

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

    /// A writer for the shared copy of a new blob, or `None` while the store is left alone or when
    /// it cannot start one in time.
    pub async fn writer(&self) -> Option<Box<dyn BlobWriter>> {
        if self.paused() {
            return None;
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.store.writer()).await {
            Ok(Ok(writer)) => Some(writer),
            Ok(Err(error)) => {
                self.failed("starting an upload", &error);
                None
            }
            Err(_) => {
                self.failed("starting an upload", &"no answer within the lookup timeout");
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

/// Writes a new blob to the local tier and, alongside, to the shared store. The local writer is
/// the one that matters: its errors are the writer's errors. The shared copy is best effort: when
/// it fails it is dropped (which discards what it uploaded) and the blob is kept locally only.
pub struct TeeWriter {
    local: Box<dyn BlobWriter>,
    shared: Option<Box<dyn BlobWriter>>,
    tier: Arc<Shared>,
}

/// A blob staged in both tiers.
struct TeeStaged {
    local: Box<dyn StagedBlob>,
    shared: Option<Box<dyn StagedBlob>>,
    tier: Arc<Shared>,
}

// === impl TeeWriter ===

impl TeeWriter {
    /// Writes to `local` and `shared`.
    pub fn new(local: Box<dyn BlobWriter>, shared: Box<dyn BlobWriter>, tier: Arc<Shared>) -> Self {
        Self {
            local,
            shared: Some(shared),
            tier,
        }
    }
}

#[async_trait]
impl BlobWriter for TeeWriter {
    async fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        let Some(shared) = self.shared.as_mut() else {
            return self.local.write(chunks).await;
        };
        let (local, remote) = tokio::join!(self.local.write(chunks), shared.write(chunks));
        if let Err(error) = remote {
            self.tier.failed("uploading a blob", &error);
            self.shared = None;
        }
        local
    }

    fn written(&self) -> u64 {
        self.local.written()
    }

    async fn finish(self: Box<Self>) -> io::Result<Box<dyn StagedBlob>> {
        let Self {
            local,
            shared,
            tier,
        } = *self;
        let (local, shared) = match shared {
            Some(shared) => {
                let (local, shared) = tokio::join!(local.finish(), shared.finish());
                let shared = shared
                    .map_err(|error| tier.failed("finishing an upload", &error))
                    .ok();
                (local?, shared)
            }
            None => (local.finish().await?, None),
        };
        Ok(Box::new(TeeStaged {
            local,
            shared,
            tier,
        }))
    }

    fn local_file(&self) -> Option<Arc<std::fs::File>> {
        self.local.local_file()
    }
}

// === impl TeeStaged ===

#[async_trait]
impl StagedBlob for TeeStaged {
    fn size(&self) -> u64 {
        self.local.size()
    }

    async fn read_all(&self) -> io::Result<Bytes> {
        self.local.read_all().await
    }

    /// Commits the local copy, then makes the shared copy visible. A shared commit that fails is
    /// logged and pauses the store; the blob is committed all the same.
    async fn commit(self: Box<Self>, digest: &Digest) -> io::Result<()> {
        let Self {
            local,
            shared,
            tier,
        } = *self;
        local.commit(digest).await?;
        if let Some(shared) = shared {
            match shared.commit(digest).await {
                Ok(()) => {
                    tier.writes.fetch_add(1, Ordering::Relaxed);
                    debug!(%digest, "blob stored in the shared object store");
                }
                Err(error) => tier.failed("committing an upload", &error),
            }
        }
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
    async fn a_tee_commits_both_tiers_and_nothing_before() {
        let local = Arc::new(MemoryBlobStore::default());
        let remote = Arc::new(MemoryBlobStore::default());
        let tier = Arc::new(Shared::new(remote.clone(), Duration::from_secs(30)));
        let data = Bytes::from_static(b"layer bytes");
        let digest = Digest::of(&data);
        let tee = TeeWriter::new(
            local.writer().await.unwrap(),
            tier.writer().await.unwrap(),
            tier.clone(),
        );
        let staged = write(Box::new(tee), &data).await;
        assert_eq!(
            remote.size(&digest).await.unwrap(),
            None,
            "not before commit"
        );
        assert_eq!(local.size(&digest).await.unwrap(), None);
        staged.commit(&digest).await.unwrap();
        assert_eq!(remote.size(&digest).await.unwrap(), Some(data.len() as u64));
        assert_eq!(local.size(&digest).await.unwrap(), Some(data.len() as u64));
        assert!(tier.open(&digest).await.is_some());
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
        assert!(tier.writer().await.is_none(), "no upload while paused");
        let short = Shared::new(Arc::new(MemoryBlobStore::default()), Duration::ZERO);
        short.failed("test", &"boom");
        assert!(!short.paused(), "the pause ends");
    }
}
