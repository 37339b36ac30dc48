//! Fills: one detached task per blob digest and upstream fetching it from that upstream, any number
//! of readers following it.
//!
//! The first request for a missing blob starts a [`Fill`]: a task, detached from that request, that
//! streams the upstream body into a [`crate::store::BlobWriter`] while hashing it, and publishes
//! its progress on a `watch` channel. Every request for the digest through the same upstream while
//! the fill runs, the first one included, follows it (a client of another upstream gets a fill of
//! its own, so a slow upstream holds up only its own clients; see [`Inflight`]): from the fill's
//! [`Spool`] (the last few MiB received, kept in memory, while the reader keeps up with the
//! download; a local file, up to the bytes written so far, when it joined late or fell behind);
//! then it waits on the channel for more. Memory is bounded per fill, not per reader, however many
//! clients attach. A client that disconnects only drops its
//! own reader: the fill goes on, and the cache still gets the blob.
//!
//! Readers never see a clean end on bad data: the last byte of every response (a `Range` included)
//! is held back until the digest and size have been verified, so when a fill fails every attached
//! response is cut short and the client knows the body is incomplete. What the failed fill wrote
//! is discarded with the task's writer.
//!
//! When the storage cannot take the blob (a write fails, free space would fall below
//! `storage.min_free`, or the blob is larger than `storage.max_size`), the fill hands off instead of
//! failing: it publishes how far it got and its hash state there ([`Handoff`]), and every reader goes
//! on by itself with the upstream from that point ([`super::passthrough`]), still verified.
//!
//! A fill reads from the first of its sources that answers ([`Sources`]): the object store the
//! replicas share, when the cache has one and it holds the blob (see [`super::shared`]); the
//! replica that owns the digest, when the cache is one of several; the upstream. Whatever the
//! source, the bytes are verified the same way before anything is kept. A source that fails or
//! breaks off is not asked again by that fill: the rest comes from the next one, by a resume from
//! the last byte received.
//!
//! An upstream must keep up a minimum rate ([`crate::upstream::rate`]): a body that arrives slower is cut and
//! resumed like one that broke off, and after [`MAX_RESUMES`] the fill fails.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::spool::{Spool, SpoolFile};
use super::{passthrough, Cache, Reservation, ToCommit};
use crate::limits::MAX_RESUMES;
use crate::oci::digest::Mismatch;
use crate::oci::{Digest, RepoName, Verifier};
use crate::store::{BlobWriter, ByteStream};
use crate::upstream::rate::Cut;
use crate::upstream::registry::resume_pause;
use crate::upstream::{BlobBody, Upstream, UpstreamError};

/// The fills in flight, by digest and upstream: a client is only ever attached to a fill from its
/// own upstream, so a slow upstream holds up only its own clients. Two upstreams may thus fill the
/// same digest at once; both verify it, the first to finish commits it, and the second finds it
/// committed and drops its copy ([`Cache::commit_staged`]).
#[derive(Default)]
pub struct Inflight {
    fills: Mutex<HashMap<Digest, Vec<Arc<Fill>>>>,
    /// Woken when the last fill ends.
    idle: tokio::sync::Notify,
}

/// What [`Inflight::join_or_start`] found.
pub enum Joined {
    /// A fill was running: follow it.
    Follower(Arc<Fill>),
    /// A new fill was started: lead it.
    Leader(Arc<Fill>),
    /// The blob is stored already.
    Committed,
}

/// One blob being fetched from an upstream.
pub struct Fill {
    digest: Digest,
    state: watch::Receiver<FillState>,
    /// Where the blob comes from, for readers that go on by themselves after a handoff.
    upstream: Arc<Upstream>,
    repo: RepoName,
    /// What readers read from while the blob arrives: the most recent chunks in memory, the rest
    /// read back from a local file.
    spool: Spool,
    /// Set once the fill's task is over: the blob committed and indexed, or not kept.
    ended: watch::Sender<bool>,
    /// When it started (Unix seconds), for the status page.
    started_at: u64,
    /// Streams reading it now ([`Fill::follow`]), for the status page (apart from the fill, which a
    /// reader lets go of after a handoff).
    readers: Arc<AtomicU64>,
}

/// A fill as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillProgress {
    /// The upstream it comes from.
    pub upstream: String,
    /// The repository it was asked for in.
    pub repository: String,
    /// The blob.
    pub digest: Digest,
    /// Bytes received so far.
    pub received: u64,
    /// The size the upstream announced, if it did.
    pub size: Option<u64>,
    /// Clients reading it now.
    pub clients: u64,
    /// When it started (Unix seconds).
    pub started: u64,
}

/// Counts a reader of a fill while it lives.
struct Reader(Arc<AtomicU64>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How far a fill got before the storage could not take the rest, for its readers to continue
/// from the upstream.
pub struct Handoff {
    /// Bytes written to the store and the spool (all of them hashed into `verifier`).
    pub written: u64,
    /// The hash of the first `written` bytes.
    pub verifier: Verifier,
    /// The size the upstream announced.
    pub size: Option<u64>,
}

/// Where a fill is.
#[derive(Clone)]
pub enum FillState {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// The body is arriving: `received` bytes have arrived, of which `written` are written (and in
    /// the spool's file; the rest are queued for the writer, and the latest are in the spool's
    /// memory).
    Streaming {
        /// The size the upstream announced, if it did.
        size: Option<u64>,
        /// Bytes received so far.
        received: u64,
        /// Bytes written so far.
        written: u64,
    },
    /// Verified (and being, or been, committed): readers may read to the end.
    Done {
        /// The blob's size.
        size: u64,
    },
    /// Failed; readers must abort.
    Failed(Arc<FillError>),
    /// The storage could not take the blob: readers continue from the upstream by themselves.
    Handoff(Arc<Handoff>),
}

/// How a fill ended, short of an error.
enum Outcome<'a> {
    /// Verified: the writer (not yet finished), the blob's size, and the room reserved for it
    /// (held until the blob is indexed, so its bytes are counted somewhere all along).
    Verified(Box<dyn BlobWriter>, u64, Reservation<'a>),
    /// Handed off to the readers.
    Handoff(Handoff),
}

/// Why a fill failed.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// The upstream refused or failed the request.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The body broke off.
    #[error("upstream {upstream} body broke off after {written} bytes")]
    BodyCut {
        /// The upstream's name.
        upstream: String,
        /// Bytes received before the break.
        written: u64,
    },
    /// The upstream sent the body below the minimum rate, on every attempt it was given.
    #[error("upstream {upstream} sent the blob too slowly (below its min_rate); gave up after {written} bytes")]
    TooSlow {
        /// The upstream's name.
        upstream: String,
        /// Bytes received before giving up.
        written: u64,
    },
    /// The bytes did not match the digest.
    #[error("upstream {upstream} sent content that does not match {digest}: {mismatch}")]
    Mismatch {
        /// The upstream's name.
        upstream: String,
        /// The digest asked for.
        digest: Digest,
        /// What differed.
        mismatch: Mismatch,
    },
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] super::IndexError),
    /// The fill task went away without a result (it panicked or the runtime shut down).
    #[error("the fill stopped unexpectedly")]
    Abandoned,
}

// === impl Inflight ===

impl Inflight {
    /// A fill of `digest` that is running, from any upstream (for bookkeeping that must leave a
    /// digest being filled alone: eviction, `wharf gc`, re-verification).
    pub fn get(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.fills.lock().get(digest)?.first().cloned()
    }

    /// The fill of `digest` from the upstream named `upstream`, if one is running.
    pub fn get_from(&self, upstream: &str, digest: &Digest) -> Option<Arc<Fill>> {
        self.fills
            .lock()
            .get(digest)?
            .iter()
            .find(|f| f.upstream.name() == upstream)
            .cloned()
    }

    /// Joins the running fill of `digest` from `upstream`, or starts one with `start` unless
    /// `committed` says the blob is already stored. Both checks happen under one lock: a fill is
    /// removed from the map only after its blob is indexed, so a digest that is neither running
    /// nor indexed really is missing. A fill of the digest from another upstream is not joined.
    ///
    /// # Errors
    /// Whatever `committed` fails with.
    pub fn join_or_start<E>(
        &self,
        upstream: &str,
        digest: Digest,
        committed: impl FnOnce() -> Result<bool, E>,
        start: impl FnOnce() -> Arc<Fill>,
    ) -> Result<Joined, E> {
        let mut fills = self.fills.lock();
        let running = fills
            .get(&digest)
            .and_then(|r| r.iter().find(|f| f.upstream.name() == upstream));
        if let Some(fill) = running {
            return Ok(Joined::Follower(fill.clone()));
        }
        if committed()? {
            return Ok(Joined::Committed);
        }
        let fill = start();
        fills.entry(digest).or_default().push(fill.clone());
        Ok(Joined::Leader(fill))
    }

    fn remove(&self, fill: &Arc<Fill>) {
        let mut fills = self.fills.lock();
        if let Some(running) = fills.get_mut(&fill.digest) {
            running.retain(|f| !Arc::ptr_eq(f, fill));
            if running.is_empty() {
                fills.remove(&fill.digest);
            }
        }
        if fills.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once no fill is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// The fills running now with their progress, oldest first.
    pub fn progress(&self) -> Vec<FillProgress> {
        let fills: Vec<Arc<Fill>> = self.fills.lock().values().flatten().cloned().collect();
        let mut progress: Vec<FillProgress> = fills.iter().map(|f| f.progress()).collect();
        progress.sort_by(|a, b| {
            (a.started, a.digest.to_string()).cmp(&(b.started, b.digest.to_string()))
        });
        progress
    }

    /// How many fills are running.
    pub fn len(&self) -> usize {
        self.fills.lock().values().map(Vec::len).sum()
    }

    /// Whether no fill is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl Fill ===

impl Fill {
    /// Starts a fill of `digest` from `upstream`, detached from the caller.
    pub fn spawn(
        cache: Arc<Cache>,
        upstream: Arc<Upstream>,
        owner: Option<Arc<Upstream>>,
        repo: RepoName,
        digest: Digest,
    ) -> Arc<Self> {
        let (tx, rx) = watch::channel(FillState::Connecting);
        let tx = Arc::new(tx);
        let fill = Arc::new(Self {
            digest,
            state: rx,
            upstream: upstream.clone(),
            repo: repo.clone(),
            spool: Spool::new(),
            ended: watch::Sender::new(false),
            started_at: crate::activity::unix_now(),
            readers: Arc::new(AtomicU64::new(0)),
        });
        let task_fill = fill.clone();
        tokio::spawn(async move {
            let result = run(&cache, &upstream, owner, &repo, &task_fill, &tx).await;
            match result {
                Ok(Outcome::Verified(writer, size, reservation)) => {
                    // Verified: readers may finish now. Making it durable (fsync of the whole
                    // blob) happens after, so a cold pull does not wait for the disk.
                    tx.send_replace(FillState::Done { size });
                    let committed = cache
                        .commit_staged(
                            ToCommit::Written(writer),
                            &digest,
                            size,
                            None,
                            Some(reservation),
                        )
                        .await;
                    match committed {
                        Ok(()) => {
                            info!(%digest, upstream = %upstream.name(), %repo, size, "blob cached")
                        }
                        Err(error) => {
                            warn!(%digest, upstream = %upstream.name(), %repo, %error, "verified blob served but not kept: storage failed")
                        }
                    }
                }
                Ok(Outcome::Handoff(handoff)) => {
                    debug!(%digest, upstream = %upstream.name(), %repo, written = handoff.written, "fill handed off: readers continue from the upstream");
                    tx.send_replace(FillState::Handoff(Arc::new(handoff)));
                }
                Err(error) => {
                    if !matches!(error, FillError::Upstream(UpstreamError::Status { .. })) {
                        warn!(%digest, upstream = %upstream.name(), %repo, %error, "blob fill failed; nothing was kept");
                    }
                    tx.send_replace(FillState::Failed(Arc::new(error)));
                }
            }
            cache.inflight.remove(&task_fill);
            task_fill.ended.send_replace(true);
        });
        fill
    }

    /// Resolves once the fill's task is over: the blob is committed and indexed, or it was not
    /// kept (a failure, a handoff, a storage error). `wharf prefetch` waits on it before counting a
    /// blob as cached.
    pub async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// The digest being filled.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Where it is, for the status page.
    pub fn progress(&self) -> FillProgress {
        let (received, size) = match &*self.state.borrow() {
            FillState::Connecting => (0, None),
            FillState::Streaming { size, received, .. } => (*received, *size),
            FillState::Done { size } => (*size, Some(*size)),
            FillState::Handoff(h) => (h.written, h.size),
            FillState::Failed(_) => (0, None),
        };
        FillProgress {
            upstream: self.upstream.name().to_owned(),
            repository: self.repo.to_string(),
            digest: self.digest,
            received,
            size,
            clients: self.readers.load(Ordering::Relaxed),
            started: self.started_at,
        }
    }

    /// Whether the fill handed its readers off to the upstream (nothing will be cached).
    pub fn handed_off(&self) -> bool {
        matches!(&*self.state.borrow(), FillState::Handoff(_))
    }

    /// Waits until the upstream's response has started (or the fill failed). Returns the size the
    /// upstream announced, when it did.
    ///
    /// # Errors
    /// The fill's error, when it failed before or during the wait.
    pub async fn started(&self) -> Result<Option<u64>, Arc<FillError>> {
        let mut rx = self.state.clone();
        loop {
            match &*rx.borrow_and_update() {
                FillState::Connecting => {}
                FillState::Streaming { size, .. } => return Ok(*size),
                FillState::Done { size } => return Ok(Some(*size)),
                FillState::Handoff(h) => return Ok(h.size),
                FillState::Failed(e) => return Err(e.clone()),
            }
            if rx.changed().await.is_err() {
                return Err(Arc::new(FillError::Abandoned));
            }
        }
    }

    /// Streams `[start, end)` of the blob (to the end when `end` is `None`) as it arrives: from
    /// memory while the reader keeps up with the download, from the spool's file when it falls
    /// behind. The last byte is sent only once the blob is verified; the stream ends with an error if
    /// the fill fails, and after a handoff it goes on from the upstream.
    pub fn follow(self: Arc<Self>, start: u64, end: Option<u64>) -> ByteStream {
        let rx = self.state.clone();
        self.readers.fetch_add(1, Ordering::Relaxed);
        let reader = Reader(self.readers.clone());
        Box::pin(
            futures_util::stream::unfold(Follow::Fill(self, rx, start), move |state| async move {
                let (fill, mut rx, pos) = match state {
                    Follow::Fill(fill, rx, pos) => (fill, rx, pos),
                    Follow::Handoff(mut rest) => {
                        return rest.next().await.map(|item| (item, Follow::Handoff(rest)));
                    }
                    Follow::End => return None,
                };
                loop {
                    let state = rx.borrow_and_update().clone();
                    let (limit, written, done) = match &state {
                        FillState::Connecting => (0, 0, false),
                        // Unverified: hold back the response's last byte (of the blob, or of the
                        // range), so a failure can still cut the response short.
                        FillState::Streaming {
                            received, written, ..
                        } => {
                            let limit = match end {
                                Some(e) => (*received).min(e.saturating_sub(1)),
                                None => received.saturating_sub(1),
                            };
                            (limit, *written, false)
                        }
                        FillState::Done { size } => {
                            (end.map_or(*size, |e| e.min(*size)), *size, true)
                        }
                        FillState::Failed(e) => {
                            return Some((Err(std::io::Error::other(e.to_string())), Follow::End));
                        }
                        FillState::Handoff(h) => {
                            let mut rest = passthrough::continue_fill(
                                fill.upstream.clone(),
                                fill.repo.clone(),
                                fill.digest,
                                h.size,
                                fill.spool.file().cloned(),
                                h.written,
                                h.verifier.clone(),
                                pos,
                                end,
                            );
                            // The fill (and its spool's memory) is let go here.
                            drop(fill);
                            return rest.next().await.map(|item| (item, Follow::Handoff(rest)));
                        }
                    };
                    if pos < limit {
                        if let Some(bytes) = fill.spool.recent_slice(pos, limit) {
                            let next = pos + bytes.len() as u64;
                            return Some((Ok(bytes), Follow::Fill(fill, rx, next)));
                        }
                        // Behind what memory holds: read the file, which has everything up to
                        // `written` (at least as much as memory has dropped, or soon).
                        let next = limit.min(written).min(pos + FOLLOW_CHUNK);
                        if pos < next {
                            let Some(file) = fill.spool.file() else {
                                return Some((
                                    Err(std::io::Error::other("fill has no file")),
                                    Follow::End,
                                ));
                            };
                            return match file.read_range(pos, next).await {
                                Ok(bytes) => Some((Ok(bytes), Follow::Fill(fill, rx, next))),
                                Err(e) => Some((Err(e), Follow::End)),
                            };
                        }
                    } else if done {
                        return None;
                    }
                    if rx.changed().await.is_err() {
                        return Some((
                            Err(std::io::Error::other("the fill stopped unexpectedly")),
                            Follow::End,
                        ));
                    }
                }
            })
            .map(move |item| {
                // Counted as a reader as long as the stream lives.
                let _ = &reader;
                item
            }),
        )
    }
}

/// Where a reader of a fill is.
enum Follow {
    /// Reading the fill: the fill, its state, the next offset.
    Fill(Arc<Fill>, watch::Receiver<FillState>, u64),
    /// Going on from the upstream after a handoff.
    Handoff(ByteStream),
    /// Ended (after an error).
    End,
}

/// How much a follower reads from the spool's file at once. Followers of one fill each hold one read
/// in flight, so this is what memory grows by per attached client: at 64 KiB, 200 followers of a
/// 64 MiB fill peaked at about 55 MiB in all, at 128 KiB at 88 MiB. Larger reads make a single cold
/// pull of a big layer about 10-15% faster; memory that stays flat as followers attach matters more.
const FOLLOW_CHUNK: u64 = 64 * 1024;

/// The fill itself: request, stream to the store's writer while hashing (resuming a broken body, or
/// one that arrives below the upstream's minimum rate, from the last byte written), verify. Returns
/// the verified writer and its size, or a handoff when the storage cannot take the blob.
/// Every request waits for its response headers at most the upstream's `timeout`.
async fn run<'a>(
    cache: &'a Cache,
    upstream: &Upstream,
    owner: Option<Arc<Upstream>>,
    repo: &RepoName,
    fill: &Fill,
    tx: &Arc<watch::Sender<FillState>>,
) -> Result<Outcome<'a>, FillError> {
    let digest = fill.digest;
    let pace = upstream.pace();
    let mut sources = Sources {
        cache,
        upstream,
        shared: cache.shared().is_some(),
        owner,
        slot: None,
        current: Source::Upstream,
    };
    let body = sources.open(repo, &digest, None).await?;
    let first = sources.current;
    let size = body.size();
    let handoff = |written, verifier| {
        Ok(Outcome::Handoff(Handoff {
            written,
            verifier,
            size,
        }))
    };
    if let (Some(size), Some(budget)) = (size, cache.budget()) {
        if size > budget.max {
            info!(%digest, upstream = %upstream.name(), %repo, size, max_size = budget.max, "blob is larger than storage.max_size; streaming it without caching");
            return handoff(0, Verifier::new());
        }
    }
    if let Err(error) = cache.health.check_room(size.unwrap_or(0)) {
        cache.health.failed("free space", &error);
        return handoff(0, Verifier::new());
    }
    // A blob read from the shared store is there already, and one read from the replica that owns
    // it is uploaded there by the owner: only a blob from the upstream is shared from here.
    let writer = match cache.writer(first == Source::Upstream).await {
        Ok(writer) => writer,
        Err(error) => {
            cache.health.failed("creating a staging file", &error);
            return handoff(0, Verifier::new());
        }
    };
    // Late readers read back from the store's own staging file when it has one; else from a
    // spool file the fill writes itself (see `super::spool`).
    let own_spool = match writer.local_file() {
        Some(file) => {
            fill.spool.set_file(SpoolFile::shared(file));
            None
        }
        None => match SpoolFile::anonymous(&cache.spool_dir()).await {
            Ok(file) => {
                fill.spool.set_file(file.clone());
                Some(file)
            }
            Err(error) => {
                cache.health.failed("creating a spool file", &error);
                return handoff(0, Verifier::new());
            }
        },
    };
    let reservation = cache.reserve(size.unwrap_or(0));
    tx.send_replace(FillState::Streaming {
        size,
        received: 0,
        written: 0,
    });

    let mut sink = Sink::start(writer, own_spool, tx.clone(), size, cache.health.clone());
    let mut next = Some(body);
    let mut resumes = 0;
    // Whether the last attempt that got a body was cut for being too slow (else it broke off).
    let mut too_slow = false;
    loop {
        if let Some(body) = next.take() {
            let copied = sink.copy(fill, body).await;
            match copied {
                Copied::Ended | Copied::WriterStopped => break,
                Copied::Broke => too_slow = false,
                Copied::TooSlow { in_window } => {
                    too_slow = true;
                    warn!(%digest, upstream = %upstream.name(), %repo, received = sink.received, in_window, window_s = pace.window.as_secs(), min_rate = pace.min_rate, "upstream sends the blob below min_rate; cutting it");
                }
            }
            if size.is_some_and(|s| sink.received >= s) {
                break; // Everything arrived; only the connection's end was unclean.
            }
        }
        if resumes == MAX_RESUMES {
            let (upstream, written) = (upstream.name().to_owned(), sink.received);
            // Wait for the writer, so the staging file is gone before the fill is: whoever
            // waits for the fill to end finds nothing of it on disk.
            drop(sink.finish().await);
            return Err(if too_slow {
                FillError::TooSlow { upstream, written }
            } else {
                FillError::BodyCut { upstream, written }
            });
        }
        resumes += 1;
        if sources.current == Source::Upstream {
            tokio::time::sleep(resume_pause(resumes)).await;
        }
        warn!(%digest, upstream = %upstream.name(), source = sources.current.as_str(), received = sink.received, attempt = resumes, too_slow, "blob body stopped short; resuming");
        // A shared store or owner that broke off is not asked again: the rest comes from the next
        // source. From the last byte received: the upstream's client drops what it sends again.
        sources.broke();
        match sources.open(repo, &digest, Some(sink.received)).await {
            Ok(resumed) => next = Some(resumed),
            Err(error) => {
                debug!(%digest, upstream = %upstream.name(), %error, "resume request failed")
            }
        }
    }
    let overflow = sink.overflow;
    let Written {
        writer,
        verifier,
        written,
    } = match sink.finish().await {
        Ok(written) => written,
        Err(Stopped::Storage {
            error,
            written,
            verifier,
        }) => {
            cache.health.failed("writing a blob", &error);
            return handoff(written, *verifier);
        }
        Err(Stopped::Abandoned) => return Err(FillError::Abandoned),
    };
    let mismatch = |mismatch| FillError::Mismatch {
        upstream: upstream.name().to_owned(),
        digest,
        mismatch,
    };
    if let (Some(expected), Some(actual)) = (size, overflow) {
        return Err(mismatch(Mismatch::Size { expected, actual }));
    }
    if let Err(error) = verifier.finish(&digest, size) {
        if first == Source::Shared {
            // The shared store holds a bad copy: drop it, so the next fill goes to the upstream.
            if let Some(shared) = cache.shared() {
                warn!(%digest, %error, "the shared object store holds a copy that does not match its digest; removing it");
                if let Err(error) = shared.store().remove(&digest).await {
                    shared.failed("removing a bad copy", &error);
                }
            }
        }
        return Err(mismatch(error));
    }
    Ok(Outcome::Verified(writer, written, reservation))
}

/// Where a fill reads its blob from, in order: the shared object store, the replica that owns the
/// digest, the upstream. A source that fails or breaks off is not asked again by this fill; the
/// upstream is asked again (a resume) until the fill gives up.
struct Sources<'a> {
    cache: &'a Cache,
    upstream: &'a Upstream,
    /// Whether the shared store is still worth asking.
    shared: bool,
    /// The replica that owns the digest, while it is still worth asking.
    owner: Option<Arc<Upstream>>,
    /// The upstream's fill slot, taken when the upstream is first asked.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Where the current body comes from.
    current: Source,
}

/// One of a fill's [`Sources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Shared,
    Owner,
    Upstream,
}

/// A blob body being read by a fill: from a registry (the upstream, or the owner replica), or from
/// the shared store.
enum Body {
    Upstream(BlobBody),
    Stored {
        /// The blob's size.
        size: u64,
        stream: ByteStream,
    },
}

/// The longest a read from the shared store may take before its body counts as broken off.
const STORED_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

// === impl Sources ===

impl Sources<'_> {
    /// A body from the first source that answers, from `from` (the whole blob when `None`).
    ///
    /// # Errors
    /// The upstream's error, when it is reached and fails (or no fill slot frees up).
    async fn open(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<u64>,
    ) -> Result<Body, FillError> {
        if self.shared {
            if let Some(shared) = self.cache.shared() {
                if let Some(blob) = shared.open(digest).await {
                    let (start, size) = (from.unwrap_or(0), blob.size());
                    if start <= size {
                        shared.read_from();
                        self.current = Source::Shared;
                        return Ok(Body::Stored {
                            size,
                            stream: blob.stream_range(start, size),
                        });
                    }
                }
            }
            self.shared = false;
        }
        if let Some(owner) = self.owner.clone() {
            match owner.blob(repo, digest, from).await {
                Ok(body) => {
                    self.current = Source::Owner;
                    return Ok(Body::Upstream(body));
                }
                Err(error) => {
                    debug!(%digest, owner = %owner.url(), %error, "the owner replica did not answer; going to the upstream");
                    if crate::cluster::is_down(&error) {
                        if let Some(cluster) = self.cache.cluster() {
                            cluster.failed(&owner);
                        }
                    }
                    self.owner = None;
                }
            }
        }
        if self.slot.is_none() {
            self.slot = Some(self.upstream.fill_slot().await?);
        }
        let body = self.upstream.blob(repo, digest, from).await?;
        self.current = Source::Upstream;
        Ok(Body::Upstream(body))
    }

    /// The current body broke off: a shared store or owner is not asked again.
    fn broke(&mut self) {
        match self.current {
            Source::Shared => self.shared = false,
            Source::Owner => {
                if let (Some(cluster), Some(owner)) = (self.cache.cluster(), self.owner.take()) {
                    cluster.failed(&owner);
                }
            }
            Source::Upstream => {}
        }
    }
}

// === impl Source ===

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared store",
            Self::Owner => "owner replica",
            Self::Upstream => "upstream",
        }
    }
}

// === impl Body ===

impl Body {
    /// The blob's size, when known.
    fn size(&self) -> Option<u64> {
        match self {
            Self::Upstream(body) => body.size(),
            Self::Stored { size, .. } => Some(*size),
        }
    }

    /// The next chunk; `None` at the end.
    ///
    /// # Errors
    /// [`Cut`] when the body breaks off (a read from the shared store that fails or takes longer
    /// than [`STORED_READ_TIMEOUT`] counts as broken off) or arrives too slowly.
    async fn next(&mut self) -> Option<Result<Bytes, Cut>> {
        match self {
            Self::Upstream(body) => body.next().await,
            Self::Stored { stream, .. } => {
                match tokio::time::timeout(STORED_READ_TIMEOUT, stream.next()).await {
                    Ok(Some(Ok(bytes))) => Some(Ok(bytes)),
                    Ok(Some(Err(error))) => Some(Err(Cut::Broke(Box::new(error)))),
                    Ok(None) => None,
                    Err(elapsed) => Some(Err(Cut::Broke(Box::new(elapsed)))),
                }
            }
        }
    }
}

/// Where a fill's bytes go. The async side only receives: each chunk is kept in the spool's memory
/// for the readers that keep up ([`Spool::remember`]) and handed over bounded channels to a thread
/// that hashes and a task that writes ([`write_queued`]: everything queued goes to the store's
/// writer in one call, then the new length is announced to the readers that read back). Hashing
/// and writing thus overlap each other and the download, instead of taking turns with it; the
/// channels' bound is the back-pressure on a slow disk.
struct Sink {
    to_writer: mpsc::Sender<Bytes>,
    to_hasher: mpsc::Sender<Bytes>,
    /// Where readers learn how much has arrived.
    tx: Arc<watch::Sender<FillState>>,
    written: oneshot::Receiver<WriteResult>,
    hashed: oneshot::Receiver<Hashed>,
    /// Bytes handed to the writer and hasher: all of them are written unless the writer fails.
    received: u64,
    size: Option<u64>,
    /// How many bytes arrived, when more arrived than the upstream announced.
    overflow: Option<u64>,
}

/// What the writer task leaves behind: the writer and the bytes it wrote, or why it stopped and
/// after how many bytes (a chunk boundary).
type WriteResult = Result<(Box<dyn BlobWriter>, u64), (std::io::Error, u64)>;

/// What the writer and hasher leave behind.
struct Written {
    writer: Box<dyn BlobWriter>,
    verifier: Verifier,
    written: u64,
}

/// What the hashing thread leaves behind: the hash of everything, and of a few recent chunk
/// boundaries, so that when the writer stops at one of them the hash there is known.
struct Hashed {
    verifier: Verifier,
    /// `(offset, hash of the bytes before it)`, the last [`SNAPSHOTS`] chunk boundaries.
    snapshots: VecDeque<(u64, Verifier)>,
}

/// Why the writer stopped before the end.
enum Stopped {
    /// A write failed (or free space reached `storage.min_free`) after `written` bytes, and this is
    /// the hash of those bytes.
    Storage {
        error: std::io::Error,
        written: u64,
        verifier: Box<Verifier>,
    },
    /// The writer task or hashing thread went away without a result.
    Abandoned,
}

/// Chunks queued between the download and the writer task, and the hashing thread. Upstream
/// chunks are up to the HTTP client's read buffer (about 400 KiB), so a full queue is at most a few
/// tens of MiB, and usually empty.
const QUEUE: usize = 32;

/// Chunk boundaries the hasher remembers: the writer stops at most `2 * QUEUE + 1` chunks behind
/// it (a batch of up to `QUEUE` chunks it failed in, a full queue, and the chunk being handed
/// over), so this reaches back far enough, with room to spare.
const SNAPSHOTS: usize = 2 * QUEUE + 4;

/// How often the writer checks that free space stays above `storage.min_free`.
const ROOM_CHECK: u64 = 8 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Copied {
    /// The body ended (or ran past the announced size, which verification then refuses).
    Ended,
    /// The body broke off.
    Broke,
    /// The body arrived below the minimum rate and was cut; `in_window` bytes came in the last
    /// window.
    TooSlow {
        /// Bytes received in the last window.
        in_window: u64,
    },
    /// The writer stopped (a storage failure): `finish` says why.
    WriterStopped,
}

impl Sink {
    fn start(
        writer: Box<dyn BlobWriter>,
        own_spool: Option<SpoolFile>,
        tx: Arc<watch::Sender<FillState>>,
        size: Option<u64>,
        health: Arc<super::health::StorageHealth>,
    ) -> Self {
        let (to_writer, writes) = mpsc::channel::<Bytes>(QUEUE);
        let (to_hasher, mut hashes) = mpsc::channel::<Bytes>(QUEUE);
        let (written_tx, written) = oneshot::channel();
        let (hashed_tx, hashed) = oneshot::channel();
        let writer_tx = tx.clone();
        tokio::spawn(async move {
            let result = write_queued(writer, own_spool, writes, &writer_tx, &health).await;
            let _ = written_tx.send(result);
        });
        // A thread of its own rather than the blocking pool: it lives as long as the download, and
        // the pool's threads serve the file reads of every hit. If it cannot be started, its
        // channel ends are dropped with the closure and the fill fails as abandoned.
        let hasher = std::thread::Builder::new()
            .name("wharf-fill-hash".into())
            .spawn(move || {
                let mut verifier = Verifier::new();
                let mut offset = 0u64;
                let mut snapshots = VecDeque::with_capacity(SNAPSHOTS);
                snapshots.push_back((0, verifier.clone()));
                while let Some(bytes) = hashes.blocking_recv() {
                    verifier.update(&bytes);
                    offset += bytes.len() as u64;
                    if snapshots.len() == SNAPSHOTS {
                        snapshots.pop_front();
                    }
                    snapshots.push_back((offset, verifier.clone()));
                }
                let _ = hashed_tx.send(Hashed {
                    verifier,
                    snapshots,
                });
            });
        if let Err(error) = hasher {
            warn!(%error, "cannot start the hashing thread of a blob fill");
        }
        Self {
            to_writer,
            to_hasher,
            tx,
            written,
            hashed,
            received: 0,
            size,
            overflow: None,
        }
    }

    /// Hands a response body to the writer and hasher. Only the time spent waiting for the
    /// upstream counts against its minimum rate, not the time their queues are full.
    async fn copy(&mut self, fill: &Fill, mut body: Body) -> Copied {
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(Cut::Broke(_)) => return Copied::Broke,
                Err(Cut::TooSlow { received, .. }) => {
                    return Copied::TooSlow {
                        in_window: received,
                    }
                }
            };
            if chunk.is_empty() {
                continue;
            }
            let len = chunk.len() as u64;
            if self.size.is_some_and(|s| self.received + len > s) {
                self.overflow = Some(self.received + len);
                return Copied::Ended;
            }
            // The writer first: once it has stopped, nothing more may reach the hasher, whose
            // snapshots must still reach back to where the writer stopped.
            if self.to_writer.send(chunk.clone()).await.is_err() {
                return Copied::WriterStopped;
            }
            if self.to_hasher.send(chunk.clone()).await.is_err() {
                return Copied::WriterStopped; // The hasher went away: `finish` says so.
            }
            fill.spool.remember(self.received, chunk);
            self.received += len;
            let received = self.received;
            self.tx.send_modify(|s| {
                if let FillState::Streaming { received: r, .. } = s {
                    *r = received;
                }
            });
        }
        Copied::Ended
    }

    /// Waits for the writer and hasher to write and hash everything handed to them.
    async fn finish(self) -> Result<Written, Stopped> {
        drop(self.to_writer);
        drop(self.to_hasher);
        let (Ok(written), Ok(hashed)) = (self.written.await, self.hashed.await) else {
            return Err(Stopped::Abandoned);
        };
        match written {
            Ok((writer, written)) => Ok(Written {
                writer,
                verifier: hashed.verifier,
                written,
            }),
            Err((error, written)) => {
                // The writer stops on a chunk boundary that the snapshots reach back to.
                let at = hashed.snapshots.into_iter().find(|(o, _)| *o == written);
                match at {
                    Some((_, verifier)) => Err(Stopped::Storage {
                        error,
                        written,
                        verifier: Box::new(verifier),
                    }),
                    None => Err(Stopped::Abandoned),
                }
            }
        }
    }
}

/// The fill's writer task: hands everything queued to the store's writer in one call (the disk
/// store makes that one trip to the blocking pool), and to the fill's own spool file when it has
/// one, then tells the readers the new length once. Checks every [`ROOM_CHECK`] bytes that free
/// space stays above `storage.min_free`. On a failure it stops on a chunk boundary (the bytes below
/// it are in the spool's file, and the hasher has a snapshot there) and drops the writer, which
/// discards what it wrote.
async fn write_queued(
    mut writer: Box<dyn BlobWriter>,
    spool: Option<SpoolFile>,
    mut writes: mpsc::Receiver<Bytes>,
    tx: &watch::Sender<FillState>,
    health: &super::health::StorageHealth,
) -> WriteResult {
    let mut written = 0u64;
    // `written` plus the bytes in `batch`.
    let mut end = 0u64;
    let mut next_check = ROOM_CHECK;
    let mut batch: Vec<Bytes> = Vec::with_capacity(QUEUE);
    while let Some(first) = writes.recv().await {
        let mut next = Some(first);
        // Write what is queued (and what arrives meanwhile), then tell the readers once.
        while next.is_some() {
            while let Some(bytes) = next.take() {
                if batch.len() == QUEUE {
                    // At most a queue's worth per call: the hasher's snapshots must reach back
                    // to the start of a batch that fails.
                    written = flush(&mut *writer, spool.as_ref(), &mut batch, written).await?;
                }
                if end >= next_check {
                    written = flush(&mut *writer, spool.as_ref(), &mut batch, written).await?;
                    next_check = written + ROOM_CHECK;
                    health
                        .check_room(ROOM_CHECK)
                        .map_err(|error| (error, written))?;
                }
                end += bytes.len() as u64;
                batch.push(bytes);
                next = writes.try_recv().ok();
            }
            written = flush(&mut *writer, spool.as_ref(), &mut batch, written).await?;
            next = writes.try_recv().ok();
        }
        tx.send_modify(|s| {
            if let FillState::Streaming { written: w, .. } = s {
                *w = written;
            }
        });
    }
    Ok((writer, written))
}

/// Writes `batch` (which starts at `written`) to the fill's own spool file, if any, then to the
/// store's writer, and empties it. Returns the new length, or the error and the length on the
/// chunk boundary where writing stopped (everything below it is in the spool's file).
async fn flush(
    writer: &mut dyn BlobWriter,
    spool: Option<&SpoolFile>,
    batch: &mut Vec<Bytes>,
    written: u64,
) -> Result<u64, (std::io::Error, u64)> {
    if batch.is_empty() {
        return Ok(written);
    }
    if let Some(spool) = spool {
        let (n, result) = spool.write(batch, written).await;
        if let Err(error) = result {
            return Err((error, written + n));
        }
    }
    let result = writer.write(batch).await;
    batch.clear();
    match result {
        Ok(()) => Ok(writer.written()),
        Err(error) => Err((error, writer.written())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill() -> Fill {
        fill_from("u.test")
    }

    fn fill_from(upstream: &str) -> Fill {
        Fill {
            digest: Digest::of(b""),
            state: watch::channel(FillState::Connecting).1,
            upstream: Arc::new(
                Upstream::new(
                    &crate::config::Config::from_toml(
                        &format!(
                            "[[upstream]]\nname = \"{upstream}\"\nurl = \"https://{upstream}\"\n"
                        ),
                        std::path::Path::new("t.toml"),
                    )
                    .unwrap()
                    .upstreams[0],
                    Arc::new(crate::metrics::Metrics::new()),
                )
                .unwrap(),
            ),
            repo: "org/app".parse().unwrap(),
            spool: Spool::new(),
            ended: watch::Sender::new(false),
            started_at: 7,
            readers: Arc::new(AtomicU64::new(0)),
        }
    }

    #[tokio::test]
    async fn a_fill_counts_its_readers_while_their_streams_live() {
        let fill = Arc::new(fill());
        let (a, b) = (fill.clone().follow(0, None), fill.clone().follow(0, None));
        assert_eq!(fill.progress().clients, 2);
        drop(a);
        assert_eq!(fill.progress().clients, 1);
        drop(b);
        let p = fill.progress();
        assert_eq!((p.clients, p.received, p.size, p.started), (0, 0, None, 7));
        assert_eq!(p.upstream, "u.test");
        assert_eq!(p.repository, "org/app");
    }

    #[test]
    fn fills_are_joined_only_through_the_same_upstream() {
        let inflight = Inflight::default();
        let not_stored = || Ok::<_, ()>(false);
        let lead = |i: Result<Joined, ()>| match i {
            Ok(Joined::Leader(f)) => f,
            _ => panic!("expected a new fill"),
        };
        let d = Digest::of(b"");
        let u = lead(inflight.join_or_start("u.test", d, not_stored, || Arc::new(fill())));
        match inflight.join_or_start("u.test", d, not_stored, || unreachable!()) {
            Ok(Joined::Follower(f)) => assert!(Arc::ptr_eq(&f, &u)),
            _ => panic!("the same upstream's fill is joined"),
        }
        let v =
            lead(inflight.join_or_start("v.test", d, not_stored, || Arc::new(fill_from("v.test"))));
        assert!(!Arc::ptr_eq(&u, &v));
        assert_eq!(inflight.len(), 2);
        assert!(Arc::ptr_eq(&inflight.get_from("v.test", &d).unwrap(), &v));
        assert!(inflight.get_from("w.test", &d).is_none());
        inflight.remove(&u);
        assert!(Arc::ptr_eq(&inflight.get(&d).unwrap(), &v));
        assert!(inflight.get_from("u.test", &d).is_none());
        inflight.remove(&v);
        assert!(inflight.is_empty() && inflight.get(&d).is_none());
        // Stored meanwhile: nothing to join or start.
        let stored = inflight.join_or_start("u.test", d, || Ok::<_, ()>(true), || unreachable!());
        assert!(matches!(stored, Ok(Joined::Committed)));
    }
}
