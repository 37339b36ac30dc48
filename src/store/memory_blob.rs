//! A blob store in memory: a map from digest to bytes.
//!
//! It keeps the same contract as the disk store (see [`super::blob`]) and has no
//! [`super::LocalStore`]: nothing to list at start-up, no staging to sweep, no free space to watch.
//! Tests run the cache on it to show that the cache's policy does not depend on a filesystem; it
//! is not meant for production (everything is lost on exit, and memory is the only limit).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use super::blob::{Blob, BlobRead, BlobStore, BlobWriter, Listed, StagedBlob};
use super::SMALL_BLOB;
use crate::oci::Digest;

/// Each blob with when it was committed.
type Blobs = Arc<RwLock<HashMap<Digest, (Bytes, SystemTime)>>>;

/// The in-memory store.
#[derive(Debug, Default, Clone)]
pub struct MemoryBlobStore {
    blobs: Blobs,
}

/// A blob being written: bytes appended to a buffer.
struct MemoryWriter {
    blobs: Blobs,
    buf: BytesMut,
}

/// A finished blob, waiting for its digest.
struct MemoryStaged {
    blobs: Blobs,
    bytes: Bytes,
}

/// Reads a committed blob's bytes.
struct MemoryRead {
    bytes: Bytes,
}

// === impl MemoryBlobStore ===

impl MemoryBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets when a stored blob counts as committed (tests of what ages out).
    #[doc(hidden)]
    pub fn backdate(&self, digest: &Digest, at: SystemTime) {
        if let Some((_, stored_at)) = self.blobs.write().get_mut(digest) {
            *stored_at = at;
        }
    }

    /// How many blobs are stored.
    pub fn len(&self) -> usize {
        self.blobs.read().len()
    }

    /// Whether no blob is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        Ok(self.blobs.read().get(digest).map(|(b, _)| b.len() as u64))
    }

    async fn open(&self, digest: &Digest) -> io::Result<Option<Blob>> {
        let Some(bytes) = self.blobs.read().get(digest).map(|(b, _)| b.clone()) else {
            return Ok(None);
        };
        let size = bytes.len() as u64;
        let contents = (size <= SMALL_BLOB).then(|| bytes.clone());
        Ok(Some(Blob::new(
            size,
            contents,
            Arc::new(MemoryRead { bytes }),
        )))
    }

    async fn writer(&self) -> io::Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter {
            blobs: self.blobs.clone(),
            buf: BytesMut::new(),
        }))
    }

    async fn remove(&self, digest: &Digest) -> io::Result<()> {
        self.blobs.write().remove(digest);
        Ok(())
    }

    async fn list_blobs(&self) -> Option<io::Result<Vec<Listed>>> {
        let blobs = self.blobs.read();
        Some(Ok(blobs
            .iter()
            .map(|(digest, (bytes, at))| Listed {
                digest: *digest,
                size: bytes.len() as u64,
                stored_at: *at,
            })
            .collect()))
    }
}

// === impl MemoryRead ===

#[async_trait]
impl BlobRead for MemoryRead {
    async fn read_range(self: Arc<Self>, start: u64, end: u64) -> io::Result<Bytes> {
        let (s, e) = (usize::try_from(start), usize::try_from(end));
        match (s, e) {
            (Ok(s), Ok(e)) if s <= e && e <= self.bytes.len() => Ok(self.bytes.slice(s..e)),
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

// === impl MemoryWriter ===

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for chunk in chunks {
            self.buf.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.buf.len() as u64
    }

    async fn finish(self: Box<Self>) -> io::Result<Box<dyn StagedBlob>> {
        let Self { blobs, buf } = *self;
        Ok(Box::new(MemoryStaged {
            blobs,
            bytes: buf.freeze(),
        }))
    }
}

// === impl MemoryStaged ===

#[async_trait]
impl StagedBlob for MemoryStaged {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    async fn read_all(&self) -> io::Result<Bytes> {
        Ok(self.bytes.clone())
    }

    async fn commit(self: Box<Self>, digest: &Digest) -> io::Result<()> {
        self.blobs
            .write()
            .insert(*digest, (self.bytes, SystemTime::now()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_contract() {
        let store = MemoryBlobStore::new();
        super::super::blob::exercise(&store).await;
        assert!(store.local().is_none());
        assert_eq!(store.len(), 1, "only the small blob is left");
    }
}
