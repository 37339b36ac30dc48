//! The document `/status.json` serves, `/status` renders and `wharf status` prints: what the
//! mirror holds, what it saves, how its upstreams are, what it is fetching, what pulls it serves and
//! what went wrong lately. Times are Unix seconds (UTC); sizes are bytes.
//!
//! Adding a field is compatible; renaming or removing one is not (scripts read this document).

use serde::{Deserialize, Serialize};

/// Everything the status page shows, as of `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// wharf's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// When the report was made.
    pub now: u64,
    /// When this wharf started.
    pub started: u64,
    /// The storage and its budget.
    pub cache: CacheStatus,
    /// What the cache saved: totals since start and charts.
    pub value: ValueStatus,
    /// Each configured upstream, in configuration order.
    pub upstreams: Vec<UpstreamStatus>,
    /// Blob downloads running now, oldest first.
    pub fills: Vec<FillStatus>,
    /// The most pulled repositories and images over the last day.
    pub top: TopStatus,
    /// Pinned images.
    pub pins: Vec<PinStatus>,
    /// `[[sync]]` entries, in configuration order.
    pub sync: Vec<SyncStatus>,
    /// The most recent failed requests (at most 50), newest first.
    pub errors: Vec<ErrorStatus>,
}

/// The storage against its budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheStatus {
    /// Bytes of blobs and manifests stored.
    pub bytes: u64,
    /// Blobs and manifests stored.
    pub entries: u64,
    /// `storage.max_size`, when set.
    pub max_bytes: Option<u64>,
    /// Where eviction starts (`storage.high_watermark` of `max_size`), when a budget is set.
    pub high_watermark_bytes: Option<u64>,
    /// Where eviction stops (`storage.low_watermark` of `max_size`), when a budget is set.
    pub low_watermark_bytes: Option<u64>,
    /// Bytes held by pins (never evicted).
    pub pinned_bytes: u64,
    /// Entries evicted since start.
    pub evictions: u64,
    /// Their bytes.
    pub evicted_bytes: u64,
    /// Free space on the storage's filesystem, when it has one.
    pub free_bytes: Option<u64>,
    /// True while caching is paused (storage failure or free space at `storage.min_free`).
    pub paused: bool,
}

/// What the cache saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueStatus {
    /// Since start.
    pub total: Counts,
    /// The last hour, one point a minute.
    pub hour: Series,
    /// The last day, one point every ten minutes.
    pub day: Series,
}

/// Pull counts over some time. A hit is a request served from this wharf's storage (`X-Cache: hit`,
/// `revalidated` or `stale`); a miss one whose body came from an upstream (`miss`, `coalesced`,
/// `bypass`). Only manifest and blob `GET`s count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests whose body came from an upstream.
    pub misses: u64,
    /// Body bytes sent to clients from the cache: the upstream bandwidth saved.
    pub hit_bytes: u64,
    /// Body bytes sent to clients that came from an upstream.
    pub miss_bytes: u64,
}

/// A chart: `points[i]` covers `[end - (len - i) * step, end - (len - 1 - i) * step)`; the last
/// point is the step in progress. Always full length (zeros before start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Seconds per point.
    pub step: u64,
    /// The end of the last point (the current step's end).
    pub end: u64,
    /// Oldest first.
    pub points: Vec<Counts>,
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// Its name (`[[upstream]] name`).
    pub name: String,
    /// Its URL (the one in use when several are configured), never with credentials.
    pub url: String,
    /// Configured with no URL (air-gapped): never contacted.
    pub offline: bool,
    /// Whether the last request got a response (any status); `None` before the first.
    pub reachable: Option<bool>,
    /// When the last response came.
    pub last_ok: Option<u64>,
    /// The last failure: no response, a 5xx or a 429 (one line, no secrets).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<u64>,
    /// Seconds until wharf asks again, while backing off after a 429.
    pub backoff_seconds: Option<u64>,
    /// `RateLimit-Remaining` as last seen.
    pub rate_limit_remaining: Option<u64>,
    /// `RateLimit-Limit` as last seen.
    pub rate_limit_limit: Option<u64>,
}

/// A blob download in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FillStatus {
    /// The upstream it comes from.
    pub upstream: String,
    /// The repository it was asked for in.
    pub repository: String,
    /// `sha256:...`.
    pub digest: String,
    /// Bytes received so far.
    pub received: u64,
    /// The size the upstream announced, if it did.
    pub size: Option<u64>,
    /// Clients reading it now.
    pub clients: u64,
    /// When it started.
    pub started: u64,
}

/// Top lists over the last day, at most 10 entries each, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopStatus {
    /// Seconds covered.
    pub window: u64,
    /// Repositories (`upstream/name`) by manifest pulls (by tag or digest).
    pub repositories_by_pulls: Vec<TopEntry>,
    /// Repositories by body bytes served (blobs and manifests).
    pub repositories_by_bytes: Vec<TopEntry>,
    /// Images (`upstream/name:tag`) by pulls of the tag's manifest.
    pub images_by_pulls: Vec<TopEntry>,
    /// Images by body bytes served: the tag's manifest, the platform manifests its index lists, and
    /// the config and layers those manifests name (each blob counted for the image whose manifest
    /// named it last).
    pub images_by_bytes: Vec<TopEntry>,
}

/// One line of a top list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopEntry {
    /// The repository or image.
    pub name: String,
    /// Manifest pulls.
    pub pulls: u64,
    /// Body bytes served.
    pub bytes: u64,
}

/// A pinned image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinStatus {
    /// `upstream/name:tag` or `@digest`.
    pub image: String,
    /// `config` (`[[pin]]`) or `command` (`wharf pin`).
    pub source: String,
}

/// A `[[sync]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Its position in the configuration (0 first).
    pub entry: usize,
    /// Images listed (the `images` key; a `file` adds more at each run).
    pub images: Vec<String>,
    /// Seconds between runs.
    pub interval: u64,
    /// The last run that finished, if any.
    pub last_run: Option<SyncRun>,
}

/// One finished run of a `[[sync]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRun {
    /// When it began.
    pub started: u64,
    /// How long it took, in milliseconds.
    pub millis: u64,
    /// Images synced.
    pub images: u64,
    /// Tags that moved, as `image: old -> new` (at most 20).
    pub changed: Vec<String>,
    /// Images that failed.
    pub failed: u64,
    /// Blobs fetched.
    pub blobs_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorStatus {
    /// When it was answered.
    pub at: u64,
    /// Its request id (the `X-Request-Id` sent back).
    pub request_id: String,
    /// `GET`, `HEAD`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// The OCI error code, when there was one.
    pub code: Option<String>,
    /// What went wrong (one line, no secrets).
    pub message: String,
}
