//! Content-addressed blob storage behind a small trait.
//!
//! The store holds committed, verified blobs (layers, configs and manifests alike) by digest. A fill
//! writes into a [`Staged`] file first, which readers may follow while it grows; only after the
//! digest and size have been verified does [`BlobStore::commit`] make it visible under its digest.
//!
//! The only backend today is [`FsBlobStore`] (`<root>/blobs/sha256/ab/abcd…`, staging in `<root>/tmp`).
//! An S3-compatible store for replicas that share one cache will implement the same trait, staging
//! locally and uploading on commit.
//!
//! Contract: a read of a digest that is not stored is `Ok(None)` (a miss), never an error; errors are
//! for storage that cannot answer (permissions, I/O errors, a full disk).
//!
//! Crash safety comes from the order of [`BlobStore::commit`]: the staging file is fsynced, renamed
//! into place and its directory fsynced, and only then does the caller index it. A process killed at
//! any point leaves either a staging file (removed at start-up, never read) or a complete, verified
//! file under its digest (indexed, or adopted by start-up after hashing it again).
//!
//! Whatever the process umask, the directories the store creates are 0700 and its files 0600 (see
//! [`private_dir_all`]): a wharf started by hand must not leave the cache readable by other users.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::holds::Hold;
use crate::oci::Digest;

/// A body of bytes read from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// How much one read from a file returns: large enough to keep syscalls and task hops rare, small
/// enough that many concurrent readers stay light on memory.
pub const READ_CHUNK: usize = 128 * 1024;

/// Blobs of at most this size are read in one go on a hit.
pub const SMALL_BLOB: u64 = 256 * 1024;

/// Storage of committed blobs.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a committed blob; `Ok(None)` when it is not stored.
    async fn size(&self, digest: &Digest) -> io::Result<Option<u64>>;

    /// Opens a committed blob; `Ok(None)` when it is not stored.
    async fn open(&self, digest: &Digest) -> io::Result<Option<BlobFile>>;

    /// A new, empty staging file for a fill.
    async fn stage(&self) -> io::Result<Staged>;

    /// Makes a verified staging file visible under `digest`. The bytes are durable when this returns.
    async fn commit(&self, staged: Staged, digest: &Digest) -> io::Result<()>;

    /// Removes a committed blob; removing one that is not there is not an error.
    async fn remove(&self, digest: &Digest) -> io::Result<()>;

    /// Lists what the store holds: every committed digest, and entries that are not blobs (stray
    /// names). Blocking: for start-up and `wharf check`, which read the whole store once.
    ///
    /// # Errors
    /// When the store cannot be listed.
    fn list(&self) -> io::Result<Listing>;

    /// Removes a stray entry named by [`BlobStore::list`].
    ///
    /// # Errors
    /// I/O errors.
    fn remove_stray(&self, name: &str) -> io::Result<()>;

    /// Staging files left by a process that died mid-fill: their count and bytes. Blocking.
    ///
    /// # Errors
    /// When the staging area cannot be read.
    fn staging_leftovers(&self) -> io::Result<(u64, u64)>;

    /// Removes every staging file. Only safe while no fill runs (at start-up, or in `wharf check`
    /// with the index lock held). Returns their count and bytes. Blocking.
    ///
    /// # Errors
    /// When the staging area cannot be read or a file cannot be removed.
    fn clear_staging(&self) -> io::Result<(u64, u64)>;
}

/// What a store holds, from [`BlobStore::list`].
#[derive(Debug, Default)]
pub struct Listing {
    /// Committed blobs.
    pub blobs: Vec<Digest>,
    /// Entries that are not blobs (names relative to the store), with their sizes.
    pub strays: Vec<(String, u64)>,
}

/// An open blob (committed or being filled): a shared file handle read with positional reads, so any
/// number of readers share it without seeking.
#[derive(Clone)]
pub struct BlobFile {
    file: Arc<File>,
    size: u64,
    /// The whole content of a small committed blob, read when it was opened: a hit then costs one
    /// trip to the blocking pool, not two.
    contents: Option<Bytes>,
    /// Keeps a committed blob from being removed while any clone of this handle (a response body
    /// streaming it) lives.
    hold: Option<Arc<Hold>>,
}

/// A staging file being filled. Dropping it without committing removes the file.
pub struct Staged {
    path: PathBuf,
    file: Arc<File>,
    committed: bool,
}

/// A staging file whose handle is closed, for a writer that stages many blobs before committing
/// any (`wharf import`): thousands of open staging files would run out of file descriptors.
/// Dropping it without [`Parked::reopen`] removes the file.
pub struct Parked {
    path: PathBuf,
    armed: bool,
}

/// The local-disk store.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

/// The mode of every file wharf creates under its storage.
pub const FILE_MODE: u32 = 0o600;

/// The mode of every directory wharf creates under its storage.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with [`DIR_MODE`] (an existing directory is left as it
/// is). The mode is given to `mkdir` itself, so no directory is ever looser, whatever the umask.
///
/// # Errors
/// When a directory cannot be created.
pub fn private_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

// === impl BlobFile ===

impl BlobFile {
    /// Wraps an open file of known size.
    pub fn new(file: Arc<File>, size: u64) -> Self {
        Self {
            file,
            size,
            contents: None,
            hold: None,
        }
    }

    /// Attaches the hold that keeps the blob from being removed while this handle lives.
    #[must_use]
    pub fn with_hold(mut self, hold: Hold) -> Self {
        self.hold = Some(Arc::new(hold));
        self
    }

    /// The shared file handle.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The whole content, when the blob was small enough to be read at open.
    pub fn contents(&self) -> Option<&Bytes> {
        self.contents.as_ref()
    }

    /// Reads `[start, end)` in one call (blocking work runs on the blocking pool).
    ///
    /// # Errors
    /// I/O errors, and `UnexpectedEof` when the file is shorter than `end`.
    pub async fn read_range(&self, start: u64, end: u64) -> io::Result<Bytes> {
        if let Some(contents) = &self.contents {
            let (s, e) = (usize::try_from(start), usize::try_from(end));
            if let (Ok(s), Ok(e)) = (s, e) {
                if s <= e && e <= contents.len() {
                    return Ok(contents.slice(s..e));
                }
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let file = self.file.clone();
        let len = usize::try_from(end.saturating_sub(start))
            .map_err(|_| io::Error::other("read too large"))?;
        tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(len);
            file.read_exact_at(&mut buf, start)?;
            Ok(buf.freeze())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Streams `[start, end)` in [`READ_CHUNK`] pieces.
    pub fn stream_range(self, start: u64, end: u64) -> ByteStream {
        Box::pin(futures_util::stream::unfold(
            (self, start),
            move |(blob, pos)| async move {
                if pos >= end {
                    return None;
                }
                let next = end.min(pos + READ_CHUNK as u64);
                match blob.read_range(pos, next).await {
                    Ok(bytes) => Some((Ok(bytes), (blob, next))),
                    // Stop after an error: the stream's consumer aborts the response.
                    Err(e) => Some((Err(e), (blob, end))),
                }
            },
        ))
    }
}

// === impl Staged ===

impl Staged {
    /// A handle readers can follow while the file is written.
    pub fn reader(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Writes `bytes` at `offset` (blocking work runs on the blocking pool).
    ///
    /// # Errors
    /// Any I/O error, such as a full disk.
    pub async fn write_at(&self, bytes: Bytes, offset: u64) -> io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.write_all_at(&bytes, offset))
            .await
            .map_err(io::Error::other)?
    }

    /// Truncates the file to `len` (used when a fill restarts from an offset).
    ///
    /// # Errors
    /// Any I/O error.
    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.set_len(len))
            .await
            .map_err(io::Error::other)?
    }

    /// The path of the staging file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file and keeps it staged, to be reopened (and committed) later.
    pub fn park(mut self) -> Parked {
        // The file stays; the Parked removes it unless it is reopened.
        self.committed = true;
        Parked {
            path: self.path.clone(),
            armed: true,
        }
    }
}

// === impl Parked ===

impl Parked {
    /// The path of the staging file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the staging file again, to commit it.
    ///
    /// # Errors
    /// When the file cannot be opened (removed by hand meanwhile).
    pub async fn reopen(mut self) -> io::Result<Staged> {
        let path = self.path.clone();
        let file = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
        })
        .await
        .map_err(io::Error::other)??;
        self.armed = false;
        Ok(Staged {
            path: self.path.clone(),
            file: Arc::new(file),
            committed: false,
        })
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if self.armed {
            // Best effort, as for Staged: start-up removes whatever a crash leaves in tmp/.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: start-up removes whatever a crash leaves in tmp/.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

// === impl FsBlobStore ===

impl FsBlobStore {
    /// Opens (creating if needed) a store under `root`, and removes staging files left by a process
    /// that died mid-fill: they were never verified, so nothing may read them.
    ///
    /// # Errors
    /// When the directories cannot be created or read.
    pub fn open(root: &Path) -> io::Result<Self> {
        let store = Self::create(root)?;
        store.clear_staging()?;
        Ok(store)
    }

    /// Opens (creating if needed) a store under `root`, leaving staging files for the caller to
    /// clear with [`BlobStore::clear_staging`] (which counts them).
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn create(root: &Path) -> io::Result<Self> {
        private_dir_all(&root.join("blobs").join("sha256"))?;
        private_dir_all(&root.join("tmp"))?;
        Self::open_existing(root)
    }

    /// Opens the store under an existing `root` without changing anything (for `wharf check`).
    ///
    /// # Errors
    /// `NotFound` when `root/blobs` does not exist.
    pub fn open_existing(root: &Path) -> io::Result<Self> {
        std::fs::metadata(root.join("blobs"))?;
        Ok(Self {
            root: root.to_owned(),
            tmp: root.join("tmp"),
            counter: AtomicU64::new(0),
        })
    }

    /// The files in the staging directory (none when it does not exist).
    fn staging_files(&self) -> io::Result<Vec<(PathBuf, u64)>> {
        let entries = match std::fs::read_dir(&self.tmp) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() {
                out.push((entry.path(), meta.len()));
            }
        }
        Ok(out)
    }

    /// The path a committed blob lives at.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join("sha256")
            .join(&hex[..2])
            .join(hex)
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(io::Error::other)?
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        let path = self.blob_path(digest);
        Self::blocking(move || not_found_is_none(std::fs::metadata(path).map(|m| m.len()))).await
    }

    async fn open(&self, digest: &Digest) -> io::Result<Option<BlobFile>> {
        let path = self.blob_path(digest);
        Self::blocking(move || {
            not_found_is_none(File::open(path).and_then(|f| {
                let size = f.metadata()?.len();
                let mut blob = BlobFile::new(Arc::new(f), size);
                if size <= SMALL_BLOB {
                    let mut buf = BytesMut::zeroed(usize::try_from(size).unwrap_or(0));
                    blob.file.read_exact_at(&mut buf, 0)?;
                    blob.contents = Some(buf.freeze());
                }
                Ok(blob)
            }))
        })
        .await
    }

    async fn stage(&self) -> io::Result<Staged> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.partial", std::process::id()));
        let p = path.clone();
        let file = Self::blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(p)
        })
        .await?;
        Ok(Staged {
            path,
            file: Arc::new(file),
            committed: false,
        })
    }

    async fn commit(&self, mut staged: Staged, digest: &Digest) -> io::Result<()> {
        let dest = self.blob_path(digest);
        let from = staged.path.clone();
        let file = staged.file.clone();
        Self::blocking(move || {
            file.sync_all()?;
            let dir = dest.parent().expect("blob paths have a parent");
            private_dir_all(dir)?;
            std::fs::rename(&from, &dest)?;
            File::open(dir)?.sync_all()
        })
        .await?;
        staged.committed = true;
        Ok(())
    }

    async fn remove(&self, digest: &Digest) -> io::Result<()> {
        let path = self.blob_path(digest);
        Self::blocking(move || not_found_is_none(std::fs::remove_file(path)).map(|_| ())).await
    }

    fn list(&self) -> io::Result<Listing> {
        let mut listing = Listing::default();
        let base = self.root.join("blobs");
        let mut stray = |path: &Path, size: u64| {
            let name = path.strip_prefix(&self.root).unwrap_or(path);
            listing
                .strays
                .push((name.to_string_lossy().into_owned(), size));
        };
        for top in std::fs::read_dir(&base)? {
            let top = top?;
            if top.file_name() != "sha256" || !top.file_type()?.is_dir() {
                stray(&top.path(), top.metadata()?.len());
            }
        }
        let mut blobs = Vec::new();
        let prefixes = match std::fs::read_dir(base.join("sha256")) {
            Ok(prefixes) => prefixes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(e),
        };
        for prefix in prefixes {
            let prefix = prefix?;
            let prefix_name = prefix.file_name();
            let prefix_name = prefix_name.to_string_lossy();
            let is_prefix = prefix_name.len() == 2
                && prefix_name
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !is_prefix || !prefix.file_type()?.is_dir() {
                stray(&prefix.path(), prefix.metadata()?.len());
                continue;
            }
            for file in std::fs::read_dir(prefix.path())? {
                let file = file?;
                let name = file.file_name();
                let digest = name
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
                    .filter(|d| d.hex().starts_with(&*prefix_name));
                match digest {
                    Some(d) if file.file_type()?.is_file() => blobs.push(d),
                    _ => stray(&file.path(), file.metadata()?.len()),
                }
            }
        }
        listing.blobs = blobs;
        Ok(listing)
    }

    fn remove_stray(&self, name: &str) -> io::Result<()> {
        let path = self.root.join(name);
        // Only ever below blobs/: a stray name is what `list` returned.
        if !path.starts_with(self.root.join("blobs")) || name.contains("..") {
            return Err(io::Error::other(format!(
                "{name} is not a stray blob entry"
            )));
        }
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        }
    }

    fn staging_leftovers(&self) -> io::Result<(u64, u64)> {
        let files = self.staging_files()?;
        Ok((files.len() as u64, files.iter().map(|(_, n)| n).sum()))
    }

    fn clear_staging(&self) -> io::Result<(u64, u64)> {
        let files = self.staging_files()?;
        for (path, _) in &files {
            not_found_is_none(std::fs::remove_file(path))?;
        }
        Ok((files.len() as u64, files.iter().map(|(_, n)| n).sum()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[tokio::test]
    async fn stage_commit_open_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data = Bytes::from(vec![7u8; READ_CHUNK * 2 + 5]);
        let digest = Digest::of(&data);
        assert!(store.open(&digest).await.unwrap().is_none());

        let staged = store.stage().await.unwrap();
        let partial = staged.path().to_owned();
        staged.write_at(data.slice(..10), 0).await.unwrap();
        staged.write_at(data.slice(10..), 10).await.unwrap();
        store.commit(staged, &digest).await.unwrap();
        assert!(!partial.exists());

        let blob = store.open(&digest).await.unwrap().unwrap();
        assert_eq!(blob.size(), data.len() as u64);
        let chunks: Vec<Bytes> = blob
            .clone()
            .stream_range(3, data.len() as u64)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.concat(), &data[3..]);
        assert_eq!(store.size(&digest).await.unwrap(), Some(data.len() as u64));

        store.remove(&digest).await.unwrap();
        store.remove(&digest).await.unwrap();
        assert!(store.open(&digest).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn parked_stages_close_and_reopen_or_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data = Bytes::from_static(b"parked blob");
        let digest = Digest::of(&data);
        let staged = store.stage().await.unwrap();
        staged.write_at(data.clone(), 0).await.unwrap();
        let parked = staged.park();
        let path = parked.path().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let staged = parked.reopen().await.unwrap();
        store.commit(staged, &digest).await.unwrap();
        assert!(!path.exists());
        assert_eq!(store.size(&digest).await.unwrap(), Some(data.len() as u64));

        let dropped = store.stage().await.unwrap().park();
        let path = dropped.path().to_owned();
        assert!(path.exists());
        drop(dropped);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn dropped_stage_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let staged = store.stage().await.unwrap();
        let path = staged.path().to_owned();
        assert!(path.exists());
        drop(staged);
        assert!(!path.exists());

        let leftover = dir.path().join("tmp").join("123-0.partial");
        std::fs::write(&leftover, b"half").unwrap();
        drop(store);
        let _store = FsBlobStore::open(dir.path()).unwrap();
        assert!(!leftover.exists());
    }

    #[tokio::test]
    async fn list_finds_blobs_and_strays() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let mut want = Vec::new();
        for i in 0..3u8 {
            let data = Bytes::from(vec![i; 10]);
            let d = Digest::of(&data);
            let staged = store.stage().await.unwrap();
            staged.write_at(data, 0).await.unwrap();
            store.commit(staged, &d).await.unwrap();
            want.push(d);
        }
        // A file under the wrong prefix, a bad name, and a file outside sha256/.
        let misplaced = Digest::of(b"misplaced");
        let wrong_dir = if misplaced.hex().starts_with("00") {
            "01"
        } else {
            "00"
        };
        let sha = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(sha.join(wrong_dir)).unwrap();
        std::fs::write(sha.join(wrong_dir).join(misplaced.hex()), b"x").unwrap();
        std::fs::write(sha.join(wrong_dir).join("notes.txt"), b"xy").unwrap();
        std::fs::write(dir.path().join("blobs/README"), b"xyz").unwrap();
        let mut listing = store.list().unwrap();
        listing.blobs.sort();
        want.sort();
        assert_eq!(listing.blobs, want);
        let mut strays = listing.strays.clone();
        strays.sort();
        assert_eq!(strays.len(), 3, "{strays:?}");
        assert!(strays.contains(&("blobs/README".into(), 3)), "{strays:?}");
        for (name, _) in &strays {
            store.remove_stray(name).unwrap();
        }
        assert!(store.list().unwrap().strays.is_empty());
        assert!(store.remove_stray("tmp/x").is_err());
        assert!(store.remove_stray("blobs/../index").is_err());

        std::fs::write(dir.path().join("tmp/1-1.partial"), b"half").unwrap();
        assert_eq!(store.staging_leftovers().unwrap(), (1, 4));
        assert_eq!(store.clear_staging().unwrap(), (1, 4));
        assert_eq!(store.staging_leftovers().unwrap(), (0, 0));
    }
}
