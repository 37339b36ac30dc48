//! The status page: what the mirror holds, what it saves, how its upstreams are and what it is
//! doing, for a person (`/status`, HTML with inline SVG charts, on the admin listener), for scripts
//! (`/status.json`) and for the terminal (`wharf status`, over the control socket). All three show
//! one [`StatusReport`].

pub mod html;
pub mod report;

pub use report::StatusReport;

use std::sync::Arc;

use crate::server::App;

/// The report for `app` as of now.
///
/// A first version: the storage and the upstreams' names only; the collector fills in the rest.
pub async fn report(app: &Arc<App>) -> StatusReport {
    use report::*;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let usage = app.cache.usage();
    let empty = |step: u64, len: usize| Series {
        step,
        end: now - now % step + step,
        points: vec![Counts::default(); len],
    };
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        now,
        started: now,
        cache: CacheStatus {
            bytes: usage.bytes,
            entries: usage.entries,
            max_bytes: app.cache.budget().map(|b| b.max),
            high_watermark_bytes: None,
            low_watermark_bytes: None,
            pinned_bytes: 0,
            evictions: app.cache.evictions().count,
            evicted_bytes: app.cache.evictions().bytes,
            free_bytes: app.cache.health().free_space(),
            paused: app.cache.health().paused(),
        },
        value: ValueStatus {
            total: Counts::default(),
            hour: empty(60, 60),
            day: empty(600, 144),
        },
        upstreams: app
            .upstreams
            .iter()
            .map(|u| UpstreamStatus {
                name: u.name().to_owned(),
                url: u.current_url().to_string(),
                offline: u.offline(),
                reachable: None,
                last_ok: None,
                last_error: None,
                last_error_at: None,
                backoff_seconds: None,
                rate_limit_remaining: u.rate_limit().map(|l| l.remaining),
                rate_limit_limit: u.rate_limit().map(|l| l.limit),
            })
            .collect(),
        fills: Vec::new(),
        top: TopStatus {
            window: 86_400,
            repositories_by_pulls: Vec::new(),
            repositories_by_bytes: Vec::new(),
            images_by_pulls: Vec::new(),
            images_by_bytes: Vec::new(),
        },
        pins: Vec::new(),
        sync: Vec::new(),
        errors: Vec::new(),
    }
}
