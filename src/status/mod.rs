//! The status page: what the mirror holds, what it saves, how its upstreams are and what it is
//! doing, for a person (`/status`, HTML with inline SVG charts, on the admin listener), for scripts
//! (`/status.json`) and for the terminal (`wharf status`, over the control socket). All three show
//! one [`StatusReport`], made here from what the rest of wharf keeps: the traffic from
//! [`crate::activity`] (with the metrics), the storage and the fills in flight from the cache, the
//! upstreams' health, back-off and rate limits from their clients. Nothing is recorded here: a
//! report costs nothing until asked for, then reads the pins' closure from the index (to sum the
//! pinned bytes) and copies the bounded activity.

pub mod html;
pub mod report;
pub mod table;

pub use report::StatusReport;

use std::sync::Arc;

use crate::activity;
use crate::server::App;

/// The report for `app` as of now.
pub async fn report(app: &Arc<App>) -> StatusReport {
    use report::*;
    let activity = &app.metrics.activity;
    let now = activity::unix_now();
    let cache = &app.cache;
    let usage = cache.usage();
    let budget = cache.budget();
    let evictions = cache.evictions();
    let (pins, pinned_bytes) = pins(app).await;
    let series = |s: activity::Series| Series {
        step: s.step,
        end: s.end,
        points: s.points.into_iter().map(counts).collect(),
    };
    let top = activity.top(now);
    let entries = |list: Vec<activity::Tally>| -> Vec<TopEntry> {
        list.into_iter()
            .map(|t| TopEntry {
                name: t.name.to_string(),
                pulls: t.pulls,
                bytes: t.bytes,
            })
            .collect()
    };
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        now,
        started: activity.started(),
        cache: CacheStatus {
            bytes: usage.bytes,
            entries: usage.entries,
            max_bytes: budget.map(|b| b.max),
            high_watermark_bytes: budget.map(|b| b.high),
            low_watermark_bytes: budget.map(|b| b.low),
            pinned_bytes,
            evictions: evictions.count,
            evicted_bytes: evictions.bytes,
            free_bytes: cache.health().free_space(),
            paused: cache.health().paused(),
        },
        value: ValueStatus {
            total: counts(activity.total()),
            hour: series(activity.hour(now)),
            day: series(activity.day(now)),
        },
        upstreams: app
            .upstreams
            .iter()
            .map(|u| {
                let health = u.health();
                let mut url = u.current_url().clone();
                let _ = url.set_username("");
                let _ = url.set_password(None);
                UpstreamStatus {
                    name: u.name().to_owned(),
                    url: url.to_string(),
                    offline: u.offline(),
                    reachable: health.reachable,
                    last_ok: health.last_ok,
                    last_error: health.last_error,
                    last_error_at: health.last_error_at,
                    // Rounded up: "0 s left" would read as "not backing off".
                    backoff_seconds: u
                        .backoff_remaining()
                        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                    rate_limit_remaining: u.rate_limit().map(|l| l.remaining),
                    rate_limit_limit: u.rate_limit().map(|l| l.limit),
                }
            })
            .collect(),
        fills: cache
            .inflight()
            .progress()
            .into_iter()
            .map(|f| FillStatus {
                upstream: f.upstream,
                repository: f.repository,
                digest: f.digest.to_string(),
                received: f.received,
                size: f.size,
                clients: f.clients,
                started: f.started,
            })
            .collect(),
        top: TopStatus {
            window: activity::TOP_STEP * activity::TOP_BUCKETS as u64,
            repositories_by_pulls: entries(top.repositories_by_pulls),
            repositories_by_bytes: entries(top.repositories_by_bytes),
            images_by_pulls: entries(top.images_by_pulls),
            images_by_bytes: entries(top.images_by_bytes),
        },
        pins,
        sync: activity
            .sync()
            .into_iter()
            .enumerate()
            .map(|(entry, s)| SyncStatus {
                entry,
                images: s.images,
                interval: s.interval,
                last_run: s.last_run.map(|r| SyncRun {
                    started: r.started,
                    millis: r.millis,
                    images: r.images,
                    changed: r.changed,
                    failed: r.failed,
                    blobs_fetched: r.blobs_fetched,
                    bytes_fetched: r.bytes_fetched,
                }),
            })
            .collect(),
        errors: activity
            .errors()
            .into_iter()
            .map(|e| ErrorStatus {
                at: e.at,
                request_id: e.request_id,
                method: e.method.to_owned(),
                path: e.path,
                status: e.status,
                code: e.code.map(str::to_owned),
                message: e.message,
            })
            .collect(),
    }
}

fn counts(c: activity::Counts) -> report::Counts {
    report::Counts {
        hits: c.hits,
        misses: c.misses,
        hit_bytes: c.hit_bytes,
        miss_bytes: c.miss_bytes,
    }
}

/// The pins, and the bytes of everything they keep (read from the index now; 0 when the index
/// cannot say).
async fn pins(app: &App) -> (Vec<report::PinStatus>, u64) {
    let index = app.cache.index();
    let pins: Vec<report::PinStatus> = index
        .pins()
        .unwrap_or_default()
        .into_iter()
        .map(|(image, source)| report::PinStatus {
            image: image.to_string(),
            source: source.as_str().to_owned(),
        })
        .collect();
    if pins.is_empty() {
        return (pins, 0);
    }
    let bytes = match app.cache.pinned_digests().await {
        Ok(digests) => digests
            .iter()
            .filter_map(|d| index.blob_size(d).ok().flatten())
            .sum(),
        Err(_) => 0,
    };
    (pins, bytes)
}
