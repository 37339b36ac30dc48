//! Making the index and the files agree after a crash (or a hand that deleted files).
//!
//! At start-up only the cheap part runs, before wharf serves ([`at_open`]): staging files are
//! removed (they were never verified), the store is listed (one directory read per prefix, no
//! `stat` per file) and compared with the index. Index records whose file is missing are dropped;
//! files without a record are queued, and a background task hashes each one and adopts it if it
//! matches its name's digest, or removes it ([`Cache::verify_orphans`]). Nothing unverified is ever
//! served: an orphan is not indexed until it has been hashed, so until then a request for it is an
//! ordinary miss.
//!
//! `wharf check` ([`super::check`]) runs the same comparison on demand, plus sizes and, with
//! `--verify`, hashes.
//!
//! Listing and staging sweeps need a store on the local filesystem
//! ([`crate::store::LocalStore`]); with a store that has none, start-up skips them.

use std::collections::HashSet;
use std::io;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::evict::Removal;
use super::{Cache, FillError};
use super::{IndexError, MetaStore};
use crate::oci::{media, Digest, Verifier};
use crate::store::{Blob, BlobStore};

/// The largest manifest read (as `u64`, for file sizes).
const MAX_MANIFEST: u64 = crate::limits::MAX_MANIFEST as u64;

/// What start-up found.
#[derive(Debug, Default)]
pub struct AtOpen {
    /// Files without an index record, to verify in the background.
    pub orphans: Vec<Digest>,
}

/// A start-up reconciliation that could not run.
#[derive(Debug)]
pub enum Error {
    /// The store could not be listed or cleaned.
    Store(io::Error),
    /// The index failed.
    Index(IndexError),
}

/// What became of an orphan file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphan {
    /// It hashed to its name and is indexed now (its size).
    Adopted(u64),
    /// It did not match its name and was removed (its size).
    Removed(u64),
    /// It did not match, but is being read or filled: left for later.
    InUse,
    /// Indexed meanwhile (a fill stored it again), or gone.
    Settled,
}

/// Orphans verified in the background.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// Adopted into the index.
    pub adopted: u64,
    /// Removed because they did not hash to their names.
    pub removed: u64,
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Store(e)
    }
}

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Self {
        Self::Index(e)
    }
}

/// The start-up reconciliation (see the module docs). Blocking; runs before serving.
///
/// # Errors
/// When the store cannot be listed or the index fails.
pub fn at_open(index: &dyn MetaStore, store: &dyn BlobStore) -> Result<AtOpen, Error> {
    let started = Instant::now();
    let Some(store) = store.local() else {
        return Ok(AtOpen::default());
    };
    let (tmp_files, tmp_bytes) = store.clear_staging()?;
    let listing = store.list()?;
    let mut files: HashSet<Digest> = listing.blobs.into_iter().collect();
    let mut missing = Vec::new();
    for item in index.blobs() {
        let (digest, _) = item?;
        if !files.remove(&digest) {
            missing.push(digest);
        }
    }
    for digest in &missing {
        index.remove_blob(digest)?;
    }
    let orphans: Vec<Digest> = files.into_iter().collect();
    let usage = index.usage();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if tmp_files > 0 || !missing.is_empty() || !orphans.is_empty() || !listing.strays.is_empty() {
        info!(
            blobs = usage.entries,
            bytes = usage.bytes,
            staging_removed = tmp_files,
            staging_bytes = tmp_bytes,
            missing_dropped = missing.len(),
            orphans_to_verify = orphans.len(),
            stray_files = listing.strays.len(),
            elapsed_ms,
            "storage reconciled at start-up"
        );
    } else {
        debug!(
            blobs = usage.entries,
            bytes = usage.bytes,
            elapsed_ms,
            "storage and index agree"
        );
    }
    if !listing.strays.is_empty() {
        warn!(
            count = listing.strays.len(),
            first = %listing.strays[0].0,
            "files under blobs/ that are not blobs; `wharf check --repair` removes them"
        );
    }
    Ok(AtOpen { orphans })
}

/// How much [`hash_file`] reads at once.
const HASH_CHUNK: u64 = 1 << 20;

/// Hashes a stored blob and compares it with `digest`. Returns whether it matches, and its bytes
/// when it does and is small enough to be a manifest.
///
/// # Errors
/// I/O errors reading it.
pub async fn hash_file(blob: &Blob, digest: Digest) -> io::Result<(bool, Option<Vec<u8>>)> {
    let size = blob.size();
    let keep = size <= MAX_MANIFEST;
    let mut kept = Vec::new();
    let mut verifier = Verifier::new();
    let mut pos = 0u64;
    while pos < size {
        let next = size.min(pos + HASH_CHUNK);
        let bytes = blob.read_range(pos, next).await?;
        if keep {
            kept.extend_from_slice(&bytes);
        }
        // Hashing a MiB is work for the blocking pool, not for a thread that serves requests.
        verifier = tokio::task::spawn_blocking(move || {
            verifier.update(&bytes);
            verifier
        })
        .await
        .map_err(io::Error::other)?;
        pos = next;
    }
    let ok = verifier.finish(&digest, Some(size)).is_ok();
    Ok((ok, (ok && keep).then_some(kept)))
}

// === impl Cache ===

impl Cache {
    /// How many files found at start-up are still waiting to be verified.
    pub fn orphans_pending(&self) -> usize {
        self.orphans.lock().len()
    }

    /// Verifies the files start-up found without an index record: adopts those that hash to their
    /// names, removes the others. Runs in the background after start.
    pub async fn verify_orphans(&self) -> OrphanReport {
        let mut report = OrphanReport::default();
        loop {
            let Some(digest) = self.orphans.lock().pop() else {
                break;
            };
            match self.adopt_or_remove(digest).await {
                Ok(Orphan::Adopted(_)) => report.adopted += 1,
                Ok(Orphan::Removed(_)) => report.removed += 1,
                Ok(Orphan::InUse | Orphan::Settled) => {}
                Err(error) => {
                    warn!(%digest, %error, "cannot verify a stored file without an index record")
                }
            }
        }
        if report != OrphanReport::default() {
            info!(
                adopted = report.adopted,
                removed = report.removed,
                "files found without an index record were verified"
            );
        }
        report
    }

    /// Hashes one file without an index record and adopts or removes it.
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn adopt_or_remove(&self, digest: Digest) -> Result<Orphan, FillError> {
        if self.index.blob_size(&digest)?.is_some() {
            return Ok(Orphan::Settled);
        }
        let Some(blob) = self.store.open(&digest).await? else {
            return Ok(Orphan::Settled);
        };
        let size = blob.size();
        let (ok, bytes) = hash_file(&blob, digest).await?;
        drop(blob);
        if ok {
            match bytes.as_deref().and_then(media::evident_manifest_type) {
                Some(media_type) => self.index.insert_manifest(&digest, size, media_type)?,
                None => self.index.insert_blob(&digest, size)?,
            }
            self.access.touch(digest);
            self.wake_evictor_if_needed();
            debug!(%digest, size, "adopted a verified file that had no index record");
            return Ok(Orphan::Adopted(size));
        }
        // A file that does not match its name must go, unless a fill is storing it right now
        // (then the fill's rename replaces it) or it got indexed meanwhile.
        if self.index.blob_size(&digest)?.is_some() {
            return Ok(Orphan::Settled);
        }
        if !self.holds.begin_removal(digest) {
            return Ok(Orphan::InUse);
        }
        let result = if self.inflight.get(&digest).is_some() {
            Ok(Removal::InUse)
        } else {
            self.store
                .remove(&digest)
                .await
                .map(|()| Removal::Removed(size))
        };
        self.holds.end_removal(digest);
        Ok(match result? {
            Removal::Removed(n) => {
                warn!(%digest, size, "a stored file without an index record does not match its digest; removed it");
                Orphan::Removed(n)
            }
            Removal::InUse => Orphan::InUse,
            Removal::Gone => Orphan::Settled,
        })
    }
}
