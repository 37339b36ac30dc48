//! The cache: committed blobs in a [`BlobStore`], their metadata in a [`MetaStore`] (both given to
//! it: [`Cache::open_with_stores`]; on disk, [`crate::store::FsBlobStore`] and the sled index
//! [`crate::store::SledMeta`]), the fills in flight ([`fill`]), and the manifest policy
//! ([`manifests`]: tags, revalidation, stale serving, negative cache).
//!
//! Lookups answer with what to serve: a committed blob, a fill to follow, or nothing (a miss the
//! caller resolves upstream). The index is consulted first because it is in memory; a blob the index
//! lists but the store lacks (deleted by hand, a crash between the two writes) is dropped from the
//! index and treated as a miss, and a stored file whose size disagrees with the index is never served.
//!
//! Around that sits the cache's lifecycle, so that it runs for years on a disk of fixed size:
//! - usage (bytes, entries) kept in memory by the index, and last access times batched in memory
//!   ([`access`]) and flushed to the index periodically, never once per hit;
//! - eviction of least-recently-used content down to a low watermark when a high watermark of
//!   `storage.max_size` is crossed ([`evict`]), sparing what is being read or filled ([`holds`]) and
//!   what is pinned;
//! - reconciliation of the index and the files at start-up and on demand ([`reconcile`], [`check`]),
//!   and `wharf gc` ([`gc`]);
//! - a storage that fails writes (disk full) pauses caching, and misses stream through verified
//!   ([`health`], [`passthrough`]).

pub mod access;
pub mod background;
pub mod check;
pub mod evict;
pub mod fill;
pub mod gc;
pub mod health;
pub mod holds;
pub mod manifests;
pub mod passthrough;
pub mod reconcile;
pub mod shared;
pub mod spool;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// The sled metadata store, by the name it had before the [`MetaStore`] seam (`Index::open(dir)`).
pub use crate::store::SledMeta as Index;
/// What the cache serves a hit from (the server knows the cache, not the stores under it).
pub use crate::store::{Blob, ByteStream, SMALL_BLOB};
pub use crate::store::{IndexError, MetaError, MetaStore, PinSource, TagEntry, Usage};
pub use background::Background;
pub use evict::{Budget, EvictReport, Evictions, PinStatus};
pub use fill::{Fill, FillError, Inflight, Joined};

use crate::cluster::Cluster;
use crate::oci::{Digest, ImageRef, RepoName};
use crate::store::{private_dir_all, BlobStore, BlobWriter, FsBlobStore, StagedBlob, DIR_MODE};
use crate::upstream::Upstream;

use access::AccessLog;
use health::StorageHealth;
use holds::{Hold, Holds};
use shared::{Shared, SharingWriter};

/// The cache facade shared by all requests.
pub struct Cache {
    root: PathBuf,
    store: Arc<dyn BlobStore>,
    index: Arc<dyn MetaStore>,
    inflight: Inflight,
    holds: Arc<Holds>,
    access: AccessLog,
    /// Access records written to the index (each flushed digest counts once).
    access_writes: AtomicU64,
    health: Arc<StorageHealth>,
    budget: Option<Budget>,
    evictions: evict::Counters,
    /// Woken when usage crosses the high watermark.
    evict_wake: Notify,
    /// Bytes announced by fills in progress: eviction makes room for them while they download.
    reserved: AtomicU64,
    /// Files found at start-up without an index record, to re-verify in the background.
    orphans: Mutex<Vec<Digest>>,
    /// The object store shared by the replicas, behind the local tier, when there is one.
    shared: Option<Arc<Shared>>,
    /// The other replicas, whose owners fill the blobs they own, when there are any.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
}

/// How the cache manages its storage (from `[storage]` and `[[pin]]`).
#[derive(Debug, Clone)]
pub struct Options {
    /// The most bytes to keep; `None` for no limit.
    pub max_size: Option<u64>,
    /// Eviction starts above this percentage of `max_size`.
    pub high_watermark: u8,
    /// Eviction stops at this percentage of `max_size`.
    pub low_watermark: u8,
    /// Free space to leave on the filesystem.
    pub min_free: u64,
    /// How long caching pauses after a write error.
    pub write_error_pause: Duration,
    /// The configuration's pins (synced into the index at open).
    pub pins: Vec<ImageRef>,
}

/// Where a blob comes from.
pub enum BlobSource {
    /// Committed and verified; the blob holds the cache's hold on its digest while it lives.
    Hit(Blob),
    /// Being filled; `leader` is true for the request that started the fill.
    Fill {
        /// The fill to follow.
        fill: Arc<Fill>,
        /// Whether this request started it.
        leader: bool,
    },
    /// Not cached, and caching is paused (the storage failed a write recently): stream it from the
    /// upstream without storing it ([`Cache::bypass`]).
    Bypass,
}

/// The stores a cache keeps its content in (see [`Cache::open_with_stores`]).
pub struct Stores {
    /// Where blobs (layers, configs, manifests) live.
    pub blobs: Arc<dyn BlobStore>,
    /// Where the cache records what it holds: the sled index for a wharf on disk
    /// ([`crate::store::SledMeta`]), or [`crate::store::MemoryMeta`].
    pub meta: Arc<dyn MetaStore>,
}

/// A new blob on its way into the store, for [`Cache::commit_staged`].
pub enum ToCommit {
    /// Still open (a fill's writer): finished (made durable) only if the blob is not stored yet.
    Written(Box<dyn BlobWriter>),
    /// Finished already (`wharf import` stages every blob of a bundle before committing any).
    Staged(Box<dyn StagedBlob>),
}

/// A failure to open the cache.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The storage directory could not be prepared.
    #[error("storage directory {path}: {source}")]
    Storage {
        /// The directory.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process (a running wharf) holds the index.
    #[error("storage {path} is in use by another wharf (its index is locked); stop that wharf first, or give this one another [storage] path")]
    Locked {
        /// The storage directory.
        path: String,
    },
    /// The index could not be opened.
    #[error("index in {path}: {source}")]
    Index {
        /// The index directory.
        path: String,
        /// The metadata store's error.
        source: IndexError,
    },
}

/// Bytes a fill in progress expects to add; released when dropped.
pub struct Reservation<'a> {
    cache: &'a Cache,
    bytes: u64,
}

// === impl Options ===

impl Options {
    /// The options a configuration asks for.
    pub fn from_config(config: &crate::Config) -> Self {
        let s = &config.storage;
        Self {
            max_size: s.max_size,
            high_watermark: s.high_watermark,
            low_watermark: s.low_watermark,
            min_free: s.min_free,
            write_error_pause: s.write_error_pause,
            pins: config.pins.clone(),
        }
    }
}

impl Default for Options {
    /// No size limit, no free-space floor, a 30 s pause after a write error, no pins.
    fn default() -> Self {
        Self {
            max_size: None,
            high_watermark: 95,
            low_watermark: 85,
            min_free: 0,
            write_error_pause: Duration::from_secs(30),
            pins: Vec::new(),
        }
    }
}

// === impl OpenError ===

impl OpenError {
    /// Whether another wharf holds the storage.
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Locked { .. })
    }
}

// === impl Cache ===

impl Cache {
    /// Opens the cache under `root` with default [`Options`]; see [`Cache::open_with`].
    ///
    /// # Errors
    /// As [`Cache::open_with`].
    pub fn open(root: &Path) -> Result<Self, OpenError> {
        Self::open_with(root, &Options::default())
    }

    /// Opens the cache `config` describes: on the local disk under `storage.path` (see
    /// [`Cache::open_with`]), in front of the shared object store of `[storage.s3]` when
    /// `storage.backend = "s3"`.
    ///
    /// # Errors
    /// As [`Cache::open_with`].
    pub fn open_for(config: &crate::Config) -> Result<Self, OpenError> {
        let cache = Self::open_with(&config.storage.path, &Options::from_config(config))?;
        match &config.storage.backend {
            crate::config::Backend::Disk => Ok(cache),
            crate::config::Backend::S3(s3) => {
                let store =
                    crate::store::S3BlobStore::new(s3).map_err(|source| OpenError::Storage {
                        path: format!("s3://{}/{}", s3.bucket, s3.prefix),
                        source,
                    })?;
                Ok(cache.with_shared_store(Arc::new(store), config.storage.write_error_pause))
            }
        }
    }

    /// Opens the cache on the local disk under `root`: blobs in `root/blobs`, staging in
    /// `root/tmp`, the sled index in `root/index`. The index is opened (and locked) first, so a
    /// second wharf on the same storage fails before changing anything; see
    /// [`Cache::open_with_stores`] for the rest.
    ///
    /// # Errors
    /// When the directories cannot be created, the index cannot be opened (another wharf holds it:
    /// [`OpenError::Locked`]), or as [`Cache::open_with_stores`].
    pub fn open_with(root: &Path, options: &Options) -> Result<Self, OpenError> {
        let storage_err = |source| OpenError::Storage {
            path: root.display().to_string(),
            source,
        };
        private_dir_all(root).map_err(storage_err)?;
        let index_dir = root.join("index");
        // sled creates its files with the umask's permissions and takes no mode: its directory is
        // made (or, when an older wharf made it, set) 0700 first, so they are unreachable to others.
        private_dir_all(&index_dir)
            .and_then(|()| {
                std::fs::set_permissions(
                    &index_dir,
                    std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE),
                )
            })
            .map_err(storage_err)?;
        let meta = Index::open(&index_dir).map_err(|e| index_error(root, e))?;
        let blobs = FsBlobStore::create(root).map_err(storage_err)?;
        Self::open_with_stores(
            root,
            options,
            Stores {
                blobs: Arc::new(blobs),
                meta: Arc::new(meta),
            },
        )
    }

    /// Opens the cache on the given stores, with `root` as its local directory (fills' spool files
    /// in `root/tmp`). Start-up repairs what a crash can leave: staging files are removed, records
    /// whose blob is missing are dropped, and blobs without a record are queued for
    /// re-verification in the background ([`Cache::spawn_background`]); a blob store without
    /// [`crate::store::LocalStore`] skips the listing. Configuration pins are synced into the
    /// metadata store.
    ///
    /// # Errors
    /// When the local directory cannot be created, or the stores fail.
    pub fn open_with_stores(
        root: &Path,
        options: &Options,
        stores: Stores,
    ) -> Result<Self, OpenError> {
        let storage_err = |source| OpenError::Storage {
            path: root.display().to_string(),
            source,
        };
        // Fills spool here for stores without a local staging file.
        private_dir_all(&root.join("tmp")).map_err(storage_err)?;
        let Stores {
            blobs: store,
            meta: index,
        } = stores;
        let access = AccessLog::new();
        let started = reconcile::at_open(&*index, &*store).map_err(|e| match e {
            reconcile::Error::Store(e) => storage_err(e),
            reconcile::Error::Index(e) => index_error(root, e),
        })?;
        index
            .sync_config_pins(&options.pins)
            .map_err(|e| index_error(root, e))?;
        let budget = options
            .max_size
            .map(|max| Budget::new(max, options.high_watermark, options.low_watermark));
        Ok(Self {
            root: root.to_owned(),
            store: store.clone(),
            index,
            inflight: Inflight::default(),
            holds: Holds::new(),
            access,
            access_writes: AtomicU64::new(0),
            health: Arc::new(StorageHealth::new(
                root.to_owned(),
                store,
                options.min_free,
                options.write_error_pause,
            )),
            budget,
            evictions: evict::Counters::default(),
            evict_wake: Notify::new(),
            reserved: AtomicU64::new(0),
            orphans: Mutex::new(started.orphans),
            shared: None,
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Puts `store`, an object store the replicas share, behind the local tier: local misses look
    /// there before the upstream, and fills from the upstream write it too (see [`shared`]). After
    /// a failure it is left alone for `pause`.
    #[must_use]
    pub fn with_shared_store(mut self, store: Arc<dyn BlobStore>, pause: Duration) -> Self {
        self.shared = Some(Arc::new(Shared::new(store, pause)));
        self
    }

    /// Makes this cache one of the replicas of `cluster`: a fill of a blob another replica owns
    /// asks that replica first. Set once; a second call is ignored.
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The replicas, when this cache is one of several.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The shared tier, when there is one.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// A writer for a new blob: the local store's; when `to_shared` and there is a shared store,
    /// the blob is uploaded there in the background once it is committed locally.
    ///
    /// # Errors
    /// When the local store cannot start a writer.
    pub async fn writer(&self, to_shared: bool) -> io::Result<Box<dyn BlobWriter>> {
        let local = self.store.writer().await?;
        Ok(match self.shared.as_ref().filter(|_| to_shared) {
            Some(shared) => Box::new(SharingWriter::new(
                local,
                self.store.clone(),
                shared.clone(),
            )),
            None => local,
        })
    }

    /// Resolves once no fill is running and no upload to the shared store is waiting or running:
    /// what a command that lets the storage go waits for.
    pub async fn settled(&self) {
        self.inflight.idle().await;
        if let Some(shared) = &self.shared {
            shared.uploads_idle().await;
        }
    }

    /// The storage directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index: the metadata store (blob sizes, manifest types, tags, access times, pins).
    pub fn index(&self) -> &Arc<dyn MetaStore> {
        &self.index
    }

    /// The blob store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Where fills put their spool files when the blob store has no local staging file.
    pub(crate) fn spool_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The fills in flight.
    pub fn inflight(&self) -> &Inflight {
        &self.inflight
    }

    /// Holds on committed blobs (readers in progress).
    pub fn holds(&self) -> &Arc<Holds> {
        &self.holds
    }

    /// The storage's write health.
    pub fn health(&self) -> &StorageHealth {
        &self.health
    }

    /// Bytes and entries stored (no I/O): for metrics and `wharf check`.
    pub fn usage(&self) -> Usage {
        self.index.usage()
    }

    /// The size budget, when `storage.max_size` is set.
    pub fn budget(&self) -> Option<Budget> {
        self.budget
    }

    /// Blobs evicted since start (count and bytes): for metrics.
    pub fn evictions(&self) -> Evictions {
        self.evictions.get()
    }

    /// How many access records have been written to the index since start: each flush writes one
    /// per digest used since the last flush, whatever the number of hits.
    pub fn access_writes(&self) -> u64 {
        self.access_writes.load(Ordering::Relaxed)
    }

    /// How many digests were used since the last flush of access times.
    pub fn access_pending(&self) -> usize {
        self.access.len()
    }

    /// Records that a blob or manifest was served (from memory or disk). Costs no I/O.
    pub fn touch(&self, digest: Digest) {
        self.access.touch(digest);
    }

    /// Writes the access times recorded since the last flush to the index, in one batch. Returns
    /// how many were written. Skipped (and kept for later) while caching is paused after a write
    /// error, so the index does not write into a full disk.
    ///
    /// # Errors
    /// Index failures (the times are kept for the next flush).
    pub fn flush_access(&self) -> Result<usize, IndexError> {
        if self.health.paused() {
            return Ok(0);
        }
        let times = self.access.drain();
        if times.is_empty() {
            return Ok(0);
        }
        match self.index.record_access(&times) {
            Ok(n) => {
                self.access_writes.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.access.restore(times);
                Err(e)
            }
        }
    }

    /// Reserves room for a fill of `bytes`, waking eviction if that goes over the high watermark.
    pub fn reserve(&self, bytes: u64) -> Reservation<'_> {
        self.reserved.fetch_add(bytes, Ordering::Relaxed);
        self.wake_evictor_if_needed();
        Reservation { cache: self, bytes }
    }

    /// Stored bytes plus the bytes of fills in progress.
    pub fn committed_and_reserved(&self) -> u64 {
        self.usage()
            .bytes
            .saturating_add(self.reserved.load(Ordering::Relaxed))
    }

    fn wake_evictor_if_needed(&self) {
        if self
            .budget
            .is_some_and(|b| self.committed_and_reserved() > b.high)
        {
            self.evict_wake.notify_one();
        }
    }

    /// Takes a hold on a committed digest (waiting while it is being removed).
    pub async fn hold(&self, digest: Digest) -> Hold {
        self.holds.hold(digest).await
    }

    /// A committed blob, if the cache has it intact. The returned handle holds the blob: it is not
    /// evicted while the handle (or a clone of it) lives. Counts as a use for eviction.
    ///
    /// # Errors
    /// Storage or index failures (not a miss).
    pub async fn committed(&self, digest: &Digest) -> Result<Option<Blob>, FillError> {
        let blob = self.open_stored(digest).await?;
        if blob.is_some() {
            self.access.touch(*digest);
        }
        Ok(blob)
    }

    /// As [`Cache::committed`], without counting as a use (for pin and gc bookkeeping).
    async fn open_stored(&self, digest: &Digest) -> Result<Option<Blob>, FillError> {
        let hold = self.hold(*digest).await;
        let Some(size) = self.index.blob_size(digest)? else {
            return Ok(None);
        };
        match self.store.open(digest).await? {
            Some(blob) if blob.size() == size => Ok(Some(blob.keep_alive(Arc::new(hold)))),
            Some(blob) => {
                warn!(%digest, indexed = size, on_disk = blob.size(), "stored blob has the wrong size; dropping it");
                self.store.remove(digest).await?;
                self.index.remove_blob(digest)?;
                Ok(None)
            }
            None => {
                warn!(%digest, "indexed blob is missing from storage; dropping it from the index");
                self.index.remove_blob(digest)?;
                Ok(None)
            }
        }
    }

    /// Makes a verified new blob the stored blob and indexes it (as a manifest of
    /// `media_type`, when given): fsync, rename, fsync of the directory, then the index record, so
    /// a crash never leaves an index record for a file that is not complete. The fill's
    /// `reservation` is released just before the record adds the blob's bytes to the usage.
    ///
    /// Two upstreams may fill the same blob at once: the second to finish finds it stored (indexed
    /// at the same size, the file there) and drops its staging file, so identical content is
    /// written and counted once. The check runs under a hold, so eviction cannot remove the stored
    /// copy in between; should both commit at once, the second rename replaces the file with the
    /// same verified bytes and the index record (and the usage it counts) is replaced, not added.
    ///
    /// # Errors
    /// Storage or index failures; a storage failure also pauses caching.
    pub async fn commit_staged(
        &self,
        staged: ToCommit,
        digest: &Digest,
        size: u64,
        media_type: Option<&str>,
        reservation: Option<Reservation<'_>>,
    ) -> Result<(), FillError> {
        let _hold = self.hold(*digest).await;
        if media_type.is_none()
            && self.index.blob_size(digest)? == Some(size)
            && self.store.size(digest).await.ok().flatten() == Some(size)
        {
            debug!(%digest, size, "blob already stored (filled from another upstream too); dropping this copy");
            drop(staged);
            self.access.touch(*digest);
            return Ok(());
        }
        let committed = match staged {
            ToCommit::Written(writer) => match writer.finish().await {
                Ok(staged) => staged.commit(digest).await,
                Err(error) => Err(error),
            },
            ToCommit::Staged(staged) => staged.commit(digest).await,
        };
        if let Err(error) = committed {
            self.health.failed("committing a blob", &error);
            return Err(error.into());
        }
        drop(reservation);
        match media_type {
            Some(t) => self.index.insert_manifest(digest, size, t)?,
            None => self.index.insert_blob(digest, size)?,
        }
        self.access.touch(*digest);
        self.health.succeeded();
        self.wake_evictor_if_needed();
        Ok(())
    }

    /// A blob to serve: committed, being filled from `upstream`, a new fill from `upstream`, or
    /// (while caching is paused after a write error) a pass-through. A fill of the digest from
    /// another upstream is never joined: that upstream may be slow, and must cost only its own
    /// clients.
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn blob(
        self: &Arc<Self>,
        upstream: &Arc<Upstream>,
        repo: &RepoName,
        digest: Digest,
    ) -> Result<BlobSource, FillError> {
        self.blob_with(upstream, repo, digest, true).await
    }

    /// As [`Cache::blob`]; a new fill asks the replica that owns the digest first only when
    /// `to_owner` (false for a request from another replica, which is never forwarded again, so
    /// replicas that disagree about an owner cannot pass a request round).
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn blob_with(
        self: &Arc<Self>,
        upstream: &Arc<Upstream>,
        repo: &RepoName,
        digest: Digest,
        to_owner: bool,
    ) -> Result<BlobSource, FillError> {
        if let Some(blob) = self.committed(&digest).await? {
            return Ok(BlobSource::Hit(blob));
        }
        if self.health.paused() && self.inflight.get_from(upstream.name(), &digest).is_none() {
            return Ok(BlobSource::Bypass);
        }
        loop {
            let joined = self.inflight.join_or_start(
                upstream.name(),
                digest,
                || self.index.blob_size(&digest).map(|s| s.is_some()),
                || {
                    // The upstream of the replica that owns the digest, when not this one.
                    let owner = match self.cluster.get() {
                        Some(cluster) if to_owner => cluster.owner_upstream(upstream, &digest),
                        _ => None,
                    };
                    Fill::spawn(self.clone(), upstream.clone(), owner, repo.clone(), digest)
                },
            )?;
            match joined {
                Joined::Follower(fill) => {
                    return Ok(BlobSource::Fill {
                        fill,
                        leader: false,
                    })
                }
                Joined::Leader(fill) => return Ok(BlobSource::Fill { fill, leader: true }),
                // Committed since the first lookup: serve it (or, if it vanished meanwhile, which
                // `committed` repairs in the index, go round again).
                Joined::Committed => {
                    if let Some(blob) = self.committed(&digest).await? {
                        return Ok(BlobSource::Hit(blob));
                    }
                }
            }
        }
    }

    /// The bytes of a small committed blob (a manifest).
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn read_small(&self, digest: &Digest) -> Result<Option<Bytes>, FillError> {
        let Some(blob) = self.committed(digest).await? else {
            return Ok(None);
        };
        Ok(Some(blob.read_range(0, blob.size()).await?))
    }

    /// Stores verified bytes (a manifest) under their digest, with its media type. Returns whether
    /// they are stored: while caching is paused, or when the storage fails (which pauses it), the
    /// manifest is not kept and the caller serves it from memory all the same.
    ///
    /// # Errors
    /// Index failures.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<bool, FillError> {
        self.put_manifest_in(digest, bytes, media_type, true).await
    }

    /// A manifest of at most [`crate::limits::MAX_MANIFEST`] bytes that the shared store holds,
    /// verified against its digest; `None` when there is no shared store, it does not have it, or
    /// it fails (a failure or a bad copy is a miss here, logged).
    pub async fn shared_manifest(&self, digest: &Digest) -> Option<Bytes> {
        let shared = self.shared.as_ref()?;
        let blob = shared.open(digest).await?;
        if blob.size() > crate::limits::MAX_MANIFEST as u64 {
            return None;
        }
        let read = blob.read_range(0, blob.size());
        let bytes = match tokio::time::timeout(shared::LOOKUP_TIMEOUT, read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                shared.failed("reading a manifest", &error);
                return None;
            }
            Err(_) => {
                shared.failed("reading a manifest", &"no answer within the lookup timeout");
                return None;
            }
        };
        if Digest::of(&bytes) != *digest {
            warn!(%digest, "the shared object store holds a copy that does not match its digest; ignoring it");
            return None;
        }
        Some(bytes)
    }

    /// As [`Cache::put_manifest`]; written to the shared store too when `to_shared`.
    ///
    /// # Errors
    /// Index failures.
    pub async fn put_manifest_in(
        &self,
        digest: &Digest,
        bytes: Bytes,
        media_type: &str,
        to_shared: bool,
    ) -> Result<bool, FillError> {
        let _hold = self.hold(*digest).await;
        let len = bytes.len() as u64;
        let recorded = self.index.manifest_type(digest)?;
        if recorded.is_some() && self.store.size(digest).await.ok().flatten() == Some(len) {
            // Stored already; the type recorded by an older wharf may be one the upstream made up.
            if recorded.as_deref() != Some(media_type) {
                self.index.insert_manifest(digest, len, media_type)?;
            }
            self.access.touch(*digest);
            return Ok(true);
        }
        if self.health.paused() {
            return Ok(false);
        }
        if let Err(error) = self.health.check_room(len) {
            self.health.failed("free space", &error);
            return Ok(false);
        }
        let mut writer = match self.writer(to_shared).await {
            Ok(writer) => writer,
            Err(error) => {
                self.health.failed("creating a staging file", &error);
                return Ok(false);
            }
        };
        if let Err(error) = writer.write(&[bytes]).await {
            self.health.failed("writing a manifest", &error);
            return Ok(false);
        }
        match self
            .commit_staged(
                ToCommit::Written(writer),
                digest,
                len,
                Some(media_type),
                None,
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(FillError::Storage(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pins an image (and everything it refers to) against eviction and `wharf gc`. A tag is
    /// resolved through the index whenever eviction runs, so the pin follows the tag. Returns
    /// whether the image was not pinned before. For `wharf pin` and `wharf prefetch`.
    ///
    /// # Errors
    /// Index failures.
    pub fn pin(&self, image: &ImageRef) -> Result<bool, IndexError> {
        self.index.add_pin(image, PinSource::Command)
    }

    /// Unpins an image pinned with [`Cache::pin`]; returns who had pinned it. A configuration pin
    /// is left alone (and `Some(PinSource::Config)` returned): remove its `[[pin]]` entry instead.
    ///
    /// # Errors
    /// Index failures.
    pub fn unpin(&self, image: &ImageRef) -> Result<Option<PinSource>, IndexError> {
        let from_config = self
            .index
            .pins()?
            .iter()
            .any(|(pinned, source)| pinned == image && *source == PinSource::Config);
        if from_config {
            return Ok(Some(PinSource::Config));
        }
        self.index.remove_pin(image)
    }
}

/// The open error for a metadata failure while opening the cache at `root`: another wharf holds
/// it, or it failed.
fn index_error(root: &Path, source: IndexError) -> OpenError {
    if source.is_locked() {
        OpenError::Locked {
            path: root.display().to_string(),
        }
    } else {
        OpenError::Index {
            path: root.join("index").display().to_string(),
            source,
        }
    }
}

// === impl Reservation ===

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.cache.reserved.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}
