//! `wharf check`: the start-up reconciliation on demand, with sizes and (optionally) hashes, on a
//! storage no wharf is serving from.
//!
//! It reports, with counts and bytes: blobs that are fine; staging files left by a crash; index
//! records whose file is missing; files whose size differs from the index; with `--verify`, files
//! whose content does not hash to their digest; files without an index record (orphans); entries
//! under `blobs/` that are not blobs (strays); and access or manifest records of blobs that are not
//! indexed. Without `--repair` it changes nothing. With it: staging files, strays, stale records and
//! bad files go (with their index records), missing files' records are dropped, and orphans are
//! hashed and adopted when they match their names or removed when they do not.
//!
//! It takes the index's lock, so it refuses to run while a wharf serves from the same storage.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::reconcile::hash_file;
use super::{Index, IndexError, MetaStore};
use crate::oci::{media, Digest};
use crate::store::{BlobStore, FsBlobStore, LocalStore};

/// What `wharf check` does.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Fix what is found.
    pub repair: bool,
    /// Hash every blob.
    pub verify: bool,
}

/// A count of blobs (or files) and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// How many.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What `wharf check` found (and, with `repair`, fixed).
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Indexed blobs whose file is there, of the right size (and hash, when verified).
    pub ok: Tally,
    /// Staging files left by a process that died mid-fill.
    pub staging: Tally,
    /// Index records whose file is missing (bytes as indexed).
    pub missing: Tally,
    /// Files whose size differs from the index (bytes on disk).
    pub size_mismatch: Tally,
    /// Files that do not hash to their digest (only with `verify`).
    pub hash_mismatch: Tally,
    /// Files without an index record.
    pub orphans: Tally,
    /// Orphans that hash to their names (adopted when repairing; counted with `verify` or `repair`).
    pub orphans_intact: Tally,
    /// Entries under `blobs/` that are not blobs.
    pub strays: Tally,
    /// Access or manifest records of blobs that are not indexed.
    pub stale_records: u64,
    /// Whether the problems were repaired.
    pub repaired: bool,
    /// Whether every blob was hashed.
    pub verified: bool,
}

/// Why `wharf check` could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A wharf is serving from this storage.
    #[error("storage {path} is in use by a running wharf (its index is locked); stop it first")]
    Locked {
        /// The storage directory.
        path: PathBuf,
    },
    /// The directory is not a wharf storage.
    #[error("{path} is not a wharf storage directory (it has no blobs/); check [storage] path")]
    NoStorage {
        /// The directory.
        path: PathBuf,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] std::io::Error),
}

/// Progress reporting for long checks (a bar on a terminal, nothing otherwise).
pub trait Progress: Sync {
    /// A new phase of `total` steps (bytes when `bytes` is true, else items).
    fn phase(&self, name: &'static str, total: u64, bytes: bool);
    /// `n` more steps done.
    fn advance(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &'static str, _: u64, _: bool) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

// === impl Tally ===

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

// === impl CheckReport ===

impl CheckReport {
    /// How many problems were found (whether or not they were repaired).
    pub fn problems(&self) -> u64 {
        self.staging.count
            + self.missing.count
            + self.size_mismatch.count
            + self.hash_mismatch.count
            + self.orphans.count
            + self.strays.count
            + self.stale_records
    }

    /// The report as lines of `what  count  bytes`, for people and scripts alike.
    pub fn lines(&self) -> Vec<(String, Tally)> {
        let mut lines = vec![
            ("ok".to_owned(), self.ok),
            ("staging leftovers".to_owned(), self.staging),
            ("missing files".to_owned(), self.missing),
            ("size mismatches".to_owned(), self.size_mismatch),
        ];
        if self.verified {
            lines.push(("hash mismatches".to_owned(), self.hash_mismatch));
        }
        lines.push(("orphan files".to_owned(), self.orphans));
        if self.repaired || self.verified {
            lines.push(("orphans intact".to_owned(), self.orphans_intact));
        }
        lines.push(("stray files".to_owned(), self.strays));
        lines.push((
            "stale records".to_owned(),
            Tally {
                count: self.stale_records,
                bytes: 0,
            },
        ));
        lines
    }
}

/// Checks (and with `options.repair`, repairs) the storage at `root`.
///
/// # Errors
/// When the storage is in use or not a storage directory, or the index or store fail.
pub async fn run(
    root: &Path,
    options: CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport, CheckError> {
    if !root.join("blobs").is_dir() {
        return Err(CheckError::NoStorage {
            path: root.to_owned(),
        });
    }
    let index = Index::open(&root.join("index")).map_err(|e| {
        if e.is_locked() {
            CheckError::Locked {
                path: root.to_owned(),
            }
        } else {
            CheckError::Index(e)
        }
    })?;
    let store = FsBlobStore::open_existing(root)?;
    // `wharf check` looks at the storage on this machine's disk: listing and staging are its
    // housekeeping.
    let local: &dyn LocalStore = &store;
    let mut report = CheckReport {
        repaired: options.repair,
        verified: options.verify,
        ..CheckReport::default()
    };

    let (count, bytes) = if options.repair {
        local.clear_staging()?
    } else {
        local.staging_leftovers()?
    };
    report.staging = Tally { count, bytes };

    let listing = local.list()?;
    let mut files: HashSet<Digest> = listing.blobs.iter().copied().collect();
    let entries: Vec<(Digest, u64)> = index.blobs().collect::<Result<_, _>>()?;
    let total = if options.verify {
        entries.iter().map(|(_, s)| s).sum()
    } else {
        entries.len() as u64
    };
    progress.phase("checking blobs", total, options.verify);
    for (digest, size) in entries {
        let step = if options.verify { size } else { 1 };
        if !files.remove(&digest) {
            report.missing.add(size);
            if options.repair {
                index.remove_blob(&digest)?;
            }
            progress.advance(step);
            continue;
        }
        let Some(blob) = store.open(&digest).await? else {
            report.missing.add(size);
            if options.repair {
                index.remove_blob(&digest)?;
            }
            progress.advance(step);
            continue;
        };
        let bad = if blob.size() != size {
            report.size_mismatch.add(blob.size());
            true
        } else if options.verify && !hash_file(&blob, digest).await?.0 {
            report.hash_mismatch.add(size);
            true
        } else {
            report.ok.add(size);
            false
        };
        drop(blob);
        if bad && options.repair {
            store.remove(&digest).await?;
            index.remove_blob(&digest)?;
        }
        progress.advance(step);
    }
    progress.finish();

    let mut orphans = Vec::new();
    for digest in files {
        let size = store.size(&digest).await?.unwrap_or(0);
        report.orphans.add(size);
        orphans.push((digest, size));
    }
    if options.repair || options.verify {
        progress.phase(
            "hashing orphan files",
            orphans.iter().map(|(_, s)| s).sum(),
            true,
        );
        for (digest, size) in orphans {
            if let Some(blob) = store.open(&digest).await? {
                let (ok, bytes) = hash_file(&blob, digest).await?;
                drop(blob);
                if ok {
                    report.orphans_intact.add(size);
                }
                if options.repair {
                    if ok {
                        match bytes.as_deref().and_then(media::evident_manifest_type) {
                            Some(t) => index.insert_manifest(&digest, size, t)?,
                            None => index.insert_blob(&digest, size)?,
                        }
                    } else {
                        store.remove(&digest).await?;
                    }
                }
            }
            progress.advance(size);
        }
        progress.finish();
    }

    for (name, size) in &listing.strays {
        report.strays.add(*size);
        if options.repair {
            local.remove_stray(name)?;
        }
    }
    let stale = index.stale_records()?;
    report.stale_records = stale.len() as u64;
    if options.repair {
        for digest in &stale {
            index.remove_stale_record(digest)?;
        }
    }
    index.flush().await?;
    Ok(report)
}

/// What `wharf check` found in the shared object store.
#[derive(Debug, Clone, Default)]
pub struct SharedCheck {
    /// Objects that are fine (hashed, with `verify`; else listed).
    pub ok: Tally,
    /// Objects that do not hash to their digest (only with `verify`; removed with `repair`).
    pub hash_mismatch: Tally,
}

/// Checks the shared object store: lists it and, with `verify`, reads and hashes every object,
/// removing (with `repair`) those that do not match their digest. A fill verifies what it reads
/// from the store anyway; this finds bad copies before a client asks for them.
///
/// # Errors
/// When the store cannot be listed or read.
pub async fn shared(
    store: &dyn BlobStore,
    options: CheckOptions,
    progress: &dyn Progress,
) -> Result<SharedCheck, CheckError> {
    use futures_util::StreamExt;

    let listed = match store.list_blobs().await {
        Some(listed) => listed?,
        None => return Ok(SharedCheck::default()),
    };
    let mut report = SharedCheck::default();
    if !options.verify {
        for object in &listed {
            report.ok.add(object.size);
        }
        return Ok(report);
    }
    progress.phase(
        "hashing the shared store",
        listed.iter().map(|o| o.size).sum(),
        true,
    );
    for object in listed {
        let Some(blob) = store.open(&object.digest).await? else {
            continue; // Removed since the listing.
        };
        let mut verifier = crate::oci::Verifier::new();
        let mut body = blob.stream_range(0, object.size);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            progress.advance(chunk.len() as u64);
            verifier.update(&chunk);
        }
        if verifier.finish(&object.digest, Some(object.size)).is_ok() {
            report.ok.add(object.size);
        } else {
            report.hash_mismatch.add(object.size);
            if options.repair {
                store.remove(&object.digest).await?;
            }
        }
    }
    progress.finish();
    Ok(report)
}

#[cfg(test)]
mod shared_tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::MemoryBlobStore;

    async fn put(store: &MemoryBlobStore, digest: &Digest, bytes: &'static [u8]) {
        let mut writer = store.writer().await.unwrap();
        writer.write(&[Bytes::from_static(bytes)]).await.unwrap();
        writer.finish().await.unwrap().commit(digest).await.unwrap();
    }

    #[tokio::test]
    async fn a_verified_check_of_the_shared_store_finds_and_removes_bad_copies() {
        let store = MemoryBlobStore::new();
        let good = Digest::of(b"good");
        let bad = Digest::of(b"bad");
        put(&store, &good, b"good").await;
        put(&store, &bad, b"not bad").await;

        let listed = shared(&store, CheckOptions::default(), &NoProgress)
            .await
            .unwrap();
        assert_eq!(
            listed.ok.count, 2,
            "without verify, objects are only listed"
        );

        let verify = CheckOptions {
            repair: false,
            verify: true,
        };
        let found = shared(&store, verify, &NoProgress).await.unwrap();
        assert_eq!((found.ok.count, found.hash_mismatch.count), (1, 1));
        assert_eq!(store.len(), 2, "nothing removed without repair");

        let repair = CheckOptions {
            repair: true,
            verify: true,
        };
        let repaired = shared(&store, repair, &NoProgress).await.unwrap();
        assert_eq!(repaired.hash_mismatch.count, 1);
        assert_eq!(store.len(), 1);
        assert!(store.size(&good).await.unwrap().is_some());
    }
}
