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
//!
//! With a shared object store behind the local tier, gc then sweeps the store: it lists every
//! object, reads the small ones to find the manifests among them, and keeps every manifest stored
//! within the retention (unless this replica's gc just removed it as unused) or kept here, with all
//! they refer to. Everything else older than [`SHARED_GRACE`] goes. Access times are each replica's
//! own, so a manifest only another replica pulls lately goes once it is older than the retention;
//! that replica keeps serving its local copy and stores it again on its next fetch.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::access::from_unix_micros;
use super::evict::Removal;
use super::shared::Shared;
use super::{Cache, FillError, Usage};
use crate::limits::MAX_MANIFEST;
use crate::oci::{media, Digest};

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
    /// What gc did in the shared object store, when the cache has one.
    pub shared: Option<SharedGc>,
}

/// What `wharf gc` did in the shared object store.
#[derive(Debug, Clone, Default)]
pub struct SharedGc {
    /// Whether the store could be listed (when not, nothing was removed).
    pub listed: bool,
    /// Objects listed.
    pub objects: u64,
    /// Objects removed (or, in a dry run, to be removed); `last_used` is when each was stored.
    pub removed: Vec<GcItem>,
}

/// Unreferenced objects younger than this stay in the shared store: another replica may be in the
/// middle of a pull whose manifest this gc has not seen, or have stored a blob by digest just now.
pub const SHARED_GRACE: Duration = Duration::from_secs(3600);

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
        if let Some(shared) = self.shared() {
            report.shared = Some(
                self.gc_shared(shared, options, &keep, &report.removed)
                    .await?,
            );
        }
        Ok(report)
    }

    /// gc of the shared object store (see the module docs): every object up to
    /// [`MAX_MANIFEST`] bytes is read once to find the manifests among them.
    async fn gc_shared(
        &self,
        shared: &Shared,
        options: GcOptions,
        keep_local: &HashSet<Digest>,
        removed_here: &[GcItem],
    ) -> Result<SharedGc, FillError> {
        let store = shared.store();
        let Some(listed) = store.list_blobs().await else {
            return Ok(SharedGc {
                listed: false,
                ..SharedGc::default()
            });
        };
        let listed = listed?;
        let now = SystemTime::now();
        let young =
            |at: SystemTime, age: Duration| now.duration_since(at).map_or(true, |a| a < age);
        let removed_here: HashSet<Digest> = removed_here.iter().map(|i| i.digest).collect();
        // The manifests among the objects, and what each refers to.
        let mut refs: HashMap<Digest, Vec<Digest>> = HashMap::new();
        let mut roots = Vec::new();
        for object in &listed {
            if object.size > MAX_MANIFEST as u64 {
                continue;
            }
            let Some(blob) = store.open(&object.digest).await? else {
                continue;
            };
            let bytes = blob.read_range(0, blob.size()).await?;
            if Digest::of(&bytes) != object.digest
                || media::resolve_manifest_type(&bytes, None).is_err()
            {
                continue;
            }
            refs.insert(object.digest, media::referenced_digests(&bytes));
            let used_here = keep_local.contains(&object.digest);
            let recent = young(object.stored_at, options.retention)
                && !removed_here.contains(&object.digest);
            if used_here || recent {
                roots.push(object.digest);
            }
        }
        let manifests: HashSet<Digest> = refs.keys().copied().collect();
        let mut keep: HashSet<Digest> = keep_local.clone();
        while let Some(digest) = roots.pop() {
            keep.insert(digest);
            if let Some(children) = refs.remove(&digest) {
                roots.extend(children);
            }
        }
        let mut report = SharedGc {
            listed: true,
            objects: listed.len() as u64,
            ..SharedGc::default()
        };
        for object in listed {
            if keep.contains(&object.digest) || young(object.stored_at, SHARED_GRACE) {
                continue;
            }
            if self.holds.readers(&object.digest) > 0 || self.inflight.get(&object.digest).is_some()
            {
                continue;
            }
            if !options.dry_run {
                store.remove(&object.digest).await?;
            }
            report.removed.push(GcItem {
                digest: object.digest,
                size: object.size,
                manifest: manifests.contains(&object.digest),
                last_used: Some(object.stored_at),
            });
        }
        Ok(report)
    }
}
