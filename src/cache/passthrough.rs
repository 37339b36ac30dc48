//! Verified pass-through: a blob streamed from the upstream to one client without being stored,
//! when the storage cannot take it (a write failed, free space is below `storage.min_free`, or the
//! blob is larger than `storage.max_size`).
//!
//! The bytes are hashed as they pass and the last chunk is held back until the digest and size have
//! been checked, exactly as for a fill: a client never gets a clean end on content that does not
//! verify. Two cases share the code:
//! - a new miss while caching is paused: the client's own upstream `GET`, hashed from byte 0
//!   ([`Cache::bypass`], served with `X-Cache: bypass`);
//! - a fill whose storage failed at byte `W` ([`super::fill::Handoff`]): each reader following it
//!   reads what it still needs below `W` from the fill's spool file ([`super::spool::SpoolFile`]:
//!   the store's staging file, whose descriptor stays readable after the file is removed, or the
//!   fill's own), then asks the upstream for the rest with a `Range` request from `W`, and
//!   continues the hash from the fill's state at `W`. Its response headers went out before the
//!   failure, so it keeps the `X-Cache` it started with.
//!
//! Like a fill, a pass-through body that breaks off or arrives below the upstream's minimum rate
//! ([`crate::upstream::rate`]) is resumed with `Range` from the last byte hashed, at most
//! [`crate::limits::MAX_RESUMES`] times; then the response is cut short. Time spent waiting for a
//! slow client is not counted against the upstream.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{debug, warn};

use super::spool::SpoolFile;
use super::Cache;
use crate::limits::MAX_RESUMES;
use crate::oci::{Digest, RepoName, Verifier};
use crate::store::ByteStream;
use crate::upstream::rate::Cut;
use crate::upstream::registry::resume_pause;
use crate::upstream::{BlobBody, Upstream, UpstreamError};

/// How much of the spool file a handed-off reader reads at once.
const FILE_CHUNK: u64 = 64 * 1024;

/// A new miss streamed from the upstream without caching; see [`Cache::bypass`].
pub struct Bypass {
    job: Job,
}

/// One reader's pass-through.
struct Job {
    upstream: Arc<Upstream>,
    repo: RepoName,
    digest: Digest,
    /// The blob's size, when the upstream announced it.
    size: Option<u64>,
    /// The spool file of a handed-off fill, readable below `hashed`.
    file: Option<SpoolFile>,
    /// Bytes already hashed into `verifier` (and, for a handoff, in `file`).
    hashed: u64,
    verifier: Verifier,
    /// An upstream body for the whole blob already under way (a bypass).
    response: Option<BlobBody>,
    /// The upstream download slot a bypass holds until its body ends.
    permit: Option<OwnedSemaphorePermit>,
}

/// Sends chunks to the reader, always one behind: the last is sent only once verified.
struct Out {
    tx: mpsc::Sender<io::Result<Bytes>>,
    held: Option<Bytes>,
}

/// The reader went away: stop.
struct Gone;

/// How one upstream body ended.
enum Piece {
    /// Cleanly.
    Ended,
    /// It broke off or came too slowly: resume it.
    Stopped(Cut),
    /// It cannot be right (more bytes than announced): fail.
    Failed(io::Error),
}

// === impl Cache ===

impl Cache {
    /// Starts streaming a blob from the upstream without caching it: the client's own `GET`, taken
    /// under the upstream's download limit, its headers awaited at most the upstream's `timeout`.
    ///
    /// # Errors
    /// The upstream's refusal or failure, or no download slot in time.
    pub async fn bypass(
        &self,
        upstream: &Arc<Upstream>,
        repo: &RepoName,
        digest: Digest,
    ) -> Result<Bypass, UpstreamError> {
        let permit = upstream.fill_slot().await?;
        let body = upstream.blob(repo, &digest, None).await?;
        Ok(Bypass {
            job: Job {
                upstream: upstream.clone(),
                repo: repo.clone(),
                digest,
                size: body.size(),
                file: None,
                hashed: 0,
                verifier: Verifier::new(),
                response: Some(body),
                permit: Some(permit),
            },
        })
    }
}

// === impl Bypass ===

impl Bypass {
    /// The size the upstream announced.
    pub fn size(&self) -> Option<u64> {
        self.job.size
    }

    /// Streams `[start, end)` of the blob (to its end when `end` is `None`), verified.
    pub fn stream(self, start: u64, end: Option<u64>) -> ByteStream {
        self.job.spawn(start, end)
    }
}

/// Continues a handed-off fill for one reader at `start` (see the module docs).
#[allow(
    clippy::too_many_arguments,
    reason = "the state of a fill at its handoff"
)]
pub(super) fn continue_fill(
    upstream: Arc<Upstream>,
    repo: RepoName,
    digest: Digest,
    size: Option<u64>,
    file: Option<SpoolFile>,
    written: u64,
    verifier: Verifier,
    start: u64,
    end: Option<u64>,
) -> ByteStream {
    Job {
        upstream,
        repo,
        digest,
        size,
        file,
        hashed: written,
        verifier,
        response: None,
        permit: None,
    }
    .spawn(start, end)
}

// === impl Job ===

impl Job {
    fn spawn(self, start: u64, end: Option<u64>) -> ByteStream {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let digest = self.digest;
            let upstream = self.upstream.name().to_owned();
            let mut out = Out { tx, held: None };
            match self.run(&mut out, start, end).await {
                Ok(Ok(())) => {
                    if let Some(last) = out.held.take() {
                        let _ = out.tx.send(Ok(last)).await;
                    }
                }
                Ok(Err(error)) => {
                    warn!(%digest, %upstream, %error, "blob streamed without caching failed; the response is cut short");
                    let _ = out.tx.send(Err(error)).await;
                }
                Err(Gone) => debug!(%digest, "client left a pass-through response"),
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    /// Streams to `out`; the outer error is the reader leaving, the inner one a failure to report.
    async fn run(
        mut self,
        out: &mut Out,
        start: u64,
        end: Option<u64>,
    ) -> Result<io::Result<()>, Gone> {
        let end = end.or(self.size).unwrap_or(u64::MAX);
        // What the reader still needs below the handoff point comes from the spool file.
        if let Some(file) = self.file.take() {
            let mut pos = start;
            let stop = self.hashed.min(end);
            while pos < stop {
                let next = stop.min(pos + FILE_CHUNK);
                match file.read_range(pos, next).await {
                    Ok(bytes) => out.send(bytes).await?,
                    Err(e) => return Ok(Err(e)),
                }
                pos = next;
            }
        }
        let digest = self.digest;
        let mut pending = self.response.take().map(Ok);
        let mut offset = self.hashed;
        let mut resumes = 0;
        loop {
            let attempt = match pending.take() {
                Some(response) => response,
                // From the last byte hashed: the upstream's client drops what it sends again.
                None => self.upstream.blob(&self.repo, &digest, Some(offset)).await,
            };
            let stopped = match attempt {
                Ok(body) => match self.copy(out, body, &mut offset, start, end).await? {
                    Piece::Ended => break,
                    Piece::Failed(e) => return Ok(Err(e)),
                    Piece::Stopped(cut) => cut.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if self.size.is_some_and(|s| offset >= s) {
                break; // Everything arrived; only the connection's end was unclean.
            }
            if resumes == MAX_RESUMES {
                return Ok(Err(io::Error::other(format!(
                    "upstream {} stopped short: {stopped}",
                    self.upstream.name()
                ))));
            }
            resumes += 1;
            warn!(%digest, upstream = %self.upstream.name(), received = offset, attempt = resumes, reason = %stopped, "blob streamed without caching stopped short; resuming");
            tokio::time::sleep(resume_pause(resumes)).await;
        }
        drop(self.permit.take());
        Ok(self.verifier.finish(&digest, self.size).map_err(|m| {
            io::Error::other(format!("upstream content does not match {digest}: {m}"))
        }))
    }

    /// Hashes one upstream body from `offset` and sends what falls in `[start, end)` to `out`.
    async fn copy(
        &mut self,
        out: &mut Out,
        mut body: BlobBody,
        offset: &mut u64,
        start: u64,
        end: u64,
    ) -> Result<Piece, Gone> {
        let digest = self.digest;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(cut) => return Ok(Piece::Stopped(cut)),
            };
            let len = chunk.len() as u64;
            if self.size.is_some_and(|s| *offset + len > s) {
                return Ok(Piece::Failed(io::Error::other(format!(
                    "upstream sent more than the {} bytes it announced for {digest}",
                    self.size.unwrap_or(0)
                ))));
            }
            self.verifier.update(&chunk);
            let (from, to) = ((*offset).max(start), (*offset + len).min(end));
            if from < to {
                // Both bounds lie within this chunk.
                let piece = chunk.slice((from - *offset) as usize..(to - *offset) as usize);
                out.send(piece).await?;
            }
            *offset += len;
        }
        Ok(Piece::Ended)
    }
}

// === impl Out ===

impl Out {
    async fn send(&mut self, chunk: Bytes) -> Result<(), Gone> {
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(previous) = self.held.replace(chunk) {
            self.tx.send(Ok(previous)).await.map_err(|_| Gone)?;
        }
        Ok(())
    }
}
