//! What the mirror has been doing, kept in memory for the status page (`crate::status`): pull
//! counts over the last hour and day, the most pulled repositories and images, the last failed
//! requests and the last run of each `[[sync]]` entry. It lives with the [`crate::metrics::Metrics`]
//! (one per process, kept across configuration reloads) and sits at the bottom of the crate: the
//! request log and the sync tasks record into it, `status` reads it, and it names nothing above
//! [`crate::oci`].
//!
//! Recording is cheap on the hot path: a manifest or blob `GET` adds to the totals and to the
//! current step of two rings with relaxed atomics (no lock, no allocation), then adds its bytes to
//! the current hour's top lists under one short [`parking_lot::Mutex`], where a name already
//! listed costs a hash and a map lookup (a name is allocated once per hour, when first seen).
//! Manifest bodies are read only on manifest `GET`s, and only when the manifest's owner changed
//! ([`Activity::manifest_served`]); blob requests never read anything but the digest map.
//!
//! Everything is bounded:
//! - rings: [`HOUR_POINTS`] steps of [`HOUR_STEP`] s and [`DAY_POINTS`] of [`DAY_STEP`] s, each
//!   step four counters (about 8 KiB in all);
//! - top lists: [`TOP_BUCKETS`] hourly buckets, each with at most [`MAX_NAMES`] repositories and
//!   as many images; pulls of names past the cap are counted under `(other)`;
//! - the digest -> image map (which image's manifest named a blob or platform manifest last): at
//!   most [`MAX_DIGESTS`] digests, the oldest named forgotten first (a blob whose image is
//!   forgotten still counts for its repository);
//! - the last [`MAX_ERRORS`] failed requests (paths cut to [`MAX_PATH`] bytes, messages to
//!   [`MAX_MESSAGE`]);
//! - per `[[sync]]` entry, its last run with at most [`MAX_CHANGED`] changed tags.
//!
//! Measured (resident memory, glibc malloc): about 12 MiB with every cap reached, about 5 MiB for
//! 200 repositories pulled every hour of a day with 2,000 digests named (README "Status page").
//!
//! A step boundary is crossed by the first request after it, which resets the bucket it reuses; a
//! request counted by another thread in that same instant may be lost to the charts (never to the
//! totals). Names are keyed by a 64-bit hash of their parts, so two names that collide (about one
//! chance in 10^15 with a thousand names) would share a line.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::oci::Digest;

/// Seconds per point of the hour chart.
pub const HOUR_STEP: u64 = 60;
/// Points of the hour chart.
pub const HOUR_POINTS: usize = 60;
/// Seconds per point of the day chart.
pub const DAY_STEP: u64 = 600;
/// Points of the day chart.
pub const DAY_POINTS: usize = 144;
/// Seconds per bucket of the top lists.
pub const TOP_STEP: u64 = 3600;
/// Buckets of the top lists (a day).
pub const TOP_BUCKETS: usize = 24;
/// Names per list and bucket; pulls of more names count under [`OTHER`].
pub const MAX_NAMES: usize = 500;
/// Digests whose image is remembered.
pub const MAX_DIGESTS: usize = 20_000;
/// Failed requests remembered.
pub const MAX_ERRORS: usize = 50;
/// Bytes of a failed request's path kept.
pub const MAX_PATH: usize = 512;
/// Bytes of a failed request's message kept.
pub const MAX_MESSAGE: usize = 512;
/// Changed tags kept per sync run.
pub const MAX_CHANGED: usize = 20;
/// Lines of each top list in a report.
pub const TOP_LINES: usize = 10;
/// The name under which pulls past [`MAX_NAMES`] are counted.
pub const OTHER: &str = "(other)";

/// Pull counts; see `crate::status::report::Counts` for what a hit and a miss are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests whose body came from an upstream.
    pub misses: u64,
    /// Their body bytes, from the cache.
    pub hit_bytes: u64,
    /// Their body bytes, from an upstream.
    pub miss_bytes: u64,
}

/// A chart of [`Counts`]: `points` oldest first, the last the step in progress, which ends at
/// `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Seconds per point.
    pub step: u64,
    /// The end of the last point.
    pub end: u64,
    /// Oldest first.
    pub points: Vec<Counts>,
}

/// A line of a top list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// `upstream/name` or `upstream/name:tag`, or [`OTHER`].
    pub name: Arc<str>,
    /// Manifest pulls.
    pub pulls: u64,
    /// Body bytes served.
    pub bytes: u64,
}

/// The top lists over the last day, [`TOP_LINES`] each, largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopLists {
    /// Repositories by manifest pulls.
    pub repositories_by_pulls: Vec<Tally>,
    /// Repositories by bytes.
    pub repositories_by_bytes: Vec<Tally>,
    /// Images by pulls of their tag.
    pub images_by_pulls: Vec<Tally>,
    /// Images by bytes.
    pub images_by_bytes: Vec<Tally>,
}

/// What a pull asked for, as the request log knows it.
#[derive(Debug, Clone, Copy)]
pub struct Pull<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// The repository at the upstream.
    pub repository: &'a str,
    /// A manifest or a blob.
    pub what: Pulled<'a>,
}

/// The object of a [`Pull`].
#[derive(Debug, Clone, Copy)]
pub enum Pulled<'a> {
    /// A manifest by tag: a pull of the image `upstream/repository:tag`.
    Tag(&'a str),
    /// A manifest by digest.
    Manifest(&'a Digest),
    /// A blob.
    Blob(&'a Digest),
}

/// A failed request, as the request log saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    /// When it was answered (Unix seconds).
    pub at: u64,
    /// Its request id.
    pub request_id: String,
    /// Its method.
    pub method: &'static str,
    /// Its path, without the query.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// The OCI error code sent.
    pub code: Option<&'static str>,
    /// The message the client was sent.
    pub message: String,
}

/// A `[[sync]]` entry and its last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEntry {
    /// Its `images`.
    pub images: Vec<String>,
    /// Seconds between runs.
    pub interval: u64,
    /// The last run that finished.
    pub last_run: Option<SyncRun>,
}

/// One finished sync run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncRun {
    /// When it began (Unix seconds).
    pub started: u64,
    /// How long it took.
    pub millis: u64,
    /// Images synced.
    pub images: u64,
    /// Tags that moved, `image: old -> new`, at most [`MAX_CHANGED`].
    pub changed: Vec<String>,
    /// Images that failed.
    pub failed: u64,
    /// Blobs fetched.
    pub blobs_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
}

/// The activity of one wharf process.
pub struct Activity {
    started: u64,
    total: Cells,
    hour: Ring,
    day: Ring,
    top: Mutex<Top>,
    errors: Mutex<VecDeque<FailedRequest>>,
    sync: Mutex<Vec<SyncEntry>>,
}

/// Four counters.
#[derive(Default)]
struct Cells {
    hits: AtomicU64,
    misses: AtomicU64,
    hit_bytes: AtomicU64,
    miss_bytes: AtomicU64,
}

/// A ring of steps, each keyed by its step number (`unix seconds / step`).
struct Ring {
    step: u64,
    buckets: Box<[Bucket]>,
}

#[derive(Default)]
struct Bucket {
    /// The step number the cells count; 0 for none (the epoch's first step is never current).
    step: AtomicU64,
    cells: Cells,
}

/// The top lists' buckets and the digest -> image map.
struct Top {
    buckets: Vec<TopBucket>,
    owners: HashMap<Digest, Owner>,
    /// Digests in `owners`, oldest named first.
    order: VecDeque<Digest>,
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

#[derive(Default)]
struct TopBucket {
    /// The hour it counts (`unix seconds / TOP_STEP`).
    hour: u64,
    repositories: Names,
    images: Names,
}

/// Tallies by name hash, at most [`MAX_NAMES`], and what did not fit.
#[derive(Default)]
struct Names {
    map: HashMap<u64, Tally>,
    other: (u64, u64),
}

/// The image whose manifest named a digest last.
struct Owner {
    hash: u64,
    name: Arc<str>,
    /// Whether the digest's own references (a platform manifest's blobs) were given this owner.
    expanded: bool,
}

/// The current time, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl Activity ===

impl Activity {
    /// Empty, started now.
    pub fn new() -> Self {
        Self::started_at(unix_now())
    }

    /// Empty, started at `started` (Unix seconds).
    pub fn started_at(started: u64) -> Self {
        Self {
            started,
            total: Cells::default(),
            hour: Ring::new(HOUR_STEP, HOUR_POINTS),
            day: Ring::new(DAY_STEP, DAY_POINTS),
            top: Mutex::new(Top::new()),
            errors: Mutex::new(VecDeque::with_capacity(MAX_ERRORS)),
            sync: Mutex::new(Vec::new()),
        }
    }

    /// When this process started.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Counts a manifest or blob `GET` answered at `now`: from the cache (`hit`) or an upstream,
    /// with `bytes` of body sent. Lock-free.
    pub fn count(&self, now: u64, hit: bool, bytes: u64) {
        self.total.add(hit, bytes);
        self.hour.record(now, hit, bytes);
        self.day.record(now, hit, bytes);
    }

    /// Adds a pull to the top lists of the hour of `now`: a manifest pull counts for its
    /// repository (and, by tag, for its image), and `bytes` count for the repository and for the
    /// image that named the digest last.
    pub fn pulled(&self, now: u64, pull: &Pull<'_>, bytes: u64) {
        let mut top = self.top.lock();
        let repository = top.hash(&(pull.upstream, pull.repository));
        let image = match pull.what {
            Pulled::Tag(tag) => Some((top.hash(&(pull.upstream, pull.repository, tag)), None)),
            Pulled::Manifest(digest) | Pulled::Blob(digest) => top
                .owners
                .get(digest)
                .map(|o| (o.hash, Some(o.name.clone()))),
        };
        let pulls = u64::from(!matches!(pull.what, Pulled::Blob(_)));
        let bucket = top.bucket(now);
        bucket.repositories.add(repository, pulls, bytes, || {
            format!("{}/{}", pull.upstream, pull.repository).into()
        });
        if let Some((hash, name)) = image {
            let tag_pulls = u64::from(matches!(pull.what, Pulled::Tag(_)));
            bucket
                .images
                .add(hash, tag_pulls, bytes, || match (name, pull.what) {
                    (Some(name), _) => name,
                    (None, Pulled::Tag(tag)) => {
                        format!("{}/{}:{tag}", pull.upstream, pull.repository).into()
                    }
                    (None, _) => OTHER.into(),
                });
        }
    }

    /// Remembers which image a manifest served by `GET` belongs to, and that what it names (an
    /// index's platform manifests, a manifest's config and layers) belongs to the same image: by
    /// `tag`, the image `upstream/repository:tag`; by digest, the image that named `digest` last,
    /// if any. `body` is parsed only when the manifest's owner changed.
    pub fn manifest_served(
        &self,
        upstream: &str,
        repository: &str,
        tag: Option<&str>,
        digest: &Digest,
        body: &[u8],
    ) {
        let owner = {
            let top = self.top.lock();
            let (hash, name) = match tag {
                Some(tag) => (top.hash(&(upstream, repository, tag)), None),
                None => match top.owners.get(digest) {
                    Some(o) => (o.hash, Some(o.name.clone())),
                    None => return,
                },
            };
            if top
                .owners
                .get(digest)
                .is_some_and(|o| o.hash == hash && o.expanded)
            {
                return;
            }
            (hash, name)
        };
        let (hash, name) = owner;
        let name =
            name.unwrap_or_else(|| format!("{upstream}/{repository}:{}", tag.unwrap_or("")).into());
        // Parsed outside the lock: a manifest may be large.
        let named = crate::oci::media::referenced_digests(body);
        let mut top = self.top.lock();
        top.own(*digest, hash, &name, true);
        for child in named {
            top.own(child, hash, &name, false);
        }
    }

    /// The totals since start.
    pub fn total(&self) -> Counts {
        self.total.load()
    }

    /// The hour chart as of `now`.
    pub fn hour(&self, now: u64) -> Series {
        self.hour.series(now)
    }

    /// The day chart as of `now`.
    pub fn day(&self, now: u64) -> Series {
        self.day.series(now)
    }

    /// The top lists over the [`TOP_BUCKETS`] hours up to `now`.
    pub fn top(&self, now: u64) -> TopLists {
        let top = self.top.lock();
        let current = now / TOP_STEP;
        let live = |b: &&TopBucket| b.hour + TOP_BUCKETS as u64 > current && b.hour <= current;
        let merge = |pick: fn(&TopBucket) -> &Names| {
            let mut all: HashMap<u64, Tally> = HashMap::new();
            let mut other = (0, 0);
            for bucket in top.buckets.iter().filter(live) {
                let names = pick(bucket);
                for (hash, t) in &names.map {
                    let e = all.entry(*hash).or_insert_with(|| Tally {
                        name: t.name.clone(),
                        pulls: 0,
                        bytes: 0,
                    });
                    e.pulls += t.pulls;
                    e.bytes += t.bytes;
                }
                other.0 += names.other.0;
                other.1 += names.other.1;
            }
            let mut list: Vec<Tally> = all.into_values().collect();
            if other != (0, 0) {
                list.push(Tally {
                    name: OTHER.into(),
                    pulls: other.0,
                    bytes: other.1,
                });
            }
            list
        };
        let ranked = |list: &[Tally], key: fn(&Tally) -> u64| {
            let mut list: Vec<Tally> = list.iter().filter(|t| key(t) > 0).cloned().collect();
            list.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
            list.truncate(TOP_LINES);
            list
        };
        let repositories = merge(|b| &b.repositories);
        let images = merge(|b| &b.images);
        TopLists {
            repositories_by_pulls: ranked(&repositories, |t| t.pulls),
            repositories_by_bytes: ranked(&repositories, |t| t.bytes),
            images_by_pulls: ranked(&images, |t| t.pulls),
            images_by_bytes: ranked(&images, |t| t.bytes),
        }
    }

    /// Remembers a failed request (the oldest of [`MAX_ERRORS`] is forgotten).
    pub fn failed(&self, mut request: FailedRequest) {
        truncate(&mut request.path, MAX_PATH);
        truncate(&mut request.message, MAX_MESSAGE);
        let mut errors = self.errors.lock();
        if errors.len() == MAX_ERRORS {
            errors.pop_front();
        }
        errors.push_back(request);
    }

    /// The failed requests remembered, newest first.
    pub fn errors(&self) -> Vec<FailedRequest> {
        self.errors.lock().iter().rev().cloned().collect()
    }

    /// The `[[sync]]` entries in use: `(images, interval)` each, in order. An entry that is the
    /// same as before at the same place keeps its last run.
    pub fn set_sync(&self, entries: Vec<(Vec<String>, u64)>) {
        let mut sync = self.sync.lock();
        let old = std::mem::take(&mut *sync);
        *sync = entries
            .into_iter()
            .enumerate()
            .map(|(n, (images, interval))| {
                let last_run = old
                    .get(n)
                    .filter(|o| o.images == images && o.interval == interval)
                    .and_then(|o| o.last_run.clone());
                SyncEntry {
                    images,
                    interval,
                    last_run,
                }
            })
            .collect();
    }

    /// Records the run of entry `n` that just finished.
    pub fn sync_ran(&self, n: usize, mut run: SyncRun) {
        run.changed.truncate(MAX_CHANGED);
        if let Some(entry) = self.sync.lock().get_mut(n) {
            entry.last_run = Some(run);
        }
    }

    /// The `[[sync]]` entries and their last runs.
    pub fn sync(&self) -> Vec<SyncEntry> {
        self.sync.lock().clone()
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

// === impl Cells ===

impl Cells {
    fn add(&self, hit: bool, bytes: u64) {
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.hit_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.miss_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn load(&self) -> Counts {
        Counts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            hit_bytes: self.hit_bytes.load(Ordering::Relaxed),
            miss_bytes: self.miss_bytes.load(Ordering::Relaxed),
        }
    }

    fn clear(&self) {
        for cell in [&self.hits, &self.misses, &self.hit_bytes, &self.miss_bytes] {
            cell.store(0, Ordering::Relaxed);
        }
    }
}

// === impl Ring ===

impl Ring {
    fn new(step: u64, len: usize) -> Self {
        Self {
            step,
            buckets: (0..len).map(|_| Bucket::default()).collect(),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn bucket(&self, step: u64) -> &Bucket {
        // The index is below the ring's length, which is a usize.
        #[allow(clippy::cast_possible_truncation)]
        &self.buckets[(step % self.len()) as usize]
    }

    fn record(&self, now: u64, hit: bool, bytes: u64) {
        let step = now / self.step;
        let bucket = self.bucket(step);
        let seen = bucket.step.load(Ordering::Acquire);
        if seen != step {
            // A step older than the bucket's (the clock went back) is not charted.
            if seen > step {
                return;
            }
            // The first to see the new step resets the bucket; the others just add.
            if bucket
                .step
                .compare_exchange(seen, step, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                bucket.cells.clear();
            }
        }
        bucket.cells.add(hit, bytes);
    }

    fn series(&self, now: u64) -> Series {
        let current = now / self.step;
        let points = (0..self.len())
            .map(|i| {
                let back = self.len() - 1 - i;
                let Some(step) = current.checked_sub(back) else {
                    return Counts::default();
                };
                let bucket = self.bucket(step);
                if bucket.step.load(Ordering::Acquire) == step {
                    bucket.cells.load()
                } else {
                    Counts::default()
                }
            })
            .collect();
        Series {
            step: self.step,
            end: (current + 1) * self.step,
            points,
        }
    }
}

// === impl Top ===

impl Top {
    fn new() -> Self {
        Self {
            buckets: (0..TOP_BUCKETS).map(|_| TopBucket::default()).collect(),
            owners: HashMap::new(),
            order: VecDeque::new(),
            hasher: std::hash::BuildHasherDefault::default(),
        }
    }

    fn hash(&self, parts: &impl Hash) -> u64 {
        self.hasher.hash_one(parts)
    }

    /// The bucket of the hour of `now`, emptied first when it held an older hour.
    fn bucket(&mut self, now: u64) -> &mut TopBucket {
        let hour = now / TOP_STEP;
        // Below TOP_BUCKETS, which is a usize.
        #[allow(clippy::cast_possible_truncation)]
        let bucket = &mut self.buckets[(hour % TOP_BUCKETS as u64) as usize];
        if bucket.hour != hour {
            bucket.hour = hour;
            bucket.repositories.clear();
            bucket.images.clear();
        }
        bucket
    }

    /// Makes `hash` (`name`) the owner of `digest`.
    fn own(&mut self, digest: Digest, hash: u64, name: &Arc<str>, expanded: bool) {
        if let Some(owner) = self.owners.get_mut(&digest) {
            if owner.hash != hash {
                owner.hash = hash;
                owner.name = name.clone();
                owner.expanded = expanded;
            } else {
                owner.expanded |= expanded;
            }
            return;
        }
        if self.owners.len() >= MAX_DIGESTS {
            if let Some(oldest) = self.order.pop_front() {
                self.owners.remove(&oldest);
            }
        }
        self.owners.insert(
            digest,
            Owner {
                hash,
                name: name.clone(),
                expanded,
            },
        );
        self.order.push_back(digest);
    }
}

// === impl Names ===

impl Names {
    fn add(&mut self, hash: u64, pulls: u64, bytes: u64, name: impl FnOnce() -> Arc<str>) {
        if let Some(t) = self.map.get_mut(&hash) {
            t.pulls += pulls;
            t.bytes += bytes;
        } else if self.map.len() < MAX_NAMES {
            self.map.insert(
                hash,
                Tally {
                    name: name(),
                    pulls,
                    bytes,
                },
            );
        } else {
            self.other.0 += pulls;
            self.other.1 += bytes;
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.other = (0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(a: &Activity, now: u64, bytes: u64) {
        a.count(now, true, bytes);
    }

    #[test]
    fn the_current_step_counts_and_rolls_over() {
        let a = Activity::started_at(0);
        let t = 1_000_000 * 60; // the start of a minute
        hit(&a, t, 10);
        a.count(t + 59, false, 5);
        let s = a.hour(t + 59);
        assert_eq!(s.step, 60);
        assert_eq!(s.end, t + 60);
        assert_eq!(s.points.len(), HOUR_POINTS);
        assert_eq!(
            s.points[HOUR_POINTS - 1],
            Counts {
                hits: 1,
                misses: 1,
                hit_bytes: 10,
                miss_bytes: 5
            }
        );
        // The next minute: a new point, the old one moves left.
        hit(&a, t + 60, 1);
        let s = a.hour(t + 60);
        assert_eq!(s.points[HOUR_POINTS - 1].hits, 1);
        assert_eq!(s.points[HOUR_POINTS - 1].hit_bytes, 1);
        assert_eq!(s.points[HOUR_POINTS - 2].hits, 1);
        assert_eq!(s.points[HOUR_POINTS - 2].misses, 1);
        assert_eq!(
            a.total(),
            Counts {
                hits: 2,
                misses: 1,
                hit_bytes: 11,
                miss_bytes: 5
            }
        );
        // The day chart has both in one ten-minute point.
        let d = a.day(t + 60);
        assert_eq!(d.points.len(), DAY_POINTS);
        let sum: u64 = d.points.iter().map(|p| p.hits + p.misses).sum();
        assert_eq!(sum, 3);
    }

    #[test]
    fn a_step_an_hour_old_is_gone_and_its_bucket_reused() {
        let a = Activity::started_at(0);
        let t = 2_000_000 * 60;
        hit(&a, t, 7);
        // 59 minutes later the point is the oldest one.
        assert_eq!(a.hour(t + 59 * 60).points[0].hits, 1);
        // An hour later it is off the chart, although nothing reset its bucket yet.
        let s = a.hour(t + 3600);
        assert!(s.points.iter().all(|p| *p == Counts::default()), "{s:?}");
        // The same bucket, an hour on: it starts from zero.
        hit(&a, t + 3600, 3);
        let s = a.hour(t + 3600);
        assert_eq!(s.points[HOUR_POINTS - 1].hits, 1);
        assert_eq!(s.points[HOUR_POINTS - 1].hit_bytes, 3);
        assert_eq!(s.points.iter().map(|p| p.hits).sum::<u64>(), 1);
        // A request stamped before the bucket's step (the clock went back) is not charted.
        hit(&a, t, 1);
        assert_eq!(a.hour(t + 3600).points[HOUR_POINTS - 1].hits, 1);
        assert_eq!(a.total().hits, 3);
    }

    #[test]
    fn a_chart_before_time_starts_is_zeros() {
        let a = Activity::started_at(0);
        hit(&a, 61, 1);
        let s = a.hour(61);
        assert_eq!(s.points.len(), HOUR_POINTS);
        assert_eq!(s.points[HOUR_POINTS - 1].hits, 1);
    }

    fn pull<'a>(repository: &'a str, what: Pulled<'a>) -> Pull<'a> {
        Pull {
            upstream: "hub",
            repository,
            what,
        }
    }

    #[test]
    fn top_lists_count_manifests_as_pulls_and_blobs_for_the_image_that_named_them() {
        let a = Activity::started_at(0);
        let now = 10 * TOP_STEP;
        let layer = Digest::of(b"layer");
        let config = Digest::of(b"config");
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{config}","size":6}},"layers":[{{"digest":"{layer}","size":5}}]}}"#
        );
        let manifest = Digest::of(body.as_bytes());
        a.manifest_served("hub", "library/app", Some("1"), &manifest, body.as_bytes());
        a.pulled(now, &pull("library/app", Pulled::Tag("1")), 100);
        a.pulled(now, &pull("library/app", Pulled::Blob(&config)), 6);
        a.pulled(now, &pull("library/app", Pulled::Blob(&layer)), 5);
        // The same layer named by another image's manifest last: it counts for that one now.
        let body2 = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{config}","size":6}},"layers":[{{"digest":"{layer}","size":5}}]}}"#
        )
        .replace("schemaVersion\":2", "schemaVersion\":2,\"x\":1");
        let manifest2 = Digest::of(body2.as_bytes());
        a.manifest_served(
            "hub",
            "library/app",
            Some("2"),
            &manifest2,
            body2.as_bytes(),
        );
        a.pulled(now, &pull("library/app", Pulled::Tag("2")), 50);
        a.pulled(now, &pull("library/app", Pulled::Blob(&layer)), 5);
        a.pulled(now, &pull("library/other", Pulled::Tag("x")), 1);
        let top = a.top(now);
        let line = |name: &str, pulls, bytes| Tally {
            name: name.into(),
            pulls,
            bytes,
        };
        assert_eq!(
            top.repositories_by_pulls,
            vec![
                line("hub/library/app", 2, 166),
                line("hub/library/other", 1, 1)
            ]
        );
        assert_eq!(
            top.images_by_bytes,
            vec![
                line("hub/library/app:1", 1, 111),
                line("hub/library/app:2", 1, 55),
                line("hub/library/other:x", 1, 1),
            ]
        );
        assert_eq!(top.images_by_pulls.len(), 3);
        // A day later it is all gone.
        assert_eq!(a.top(now + 24 * TOP_STEP), TopLists::default());
        // 23 hours later it still counts.
        assert_eq!(a.top(now + 23 * TOP_STEP).repositories_by_pulls.len(), 2);
    }

    #[test]
    fn a_platform_manifest_belongs_to_the_tag_whose_index_named_it() {
        let a = Activity::started_at(0);
        let layer = Digest::of(b"layer");
        let child = format!(r#"{{"schemaVersion":2,"layers":[{{"digest":"{layer}","size":5}}]}}"#);
        let child_digest = Digest::of(child.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{child_digest}","size":9}}]}}"#
        );
        let index_digest = Digest::of(index.as_bytes());
        a.manifest_served("hub", "app", Some("v1"), &index_digest, index.as_bytes());
        a.manifest_served("hub", "app", None, &child_digest, child.as_bytes());
        a.pulled(0, &pull("app", Pulled::Tag("v1")), 1);
        a.pulled(0, &pull("app", Pulled::Manifest(&child_digest)), 2);
        a.pulled(0, &pull("app", Pulled::Blob(&layer)), 4);
        let top = a.top(0);
        assert_eq!(
            top.images_by_bytes,
            vec![Tally {
                name: "hub/app:v1".into(),
                pulls: 1,
                bytes: 7
            }]
        );
        // The repository counts both manifests as pulls.
        assert_eq!(top.repositories_by_pulls[0].pulls, 2);
    }

    #[test]
    fn names_past_the_cap_count_as_other_and_digests_past_the_cap_are_forgotten() {
        let a = Activity::started_at(0);
        for n in 0..MAX_NAMES + 5 {
            a.pulled(0, &pull(&format!("r{n}"), Pulled::Tag("t")), 1);
        }
        let top = a.top(0);
        let other = top
            .repositories_by_bytes
            .iter()
            .find(|t| &*t.name == OTHER)
            .expect("(other) is listed: it has the most bytes");
        assert_eq!((other.pulls, other.bytes), (5, 5));
        assert_eq!(top.repositories_by_bytes.len(), TOP_LINES);
        {
            let t = a.top.lock();
            assert_eq!(t.buckets[0].repositories.map.len(), MAX_NAMES);
        }
        for n in 0..MAX_DIGESTS + 10 {
            let d = Digest::of(&n.to_le_bytes());
            a.manifest_served("hub", "app", Some("t"), &d, b"{}");
        }
        let t = a.top.lock();
        assert_eq!(t.owners.len(), MAX_DIGESTS);
        assert_eq!(t.order.len(), MAX_DIGESTS);
        assert!(!t.owners.contains_key(&Digest::of(&0usize.to_le_bytes())));
    }

    #[test]
    fn errors_keep_the_last_fifty_newest_first_and_cut_long_fields() {
        let a = Activity::started_at(0);
        for n in 0..MAX_ERRORS + 3 {
            a.failed(FailedRequest {
                at: n as u64,
                request_id: format!("id{n}"),
                method: "GET",
                path: "/v2/x".repeat(200),
                status: 502,
                code: Some("UNAVAILABLE"),
                message: "é".repeat(400),
            });
        }
        let errors = a.errors();
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors[0].request_id, format!("id{}", MAX_ERRORS + 2));
        assert_eq!(errors[MAX_ERRORS - 1].request_id, "id3");
        assert!(errors[0].path.len() <= MAX_PATH);
        assert!(errors[0].message.len() <= MAX_MESSAGE);
    }

    #[test]
    fn sync_runs_are_kept_for_unchanged_entries() {
        let a = Activity::started_at(0);
        a.set_sync(vec![(vec!["a".into()], 60), (vec!["b".into()], 60)]);
        a.sync_ran(
            0,
            SyncRun {
                changed: (0..30).map(|n| n.to_string()).collect(),
                ..SyncRun::default()
            },
        );
        a.sync_ran(1, SyncRun::default());
        a.sync_ran(7, SyncRun::default());
        assert_eq!(
            a.sync()[0].last_run.as_ref().map(|r| r.changed.len()),
            Some(MAX_CHANGED)
        );
        a.set_sync(vec![(vec!["a".into()], 60), (vec!["c".into()], 60)]);
        let sync = a.sync();
        assert!(sync[0].last_run.is_some());
        assert!(sync[1].last_run.is_none());
    }
}
