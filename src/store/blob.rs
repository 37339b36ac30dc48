//! The blob store contract: committed blobs read by byte range, new blobs written in two phases.
//!
//! A store holds committed, verified blobs (layers, configs and manifests alike) by digest. Reads
//! go through [`BlobStore::open`], which hands back a [`Blob`]: its size, and its bytes by range
//! (whole, when the blob is small enough to be read at open). Writes go through a [`BlobWriter`]
//! that takes `Bytes` as they arrive; [`BlobWriter::finish`] makes them durable and closes the
//! writer, giving a [`StagedBlob`] that holds no open file; [`StagedBlob::commit`] makes it
//! visible under a digest the caller has verified. Dropping a writer or a staged blob without
//! committing it discards what it wrote (the shape of pingora's miss handler). The two phases let
//! a fill verify before committing, and let `wharf import` stage thousands of blobs before it
//! commits any, without running out of file descriptors.
//!
//! Contract: a read of a digest that is not stored is `Ok(None)` (a miss), never an error; errors
//! are for storage that cannot answer (permissions, I/O errors, a full disk). A committed blob is
//! complete and durable: a process killed at any point leaves either nothing visible or the whole
//! verified blob under its digest.
//!
//! Housekeeping that only a local filesystem has (listing what is stored, sweeping staging files a
//! crash left, free space) sits in [`LocalStore`], offered through [`BlobStore::local`]; a store
//! without it (in memory, or a remote object store) answers `None` and the cache skips that work.

use std::any::Any;
use std::fmt;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::oci::Digest;

/// A body of bytes read from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// How much one read from storage returns when a blob is streamed: large enough to keep syscalls
/// and task hops rare, small enough that many concurrent readers stay light on memory.
pub const READ_CHUNK: usize = 128 * 1024;

/// Blobs of at most this size are read whole when they are opened ([`Blob::contents`]): a hit then
/// costs one trip to the storage, not two.
pub const SMALL_BLOB: u64 = 256 * 1024;

/// Storage of committed blobs (see the module docs for the contract).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a committed blob; `Ok(None)` when it is not stored.
    async fn size(&self, digest: &Digest) -> io::Result<Option<u64>>;

    /// Opens a committed blob; `Ok(None)` when it is not stored. A blob of at most [`SMALL_BLOB`]
    /// bytes comes with its whole content.
    async fn open(&self, digest: &Digest) -> io::Result<Option<Blob>>;

    /// A writer for a new blob, empty.
    async fn writer(&self) -> io::Result<Box<dyn BlobWriter>>;

    /// Removes a committed blob; removing one that is not there is not an error.
    async fn remove(&self, digest: &Digest) -> io::Result<()>;

    /// Lists every committed blob, for `wharf gc` and `wharf check` on a store without
    /// [`LocalStore`] (a shared object store); `None` (the default) when the store cannot list.
    async fn list_blobs(&self) -> Option<io::Result<Vec<Listed>>> {
        None
    }

    /// The housekeeping of a store on the local filesystem; `None` (the default) for a store that
    /// has none, whose callers then skip listing, staging sweeps and free-space checks.
    fn local(&self) -> Option<&dyn LocalStore> {
        None
    }
}

/// Reads a committed blob by byte range; what a [`Blob`] reads through. It takes itself by `Arc`
/// so that a reader on the blocking pool can own its handle without another allocation.
#[async_trait]
pub trait BlobRead: Send + Sync + 'static {
    /// Reads `[start, end)` in one call.
    ///
    /// # Errors
    /// I/O errors, and `UnexpectedEof` when the blob is shorter than `end`.
    async fn read_range(self: Arc<Self>, start: u64, end: u64) -> io::Result<Bytes>;

    /// Streams `[start, end)` the reader's own way, when it has one better than reads of
    /// [`READ_CHUNK`] (a remote store streams each response as it arrives); `None` (the default):
    /// [`Blob::stream_range`] reads chunk after chunk through [`BlobRead::read_range`].
    fn stream(self: Arc<Self>, start: u64, end: u64) -> Option<ByteStream> {
        let _ = (start, end);
        None
    }
}

/// A new blob being written. Dropping it before [`BlobWriter::finish`] discards what it wrote.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends `chunks`, in order. On an error, [`BlobWriter::written`] counts the chunks that
    /// were written whole (the writer stops on a chunk boundary), and the writer is not to be used
    /// again.
    ///
    /// # Errors
    /// Any I/O error, such as a full disk.
    async fn write(&mut self, chunks: &[Bytes]) -> io::Result<()>;

    /// Bytes written so far.
    fn written(&self) -> u64;

    /// Makes what was written durable and closes the writer. The staged blob holds no open file.
    ///
    /// # Errors
    /// Any I/O error (the staged bytes are discarded).
    async fn finish(self: Box<Self>) -> io::Result<Box<dyn StagedBlob>>;

    /// The local file the writer writes into, when it has one: a fill reads back from it what its
    /// late readers need, instead of writing every byte a second time into a spool file of its own.
    /// Bytes below [`BlobWriter::written`] are in it, at their offsets. `None` (the default) for a
    /// writer without a local file.
    fn local_file(&self) -> Option<Arc<File>> {
        None
    }
}

/// A finished blob, durable but not yet visible under a digest. Dropping it without
/// [`StagedBlob::commit`] discards it.
#[async_trait]
pub trait StagedBlob: Send + Sync {
    /// Its size.
    fn size(&self) -> u64;

    /// Reads it whole (for a small blob, such as a manifest read before it is committed).
    ///
    /// # Errors
    /// I/O errors.
    async fn read_all(&self) -> io::Result<Bytes>;

    /// Makes it visible under `digest`, which the caller has verified. The blob is durable when
    /// this returns, and committing over a stored blob of the same digest replaces it.
    ///
    /// # Errors
    /// Any I/O error (the staged bytes are discarded).
    async fn commit(self: Box<Self>, digest: &Digest) -> io::Result<()>;
}

/// Housekeeping of a store on the local filesystem. Blocking methods: for start-up and
/// `wharf check`, which read the whole store once.
pub trait LocalStore: Send + Sync {
    /// Lists what the store holds: every committed digest, and entries that are not blobs (stray
    /// names).
    ///
    /// # Errors
    /// When the store cannot be listed.
    fn list(&self) -> io::Result<Listing>;

    /// Removes a stray entry named by [`LocalStore::list`].
    ///
    /// # Errors
    /// I/O errors, or a name that is not a stray entry.
    fn remove_stray(&self, name: &str) -> io::Result<()>;

    /// Staging files left by a process that died mid-write: their count and bytes.
    ///
    /// # Errors
    /// When the staging area cannot be read.
    fn staging_leftovers(&self) -> io::Result<(u64, u64)>;

    /// Removes every staging file. Only safe while nothing writes (at start-up, or in `wharf check`
    /// with the index lock held). Returns their count and bytes.
    ///
    /// # Errors
    /// When the staging area cannot be read or a file cannot be removed.
    fn clear_staging(&self) -> io::Result<(u64, u64)>;

    /// Bytes free for wharf and total bytes on the store's filesystem; `None` when the OS cannot
    /// say.
    fn free_space(&self) -> Option<(u64, u64)>;
}

/// A committed blob in [`BlobStore::list_blobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When it was committed (last written).
    pub stored_at: SystemTime,
}

/// What a store holds, from [`LocalStore::list`].
#[derive(Debug, Default)]
pub struct Listing {
    /// Committed blobs.
    pub blobs: Vec<Digest>,
    /// Entries that are not blobs (names relative to the store), with their sizes.
    pub strays: Vec<(String, u64)>,
}

/// An open committed blob: its size and a reader of its byte ranges, shared by every clone, so any
/// number of responses read it at once.
#[derive(Clone)]
pub struct Blob {
    size: u64,
    /// The whole content of a small blob, read when it was opened.
    contents: Option<Bytes>,
    reader: Arc<dyn BlobRead>,
    /// Whatever the caller attached to live as long as the blob is read (the cache's hold, which
    /// keeps the blob from being removed while a response streams it). Opaque to the store.
    keep_alive: Option<Arc<dyn Any + Send + Sync>>,
}

// === impl Blob ===

impl Blob {
    /// A blob of `size` bytes read through `reader`, with its whole content when already read.
    pub fn new(size: u64, contents: Option<Bytes>, reader: Arc<dyn BlobRead>) -> Self {
        Self {
            size,
            contents,
            reader,
            keep_alive: None,
        }
    }

    /// Attaches `value` to live as long as this blob (and its clones).
    #[must_use]
    pub fn keep_alive(mut self, value: Arc<dyn Any + Send + Sync>) -> Self {
        self.keep_alive = Some(value);
        self
    }

    /// The size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The whole content, when the blob was small enough to be read at open.
    pub fn contents(&self) -> Option<&Bytes> {
        self.contents.as_ref()
    }

    /// Reads `[start, end)` in one call.
    ///
    /// # Errors
    /// I/O errors, and `UnexpectedEof` when the blob is shorter than `end`.
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
        self.reader.clone().read_range(start, end).await
    }

    /// Streams `[start, end)` in [`READ_CHUNK`] pieces (or as the reader streams, see
    /// [`BlobRead::stream`]).
    pub fn stream_range(self, start: u64, end: u64) -> ByteStream {
        if self.contents.is_none() {
            if let Some(stream) = self.reader.clone().stream(start, end) {
                // The blob (and what it keeps alive) lives as long as the stream.
                let blob = self;
                return Box::pin(futures_util::StreamExt::map(stream, move |item| {
                    let _ = &blob;
                    item
                }));
            }
        }
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

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("size", &self.size)
            .field("read_at_open", &self.contents.is_some())
            .finish_non_exhaustive()
    }
}

/// A shared test body every [`BlobStore`] must pass: write, finish, commit, open, ranged reads,
/// removal; dropped writers and staged blobs leave nothing behind. Public (hidden) for the
/// integration tests of stores that need a real service.
#[doc(hidden)]
pub async fn exercise(store: &dyn BlobStore) {
    exercise_reads(store, true).await;
}

/// [`exercise`] for a store whose reader streams its own way ([`BlobRead::stream`]): the pieces
/// of a streamed read are not counted.
#[doc(hidden)]
pub async fn exercise_streaming(store: &dyn BlobStore) {
    exercise_reads(store, false).await;
}

async fn exercise_reads(store: &dyn BlobStore, chunked: bool) {
    use futures_util::TryStreamExt;

    let data = Bytes::from(
        (0..READ_CHUNK * 2 + 5)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let digest = Digest::of(&data);
    assert!(store.open(&digest).await.unwrap().is_none());
    assert_eq!(store.size(&digest).await.unwrap(), None, "a miss is None");

    let mut writer = store.writer().await.unwrap();
    writer.write(&[data.slice(..10)]).await.unwrap();
    writer
        .write(&[data.slice(10..1000), data.slice(1000..)])
        .await
        .unwrap();
    assert_eq!(writer.written(), data.len() as u64);
    let staged = writer.finish().await.unwrap();
    assert_eq!(staged.size(), data.len() as u64);
    assert_eq!(staged.read_all().await.unwrap(), data);
    assert!(store.open(&digest).await.unwrap().is_none(), "not yet");
    staged.commit(&digest).await.unwrap();

    let blob = store.open(&digest).await.unwrap().unwrap();
    assert_eq!(blob.size(), data.len() as u64);
    assert!(
        blob.contents().is_none(),
        "a large blob is not read at open"
    );
    assert_eq!(blob.read_range(5, 20).await.unwrap(), data.slice(5..20));
    let chunks: Vec<Bytes> = blob
        .clone()
        .stream_range(3, data.len() as u64)
        .try_collect()
        .await
        .unwrap();
    if chunked {
        assert_eq!(chunks.len(), 3);
    }
    assert_eq!(chunks.concat(), &data[3..]);
    assert_eq!(store.size(&digest).await.unwrap(), Some(data.len() as u64));

    // A small blob comes whole.
    let small = Bytes::from_static(b"a small blob");
    let small_digest = Digest::of(&small);
    let mut writer = store.writer().await.unwrap();
    writer.write(std::slice::from_ref(&small)).await.unwrap();
    writer
        .finish()
        .await
        .unwrap()
        .commit(&small_digest)
        .await
        .unwrap();
    let blob = store.open(&small_digest).await.unwrap().unwrap();
    assert_eq!(blob.contents(), Some(&small));
    assert_eq!(blob.read_range(2, 7).await.unwrap(), small.slice(2..7));
    assert!(blob.read_range(2, 100).await.is_err());

    store.remove(&digest).await.unwrap();
    store.remove(&digest).await.unwrap();
    assert!(store.open(&digest).await.unwrap().is_none());
    assert_eq!(store.size(&digest).await.unwrap(), None);

    // Dropped before finishing, or finished and dropped: nothing is stored.
    let other = Bytes::from_static(b"never committed");
    let other_digest = Digest::of(&other);
    let mut writer = store.writer().await.unwrap();
    writer.write(std::slice::from_ref(&other)).await.unwrap();
    drop(writer);
    let mut writer = store.writer().await.unwrap();
    writer.write(&[other]).await.unwrap();
    drop(writer.finish().await.unwrap());
    assert_eq!(store.size(&other_digest).await.unwrap(), None);
}
