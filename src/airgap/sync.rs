//! `[[sync]]`: keeps lists of images fresh in the background while wharf serves, so a connected
//! wharf always holds the current images to export.
//!
//! Each entry runs in its own task: at start, then every `interval` after the previous run began
//! (a run longer than the interval is followed by the next at once, never overlapped by it). A run
//! reads the entry's images (the `images` list, and the `file` read again each run), asks the
//! upstream about every tag with a `HEAD` whatever its `tag_ttl` ([`crate::cache::manifests::Manifests::revalidate`]),
//! logs each tag that moved (old digest -> new) at info, and prefetches each image
//! ([`prefetch::one`]), which fetches only what changed. A failure is logged at warn and retried
//! at the next run; a summary line ends every run. At shutdown the tasks are aborted: the
//! downloads they started finish (or not) like any other.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::prefetch::{self, DEFAULT_JOBS};
use super::refs;
use crate::config::{SyncConfig, UpstreamConfig};
use crate::oci::{Digest, ImageRef, Reference};
use crate::server::{manifests, App};

/// What one run of an entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Images synced.
    pub images: u64,
    /// Tags that moved.
    pub changed: u64,
    /// Which, as `image: old -> new` (at most [`crate::activity::MAX_CHANGED`]).
    pub changed_tags: Vec<String>,
    /// When the run began (Unix seconds).
    pub started: u64,
    /// How long it took, in milliseconds.
    pub millis: u64,
    /// Images that failed.
    pub failed: u64,
    /// Blobs fetched.
    pub blobs_fetched: u64,
    /// Their bytes.
    pub bytes_fetched: u64,
}

/// Starts one task per `[[sync]]` entry; abort the handles to stop them.
pub fn spawn(
    app: &Arc<App>,
    entries: &[SyncConfig],
    upstreams: &[UpstreamConfig],
) -> Vec<JoinHandle<()>> {
    app.metrics.activity.set_sync(
        entries
            .iter()
            .map(|e| {
                (
                    e.images.iter().map(ToString::to_string).collect(),
                    e.interval.as_secs(),
                )
            })
            .collect(),
    );
    if !entries.is_empty() && app.upstreams.iter().all(|u| u.offline()) {
        info!(
            entries = entries.len(),
            "every upstream is offline: [[sync]] entries do not run"
        );
        return Vec::new();
    }
    entries
        .iter()
        .enumerate()
        .map(|(n, entry)| {
            let (app, entry, upstreams) = (app.clone(), entry.clone(), upstreams.to_vec());
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(entry.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let report = run_once(&app, n, &entry, &upstreams).await;
                    app.metrics.activity.sync_ran(
                        n,
                        crate::activity::SyncRun {
                            started: report.started,
                            millis: report.millis,
                            images: report.images,
                            changed: report.changed_tags,
                            failed: report.failed,
                            blobs_fetched: report.blobs_fetched,
                            bytes_fetched: report.bytes_fetched,
                        },
                    );
                }
            })
        })
        .collect()
}

/// Runs entry number `n` once.
pub async fn run_once(
    app: &Arc<App>,
    n: usize,
    entry: &SyncConfig,
    upstreams: &[UpstreamConfig],
) -> RunReport {
    let started = Instant::now();
    let started_at = crate::activity::unix_now();
    let mut images = entry.images.clone();
    if let Some(file) = &entry.file {
        let listed = tokio::fs::read_to_string(file)
            .await
            .map_err(|e| e.to_string())
            .and_then(|text| refs::parse_list(&text, upstreams));
        match listed {
            Ok(listed) => {
                for image in listed {
                    if !images.contains(&image) {
                        images.push(image);
                    }
                }
            }
            Err(error) => warn!(
                sync = n, file = %file.display(), %error,
                "cannot read the sync image list; syncing this entry's other images only"
            ),
        }
    }
    let options = prefetch::Options {
        platforms: entry.platforms.clone(),
        pin: entry.pin,
        jobs: DEFAULT_JOBS,
        referrers: super::referrers::Options {
            enabled: entry.referrers,
            types: entry.referrers_types.clone(),
        },
    };
    let outcomes: Vec<(Option<String>, bool, prefetch::ImageStats)> =
        futures_util::stream::iter(images)
            .map(|image| {
                let (app, options) = (app.clone(), options.clone());
                async move { sync_image(&app, n, image, options).await }
            })
            .buffer_unordered(DEFAULT_JOBS)
            .collect()
            .await;
    let mut report = RunReport {
        started: started_at,
        ..RunReport::default()
    };
    for (changed, failed, stats) in outcomes {
        report.images += 1;
        if let Some(changed) = changed {
            report.changed += 1;
            if report.changed_tags.len() < crate::activity::MAX_CHANGED {
                report.changed_tags.push(changed);
            }
        }
        report.failed += u64::from(failed);
        report.blobs_fetched += stats.blobs_fetched;
        report.bytes_fetched += stats.bytes_fetched;
    }
    report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    info!(
        sync = n,
        images = report.images,
        changed = report.changed,
        failed = report.failed,
        blobs_fetched = report.blobs_fetched,
        bytes_fetched = report.bytes_fetched,
        elapsed_ms = report.millis,
        "sync run done"
    );
    report
}

/// Revalidates one image's tag and fetches what it needs; returns (the tag's move as
/// `image: old -> new` when it moved, failed, stats).
async fn sync_image(
    app: &Arc<App>,
    n: usize,
    image: ImageRef,
    options: prefetch::Options,
) -> (Option<String>, bool, prefetch::ImageStats) {
    let mut changed = None;
    if let Reference::Tag(tag) = &image.reference {
        let old = app
            .cache
            .index()
            .tag(&image.registry, &image.repo, tag)
            .ok()
            .flatten()
            .map(|e| e.digest);
        match revalidate(app, &image).await {
            Ok(new) if old != Some(new) => {
                let old = old.map_or_else(|| "none".to_owned(), |d: Digest| d.to_string());
                info!(sync = n, image = %image, %old, %new, "tag changed");
                changed = Some(format!("{image}: {old} -> {new}"));
            }
            Ok(_) => {}
            Err(error) => {
                warn!(sync = n, image = %image, %error, "cannot ask the upstream about the tag; trying again at the next run");
                return (None, true, prefetch::ImageStats::default());
            }
        }
    }
    let fetched = prefetch::one(app.clone(), image, options).await;
    if let Some(error) = &fetched.stats.error {
        warn!(sync = n, image = %fetched.image, %error, "sync of the image failed; trying again at the next run");
    }
    (changed, fetched.stats.error.is_some(), fetched.stats)
}

/// Asks the upstream about a tag now (a `HEAD`, or a `GET` when it moved or is not cached).
async fn revalidate(app: &App, image: &ImageRef) -> Result<Digest, String> {
    let Reference::Tag(tag) = &image.reference else {
        return Err("not a tag".into());
    };
    let route = prefetch::route_to(app, image, &format!("manifests/{tag}"))
        .map_err(|e| e.message().to_owned())?;
    app.manifests
        .revalidate(&app.upstreams[route.upstream], &route.name, tag)
        .await
        .map(|(digest, _)| digest)
        .map_err(|e| manifests::api_error(&e).message().to_owned())
}
