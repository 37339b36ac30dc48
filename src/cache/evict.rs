//! Size-bounded eviction: least recently used first, down to the low watermark.
//!
//! When stored bytes (plus the announced sizes of fills in progress) go over the high watermark of
//! `storage.max_size`, the background task ([`super::Cache::spawn_background`]) runs a pass: it
//! flushes the access times, computes what the pins need, and removes the least recently used blobs
//! and manifests until usage is at or below the low watermark. A pass never removes
//! - a blob that is held: a response streaming it, a manifest being stored ([`super::holds`]);
//! - a blob being filled (it is not indexed until committed, and is skipped until its fill ends);
//! - pinned content: each pinned image and everything it refers to (index → manifests → config and
//!   layers), resolving pinned tags through the index as they are now.
//!
//! Each removal unlinks the file first and then drops the index record. A crash between the two
//! leaves a record without a file, which start-up drops without reading anything; the other order
//! would leave a file without a record, which must be hashed again to be trusted. A tag that
//! pointed at an evicted manifest simply misses and is fetched again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use super::{Cache, FillError, IndexError};
use crate::oci::{media, Digest, ImageRef, Reference};
use crate::size::format_size;

/// The largest manifest read (as `u64`, for file sizes).
const MAX_MANIFEST: u64 = crate::limits::MAX_MANIFEST as u64;

/// The size budget: `max_size` and its watermarks in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// `storage.max_size`.
    pub max: u64,
    /// Eviction starts above this.
    pub high: u64,
    /// Eviction stops at or below this.
    pub low: u64,
}

/// Evictions since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Blobs and manifests evicted.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What one eviction pass did.
#[derive(Debug, Clone, Default)]
pub struct EvictReport {
    /// Blobs and manifests removed.
    pub evicted: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes left because they are pinned.
    pub pinned_bytes: u64,
    /// Bytes left because they are being read or filled.
    pub in_use_bytes: u64,
    /// Stored bytes after the pass.
    pub usage_after: u64,
    /// How long the pass took.
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    count: AtomicU64,
    bytes: AtomicU64,
}

/// What a pin keeps, from [`Cache::pin_status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinStatus {
    /// The manifest the image resolves to (`None`: a tag the cache has not seen).
    pub root: Option<Digest>,
    /// Stored blobs and manifests it keeps.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The outcome of trying to remove one digest.
pub(super) enum Removal {
    /// Removed; its size.
    Removed(u64),
    /// Held by a reader or being filled: left alone.
    InUse,
    /// Already gone.
    Gone,
}

// === impl Budget ===

impl Budget {
    /// The budget for `max` bytes with watermarks in percent.
    pub fn new(max: u64, high_percent: u8, low_percent: u8) -> Self {
        let part =
            |p: u8| u64::try_from(u128::from(max) * u128::from(p.min(100)) / 100).unwrap_or(max);
        Self {
            max,
            high: part(high_percent),
            low: part(low_percent),
        }
    }
}

// === impl Counters ===

impl Counters {
    pub(super) fn get(&self) -> Evictions {
        Evictions {
            count: self.count.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn add(&self, bytes: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

// === impl Cache ===

impl Cache {
    /// Runs an eviction pass if usage is over the high watermark.
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn evict_if_needed(&self) -> Result<Option<EvictReport>, FillError> {
        match self.budget {
            Some(b) if self.committed_and_reserved() > b.high => {
                self.evict_to(b.low).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Evicts least recently used content until stored bytes plus reservations are at or below
    /// `target`, or nothing evictable is left. How much to free is taken once, at the start of
    /// the pass: downloads committing meanwhile are counted by the next pass (each commit over the
    /// high watermark wakes one), so a pass neither stops early nor removes too much because a
    /// commit moved the numbers under it.
    ///
    /// # Errors
    /// Storage or index failures (what was evicted before stays evicted).
    pub async fn evict_to(&self, target: u64) -> Result<EvictReport, FillError> {
        let started = std::time::Instant::now();
        info!(
            usage = self.usage().bytes,
            reserved = self.committed_and_reserved() - self.usage().bytes,
            target,
            "cache is over its high watermark; evicting least recently used content"
        );
        if let Err(error) = self.flush_access() {
            warn!(%error, "cannot write access times before evicting; using what the index has");
        }
        let pinned = self.pinned_digests().await?;
        let candidates = self.lru_order().await?;
        let need = self.committed_and_reserved().saturating_sub(target);
        let mut report = EvictReport::default();
        for (digest, size) in candidates {
            if report.bytes >= need {
                break;
            }
            if pinned.contains(&digest) {
                report.pinned_bytes += size;
                continue;
            }
            match self.remove_unused(digest).await? {
                Removal::Removed(bytes) => {
                    self.evictions.add(bytes);
                    report.evicted += 1;
                    report.bytes += bytes;
                    tracing::debug!(%digest, bytes, "evicted");
                }
                Removal::InUse => report.in_use_bytes += size,
                Removal::Gone => {}
            }
        }
        report.usage_after = self.usage().bytes;
        report.elapsed = started.elapsed();
        info!(
            evicted = report.evicted,
            bytes = report.bytes,
            usage = report.usage_after,
            elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
            "eviction pass done"
        );
        if report.bytes < need {
            warn!(
                usage = %format_size(report.usage_after),
                target = %format_size(target),
                pinned = %format_size(report.pinned_bytes),
                in_use = %format_size(report.in_use_bytes),
                "cannot evict down to the low watermark: the rest is pinned or in use"
            );
        }
        Ok(report)
    }

    /// Every indexed digest with its size, least recently used first (access times flushed to the
    /// index, overlaid with those recorded since).
    async fn lru_order(&self) -> Result<Vec<(Digest, u64)>, FillError> {
        let index = self.index.clone();
        let mut entries = tokio::task::spawn_blocking(move || {
            let times: HashMap<Digest, u64> = index.access_times()?;
            let mut entries = Vec::with_capacity(times.len());
            for item in index.blobs() {
                let (digest, size) = item?;
                entries.push((times.get(&digest).copied().unwrap_or(0), digest, size));
            }
            Ok::<_, FillError>(entries)
        })
        .await
        .map_err(|_| FillError::Abandoned)??;
        for entry in &mut entries {
            if let Some(at) = self.access.pending(&entry.1) {
                entry.0 = entry.0.max(at);
            }
        }
        entries.sort_unstable();
        Ok(entries.into_iter().map(|(_, d, s)| (d, s)).collect())
    }

    /// Removes a committed digest unless it is held or being filled: the file first, then the
    /// index record (see the module docs for why).
    pub(super) async fn remove_unused(&self, digest: Digest) -> Result<Removal, FillError> {
        if !self.holds.begin_removal(digest) {
            return Ok(Removal::InUse);
        }
        if self.inflight.get(&digest).is_some() {
            self.holds.end_removal(digest);
            return Ok(Removal::InUse);
        }
        let removed = async {
            self.store.remove(&digest).await?;
            Ok::<_, FillError>(self.index.remove_blob(&digest)?)
        }
        .await;
        self.holds.end_removal(digest);
        Ok(match removed? {
            Some(bytes) => Removal::Removed(bytes),
            None => Removal::Gone,
        })
    }

    /// What the pins keep: every pinned image (a tag as the index maps it now) and everything it
    /// refers to.
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn pinned_digests(&self) -> Result<HashSet<Digest>, FillError> {
        let mut roots = Vec::new();
        for (image, _) in self.index.pins()? {
            roots.extend(self.pin_root(&image)?);
        }
        self.closure(roots).await
    }

    /// The manifest an image reference names now: its digest, or what the index maps its tag to.
    fn pin_root(&self, image: &ImageRef) -> Result<Option<Digest>, IndexError> {
        Ok(match &image.reference {
            Reference::Digest(d) => Some(*d),
            Reference::Tag(tag) => self
                .index
                .tag(&image.registry, &image.repo, tag)?
                .map(|e| e.digest),
        })
    }

    /// What a pin of `image` keeps right now: the manifest it resolves to, and the stored blobs
    /// (manifests included) reachable from it.
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn pin_status(&self, image: &ImageRef) -> Result<PinStatus, FillError> {
        let root = self.pin_root(image)?;
        let mut status = PinStatus {
            root,
            ..PinStatus::default()
        };
        for digest in self.closure(root.into_iter().collect()).await? {
            if let Some(size) = self.index.blob_size(&digest)? {
                status.blobs += 1;
                status.bytes += size;
            }
        }
        Ok(status)
    }

    /// `roots` and everything the stored manifests among them refer to, transitively.
    pub(super) async fn closure(&self, roots: Vec<Digest>) -> Result<HashSet<Digest>, FillError> {
        let mut seen = HashSet::new();
        let mut queue = roots;
        while let Some(digest) = queue.pop() {
            if !seen.insert(digest) || self.index.manifest_type(&digest)?.is_none() {
                continue;
            }
            let Some(blob) = self.open_stored(&digest).await? else {
                continue;
            };
            if blob.size() > MAX_MANIFEST {
                continue;
            }
            let bytes = blob.read_range(0, blob.size()).await?;
            queue.extend(media::referenced_digests(&bytes));
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::cache::ToCommit;
    use crate::cache::{Options, Stores};
    use crate::store::{MemoryBlobStore, MemoryMeta, PinSource, TagEntry};

    /// Where the eviction tests keep the cache's blobs and records: the same tests run on both
    /// (`Sled`: the disk store and the sled index, as wharf runs; `Memory`: both in memory).
    #[derive(Clone, Copy)]
    enum Meta {
        Sled,
        Memory,
    }

    fn open(dir: &Path, meta: Meta) -> Arc<Cache> {
        let options = Options::default();
        Arc::new(match meta {
            Meta::Sled => Cache::open_with(dir, &options).unwrap(),
            Meta::Memory => Cache::open_with_stores(
                dir,
                &options,
                Stores {
                    blobs: Arc::new(MemoryBlobStore::new()),
                    meta: Arc::new(MemoryMeta::new()),
                },
            )
            .unwrap(),
        })
    }

    /// Stores verified bytes as a blob, as a fill does once it has checked them.
    async fn store_blob(cache: &Cache, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        let mut writer = cache.store().writer().await.unwrap();
        writer
            .write(&[Bytes::copy_from_slice(bytes)])
            .await
            .unwrap();
        cache
            .commit_staged(
                ToCommit::Written(writer),
                &digest,
                bytes.len() as u64,
                None,
                None,
            )
            .await
            .unwrap();
        digest
    }

    async fn stored(cache: &Cache, digest: &Digest) -> bool {
        let indexed = cache.index().blob_size(digest).unwrap().is_some();
        let on_disk = cache.store().size(digest).await.unwrap().is_some();
        assert_eq!(indexed, on_disk, "{digest}: index and store disagree");
        indexed
    }

    async fn least_recently_used_go_first(meta: Meta) {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), meta);
        let mut blobs = Vec::new();
        for i in 0..6u8 {
            blobs.push(store_blob(&cache, &[i; 1000]).await);
        }
        assert_eq!(cache.usage().bytes, 6000);
        cache.flush_access().unwrap();
        // Last used in this order: 3, 1, 5 longest ago.
        let order = [3, 1, 5, 0, 2, 4];
        let times: Vec<(Digest, u64)> = order
            .iter()
            .zip(1u64..)
            .map(|(&i, t)| (blobs[i], t))
            .collect();
        assert_eq!(cache.index().record_access(&times).unwrap(), 6);
        let report = cache.evict_to(3000).await.unwrap();
        assert_eq!((report.evicted, report.bytes), (3, 3000));
        assert_eq!(report.usage_after, 3000);
        let mut kept = Vec::new();
        for (i, digest) in blobs.iter().enumerate() {
            if stored(&cache, digest).await {
                kept.push(i);
            }
        }
        assert_eq!(kept, [0, 2, 4], "least recently used first");
        assert_eq!(
            cache.usage(),
            crate::store::Usage {
                bytes: 3000,
                entries: 3
            }
        );
        assert_eq!(cache.evictions().count, 3);
        assert_eq!(cache.index().access(&blobs[3]).unwrap(), None);
    }

    async fn pinned_tags_keep_what_they_point_to(meta: Meta) {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), meta);
        let config = store_blob(&cache, b"{\"architecture\":\"amd64\"}").await;
        let layer = store_blob(&cache, &[7; 2000]).await;
        let other_layer = store_blob(&cache, &[8; 2000]).await;
        let loose = store_blob(&cache, &[9; 500]).await;
        let manifest = |layer: &Digest| {
            Bytes::from(format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#,
                media::OCI_MANIFEST
            ))
        };
        let (pinned_bytes, other_bytes) = (manifest(&layer), manifest(&other_layer));
        let (pinned, other) = (Digest::of(&pinned_bytes), Digest::of(&other_bytes));
        for (digest, bytes) in [(pinned, pinned_bytes), (other, other_bytes)] {
            assert!(cache
                .put_manifest(&digest, bytes, media::OCI_MANIFEST)
                .await
                .unwrap());
        }
        let repo = "org/app".parse().unwrap();
        let entry = TagEntry {
            digest: pinned,
            fetched_at: std::time::SystemTime::now(),
        };
        cache
            .index()
            .set_tag("up.test", &repo, &"1".parse().unwrap(), entry)
            .unwrap();
        let image: ImageRef = "up.test/org/app:1".parse().unwrap();
        assert!(cache.pin(&image).unwrap());
        let status = cache.pin_status(&image).await.unwrap();
        assert_eq!(status.root, Some(pinned));
        assert_eq!(status.blobs, 3, "the manifest, its config and its layer");

        let report = cache.evict_to(0).await.unwrap();
        assert_eq!(
            report.evicted, 3,
            "the other manifest, its layer, the loose blob"
        );
        assert_eq!(report.pinned_bytes, status.bytes);
        for digest in [pinned, config, layer] {
            assert!(stored(&cache, &digest).await, "pinned {digest} was evicted");
        }
        for digest in [other, other_layer, loose] {
            assert!(!stored(&cache, &digest).await, "{digest} was kept");
        }
        assert_eq!(cache.usage().bytes, status.bytes);
        // Unpinned, everything can go.
        assert_eq!(cache.unpin(&image).unwrap(), Some(PinSource::Command));
        assert_eq!(cache.evict_to(0).await.unwrap().evicted, 3);
        assert_eq!(cache.usage(), crate::store::Usage::default());
    }

    #[tokio::test]
    async fn least_recently_used_go_first_on_sled() {
        least_recently_used_go_first(Meta::Sled).await;
    }

    #[tokio::test]
    async fn least_recently_used_go_first_in_memory() {
        least_recently_used_go_first(Meta::Memory).await;
    }

    #[tokio::test]
    async fn pinned_tags_keep_what_they_point_to_on_sled() {
        pinned_tags_keep_what_they_point_to(Meta::Sled).await;
    }

    #[tokio::test]
    async fn pinned_tags_keep_what_they_point_to_in_memory() {
        pinned_tags_keep_what_they_point_to(Meta::Memory).await;
    }

    #[test]
    fn budget_watermarks() {
        assert_eq!(
            Budget::new(1000, 95, 85),
            Budget {
                max: 1000,
                high: 950,
                low: 850
            }
        );
        let big = Budget::new(u64::MAX, 100, 50);
        assert_eq!((big.high, big.low), (u64::MAX, u64::MAX / 2));
    }
}
