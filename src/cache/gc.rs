//! `wharf gc`: removes manifests not pulled for `gc.manifest_retention`, then every blob that no
//! remaining manifest refers to.
//!
//! What stays is everything reachable from the manifests used within the retention and from the
//! pins: an image index keeps its platform manifests (even those no one pulled lately), and a
//! manifest keeps its config and layers. Everything else goes, including blobs fetched by digest
//! without their manifest passing through wharf (rare: clients fetch the manifest first). Tags and
//! referrers lists whose manifest is gone are dropped from the index too, so an offline mirror does
//! not list tags it cannot serve.
//!
//! Manifests stored before wharf recorded access times have none: the first gc that sees them
//! counts them as used at that moment, so they get a full retention period before they can go.
//! Like eviction, gc never removes what is being read or filled; `--dry-run` only reports.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::access::from_unix_micros;
use super::evict::Removal;
use super::{Cache, FillError, Usage};
use crate::oci::Digest;

/// What `wharf gc` does.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Manifests not used for this long go.
    pub retention: Duration,
    /// Only report what would go.
    pub dry_run: bool,
}

/// One blob or manifest gc removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcItem {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Whether it is a manifest.
    pub manifest: bool,
    /// When it was last used, if known.
    pub last_used: Option<SystemTime>,
}

/// What `wharf gc` did.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Removed (or, in a dry run, to be removed): manifests first, then blobs.
    pub removed: Vec<GcItem>,
    /// Unreferenced or expired, but being read or filled: left.
    pub in_use: u64,
    /// Tags and referrers lists dropped because their manifest is gone.
    pub tags_dropped: usize,
    /// What is stored afterwards (unchanged by a dry run).
    pub usage_after: Usage,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

// === impl GcReport ===

impl GcReport {
    /// Bytes removed (or to be removed).
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|i| i.size).sum()
    }
}

// === impl Cache ===

impl Cache {
    /// Runs gc (see the module docs).
    ///
    /// # Errors
    /// Storage or index failures (what was removed before stays removed).
    pub async fn gc(&self, options: GcOptions) -> Result<GcReport, FillError> {
        self.flush_access()?;
        let now = self.access.now();
        let cutoff =
            now.saturating_sub(u64::try_from(options.retention.as_micros()).unwrap_or(u64::MAX));
        let times = self.index.access_times()?;
        let manifests = self.index.manifest_digests()?;
        let mut roots = Vec::new();
        let mut unrecorded = Vec::new();
        for digest in &manifests {
            match times.get(digest) {
                Some(&at) if at < cutoff => {}
                Some(_) => roots.push(*digest),
                None => {
                    unrecorded.push((*digest, now));
                    roots.push(*digest);
                }
            }
        }
        if !options.dry_run && !unrecorded.is_empty() {
            self.index.record_access(&unrecorded)?;
        }
        let mut keep = self.closure(roots).await?;
        keep.extend(self.pinned_digests().await?);

        let manifest_set: HashSet<Digest> = manifests.into_iter().collect();
        let mut doomed: Vec<GcItem> = Vec::new();
        for item in self.index.blobs() {
            let (digest, size) = item?;
            if !keep.contains(&digest) {
                doomed.push(GcItem {
                    digest,
                    size,
                    manifest: manifest_set.contains(&digest),
                    last_used: times.get(&digest).map(|&t| from_unix_micros(t)),
                });
            }
        }
        doomed.sort_by_key(|i| (!i.manifest, i.digest));

        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        for item in doomed {
            let in_use =
                self.holds.readers(&item.digest) > 0 || self.inflight.get(&item.digest).is_some();
            if options.dry_run {
                if in_use {
                    report.in_use += 1;
                } else {
                    report.removed.push(item);
                }
                continue;
            }
            match self.remove_unused(item.digest).await? {
                Removal::Removed(_) => report.removed.push(item),
                Removal::InUse => report.in_use += 1,
                Removal::Gone => {}
            }
        }
        let gone: HashSet<Digest> = report
            .removed
            .iter()
            .filter(|i| i.manifest)
            .map(|i| i.digest)
            .collect();
        report.tags_dropped = self
            .index
            .drop_dangling_tags(options.dry_run, &|d| gone.contains(d))?;
        report.usage_after = self.usage();
        Ok(report)
    }
}
