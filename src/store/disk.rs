//! The blob store on the local filesystem: `<root>/blobs/sha256/ab/abcd…`, staging in `<root>/tmp`.
//!
//! A [`DiskWriter`] writes a staging file in `tmp/` with positional writes; a fill's late readers
//! read back from that same file ([`BlobWriter::local_file`]), so the disk store writes every byte
//! once. [`BlobWriter::finish`] fsyncs and closes it ([`DiskStaged`] holds only its path, so
//! `wharf import` can stage thousands of blobs); [`StagedBlob::commit`] renames it into place and
//! fsyncs the directory. Crash safety comes from that order, and from the caller indexing a blob
//! only after its commit: a process killed at any point leaves either a staging file (removed at
//! start-up, never read) or a complete, verified file under its digest (indexed, or adopted by
//! start-up after hashing it again).
//!
//! A hit is one `open` (and, for a small blob, one read) on the blocking pool; larger reads are
//! positional reads of the shared handle, so any number of readers share it without seeking. A
//! larger blob streams in [`READ_CHUNK`] pieces copied from the page cache on the runtime's thread
//! (`preadv2` with `RWF_NOWAIT`, see [`read_cached_at`]); only a piece that needs the disk goes to
//! the blocking pool. A trip to the pool per piece had cost more than the copy: with 256
//! connections streaming a 1.6 MiB blob, the reads queued behind each other there, and every
//! connection held a read in flight on top of what hyper queued.
//!
//! Whatever the process umask, the directories the store creates are 0700 and its files 0600 (see
//! [`private_dir_all`]): a wharf started by hand must not leave the cache readable by other users.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::blob::{
    Blob, BlobRead, BlobStore, BlobWriter, ByteStream, Listing, LocalStore, StagedBlob,
};
use super::{READ_CHUNK, SMALL_BLOB};
use crate::oci::Digest;

/// The local-disk store.
#[derive(Debug)]
pub struct FsBlobStore {
    root: Arc<Path>,
    tmp: PathBuf,
    counter: AtomicU64,
}

/// A staging file being written. Dropping it before [`BlobWriter::finish`] removes the file.
pub struct DiskWriter {
    root: Arc<Path>,
    path: PathBuf,
    file: Arc<File>,
    written: u64,
    armed: bool,
}

/// A finished staging file: durable, closed, not yet under its digest. Dropping it without
/// [`StagedBlob::commit`] removes the file.
pub struct DiskStaged {
    root: Arc<Path>,
    path: PathBuf,
    size: u64,
    armed: bool,
}

/// Reads a committed blob's file.
struct DiskRead {
    file: File,
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

/// The path a committed blob lives at, under a store's root.
fn blob_path_in(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Reads `[start, end)` of `file` in one positional read (blocking): what every reader of a local
/// file (a committed blob, a fill's spool) does.
///
/// # Errors
/// I/O errors, and `UnexpectedEof` when the file is shorter than `end`.
pub fn read_range_at(file: &File, start: u64, end: u64) -> io::Result<Bytes> {
    let len = usize::try_from(end.saturating_sub(start))
        .map_err(|_| io::Error::other("read too large"))?;
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, start)?;
    Ok(buf.freeze())
}

/// Writes `chunks` one after another into `file` from `at` (blocking). Returns how many bytes were
/// written whole, so a failure leaves the count on a chunk boundary (the file may hold part of the
/// chunk that failed), and the first error.
pub fn write_chunks_at(file: &File, chunks: &[Bytes], at: u64) -> (u64, io::Result<()>) {
    let mut written = 0u64;
    for chunk in chunks {
        if let Err(e) = file.write_all_at(chunk, at + written) {
            return (written, Err(e));
        }
        written += chunk.len() as u64;
    }
    (written, Ok(()))
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads up to `buf.len()` bytes of `file` at `at` into `buf` without waiting for the disk: only
/// what the page cache holds (`preadv2` with `RWF_NOWAIT`), on the calling thread. `Ok(Err(buf))`
/// when none of it is cached (or the kernel or filesystem cannot tell), handing back the buffer for
/// a blocking read; a short read returns the cached part. Reading at or past the end of the file is
/// `UnexpectedEof`.
///
/// # Errors
/// I/O errors other than "would block".
#[cfg(target_os = "linux")]
pub fn read_cached_at(
    file: &File,
    at: u64,
    mut buf: BytesMut,
) -> io::Result<Result<Bytes, BytesMut>> {
    use rustix::io::{Errno, ReadWriteFlags};

    let len = buf.len();
    if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        return Ok(Err(buf));
    }
    match rustix::io::preadv2(
        file,
        &mut [io::IoSliceMut::new(&mut buf)],
        at,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(0) if len > 0 => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(n) => {
            buf.truncate(n);
            Ok(Ok(buf.freeze()))
        }
        Err(Errno::AGAIN) => Ok(Err(buf)),
        // No RWF_NOWAIT here (an old kernel, a filesystem without it): from now on every read
        // goes to the blocking pool.
        Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
            NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
            Ok(Err(buf))
        }
        Err(e) => Err(e.into()),
    }
}

/// Without `preadv2`, nothing is known to be cached: every read goes to the blocking pool.
///
/// # Errors
/// None.
#[cfg(not(target_os = "linux"))]
pub fn read_cached_at(
    _file: &File,
    _at: u64,
    buf: BytesMut,
) -> io::Result<Result<Bytes, BytesMut>> {
    Ok(Err(buf))
}

/// Set once a `RWF_NOWAIT` read was refused as unsupported: later reads skip the attempt.
#[cfg(target_os = "linux")]
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

// === impl DiskRead ===

#[async_trait]
impl BlobRead for DiskRead {
    async fn read_range(self: Arc<Self>, start: u64, end: u64) -> io::Result<Bytes> {
        blocking(move || read_range_at(&self.file, start, end)).await
    }

    fn stream(self: Arc<Self>, start: u64, end: u64) -> Option<ByteStream> {
        Some(Box::pin(DiskStream {
            read: self,
            pos: start,
            end,
            pending: None,
            spent: Default::default(),
            next_spent: 0,
        }))
    }
}

/// Streams a byte range of a committed file in [`READ_CHUNK`] pieces. A piece the page cache holds
/// is copied on the runtime's thread (a memory copy, shorter than the trip to the blocking pool it
/// saves); a piece that needs the disk is read on the blocking pool, so a worker thread never waits
/// for the disk.
struct DiskStream {
    read: Arc<DiskRead>,
    pos: u64,
    end: u64,
    /// A read of `[pos, pos + n)` on the blocking pool.
    pending: Option<tokio::task::JoinHandle<io::Result<Bytes>>>,
    /// The last pieces handed out, kept so their memory serves the next reads once the consumer
    /// has let go of them. A read takes initialized memory, and zeroing a fresh 128 KiB buffer
    /// first had cost a tenth of the CPU of serving a 1.6 MiB blob over HTTP/2; a piece is reused
    /// only when this is its last handle, so nothing still being sent is ever overwritten.
    spent: [Option<Bytes>; SPENT_PIECES],
    /// The slot of `spent` the next piece goes to.
    next_spent: usize,
}

/// How many pieces a [`DiskStream`] keeps for reuse: hyper holds one while it writes the one
/// before, so two are enough to find one free most of the time.
const SPENT_PIECES: usize = 2;

// === impl DiskStream ===

impl Stream for DiskStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(task) = &mut this.pending {
                let result = std::task::ready!(Pin::new(task).poll(cx));
                this.pending = None;
                return Poll::Ready(Some(
                    match result.map_err(io::Error::other).and_then(|r| r) {
                        Ok(bytes) => {
                            this.pos += bytes.len() as u64;
                            this.spend(&bytes);
                            Ok(bytes)
                        }
                        Err(e) => {
                            // Stop after an error: the stream's consumer aborts the response.
                            this.pos = this.end;
                            Err(e)
                        }
                    },
                ));
            }
            if this.pos >= this.end {
                return Poll::Ready(None);
            }
            let len = usize::try_from(this.end - this.pos)
                .unwrap_or(usize::MAX)
                .min(READ_CHUNK);
            let buf = this.buffer(len);
            match read_cached_at(&this.read.file, this.pos, buf) {
                Ok(Ok(bytes)) => {
                    this.pos += bytes.len() as u64;
                    this.spend(&bytes);
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Ok(Err(mut buf)) => {
                    let read = this.read.clone();
                    let at = this.pos;
                    this.pending = Some(tokio::task::spawn_blocking(move || {
                        read.file.read_exact_at(&mut buf, at)?;
                        Ok(buf.freeze())
                    }));
                }
                Err(e) => {
                    this.pos = this.end;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl DiskStream {
    /// A buffer of `len` bytes to read into: a spent piece nobody else holds any more (only its
    /// part beyond the old length is zeroed), or a fresh zeroed one.
    fn buffer(&mut self, len: usize) -> BytesMut {
        for slot in &mut self.spent {
            if slot.as_ref().is_some_and(Bytes::is_unique) {
                if let Some(Ok(mut buf)) = slot.take().map(Bytes::try_into_mut) {
                    buf.resize(len, 0);
                    return buf;
                }
            }
        }
        BytesMut::zeroed(len)
    }

    /// Keeps a handle on a piece just handed out, for [`Self::buffer`] to reuse once it is sent.
    fn spend(&mut self, piece: &Bytes) {
        self.spent[self.next_spent] = Some(piece.clone());
        self.next_spent = (self.next_spent + 1) % SPENT_PIECES;
    }
}

// === impl DiskWriter ===

#[async_trait]
impl BlobWriter for DiskWriter {
    async fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        let file = self.file.clone();
        let at = self.written;
        let chunks = chunks.to_vec();
        // One trip to the blocking pool per call: a fill hands over everything queued at once.
        let (written, result) =
            tokio::task::spawn_blocking(move || write_chunks_at(&file, &chunks, at))
                .await
                .map_err(io::Error::other)?;
        self.written = at + written;
        result
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn finish(mut self: Box<Self>) -> io::Result<Box<dyn StagedBlob>> {
        let file = self.file.clone();
        blocking(move || file.sync_all()).await?;
        // The path now belongs to the staged blob; the handle closes here (a fill's readers may
        // still hold their clone of it).
        self.armed = false;
        Ok(Box::new(DiskStaged {
            root: self.root.clone(),
            path: std::mem::take(&mut self.path),
            size: self.written,
            armed: true,
        }))
    }

    fn local_file(&self) -> Option<Arc<File>> {
        Some(self.file.clone())
    }
}

impl DiskWriter {
    /// The path of the staging file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: start-up removes whatever a crash leaves in tmp/.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

// === impl DiskStaged ===

#[async_trait]
impl StagedBlob for DiskStaged {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_all(&self) -> io::Result<Bytes> {
        let path = self.path.clone();
        blocking(move || std::fs::read(path).map(Bytes::from)).await
    }

    async fn commit(mut self: Box<Self>, digest: &Digest) -> io::Result<()> {
        let dest = blob_path_in(&self.root, digest);
        let from = self.path.clone();
        // The file was fsynced by `finish`: rename it into place, then make the rename durable.
        blocking(move || {
            let dir = dest.parent().expect("blob paths have a parent");
            private_dir_all(dir)?;
            std::fs::rename(&from, &dest)?;
            File::open(dir)?.sync_all()
        })
        .await?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for DiskStaged {
    fn drop(&mut self) {
        if self.armed {
            // Best effort, as for DiskWriter.
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
    /// clear with [`LocalStore::clear_staging`] (which counts them).
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
            root: Arc::from(root),
            tmp: root.join("tmp"),
            counter: AtomicU64::new(0),
        })
    }

    /// A new, empty staging file, as the concrete writer (whose path tests can look at).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub async fn disk_writer(&self) -> io::Result<DiskWriter> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.partial", std::process::id()));
        let p = path.clone();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(p)
        })
        .await?;
        Ok(DiskWriter {
            root: self.root.clone(),
            path,
            file: Arc::new(file),
            written: 0,
            armed: true,
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
        blob_path_in(&self.root, digest)
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        let path = self.blob_path(digest);
        blocking(move || not_found_is_none(std::fs::metadata(path).map(|m| m.len()))).await
    }

    async fn open(&self, digest: &Digest) -> io::Result<Option<Blob>> {
        let path = self.blob_path(digest);
        blocking(move || {
            not_found_is_none(File::open(path).and_then(|f| {
                let size = f.metadata()?.len();
                let contents = if size <= SMALL_BLOB {
                    let mut buf = BytesMut::zeroed(usize::try_from(size).unwrap_or(0));
                    f.read_exact_at(&mut buf, 0)?;
                    Some(buf.freeze())
                } else {
                    None
                };
                // One allocation for the handle, as many readers as clones of the blob.
                Ok(Blob::new(size, contents, Arc::new(DiskRead { file: f })))
            }))
        })
        .await
    }

    async fn writer(&self) -> io::Result<Box<dyn BlobWriter>> {
        Ok(Box::new(self.disk_writer().await?))
    }

    async fn remove(&self, digest: &Digest) -> io::Result<()> {
        let path = self.blob_path(digest);
        blocking(move || not_found_is_none(std::fs::remove_file(path)).map(|_| ())).await
    }

    fn local(&self) -> Option<&dyn LocalStore> {
        Some(self)
    }
}

impl LocalStore for FsBlobStore {
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

    fn free_space(&self) -> Option<(u64, u64)> {
        let st = rustix::fs::statvfs(&*self.root).ok()?;
        Some((
            st.f_bavail.saturating_mul(st.f_frsize),
            st.f_blocks.saturating_mul(st.f_frsize),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_disk_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        super::super::blob::exercise(&store).await;
        assert_eq!(
            store.staging_leftovers().unwrap(),
            (0, 0),
            "nothing left in tmp/"
        );
    }

    /// Commits a blob of `len` bytes counting up modulo `modulo`; returns its bytes and digest.
    async fn committed(store: &FsBlobStore, len: usize, modulo: usize) -> (Bytes, Digest) {
        let data = Bytes::from((0..len).map(|i| (i % modulo) as u8).collect::<Vec<_>>());
        let digest = Digest::of(&data);
        let mut writer = store.writer().await.unwrap();
        writer.write(std::slice::from_ref(&data)).await.unwrap();
        writer
            .finish()
            .await
            .unwrap()
            .commit(&digest)
            .await
            .unwrap();
        (data, digest)
    }

    #[tokio::test]
    async fn a_stream_reuses_a_piece_only_once_nothing_else_holds_it() {
        use futures_util::StreamExt;

        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let (data, digest) = committed(&store, READ_CHUNK * 5, 251).await;
        let blob = store.open(&digest).await.unwrap().unwrap();
        let mut stream = blob.stream_range(0, data.len() as u64);
        let chunk = |i: usize| data.slice(i * READ_CHUNK..(i + 1) * READ_CHUNK);

        let first = stream.next().await.unwrap().unwrap();
        let second = stream.next().await.unwrap().unwrap();
        let second_at = second.as_ptr();
        drop(second);
        // The second piece's memory is free again, the first is still held (being sent). Were
        // it given back to the allocator, this would most likely take it.
        let decoy = vec![1_u8; READ_CHUNK];
        let third = stream.next().await.unwrap().unwrap();
        assert_eq!(third.as_ptr(), second_at, "a free piece is reused");
        assert_ne!(third.as_ptr(), first.as_ptr());
        // Held pieces keep their bytes while later ones are read, reused or not.
        let rest: Vec<Bytes> = stream.map(Result::unwrap).collect().await;
        assert_eq!(first, chunk(0));
        assert_eq!(third, chunk(2));
        assert_eq!(rest.concat(), &data[3 * READ_CHUNK..]);
        assert!(decoy.iter().all(|&b| b == 1));
    }

    #[tokio::test]
    async fn a_stream_reads_the_range_and_stops_at_a_short_file() {
        use futures_util::StreamExt;

        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let (data, digest) = committed(&store, READ_CHUNK * 3, 253).await;

        // Cached (just written): read on this thread, whole pieces, the right bytes.
        let got = read_cached_at(
            &File::open(store.blob_path(&digest)).unwrap(),
            7,
            BytesMut::zeroed(100),
        )
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(got.unwrap(), data.slice(7..107));
        }
        let blob = store.open(&digest).await.unwrap().unwrap();
        let end = data.len() as u64 - 1;
        let pieces: Vec<Bytes> = blob
            .clone()
            .stream_range(1, end)
            .map(|p| p.unwrap())
            .collect()
            .await;
        assert_eq!(pieces.concat(), &data[1..data.len() - 1]);
        assert!(pieces.iter().all(|p| p.len() <= READ_CHUNK));

        // The file cut short under an open blob: the stream ends with an error, not short bytes.
        std::fs::OpenOptions::new()
            .write(true)
            .open(store.blob_path(&digest))
            .unwrap()
            .set_len(READ_CHUNK as u64 + 10)
            .unwrap();
        let items: Vec<io::Result<Bytes>> = blob.stream_range(0, end).collect().await;
        let (last, read) = items.split_last().unwrap();
        assert_eq!(
            last.as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let read: Vec<Bytes> = read.iter().map(|p| p.as_ref().unwrap().clone()).collect();
        assert_eq!(read.concat(), &data[..READ_CHUNK + 10]);
    }

    #[tokio::test]
    async fn commit_renames_the_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data = Bytes::from_static(b"staged blob");
        let digest = Digest::of(&data);
        let mut writer = store.disk_writer().await.unwrap();
        let partial = writer.path().to_owned();
        writer.write(std::slice::from_ref(&data)).await.unwrap();
        let file = writer.local_file().unwrap();
        let staged = Box::new(writer).finish().await.unwrap();
        // Finished: durable and closed, still staged.
        assert_eq!(std::fs::read(&partial).unwrap(), data);
        staged.commit(&digest).await.unwrap();
        assert!(!partial.exists());
        assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), data);
        // A reader's clone of the staging handle still reads after the rename.
        let mut buf = [0u8; 6];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"staged");
    }

    #[tokio::test]
    async fn finished_stages_close_and_commit_or_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let data = Bytes::from_static(b"parked blob");
        let digest = Digest::of(&data);
        let mut writer = store.disk_writer().await.unwrap();
        let path = writer.path().to_owned();
        writer.write(std::slice::from_ref(&data)).await.unwrap();
        let staged = Box::new(writer).finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(staged.read_all().await.unwrap(), data);
        staged.commit(&digest).await.unwrap();
        assert!(!path.exists());
        assert_eq!(store.size(&digest).await.unwrap(), Some(data.len() as u64));

        let writer = store.disk_writer().await.unwrap();
        let path = writer.path().to_owned();
        let dropped = Box::new(writer).finish().await.unwrap();
        assert!(path.exists());
        drop(dropped);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn dropped_writer_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let writer = store.disk_writer().await.unwrap();
        let path = writer.path().to_owned();
        assert!(path.exists());
        drop(writer);
        assert!(!path.exists());

        let leftover = dir.path().join("tmp").join("123-0.partial");
        std::fs::write(&leftover, b"half").unwrap();
        drop(store);
        let _store = FsBlobStore::open(dir.path()).unwrap();
        assert!(!leftover.exists());
    }

    #[tokio::test]
    async fn free_space_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let (free, total) = store.local().unwrap().free_space().unwrap();
        assert!(free > 0 && total >= free);
    }

    #[tokio::test]
    async fn list_finds_blobs_and_strays() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let mut want = Vec::new();
        for i in 0..3u8 {
            let data = Bytes::from(vec![i; 10]);
            let d = Digest::of(&data);
            let mut writer = store.writer().await.unwrap();
            writer.write(&[data]).await.unwrap();
            writer.finish().await.unwrap().commit(&d).await.unwrap();
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
