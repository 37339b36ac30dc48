//! A fill's follower buffer: what readers of a blob still arriving read from.
//!
//! Readers that keep up with the download read the last few MiB received, which the [`Spool`]
//! keeps in memory (per fill, not per reader: memory stays flat however many clients attach).
//! Readers that joined late or fell behind read back what memory has dropped from a local file,
//! up to the bytes the fill's writer has written so far.
//!
//! That file is the blob store's own staging file when its writer has one
//! ([`crate::store::BlobWriter::local_file`]): the disk store then writes every byte once, as
//! before the store had a seam. A store without a local file (in memory, or a remote object
//! store) gets a spool file the fill writes itself, in the cache's local `tmp/` directory, unlinked
//! as soon as it is created: its descriptor is the only way to it, so no crash can leave it behind.
//!
//! After a handoff (the storage could not take the blob), each reader reads what it still needs
//! below the handoff point from the same file ([`SpoolFile`]); its descriptor stays readable
//! after the staging file is removed.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::store::disk::{read_range_at, write_chunks_at};
use crate::store::FILE_MODE;

/// How much of a fill's latest body each fill keeps in memory for the readers that keep up. Per
/// fill, not per reader: memory stays flat however many clients attach.
pub const RECENT_BYTES: usize = 4 * 1024 * 1024;

/// A fill's follower buffer (see the module docs).
#[derive(Default)]
pub struct Spool {
    /// The most recently received chunks.
    recent: Mutex<Recent>,
    /// Where bytes memory has dropped are read back from, once the fill has one.
    file: OnceLock<SpoolFile>,
}

/// The tail of a fill's body, as received: chunks by offset, at most [`RECENT_BYTES`] in all.
#[derive(Default)]
struct Recent {
    chunks: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// The local file a spool reads back from: shared, read (and, for a spool file of the fill's own,
/// written) with positional I/O, so any number of readers share it without seeking.
#[derive(Clone)]
pub struct SpoolFile {
    file: Arc<File>,
}

// === impl Spool ===

impl Spool {
    /// An empty spool, without a file yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the file to read back from (once; later calls are ignored).
    pub fn set_file(&self, file: SpoolFile) {
        let _ = self.file.set(file);
    }

    /// The file, once set.
    pub fn file(&self) -> Option<&SpoolFile> {
        self.file.get()
    }

    /// Bytes from `pos` (up to `limit`) out of the recent chunks, if memory still holds `pos`.
    pub fn recent_slice(&self, pos: u64, limit: u64) -> Option<Bytes> {
        let recent = self.recent.lock();
        let first = recent.chunks.front()?.0;
        if pos < first {
            return None;
        }
        // Chunks are contiguous: find the one holding `pos`.
        let i = recent
            .chunks
            .partition_point(|(at, b)| at + b.len() as u64 <= pos);
        let (at, chunk) = recent.chunks.get(i)?;
        let from = usize::try_from(pos - at).ok()?;
        let to = usize::try_from(limit.min(at + chunk.len() as u64) - at).ok()?;
        Some(chunk.slice(from..to))
    }

    /// Keeps a newly received chunk (at `offset`) in memory, dropping the oldest beyond the bound.
    pub fn remember(&self, offset: u64, chunk: Bytes) {
        let mut recent = self.recent.lock();
        recent.bytes += chunk.len();
        recent.chunks.push_back((offset, chunk));
        while recent.bytes > RECENT_BYTES && recent.chunks.len() > 1 {
            if let Some((_, old)) = recent.chunks.pop_front() {
                recent.bytes -= old.len();
            }
        }
    }
}

// === impl SpoolFile ===

impl SpoolFile {
    /// Reads back from a file someone else writes (the blob store's staging file).
    pub fn shared(file: Arc<File>) -> Self {
        Self { file }
    }

    /// A spool file of the fill's own in `dir`, created 0600 and unlinked at once.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub async fn anonymous(dir: &Path) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.spool", std::process::id()));
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok::<_, io::Error>(file)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Self {
            file: Arc::new(file),
        })
    }

    /// Writes `chunks` one after another from `at`, in one trip to the blocking pool. Returns how
    /// many bytes were written whole (on a chunk boundary) and the first error.
    pub async fn write(&self, chunks: &[Bytes], at: u64) -> (u64, io::Result<()>) {
        let file = self.file.clone();
        let chunks = chunks.to_vec();
        let written =
            tokio::task::spawn_blocking(move || write_chunks_at(&file, &chunks, at)).await;
        written.unwrap_or_else(|e| (0, Err(io::Error::other(e))))
    }

    /// Reads `[start, end)` in one call (on the blocking pool).
    ///
    /// # Errors
    /// I/O errors, and `UnexpectedEof` when the file is shorter than `end`.
    pub async fn read_range(&self, start: u64, end: u64) -> io::Result<Bytes> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_range_at(&file, start, end))
            .await
            .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_chunks_serve_readers_that_keep_up() {
        let f = Spool::new();
        assert_eq!(f.recent_slice(0, 10), None);
        f.remember(0, Bytes::from_static(b"abcd"));
        f.remember(4, Bytes::from_static(b"efgh"));
        let cases: &[(u64, u64, Option<&[u8]>)] = &[
            (0, 8, Some(b"abcd")),
            (2, 8, Some(b"cd")),
            (2, 3, Some(b"c")),
            (4, 8, Some(b"efgh")),
            (5, 7, Some(b"fg")),
            (8, 9, None),
        ];
        for &(pos, limit, want) in cases {
            assert_eq!(
                f.recent_slice(pos, limit).as_deref(),
                want,
                "{pos}..{limit}"
            );
        }
    }

    #[test]
    fn recent_chunks_are_bounded() {
        let f = Spool::new();
        let chunk = Bytes::from(vec![1u8; RECENT_BYTES / 2]);
        for i in 0..4u64 {
            f.remember(i * chunk.len() as u64, chunk.clone());
        }
        assert!(f.recent.lock().bytes <= RECENT_BYTES);
        // The oldest chunks are gone: readers there must use the file.
        assert_eq!(f.recent_slice(0, 1), None);
        let last = 3 * chunk.len() as u64;
        assert_eq!(f.recent_slice(last, last + 1).map(|b| b.len()), Some(1));
    }

    #[tokio::test]
    async fn an_own_spool_file_leaves_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = SpoolFile::anonymous(dir.path()).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let (n, r) = file
            .write(&[Bytes::from_static(b"abc"), Bytes::from_static(b"def")], 2)
            .await;
        r.unwrap();
        assert_eq!(n, 6);
        assert_eq!(file.read_range(3, 7).await.unwrap(), &b"bcde"[..]);
        assert!(file.read_range(3, 9).await.is_err());
    }
}
