//! The sled index: what the blob store holds, which blobs are manifests (and of which media type),
//! and which digest each cached tag pointed to when it was last fetched.
//!
//! The index is a cache of the blob store, not the truth: sled makes no on-disk format promise before
//! 1.0, so everything in it but the tag mappings can be rebuilt from the stored blobs (manifest media
//! types are read back from the manifests themselves), and losing the tags only costs one upstream
//! request per tag.
//!
//! Layout, one sled tree per kind:
//! - `blobs`: digest (32 bytes) → size (u64, big-endian);
//! - `manifests`: digest → media type (UTF-8);
//! - `tags`: `<upstream>\0<repo>\0<tag>` → digest (32 bytes) ++ fetched-at (u64 Unix milliseconds, BE);
//! - `referrers`: `<upstream>\0<repo>\0<subject digest>\0` → the same, for the stored unfiltered
//!   referrers list (filters are applied when answering). Older versions kept one record per
//!   `artifactType` filter after the last `\0`; [`Index::open`] drops those.
//! - `access`: digest → when it was last served or stored (u64 Unix microseconds, BE), written in
//!   batches by the cache's access log, never once per request;
//! - `pins`: an image reference (`docker.io/library/nginx:1.27`) → who pinned it (`c` for the
//!   configuration file, `p` for `wharf pin` or the library).
//!
//! The total size and number of indexed blobs are kept in memory ([`Index::usage`]): counted once
//! when the index opens, then adjusted by every insert and removal by the previous value sled hands
//! back, so concurrent writers of one digest cannot make them drift.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::oci::{Digest, ImageRef, RepoName, Tag};

/// The metadata index.
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    blobs: sled::Tree,
    manifests: sled::Tree,
    tags: sled::Tree,
    referrers: sled::Tree,
    access: sled::Tree,
    pins: sled::Tree,
    totals: Arc<Totals>,
}

/// How much the index holds: the sum of the sizes of its blobs (manifests included) and their number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of stored content.
    pub bytes: u64,
    /// Stored blobs and manifests.
    pub entries: u64,
}

/// Who pinned an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinSource {
    /// A `[[pin]]` entry of the configuration file: synced at every start.
    Config,
    /// `wharf pin` (or a library caller such as `wharf prefetch`): kept until unpinned.
    Command,
}

#[derive(Debug, Default)]
struct Totals {
    bytes: AtomicU64,
    entries: AtomicU64,
}

/// A cached tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagEntry {
    /// The manifest digest the tag pointed to.
    pub digest: Digest,
    /// When the upstream said so.
    pub fetched_at: SystemTime,
}

/// An index operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("index: {0}")]
pub struct IndexError(#[from] sled::Error);

// === impl IndexError ===

impl IndexError {
    /// Whether the index could not be opened because another process holds it (a wharf server
    /// running on the same storage).
    pub fn is_locked(&self) -> bool {
        matches!(&self.0, sled::Error::Io(e)
            if e.kind() == std::io::ErrorKind::Other && e.to_string().contains("could not acquire lock"))
    }
}

// === impl PinSource ===

impl PinSource {
    /// The word shown by `wharf pins`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Command => "command",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Config => b'c',
            Self::Command => b'p',
        }
    }

    fn from_byte(b: &[u8]) -> Self {
        if b == b"c" {
            Self::Config
        } else {
            Self::Command
        }
    }
}

// === impl Index ===

impl Index {
    /// Opens (creating if needed) the index in `dir`.
    ///
    /// # Errors
    /// When sled cannot open the directory, for example because another wharf holds it.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let config = sled::Config::new().path(dir).flush_every_ms(Some(500));
        // sled holds a file lock while any handle lives. A wharf restarted in the same process (the
        // tests do) may find the last handle of the previous one still being dropped: retry briefly.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::Other && attempts < 20 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let blobs = db.open_tree("blobs")?;
        let totals = Totals::default();
        for item in &blobs {
            let (_, v) = item?;
            totals
                .bytes
                .fetch_add(decode_u64(&v).unwrap_or(0), Ordering::Relaxed);
            totals.entries.fetch_add(1, Ordering::Relaxed);
        }
        let referrers = db.open_tree("referrers")?;
        drop_filtered_referrers(&referrers)?;
        Ok(Self {
            blobs,
            manifests: db.open_tree("manifests")?,
            tags: db.open_tree("tags")?,
            referrers,
            access: db.open_tree("access")?,
            pins: db.open_tree("pins")?,
            totals: Arc::new(totals),
            db,
        })
    }

    /// The bytes and number of indexed blobs, kept in memory (no I/O).
    pub fn usage(&self) -> Usage {
        Usage {
            bytes: self.totals.bytes.load(Ordering::Relaxed),
            entries: self.totals.entries.load(Ordering::Relaxed),
        }
    }

    /// Adjusts the totals for a blob whose record went from `before` to `after` bytes.
    fn account(&self, before: Option<u64>, after: Option<u64>) {
        match (before, after) {
            (None, Some(n)) => {
                self.totals.bytes.fetch_add(n, Ordering::Relaxed);
                self.totals.entries.fetch_add(1, Ordering::Relaxed);
            }
            (Some(o), None) => {
                self.totals.bytes.fetch_sub(o, Ordering::Relaxed);
                self.totals.entries.fetch_sub(1, Ordering::Relaxed);
            }
            (Some(o), Some(n)) => {
                self.totals.bytes.fetch_add(n, Ordering::Relaxed);
                self.totals.bytes.fetch_sub(o, Ordering::Relaxed);
            }
            (None, None) => {}
        }
    }

    /// Every indexed blob and its size, in digest order.
    pub fn blobs(&self) -> impl Iterator<Item = Result<(Digest, u64), IndexError>> + '_ {
        self.blobs.iter().filter_map(|item| match item {
            Ok((k, v)) => Some(Ok((digest_key(&k)?, decode_u64(&v)?))),
            Err(e) => Some(Err(e.into())),
        })
    }

    /// Every indexed manifest's digest.
    ///
    /// # Errors
    /// sled errors.
    pub fn manifest_digests(&self) -> Result<Vec<Digest>, IndexError> {
        let mut out = Vec::new();
        for item in self.manifests.iter().keys() {
            if let Some(d) = digest_key(&item?) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// When a blob was last served or stored (Unix microseconds), as last flushed.
    ///
    /// # Errors
    /// sled errors.
    pub fn access(&self, digest: &Digest) -> Result<Option<u64>, IndexError> {
        Ok(self
            .access
            .get(digest.as_bytes())?
            .and_then(|v| decode_u64(&v)))
    }

    /// Every flushed access time.
    ///
    /// # Errors
    /// sled errors.
    pub fn access_times(&self) -> Result<HashMap<Digest, u64>, IndexError> {
        let mut out = HashMap::with_capacity(self.access.len());
        for item in &self.access {
            let (k, v) = item?;
            if let (Some(d), Some(t)) = (digest_key(&k), decode_u64(&v)) {
                out.insert(d, t);
            }
        }
        Ok(out)
    }

    /// Records access times in one batch, skipping digests that are no longer indexed (evicted since
    /// they were served from memory). Returns how many were written.
    ///
    /// # Errors
    /// sled errors.
    pub fn record_access(&self, times: &[(Digest, u64)]) -> Result<usize, IndexError> {
        let mut batch = sled::Batch::default();
        let mut written = 0;
        for (digest, at) in times {
            if self.blobs.contains_key(digest.as_bytes())? {
                batch.insert(&digest.as_bytes()[..], &at.to_be_bytes());
                written += 1;
            }
        }
        if written > 0 {
            self.access.apply_batch(batch)?;
        }
        Ok(written)
    }

    /// Access records of digests that are not indexed (left by a crash between the two removals):
    /// `wharf check` reports and removes them.
    ///
    /// # Errors
    /// sled errors.
    pub fn stale_records(&self) -> Result<Vec<Digest>, IndexError> {
        let mut out = Vec::new();
        for tree in [&self.access, &self.manifests] {
            for key in tree.iter().keys() {
                if let Some(d) = digest_key(&key?) {
                    if !self.blobs.contains_key(d.as_bytes())? && !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes the access and manifest records of a digest that is not indexed as a blob.
    ///
    /// # Errors
    /// sled errors.
    pub fn remove_stale_record(&self, digest: &Digest) -> Result<(), IndexError> {
        if !self.blobs.contains_key(digest.as_bytes())? {
            self.access.remove(digest.as_bytes())?;
            self.manifests.remove(digest.as_bytes())?;
        }
        Ok(())
    }

    /// The pinned images and who pinned them, in reference order.
    ///
    /// # Errors
    /// sled errors.
    pub fn pins(&self) -> Result<Vec<(ImageRef, PinSource)>, IndexError> {
        let mut out = Vec::new();
        for item in &self.pins {
            let (k, v) = item?;
            // A record that does not parse (written by a later version) is skipped, not fatal.
            if let Some(image) = std::str::from_utf8(&k).ok().and_then(|s| s.parse().ok()) {
                out.push((image, PinSource::from_byte(&v)));
            }
        }
        Ok(out)
    }

    /// Pins an image. Returns whether it was not pinned before. A pin from the configuration stays
    /// a configuration pin.
    ///
    /// # Errors
    /// sled errors.
    pub fn add_pin(&self, image: &ImageRef, source: PinSource) -> Result<bool, IndexError> {
        let key = image.to_string();
        let before = self.pins.get(&key)?;
        if before.as_deref().map(PinSource::from_byte) == Some(PinSource::Config) {
            return Ok(false);
        }
        self.pins.insert(key, &[source.byte()])?;
        Ok(before.is_none())
    }

    /// Unpins an image; returns who had pinned it, if anyone.
    ///
    /// # Errors
    /// sled errors.
    pub fn remove_pin(&self, image: &ImageRef) -> Result<Option<PinSource>, IndexError> {
        Ok(self
            .pins
            .remove(image.to_string())?
            .map(|v| PinSource::from_byte(&v)))
    }

    /// Makes the configuration's pins exactly `pins`: adds the new ones (a command pin of the same
    /// image becomes a configuration pin) and removes configuration pins no longer listed.
    ///
    /// # Errors
    /// sled errors.
    pub fn sync_config_pins(&self, pins: &[ImageRef]) -> Result<(), IndexError> {
        for (image, source) in self.pins()? {
            if source == PinSource::Config && !pins.contains(&image) {
                self.pins.remove(image.to_string())?;
            }
        }
        for image in pins {
            self.pins
                .insert(image.to_string(), &[PinSource::Config.byte()])?;
        }
        Ok(())
    }

    /// Drops tags and referrers lists whose manifest is not stored, or is `gone` (about to be
    /// removed: a dry run counts those too). Returns how many were (or would be) dropped.
    ///
    /// # Errors
    /// sled errors.
    pub fn drop_dangling_tags(
        &self,
        dry_run: bool,
        gone: impl Fn(&Digest) -> bool,
    ) -> Result<usize, IndexError> {
        let mut dropped = 0;
        for tree in [&self.tags, &self.referrers] {
            for item in tree {
                let (k, v) = item?;
                let Some(entry) = decode_entry(&v) else {
                    continue;
                };
                if gone(&entry.digest) || !self.manifests.contains_key(entry.digest.as_bytes())? {
                    if !dry_run {
                        tree.remove(k)?;
                    }
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// The size of a stored blob, if the index knows it.
    ///
    /// # Errors
    /// sled errors.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, IndexError> {
        Ok(self
            .blobs
            .get(digest.as_bytes())?
            .and_then(|v| decode_u64(&v)))
    }

    /// Records a committed blob.
    ///
    /// # Errors
    /// sled errors.
    pub fn insert_blob(&self, digest: &Digest, size: u64) -> Result<(), IndexError> {
        let before = self.blobs.insert(digest.as_bytes(), &size.to_be_bytes())?;
        self.account(before.and_then(|v| decode_u64(&v)), Some(size));
        Ok(())
    }

    /// Forgets a blob (and its manifest and access records). Returns the size it had, or `None`
    /// when it was not indexed (another caller removed it first).
    ///
    /// # Errors
    /// sled errors.
    pub fn remove_blob(&self, digest: &Digest) -> Result<Option<u64>, IndexError> {
        let before = self
            .blobs
            .remove(digest.as_bytes())?
            .and_then(|v| decode_u64(&v));
        self.account(before, None);
        self.manifests.remove(digest.as_bytes())?;
        self.access.remove(digest.as_bytes())?;
        Ok(before)
    }

    /// The media type of a stored manifest.
    ///
    /// # Errors
    /// sled errors.
    pub fn manifest_type(&self, digest: &Digest) -> Result<Option<String>, IndexError> {
        Ok(self
            .manifests
            .get(digest.as_bytes())?
            .and_then(|v| String::from_utf8(v.to_vec()).ok()))
    }

    /// Records a committed manifest: its blob and its media type.
    ///
    /// # Errors
    /// sled errors.
    pub fn insert_manifest(
        &self,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<(), IndexError> {
        self.insert_blob(digest, size)?;
        self.manifests
            .insert(digest.as_bytes(), media_type.as_bytes())?;
        Ok(())
    }

    /// The cached mapping of a tag.
    ///
    /// # Errors
    /// sled errors.
    pub fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<TagEntry>, IndexError> {
        Ok(self
            .tags
            .get(key(upstream, repo, tag.as_str()))?
            .and_then(|v| decode_entry(&v)))
    }

    /// Records what a tag points to now.
    ///
    /// # Errors
    /// sled errors.
    pub fn set_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        entry: TagEntry,
    ) -> Result<(), IndexError> {
        self.tags
            .insert(key(upstream, repo, tag.as_str()), encode_entry(entry))?;
        Ok(())
    }

    /// The cached tags of a repository, sorted (for `tags/list` when the upstream cannot be asked).
    ///
    /// # Errors
    /// sled errors.
    pub fn tags_of(&self, upstream: &str, repo: &RepoName) -> Result<Vec<String>, IndexError> {
        let prefix = key(upstream, repo, "");
        let mut tags = Vec::new();
        for item in self.tags.scan_prefix(&prefix) {
            let (k, _) = item?;
            if let Ok(tag) = std::str::from_utf8(&k[prefix.len()..]) {
                tags.push(tag.to_owned());
            }
        }
        Ok(tags)
    }

    /// Every cached tag, in key order: its upstream's name, repository, tag and mapping (for
    /// `wharf export --all`). Records that do not parse (written by a later version) are skipped.
    ///
    /// # Errors
    /// sled errors.
    pub fn all_tags(&self) -> Result<Vec<(String, RepoName, Tag, TagEntry)>, IndexError> {
        let mut out = Vec::new();
        for item in &self.tags {
            let (k, v) = item?;
            let mut parts = k.split(|b| *b == 0);
            let (Some(upstream), Some(repo), Some(tag), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let parsed = (
                std::str::from_utf8(upstream).ok(),
                std::str::from_utf8(repo).ok().and_then(|r| r.parse().ok()),
                std::str::from_utf8(tag).ok().and_then(|t| t.parse().ok()),
                decode_entry(&v),
            );
            if let (Some(upstream), Some(repo), Some(tag), Some(entry)) = parsed {
                out.push((upstream.to_owned(), repo, tag, entry));
            }
        }
        Ok(out)
    }

    /// The cached (unfiltered) referrers list of a subject: the digest of the stored response,
    /// and when it was fetched.
    ///
    /// # Errors
    /// sled errors.
    pub fn referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Option<TagEntry>, IndexError> {
        let k = key(upstream, repo, &referrers_key(subject));
        Ok(self.referrers.get(k)?.and_then(|v| decode_entry(&v)))
    }

    /// Records a subject's (unfiltered) referrers list.
    ///
    /// # Errors
    /// sled errors.
    pub fn set_referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        entry: TagEntry,
    ) -> Result<(), IndexError> {
        let k = key(upstream, repo, &referrers_key(subject));
        self.referrers.insert(k, encode_entry(entry))?;
        Ok(())
    }

    /// How many referrers lists are recorded.
    pub fn referrers_len(&self) -> usize {
        self.referrers.len()
    }

    /// Writes everything to disk.
    ///
    /// # Errors
    /// sled errors.
    pub async fn flush(&self) -> Result<(), IndexError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Writes everything to disk, blocking (for tools and benches outside a runtime).
    ///
    /// # Errors
    /// sled errors.
    pub fn flush_blocking(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }
}

/// `<upstream>\0<repo>\0<last>`: NUL cannot occur in any of the parts.
fn key(upstream: &str, repo: &RepoName, last: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(upstream.len() + repo.as_str().len() + last.len() + 2);
    key.extend_from_slice(upstream.as_bytes());
    key.push(0);
    key.extend_from_slice(repo.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(last.as_bytes());
    key
}

/// `<subject>\0`: the trailing NUL is where older versions put the `artifactType` filter.
fn referrers_key(subject: &Digest) -> String {
    format!("{subject}\0")
}

/// Drops the records of filtered referrers lists that older versions kept, one per
/// `artifactType` value a client sent (any value, of any length): the unfiltered list answers
/// every filter now. A key is `<upstream>\0<repo>\0<subject>\0<artifactType>`; a filtered one has
/// something after its third NUL.
fn drop_filtered_referrers(tree: &sled::Tree) -> Result<usize, IndexError> {
    let mut batch = sled::Batch::default();
    let mut dropped = 0;
    for item in tree.iter().keys() {
        let k = item?;
        let filtered = k
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == 0)
            .nth(2)
            .is_some_and(|(at, _)| at + 1 < k.len());
        if filtered {
            batch.remove(k);
            dropped += 1;
        }
    }
    if dropped > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(dropped)
}

fn encode_entry(entry: TagEntry) -> Vec<u8> {
    let millis = entry
        .fetched_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(entry.digest.as_bytes());
    v.extend_from_slice(&millis.to_be_bytes());
    v
}

fn decode_entry(v: &[u8]) -> Option<TagEntry> {
    if v.len() != 40 {
        return None;
    }
    let digest: [u8; 32] = v[..32].try_into().ok()?;
    Some(TagEntry {
        digest: Digest::from_bytes(digest),
        fetched_at: UNIX_EPOCH + Duration::from_millis(decode_u64(&v[32..])?),
    })
}

fn digest_key(k: &[u8]) -> Option<Digest> {
    Some(Digest::from_bytes(k.try_into().ok()?))
}

fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"m");
        let repo: RepoName = "org/app".parse().unwrap();
        let tag: Tag = "1".parse().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        {
            let index = Index::open(dir.path()).unwrap();
            assert_eq!(index.blob_size(&d).unwrap(), None);
            index.insert_manifest(&d, 1, "application/x").unwrap();
            index
                .set_tag(
                    "up",
                    &repo,
                    &tag,
                    TagEntry {
                        digest: d,
                        fetched_at: at,
                    },
                )
                .unwrap();
            index.flush().await.unwrap();
        }
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.blob_size(&d).unwrap(), Some(1));
        assert_eq!(
            index.manifest_type(&d).unwrap().as_deref(),
            Some("application/x")
        );
        assert_eq!(
            index.tag("up", &repo, &tag).unwrap(),
            Some(TagEntry {
                digest: d,
                fetched_at: at
            })
        );
        assert_eq!(index.tag("other", &repo, &tag).unwrap(), None);
        index
            .set_tag(
                "up",
                &repo,
                &"2".parse().unwrap(),
                TagEntry {
                    digest: d,
                    fetched_at: at,
                },
            )
            .unwrap();
        let other: RepoName = "org/app2".parse().unwrap();
        index
            .set_tag(
                "up",
                &other,
                &"9".parse().unwrap(),
                TagEntry {
                    digest: d,
                    fetched_at: at,
                },
            )
            .unwrap();
        assert_eq!(index.tags_of("up", &repo).unwrap(), ["1", "2"]);
        let all: Vec<String> = index
            .all_tags()
            .unwrap()
            .iter()
            .map(|(u, r, t, e)| format!("{u} {r}:{t} {}", e.digest == d))
            .collect();
        assert_eq!(
            all,
            [
                "up org/app:1 true",
                "up org/app:2 true",
                "up org/app2:9 true"
            ]
        );
        let subject = Digest::of(b"subject");
        assert_eq!(index.referrers("up", &repo, &subject).unwrap(), None);
        index
            .set_referrers(
                "up",
                &repo,
                &subject,
                TagEntry {
                    digest: d,
                    fetched_at: at,
                },
            )
            .unwrap();
        assert_eq!(index.referrers("other", &repo, &subject).unwrap(), None);
        assert_eq!(
            index
                .referrers("up", &repo, &subject)
                .unwrap()
                .map(|e| e.digest),
            Some(d)
        );
        assert_eq!(index.remove_blob(&d).unwrap(), Some(1));
        assert_eq!(index.remove_blob(&d).unwrap(), None);
        assert_eq!(index.blob_size(&d).unwrap(), None);
        assert_eq!(index.manifest_type(&d).unwrap(), None);
    }

    #[tokio::test]
    async fn usage_is_counted_at_open_and_follows_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        {
            let index = Index::open(dir.path()).unwrap();
            assert_eq!(index.usage(), Usage::default());
            index.insert_blob(&a, 100).unwrap();
            index.insert_manifest(&b, 10, "x/y").unwrap();
            // Inserting again (a manifest stored twice) does not count twice.
            index.insert_blob(&a, 100).unwrap();
            assert_eq!(
                index.usage(),
                Usage {
                    bytes: 110,
                    entries: 2
                }
            );
            index.flush().await.unwrap();
        }
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(
            index.usage(),
            Usage {
                bytes: 110,
                entries: 2
            }
        );
        let listed: Vec<(Digest, u64)> = index.blobs().map(Result::unwrap).collect();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&(a, 100)) && listed.contains(&(b, 10)));
        assert_eq!(index.manifest_digests().unwrap(), [b]);
        index.remove_blob(&a).unwrap();
        index.remove_blob(&a).unwrap();
        assert_eq!(
            index.usage(),
            Usage {
                bytes: 10,
                entries: 1
            }
        );
    }

    #[test]
    fn access_times_skip_what_is_not_indexed_and_go_with_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let (a, gone) = (Digest::of(b"a"), Digest::of(b"gone"));
        index.insert_blob(&a, 1).unwrap();
        assert_eq!(index.record_access(&[(a, 5), (gone, 6)]).unwrap(), 1);
        assert_eq!(index.access(&a).unwrap(), Some(5));
        assert_eq!(index.access(&gone).unwrap(), None);
        assert_eq!(index.access_times().unwrap(), HashMap::from([(a, 5)]));
        assert!(index.stale_records().unwrap().is_empty());
        index.remove_blob(&a).unwrap();
        assert_eq!(index.access(&a).unwrap(), None);
    }

    #[test]
    fn pins_sync_with_the_configuration_and_keep_command_pins() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let img = |s: &str| s.parse::<ImageRef>().unwrap();
        let (a, b, c) = (img("r.io/a:1"), img("r.io/b:1"), img("r.io/c:1"));
        assert!(index.add_pin(&c, PinSource::Command).unwrap());
        assert!(!index.add_pin(&c, PinSource::Command).unwrap());
        index.sync_config_pins(&[a.clone(), b.clone()]).unwrap();
        // A command cannot turn a configuration pin into its own.
        assert!(!index.add_pin(&a, PinSource::Command).unwrap());
        index.sync_config_pins(std::slice::from_ref(&b)).unwrap();
        assert_eq!(
            index.pins().unwrap(),
            [
                (b.clone(), PinSource::Config),
                (c.clone(), PinSource::Command)
            ]
        );
        assert_eq!(index.remove_pin(&c).unwrap(), Some(PinSource::Command));
        assert_eq!(index.remove_pin(&c).unwrap(), None);
        assert_eq!(index.pins().unwrap(), [(b, PinSource::Config)]);
    }

    #[tokio::test]
    async fn filtered_referrers_records_of_older_versions_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "org/app".parse().unwrap();
        let subject = Digest::of(b"subject");
        let entry = TagEntry {
            digest: Digest::of(b"list"),
            fetched_at: UNIX_EPOCH,
        };
        {
            let index = Index::open(dir.path()).unwrap();
            index.set_referrers("up", &repo, &subject, entry).unwrap();
            // As an older version wrote them: one per artifactType, NUL included.
            for t in ["x/y", "a\0b", ""] {
                let k = key("up", &repo, &format!("{subject}\0{t}"));
                index.referrers.insert(k, encode_entry(entry)).unwrap();
            }
            assert_eq!(index.referrers_len(), 3);
            index.flush().await.unwrap();
        }
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.referrers_len(), 1);
        assert_eq!(index.referrers("up", &repo, &subject).unwrap(), Some(entry));
    }

    #[test]
    fn a_second_open_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Index::open(dir.path()).unwrap();
        let e = Index::open(dir.path()).err().unwrap();
        assert!(e.is_locked(), "{e}");
    }
}
