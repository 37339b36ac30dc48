//! `wharf prefetch`: fills the cache with whole images ahead of time, through the same code that
//! answers clients.
//!
//! Every manifest and blob is asked of the cache ([`crate::cache::manifests`], [`crate::cache::Cache::blob`])
//! through the route and allow list a client's request would take ([`api_path`]; no client
//! credentials are needed in process), and a blob's bytes are drained as they arrive. So a
//! prefetch is verified exactly like a pull, joins fills that client pulls started (and the other
//! way round), waits its turn under the upstream's `max_fills`, respects allow lists and offline
//! upstreams, and revalidates tags as `tag_ttl` says. What is cached already is skipped without a
//! request: a re-run after an interruption fetches only what is missing, and a complete image costs
//! nothing upstream (a tag past its TTL costs one `HEAD`).
//!
//! An image is resolved first (its manifest, the platform manifests of an index that pass the
//! `--platform` filter, the `subject` of an artifact), then its blobs are fetched, at most `jobs`
//! at a time across all images. Progress goes out as [`Event`]s: to the terminal, or as NDJSON
//! over the control socket ([`super::control`]). An image that fails does not stop the others.
//! Images that completed are pinned unless asked not to.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use http::{Method, StatusCode};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use super::manifest::{self, Descriptor, EntryPlatform};
use super::referrers::{self, MAX_DEPTH, MAX_REFERRERS};
use super::refs::Platform;
use crate::cache::manifests::{Manifest, ManifestStatus};
use crate::cache::BlobSource;
use crate::cache::ByteStream;
use crate::oci::{media, referrer, Digest, ErrorCode, ImageRef, Reference};
use crate::server::response::{ApiError, Area, CacheStatus};
use crate::server::route::{self, Parsed};
use crate::server::{manifests, App};

/// How many blobs download at once when `--jobs` is not given.
pub const DEFAULT_JOBS: usize = 4;

/// The most downloads one prefetch runs at once (the upstream's `max_fills` bounds them too).
pub const MAX_JOBS: usize = 64;

/// Progress events are sent at most once per this many bytes of a blob.
const PROGRESS_STEP: u64 = 1 << 20;

/// What a prefetch does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    /// Only these platforms of an index (`None`: all).
    pub platforms: Option<Vec<Platform>>,
    /// Pin the images that completed.
    pub pin: bool,
    /// Blob downloads at once, across images.
    pub jobs: usize,
    /// Which referrers (signatures, SBOMs, attestations) are fetched with each image.
    #[serde(default)]
    pub referrers: referrers::Options,
}

/// Progress of a prefetch, for the terminal or the control socket (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The prefetch starts.
    Start {
        /// How many images.
        images: usize,
    },
    /// An image's manifests are resolved: what it needs.
    Resolved {
        /// The image.
        image: String,
        /// Its manifest (or index).
        digest: Digest,
        /// Blobs it needs (configs and layers).
        blobs: u64,
        /// Their bytes, as the manifests give them.
        bytes: u64,
        /// Bytes of them already cached.
        cached_bytes: u64,
    },
    /// Bytes of an image downloaded since the last event for it.
    Progress {
        /// The image.
        image: String,
        /// Bytes.
        bytes: u64,
    },
    /// Something the operator should know about an image that did not fail.
    Warning {
        /// The image.
        image: String,
        /// What.
        message: String,
    },
    /// An image is done (or failed).
    Done {
        /// The image.
        image: String,
        /// What it took.
        stats: ImageStats,
    },
    /// The prefetch is over.
    Summary {
        /// The totals.
        summary: Summary,
    },
}

/// What one image took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStats {
    /// The manifest (or index) it resolved to.
    pub digest: Option<Digest>,
    /// Manifests fetched from the upstream.
    pub manifests_fetched: u64,
    /// Manifests that were cached.
    pub manifests_cached: u64,
    /// Blobs fetched.
    pub blobs_fetched: u64,
    /// Blobs that were cached (or fetched for another image of this run).
    pub blobs_cached: u64,
    /// Bytes fetched.
    pub bytes_fetched: u64,
    /// Bytes that were cached.
    pub bytes_cached: u64,
    /// Referrers fetched or found cached with it (signatures, SBOMs, attestations).
    #[serde(default)]
    pub referrers: u64,
    /// Whether it was pinned.
    pub pinned: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// The totals of a prefetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Images asked for.
    pub images: u64,
    /// Images that failed.
    pub failed: u64,
    /// Images pinned.
    pub pinned: u64,
    /// Manifests fetched.
    pub manifests_fetched: u64,
    /// Manifests cached.
    pub manifests_cached: u64,
    /// Blobs fetched.
    pub blobs_fetched: u64,
    /// Blobs cached.
    pub blobs_cached: u64,
    /// Bytes fetched.
    pub bytes_fetched: u64,
    /// Bytes cached.
    pub bytes_cached: u64,
    /// The failed images and why.
    pub failures: Vec<(String, String)>,
}

/// Where events go: a channel, or nowhere (a `[[sync]]` run logs instead).
#[derive(Clone, Default)]
pub struct Events(Option<mpsc::Sender<Event>>);

/// What the prefetch of one image found.
pub struct Fetched {
    /// The image.
    pub image: ImageRef,
    /// What it took.
    pub stats: ImageStats,
}

/// Shared by the images of one run.
struct Run {
    app: Arc<App>,
    options: Options,
    permits: Semaphore,
    /// Blobs an image of this run has fetched (or is fetching): others count them as cached.
    claimed: Mutex<HashSet<Digest>>,
    events: Events,
}

// === impl Events ===

impl Events {
    /// No events.
    pub fn none() -> Self {
        Self(None)
    }

    /// Events into a channel of `capacity`.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self(Some(tx)), rx)
    }

    async fn send(&self, event: Event) {
        if let Some(tx) = &self.0 {
            // A receiver that went away (a client that disconnected) stops the run from outside.
            let _ = tx.send(event).await;
        }
    }
}

// === impl Summary ===

impl Summary {
    /// Adds one image's outcome.
    pub fn add(&mut self, image: &str, stats: &ImageStats) {
        self.images += 1;
        self.manifests_fetched += stats.manifests_fetched;
        self.manifests_cached += stats.manifests_cached;
        self.blobs_fetched += stats.blobs_fetched;
        self.blobs_cached += stats.blobs_cached;
        self.bytes_fetched += stats.bytes_fetched;
        self.bytes_cached += stats.bytes_cached;
        self.pinned += u64::from(stats.pinned);
        if let Some(e) = &stats.error {
            self.failed += 1;
            self.failures.push((image.to_owned(), e.clone()));
        }
    }
}

/// Prefetches `images` into the cache of `app`; returns the totals (also sent as the last event).
pub async fn run(
    app: Arc<App>,
    images: Vec<ImageRef>,
    options: Options,
    events: Events,
) -> Summary {
    events
        .send(Event::Start {
            images: images.len(),
        })
        .await;
    let jobs = options.jobs.clamp(1, MAX_JOBS);
    let run = Arc::new(Run {
        app,
        permits: Semaphore::new(jobs),
        options: Options { jobs, ..options },
        claimed: Mutex::default(),
        events: events.clone(),
    });
    let mut summary = Summary::default();
    let mut done = futures_util::stream::iter(images)
        .map(|image| {
            let run = run.clone();
            async move { image_task(&run, image).await }
        })
        .buffered(jobs);
    while let Some(fetched) = done.next().await {
        summary.add(&fetched.image.to_string(), &fetched.stats);
    }
    events
        .send(Event::Summary {
            summary: summary.clone(),
        })
        .await;
    summary
}

/// Prefetches one image without events (for `[[sync]]` runs).
pub async fn one(app: Arc<App>, image: ImageRef, options: Options) -> Fetched {
    let jobs = options.jobs.clamp(1, MAX_JOBS);
    let run = Run {
        app,
        permits: Semaphore::new(jobs),
        options: Options { jobs, ..options },
        claimed: Mutex::default(),
        events: Events::none(),
    };
    image_task(&run, image).await
}

async fn image_task(run: &Run, image: ImageRef) -> Fetched {
    let name = image.to_string();
    let mut stats = ImageStats::default();
    if let Err(e) = fetch_image(run, &image, &name, &mut stats).await {
        stats.error = Some(e);
    } else if run.options.pin {
        match run.app.cache.pin(&image) {
            Ok(_) => stats.pinned = true,
            Err(e) => stats.error = Some(format!("cannot pin it: {e}")),
        }
    }
    run.events
        .send(Event::Done {
            image: name,
            stats: stats.clone(),
        })
        .await;
    Fetched { image, stats }
}

async fn fetch_image(
    run: &Run,
    image: &ImageRef,
    name: &str,
    stats: &mut ImageStats,
) -> Result<(), String> {
    let (blobs, referrers) = {
        let _permit = run.permits.acquire().await.map_err(|e| e.to_string())?;
        resolve(run, image, name, stats).await?
    };
    // What is cached is counted, not fetched.
    let mut missing = Vec::new();
    let mut cached_bytes = 0;
    let mut total = 0;
    for d in &blobs {
        total += d.size.unwrap_or(0);
        match stored_size(&run.app, &d.digest).await? {
            Some(size) => {
                stats.blobs_cached += 1;
                stats.bytes_cached += size;
                cached_bytes += size;
            }
            None => missing.push(d.clone()),
        }
    }
    run.events
        .send(Event::Resolved {
            image: name.to_owned(),
            digest: stats.digest.unwrap_or_else(|| Digest::from_bytes([0; 32])),
            blobs: blobs.len() as u64,
            bytes: total,
            cached_bytes,
        })
        .await;
    let results: Vec<Result<BlobOutcome, String>> = futures_util::stream::iter(missing)
        .map(|d| fetch_blob(run, image, name, d))
        .buffer_unordered(run.options.jobs)
        .collect()
        .await;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(BlobOutcome::Fetched(n)) => {
                stats.blobs_fetched += 1;
                stats.bytes_fetched += n;
            }
            Ok(BlobOutcome::Cached(n)) => {
                stats.blobs_cached += 1;
                stats.bytes_cached += n;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    // Referrers are pinned with their image, so eviction cannot take them before an export.
    if run.options.pin {
        for r in &referrers {
            run.app
                .cache
                .pin(r)
                .map_err(|e| format!("cannot pin referrer {r}: {e}"))?;
        }
    }
    Ok(())
}

/// One manifest [`resolve`] is to fetch.
struct Queued {
    reference: Reference,
    context: String,
    /// `None` for the image's own manifests; for a referrer, how many levels below the image.
    depth: Option<usize>,
}

/// Fetches the image's manifests (the root, the platform manifests an index lists that pass the
/// filter, subjects) and their referrers (see [`super::referrers`]); returns the blobs they need,
/// each once, and the references of the referrers kept.
async fn resolve(
    run: &Run,
    image: &ImageRef,
    name: &str,
    stats: &mut ImageStats,
) -> Result<(Vec<Descriptor>, Vec<ImageRef>), String> {
    let app = &run.app;
    let wanted = &run.options.referrers;
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut asked: HashSet<Reference> = HashSet::new();
    let mut found: Vec<ImageRef> = Vec::new();
    let mut queue = vec![Queued {
        reference: image.reference.clone(),
        context: String::new(),
        depth: None,
    }];
    let mut root = true;
    while let Some(Queued {
        reference,
        context,
        depth,
    }) = queue.pop()
    {
        let (manifest, status) = match manifest_of(app, image, &reference).await {
            Ok(found) => found,
            // A referrer that is not there (a scheme tag without a signature), or that cannot be
            // fetched: the image is complete without it.
            Err(e) if depth.is_some() => {
                if e.status() != StatusCode::NOT_FOUND {
                    run.events
                        .send(Event::Warning {
                            image: name.to_owned(),
                            message: format!(
                                "{context}referrer {reference} left out: {}",
                                api_error_text(&e)
                            ),
                        })
                        .await;
                }
                continue;
            }
            Err(e) => {
                let what = if root {
                    "manifest".to_owned()
                } else {
                    format!("{context}manifest {reference}")
                };
                return Err(format!("{what}: {}", api_error_text(&e)));
            }
        };
        let body = manifest.bytes();
        let digest = Digest::of(body);
        if !seen.insert(digest) {
            continue;
        }
        let refs = manifest::parse(body).map_err(|e| format!("{context}manifest {digest}: {e}"))?;
        if depth.is_some() && !wanted.wants(body, refs.is_index()) {
            continue;
        }
        match status {
            ManifestStatus::Miss => stats.manifests_fetched += 1,
            ManifestStatus::Stale => {
                stats.manifests_cached += 1;
                run.events
                    .send(Event::Warning {
                        image: name.to_owned(),
                        message: format!(
                            "the upstream could not be asked about {reference}; the cached manifest {digest} was used and may be out of date"
                        ),
                    })
                    .await;
            }
            _ => stats.manifests_cached += 1,
        }
        if root {
            stats.digest = Some(digest);
            root = false;
        }
        if depth.is_some() {
            // Recorded under its subject in this repository even when it was cached already (by
            // an older wharf, or through another repository), so export and an offline referrers
            // API find it.
            if let Some(r) = referrer::of_manifest(body) {
                app.cache
                    .index()
                    .add_referrer(
                        &image.registry,
                        &image.repo,
                        &r.subject,
                        &digest,
                        &r.descriptor,
                    )
                    .map_err(|e| format!("{context}manifest {digest}: {e}"))?;
            }
            stats.referrers += 1;
            found.push(ImageRef {
                registry: image.registry.clone(),
                repo: image.repo.clone(),
                reference: reference.clone(),
            });
        }
        for child in refs.children.iter().rev() {
            // A referrer's index (the tag schema's) lists referrers, not platforms.
            if depth.is_some()
                || EntryPlatform::passes(child.platform.as_ref(), run.options.platforms.as_deref())
            {
                let platform = EntryPlatform::describe(child.platform.as_ref());
                queue.push(Queued {
                    reference: Reference::Digest(child.digest),
                    context: format!("{platform}: "),
                    depth,
                });
            }
        }
        if let Some(subject) = &refs.subject {
            if depth.is_none() {
                queue.push(Queued {
                    reference: Reference::Digest(subject.digest),
                    context: format!("{context}subject: "),
                    depth: None,
                });
            }
        }
        for b in refs.blobs {
            if !blobs.iter().any(|have| have.digest == b.digest) {
                blobs.push(b);
            }
        }
        let below = depth.map_or(1, |d| d + 1);
        if wanted.enabled && below <= MAX_DEPTH && found.len() < MAX_REFERRERS {
            let more = referrers::upstream(app, image, &digest)
                .await
                .map_err(|e| format!("{context}referrers of {digest}: {}", api_error_text(&e)))?;
            for reference in more {
                if asked.len() < MAX_REFERRERS * 4 && asked.insert(reference.clone()) {
                    queue.push(Queued {
                        reference,
                        context: format!("{context}referrer of {digest}: "),
                        depth: Some(below),
                    });
                }
            }
        }
    }
    Ok((blobs, found))
}

/// A manifest from the cache, as a trusted client asking the mirror for it would get it: routed by
/// the image's registry, refused when the upstream's allow list does not have the repository.
async fn manifest_of(
    app: &App,
    image: &ImageRef,
    reference: &Reference,
) -> Result<(Arc<Manifest>, ManifestStatus), ApiError> {
    let route = route_to(app, image, &format!("manifests/{reference}"))?;
    let accept = || media::upstream_accept([]);
    app.manifests
        .get(
            &app.upstreams[route.upstream],
            &route.name,
            reference,
            &accept,
        )
        .await
        .map_err(|e| manifests::api_error(&e))
}

/// What a blob request found.
enum Opened {
    /// The blob is there whole: its size.
    Whole(u64),
    /// Its bytes as they arrive (verified: the stream fails rather than end on bad content).
    Stream(ByteStream),
}

/// A blob from the cache as a trusted client asking the mirror for it would get it (see
/// [`manifest_of`]), with where it came from.
async fn open_blob(
    app: &App,
    image: &ImageRef,
    digest: Digest,
) -> Result<(CacheStatus, Opened), ApiError> {
    let route = route_to(app, image, &format!("blobs/{digest}"))?;
    if let Some(bytes) = app.hot_blobs.get(&digest) {
        app.cache.touch(digest);
        return Ok((CacheStatus::Hit, Opened::Whole(bytes.len() as u64)));
    }
    let upstream = &app.upstreams[route.upstream];
    let source = app
        .cache
        .blob(upstream, &route.name, digest)
        .await
        .map_err(|e| ApiError::from_fill(&e, Area::Blob))?;
    Ok(match source {
        BlobSource::Hit(blob) => (CacheStatus::Hit, Opened::Whole(blob.size())),
        BlobSource::Fill { fill, leader } => {
            let size = fill
                .started()
                .await
                .map_err(|e| ApiError::from_fill(&e, Area::Blob))?;
            let status = crate::server::blobs::fill_status(&fill, leader);
            (status, Opened::Stream(fill.follow(0, size)))
        }
        BlobSource::Bypass => {
            let bypass = app
                .cache
                .bypass(upstream, &route.name, digest)
                .await
                .map_err(|e| ApiError::from_upstream(&e, Area::Blob))?;
            let size = bypass.size();
            (CacheStatus::Bypass, Opened::Stream(bypass.stream(0, size)))
        }
    })
}

/// The route a client's request for `what` (`manifests/<reference>`, `blobs/<digest>`) in the
/// image's repository would take, named by its registry; refused as the mirror would refuse it
/// when the upstream's allow list does not have the repository.
pub(super) fn route_to(app: &App, image: &ImageRef, what: &str) -> Result<route::Route, ApiError> {
    let request = api_path(image, what);
    let (path, query) = request.split_once('?').unwrap_or((&request, ""));
    let route = match route::parse(&Method::GET, path, Some(query), &app.registries) {
        Ok(Parsed::Api(route)) => route,
        Ok(Parsed::Base) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NameUnknown,
                "not a repository",
            ))
        }
        Err(e) => return Err(ApiError::from(e)),
    };
    if !app.access.allows(route.upstream, route.name.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!(
                "repository {} is not allowed on this mirror",
                route.client_name
            ),
        ));
    }
    Ok(route)
}

/// An error as [`error_text`] reads it from the response it would make.
fn api_error_text(e: &ApiError) -> String {
    if e.message().is_empty() {
        format!("{} ({})", e.code().as_str(), e.status())
    } else {
        format!("{} ({})", e.message(), e.code().as_str())
    }
}

/// The size of a blob the cache has intact (checking the file, repairing the index if it is gone).
async fn stored_size(app: &App, digest: &Digest) -> Result<Option<u64>, String> {
    if app
        .cache
        .index()
        .blob_size(digest)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Ok(None);
    }
    Ok(app
        .cache
        .committed(digest)
        .await
        .map_err(|e| e.to_string())?
        .map(|b| b.size()))
}

enum BlobOutcome {
    /// Downloaded from the upstream: its bytes.
    Fetched(u64),
    /// Already there (or fetched by another image of this run): its bytes.
    Cached(u64),
}

async fn fetch_blob(
    run: &Run,
    image: &ImageRef,
    name: &str,
    d: Descriptor,
) -> Result<BlobOutcome, String> {
    let _permit = run.permits.acquire().await.map_err(|e| e.to_string())?;
    let app = &run.app;
    let digest = d.digest;
    let what = format!("{} {digest}", d.field);
    let first = run.claimed.lock().insert(digest);
    if let Some(size) = stored_size(app, &digest).await? {
        return Ok(BlobOutcome::Cached(size));
    }
    let (source, stream) = match open_blob(app, image, digest).await {
        Ok(opened) => opened,
        Err(e) => return Err(format!("{what}: {}", api_error_text(&e))),
    };
    let mut received = 0u64;
    let mut unreported = 0u64;
    let mut chunks = match stream {
        Opened::Whole(size) => {
            // In memory or on disk already: nothing to download.
            received = size;
            unreported = size;
            None
        }
        Opened::Stream(chunks) => Some(chunks),
    };
    while let Some(chunk) = match chunks.as_mut() {
        Some(chunks) => chunks.next().await,
        None => None,
    } {
        let data = chunk.map_err(|e| format!("{what}: the download broke off: {e}"))?;
        received += data.len() as u64;
        unreported += data.len() as u64;
        if unreported >= PROGRESS_STEP {
            run.events
                .send(Event::Progress {
                    image: name.to_owned(),
                    bytes: unreported,
                })
                .await;
            unreported = 0;
        }
    }
    if unreported > 0 {
        run.events
            .send(Event::Progress {
                image: name.to_owned(),
                bytes: unreported,
            })
            .await;
    }
    if source == CacheStatus::Bypass {
        return Err(format!(
            "{what}: downloaded but not cached: caching is paused after a storage failure or with free space at storage.min_free (see the log)"
        ));
    }
    // Verified once the last byte arrived; committed (fsync, rename, index) just after.
    if let Some(fill) = app.cache.inflight().get_from(&image.registry, &digest) {
        fill.ended().await;
    }
    if stored_size(app, &digest).await?.is_none() {
        return Err(format!(
            "{what}: downloaded and verified but not stored: the storage failed (see the log)"
        ));
    }
    Ok(match source {
        CacheStatus::Miss | CacheStatus::Coalesced if first => BlobOutcome::Fetched(received),
        _ => BlobOutcome::Cached(received),
    })
}

/// `/v2/<repo>/<what>?ns=<registry>`: the request a containerd mirror would send, which names the
/// upstream unambiguously.
pub fn api_path(image: &ImageRef, what: &str) -> String {
    format!("/v2/{}/{what}?ns={}", image.repo, image.registry)
}

/// An OCI error response as one line: its message (the code when there is none).
pub fn error_text(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<(String, String)> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some((
                e.get("code")?.as_str()?.to_owned(),
                e.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_owned(),
            ))
        });
    match parsed {
        Some((code, message)) if !message.is_empty() => format!("{message} ({code})"),
        Some((code, _)) => format!("{code} ({status})"),
        None => format!("answered {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"not found at upstream u"}]}"#;
        assert_eq!(
            error_text(StatusCode::NOT_FOUND, body),
            "not found at upstream u (MANIFEST_UNKNOWN)"
        );
        assert_eq!(
            error_text(StatusCode::NOT_FOUND, br#"{"errors":[{"code":"X"}]}"#),
            "X (404 Not Found)"
        );
        assert_eq!(
            error_text(StatusCode::BAD_GATEWAY, b"junk"),
            "answered 502 Bad Gateway"
        );
    }

    #[test]
    fn events_are_one_json_object_each() {
        let e = Event::Progress {
            image: "a/b:1".into(),
            bytes: 5,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(line, r#"{"event":"progress","image":"a/b:1","bytes":5}"#);
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
        let image: ImageRef = "r.io/a/b:1".parse().unwrap();
        assert_eq!(
            api_path(&image, "manifests/1"),
            "/v2/a/b/manifests/1?ns=r.io"
        );
    }
}
