//! The cache: committed blobs in a [`BlobStore`], their metadata in the sled [`Index`], and the fills
//! in flight ([`fill`]).
//!
//! Lookups answer with what to serve: a committed blob, a fill to follow, or nothing (a miss the
//! caller resolves upstream). The index is consulted first because it is in memory; a blob the index
//! lists but the store lacks (deleted by hand, a crash between the two writes) is dropped from the
//! index and treated as a miss, and a stored file whose size disagrees with the index is never served.

pub mod blob_store;
pub mod fill;
pub mod index;

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

pub use blob_store::{BlobFile, BlobStore, FsBlobStore};
pub use fill::{Fill, FillError, Inflight, Joined};
pub use index::{Index, IndexError, TagEntry};

use crate::oci::{Digest, RepoName};
use crate::upstream::Upstream;

/// The cache facade shared by all requests.
pub struct Cache {
    store: Arc<dyn BlobStore>,
    index: Index,
    inflight: Inflight,
}

/// Where a blob comes from.
pub enum BlobSource {
    /// Committed and verified.
    Hit(BlobFile),
    /// Being filled; `leader` is true for the request that started the fill.
    Fill {
        /// The fill to follow.
        fill: Arc<Fill>,
        /// Whether this request started it.
        leader: bool,
    },
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
    /// The index could not be opened.
    #[error("index in {path}: {source} (is another wharf running on this storage?)")]
    Index {
        /// The index directory.
        path: String,
        /// The sled error.
        source: IndexError,
    },
}

// === impl Cache ===

impl Cache {
    /// Opens the cache under `root`: blobs in `root/blobs`, staging in `root/tmp`, index in `root/index`.
    ///
    /// # Errors
    /// When the directories cannot be created or the index cannot be opened.
    pub fn open(root: &Path) -> Result<Self, OpenError> {
        let store = FsBlobStore::open(root).map_err(|source| OpenError::Storage {
            path: root.display().to_string(),
            source,
        })?;
        let index_dir = root.join("index");
        let index = Index::open(&index_dir).map_err(|source| OpenError::Index {
            path: index_dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            store: Arc::new(store),
            index,
            inflight: Inflight::default(),
        })
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The fills in flight.
    pub fn inflight(&self) -> &Inflight {
        &self.inflight
    }

    /// A committed blob, if the cache has it intact.
    ///
    /// # Errors
    /// Storage or index failures (not a miss).
    pub async fn committed(&self, digest: &Digest) -> Result<Option<BlobFile>, FillError> {
        let Some(size) = self.index.blob_size(digest)? else {
            return Ok(None);
        };
        match self.store.open(digest).await? {
            Some(blob) if blob.size() == size => Ok(Some(blob)),
            Some(blob) => {
                warn!(%digest, indexed = size, on_disk = blob.size(), "stored blob has the wrong size; dropping it");
                self.index.remove_blob(digest)?;
                self.store.remove(digest).await?;
                Ok(None)
            }
            None => {
                warn!(%digest, "indexed blob is missing from storage; dropping it from the index");
                self.index.remove_blob(digest)?;
                Ok(None)
            }
        }
    }

    /// A blob to serve: committed, being filled, or a new fill from `upstream`.
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn blob(
        self: &Arc<Self>,
        upstream: &Arc<Upstream>,
        repo: &RepoName,
        digest: Digest,
    ) -> Result<BlobSource, FillError> {
        if let Some(blob) = self.committed(&digest).await? {
            return Ok(BlobSource::Hit(blob));
        }
        loop {
            let joined = self.inflight.join_or_start(
                digest,
                || self.index.blob_size(&digest).map(|s| s.is_some()),
                || Fill::spawn(self.clone(), upstream.clone(), repo.clone(), digest),
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

    /// Stores verified bytes (a manifest) under their digest, with its media type.
    ///
    /// # Errors
    /// Storage or index failures.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<(), FillError> {
        let len = bytes.len() as u64;
        if self.index.manifest_type(digest)?.is_none()
            || self.store.size(digest).await? != Some(len)
        {
            let staged = self.store.stage().await?;
            staged.write_at(bytes, 0).await?;
            self.store.commit(staged, digest).await?;
        }
        self.index.insert_manifest(digest, len, media_type)?;
        Ok(())
    }
}
