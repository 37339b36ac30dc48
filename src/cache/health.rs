//! Whether the storage can take writes: after a write fails (disk full, I/O error, read-only
//! filesystem) or free space falls below `storage.min_free`, caching pauses for
//! `storage.write_error_pause` and misses are streamed from the upstream without touching the disk.
//! Then writing is simply tried again, so caching resumes by itself once space is back.
//!
//! Failures are logged once per pause, not once per request: a full disk under load would otherwise
//! flood the log with the same line.
//!
//! `min_free` exists because the index (sled) shares the filesystem: sled treats a failed write as
//! fatal for the life of the process, so wharf must never be the one that fills the disk. Downloads
//! stop short of the floor instead of running into `ENOSPC`. Free space is the blob store's to
//! tell ([`crate::store::LocalStore::free_space`]); a store that cannot tell is never short of it.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::size::format_size;
use crate::store::BlobStore;

/// The storage's write health.
pub struct StorageHealth {
    /// The storage's name in the log.
    root: PathBuf,
    store: Arc<dyn BlobStore>,
    min_free: u64,
    pause: Duration,
    paused_until: Mutex<Option<Instant>>,
    last_warned: Mutex<Option<Instant>>,
    /// Set while a pause is in effect (or has not been followed by a successful write yet).
    degraded: AtomicBool,
    failures: AtomicU64,
    suppressed: AtomicU64,
}

// === impl StorageHealth ===

impl StorageHealth {
    /// The health of `store`, named `root` in the log: keep `min_free` bytes free, pause `pause`
    /// after a failure.
    pub fn new(root: PathBuf, store: Arc<dyn BlobStore>, min_free: u64, pause: Duration) -> Self {
        Self {
            root,
            store,
            min_free,
            pause,
            paused_until: Mutex::new(None),
            last_warned: Mutex::new(None),
            degraded: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether caching is paused after a recent failure.
    pub fn paused(&self) -> bool {
        self.paused_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }

    /// How many write failures (including the free-space floor being reached) there have been.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Records a failed write and pauses caching. Logs at warn at most once per pause.
    pub fn failed(&self, what: &'static str, error: &io::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.degraded.store(true, Ordering::Relaxed);
        let now = Instant::now();
        *self.paused_until.lock() = Some(now + self.pause);
        let mut last = self.last_warned.lock();
        if last.is_none_or(|at| now.duration_since(at) >= self.pause) {
            *last = Some(now);
            drop(last);
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            warn!(
                storage = %self.root.display(), what, %error, suppressed,
                pause_s = self.pause.as_secs_f64(),
                "storage write failed; streaming misses from the upstream without caching until the pause ends"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            debug!(storage = %self.root.display(), what, %error, "storage write failed (already reported)");
        }
    }

    /// Records a write that worked; logs once when it ends a period of failures.
    pub fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            info!(storage = %self.root.display(), "storage writes work again; caching resumed");
        }
    }

    /// Free bytes on the storage's filesystem for wharf (`None` when the store has no local
    /// filesystem or the OS cannot say).
    pub fn free_space(&self) -> Option<u64> {
        self.store.local()?.free_space().map(|(free, _)| free)
    }

    /// Checks that `bytes` more can be written without going below `min_free`.
    ///
    /// # Errors
    /// A `StorageFull` error saying how much is free, for [`StorageHealth::failed`] and the log.
    pub fn check_room(&self, bytes: u64) -> io::Result<()> {
        if self.min_free == 0 {
            return Ok(());
        }
        match self.free_space() {
            Some(free) if free < bytes.saturating_add(self.min_free) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "{} free, below storage.min_free ({}) once {} more are written",
                    format_size(free),
                    format_size(self.min_free),
                    format_size(bytes)
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(root: &std::path::Path) -> Arc<dyn BlobStore> {
        Arc::new(crate::store::FsBlobStore::create(root).unwrap())
    }

    #[test]
    fn a_store_without_a_filesystem_has_no_floor() {
        let store = Arc::new(crate::store::MemoryBlobStore::new());
        let h = StorageHealth::new("memory".into(), store, 1, Duration::from_secs(1));
        assert_eq!(h.free_space(), None);
        assert!(h.check_room(u64::MAX / 2).is_ok(), "unknown is no check");
    }

    #[test]
    fn a_failure_pauses_then_caching_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let h = StorageHealth::new(
            dir.path().to_owned(),
            disk(dir.path()),
            0,
            Duration::from_millis(50),
        );
        assert!(!h.paused());
        h.failed("test", &io::Error::from(io::ErrorKind::StorageFull));
        h.failed("test", &io::Error::from(io::ErrorKind::StorageFull));
        assert!(h.paused());
        assert_eq!(h.failures(), 2);
        assert_eq!(h.suppressed.load(Ordering::Relaxed), 1, "logged once");
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.paused() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        h.succeeded();
        assert!(!h.degraded.load(Ordering::Relaxed));
    }

    #[test]
    fn the_free_space_floor_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let free = StorageHealth::new(
            dir.path().to_owned(),
            disk(dir.path()),
            1,
            Duration::from_secs(1),
        )
        .free_space()
        .unwrap();
        assert!(free > 0);
        let h = StorageHealth::new(
            dir.path().to_owned(),
            disk(dir.path()),
            1,
            Duration::from_secs(1),
        );
        assert!(h.check_room(0).is_ok());
        let e = h.check_room(u64::MAX / 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("storage.min_free"), "{e}");
        let off = StorageHealth::new(
            dir.path().to_owned(),
            disk(dir.path()),
            0,
            Duration::from_secs(1),
        );
        assert!(
            off.check_room(u64::MAX).is_ok(),
            "min_free = 0 turns the check off"
        );
    }
}
