//! The sled metadata store: the [`MetaStore`] wharf runs on, in `<storage>/index`.
//!
//! sled makes no on-disk format promise before 1.0, so everything in it but the tag mappings and
//! the pins can be rebuilt from the stored blobs (manifest media types are read back from the
//! manifests themselves), and losing the tags only costs one upstream request per tag.
//!
//! Layout, one sled tree per kind:
//! - `blobs`: digest (32 bytes) → size (u64, big-endian);
//! - `manifests`: digest → media type (UTF-8);
//! - `tags`: `<upstream>\0<repo>\0<tag>` → digest (32 bytes) ++ fetched-at (u64 Unix milliseconds, BE);
//! - `referrers`: `<upstream>\0<repo>\0<subject digest>\0` → the same, for the stored unfiltered
//!   referrers list (filters are applied when answering). Older versions kept one record per
//!   `artifactType` filter after the last `\0`; [`SledMeta::open`] drops those.
//! - `subjects`: `<upstream>\0<repo>\0<subject digest>\0<referrer digest>` → the referrer's
//!   descriptor (JSON), for every stored manifest with an OCI 1.1 `subject`: the referrers API
//!   answered from what the cache holds;
//! - `access`: digest → when it was last served or stored (u64 Unix microseconds, BE), written in
//!   batches by the cache's access log, never once per request;
//! - `pins`: an image reference (`docker.io/library/nginx:1.27`) → who pinned it (`c` for the
//!   configuration file, `p` for `wharf pin` or the library).
//!
//! The total size and number of stored blobs are kept in memory ([`MetaStore::usage`]): counted
//! once when the store opens, then adjusted by every insert and removal by the previous value sled
//! hands back, so concurrent writers of one digest cannot make them drift.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;

use super::meta::{BlobIter, MetaError, MetaStore, PinSource, TagEntry, Usage};
use crate::oci::{Digest, ImageRef, RepoName, Tag};

/// The metadata store on sled. Cloning it is cheap (the trees are shared).
#[derive(Clone)]
pub struct SledMeta {
    db: sled::Db,
    blobs: sled::Tree,
    manifests: sled::Tree,
    tags: sled::Tree,
    referrers: sled::Tree,
    subjects: sled::Tree,
    access: sled::Tree,
    pins: sled::Tree,
    totals: Arc<Totals>,
}

#[derive(Debug, Default)]
struct Totals {
    bytes: AtomicU64,
    entries: AtomicU64,
}

// === impl MetaError ===

impl From<sled::Error> for MetaError {
    /// A sled error; the one sled returns when another process holds the database's file lock
    /// becomes [`MetaError::Locked`].
    fn from(e: sled::Error) -> Self {
        if matches!(&e, sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::Other && io.to_string().contains("could not acquire lock"))
        {
            Self::Locked(Box::new(e))
        } else {
            Self::Backend(Box::new(e))
        }
    }
}

// === impl SledMeta ===

impl SledMeta {
    /// Opens (creating if needed) the sled database in `dir`, counting the usage totals and
    /// dropping the filtered referrers records of older versions.
    ///
    /// # Errors
    /// When sled cannot open the directory, for example because another wharf holds it
    /// ([`MetaError::Locked`]).
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
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
            subjects: db.open_tree("subjects")?,
            access: db.open_tree("access")?,
            pins: db.open_tree("pins")?,
            totals: Arc::new(totals),
            db,
        })
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
}

#[async_trait]
impl MetaStore for SledMeta {
    fn usage(&self) -> Usage {
        Usage {
            bytes: self.totals.bytes.load(Ordering::Relaxed),
            entries: self.totals.entries.load(Ordering::Relaxed),
        }
    }

    fn blobs(&self) -> BlobIter<'_> {
        Box::new(self.blobs.iter().filter_map(|item| match item {
            Ok((k, v)) => Some(Ok((digest_key(&k)?, decode_u64(&v)?))),
            Err(e) => Some(Err(e.into())),
        }))
    }

    fn manifest_digests(&self) -> Result<Vec<Digest>, MetaError> {
        let mut out = Vec::new();
        for item in self.manifests.iter().keys() {
            if let Some(d) = digest_key(&item?) {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn access(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        Ok(self
            .access
            .get(digest.as_bytes())?
            .and_then(|v| decode_u64(&v)))
    }

    fn access_times(&self) -> Result<HashMap<Digest, u64>, MetaError> {
        let mut out = HashMap::with_capacity(self.access.len());
        for item in &self.access {
            let (k, v) = item?;
            if let (Some(d), Some(t)) = (digest_key(&k), decode_u64(&v)) {
                out.insert(d, t);
            }
        }
        Ok(out)
    }

    fn record_access(&self, times: &[(Digest, u64)]) -> Result<usize, MetaError> {
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

    fn stale_records(&self) -> Result<Vec<Digest>, MetaError> {
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

    fn remove_stale_record(&self, digest: &Digest) -> Result<(), MetaError> {
        if !self.blobs.contains_key(digest.as_bytes())? {
            self.access.remove(digest.as_bytes())?;
            self.manifests.remove(digest.as_bytes())?;
        }
        Ok(())
    }

    fn pins(&self) -> Result<Vec<(ImageRef, PinSource)>, MetaError> {
        let mut out = Vec::new();
        for item in &self.pins {
            let (k, v) = item?;
            // A record that does not parse (written by a later version) is skipped, not fatal.
            if let Some(image) = std::str::from_utf8(&k).ok().and_then(|s| s.parse().ok()) {
                out.push((image, pin_from_byte(&v)));
            }
        }
        Ok(out)
    }

    fn add_pin(&self, image: &ImageRef, source: PinSource) -> Result<bool, MetaError> {
        let key = image.to_string();
        let before = self.pins.get(&key)?;
        if before.as_deref().map(pin_from_byte) == Some(PinSource::Config) {
            return Ok(false);
        }
        self.pins.insert(key, &[pin_byte(source)])?;
        Ok(before.is_none())
    }

    fn remove_pin(&self, image: &ImageRef) -> Result<Option<PinSource>, MetaError> {
        Ok(self
            .pins
            .remove(image.to_string())?
            .map(|v| pin_from_byte(&v)))
    }

    fn sync_config_pins(&self, pins: &[ImageRef]) -> Result<(), MetaError> {
        for (image, source) in self.pins()? {
            if source == PinSource::Config && !pins.contains(&image) {
                self.pins.remove(image.to_string())?;
            }
        }
        for image in pins {
            self.pins
                .insert(image.to_string(), &[pin_byte(PinSource::Config)])?;
        }
        Ok(())
    }

    fn drop_dangling_tags(
        &self,
        dry_run: bool,
        gone: &dyn Fn(&Digest) -> bool,
    ) -> Result<usize, MetaError> {
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

    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        Ok(self
            .blobs
            .get(digest.as_bytes())?
            .and_then(|v| decode_u64(&v)))
    }

    fn insert_blob(&self, digest: &Digest, size: u64) -> Result<(), MetaError> {
        let before = self.blobs.insert(digest.as_bytes(), &size.to_be_bytes())?;
        self.account(before.and_then(|v| decode_u64(&v)), Some(size));
        Ok(())
    }

    fn remove_blob(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let before = self
            .blobs
            .remove(digest.as_bytes())?
            .and_then(|v| decode_u64(&v));
        self.account(before, None);
        self.manifests.remove(digest.as_bytes())?;
        self.access.remove(digest.as_bytes())?;
        Ok(before)
    }

    fn manifest_type(&self, digest: &Digest) -> Result<Option<String>, MetaError> {
        Ok(self
            .manifests
            .get(digest.as_bytes())?
            .and_then(|v| String::from_utf8(v.to_vec()).ok()))
    }

    fn insert_manifest(
        &self,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<(), MetaError> {
        self.insert_blob(digest, size)?;
        self.manifests
            .insert(digest.as_bytes(), media_type.as_bytes())?;
        Ok(())
    }

    fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<TagEntry>, MetaError> {
        Ok(self
            .tags
            .get(key(upstream, repo, tag.as_str()))?
            .and_then(|v| decode_entry(&v)))
    }

    fn set_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        entry: TagEntry,
    ) -> Result<(), MetaError> {
        self.tags
            .insert(key(upstream, repo, tag.as_str()), encode_entry(entry))?;
        Ok(())
    }

    fn tags_of(&self, upstream: &str, repo: &RepoName) -> Result<Vec<String>, MetaError> {
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

    fn all_tags(&self) -> Result<Vec<(String, RepoName, Tag, TagEntry)>, MetaError> {
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

    fn referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Option<TagEntry>, MetaError> {
        let k = key(upstream, repo, &referrers_key(subject));
        Ok(self.referrers.get(k)?.and_then(|v| decode_entry(&v)))
    }

    fn set_referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        entry: TagEntry,
    ) -> Result<(), MetaError> {
        let k = key(upstream, repo, &referrers_key(subject));
        self.referrers.insert(k, encode_entry(entry))?;
        Ok(())
    }

    fn referrers_len(&self) -> usize {
        self.referrers.len()
    }

    fn add_referrer(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> Result<(), MetaError> {
        let k = key(upstream, repo, &format!("{subject}\0{referrer}"));
        self.subjects.insert(k, descriptor)?;
        Ok(())
    }

    fn referrers_of(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        limit: usize,
    ) -> Result<Vec<(Digest, Vec<u8>)>, MetaError> {
        let prefix = key(upstream, repo, &referrers_key(subject));
        let mut out = Vec::new();
        for item in self.subjects.scan_prefix(&prefix).take(limit) {
            let (k, v) = item?;
            let referrer = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|t| t.parse::<Digest>().ok());
            if let Some(referrer) = referrer {
                out.push((referrer, v.to_vec()));
            }
        }
        out.sort_by_key(|(d, _)| *d);
        Ok(out)
    }

    async fn flush(&self) -> Result<(), MetaError> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn flush_blocking(&self) -> Result<(), MetaError> {
        self.db.flush()?;
        Ok(())
    }
}

/// The byte a pin record holds.
fn pin_byte(source: PinSource) -> u8 {
    match source {
        PinSource::Config => b'c',
        PinSource::Command => b'p',
    }
}

fn pin_from_byte(b: &[u8]) -> PinSource {
    if b == b"c" {
        PinSource::Config
    } else {
        PinSource::Command
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
fn drop_filtered_referrers(tree: &sled::Tree) -> Result<usize, MetaError> {
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

    /// A sled store in a temporary directory, removed after the store is dropped.
    struct Temp {
        meta: SledMeta,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for Temp {
        type Target = SledMeta;

        fn deref(&self) -> &SledMeta {
            &self.meta
        }
    }

    fn temp() -> Temp {
        let dir = tempfile::tempdir().unwrap();
        Temp {
            meta: SledMeta::open(dir.path()).unwrap(),
            _dir: dir,
        }
    }

    // The behaviour every metadata store shares (the pins and access-time tests that lived here
    // are among them).
    crate::store::meta::conformance::meta_store_tests!(temp());

    #[tokio::test]
    async fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"m");
        let repo: RepoName = "org/app".parse().unwrap();
        let tag: Tag = "1".parse().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        {
            let index = SledMeta::open(dir.path()).unwrap();
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
        let index = SledMeta::open(dir.path()).unwrap();
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
            let index = SledMeta::open(dir.path()).unwrap();
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
        let index = SledMeta::open(dir.path()).unwrap();
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
            let index = SledMeta::open(dir.path()).unwrap();
            index.set_referrers("up", &repo, &subject, entry).unwrap();
            // As an older version wrote them: one per artifactType, NUL included.
            for t in ["x/y", "a\0b", ""] {
                let k = key("up", &repo, &format!("{subject}\0{t}"));
                index.referrers.insert(k, encode_entry(entry)).unwrap();
            }
            assert_eq!(index.referrers_len(), 3);
            index.flush().await.unwrap();
        }
        let index = SledMeta::open(dir.path()).unwrap();
        assert_eq!(index.referrers_len(), 1);
        assert_eq!(index.referrers("up", &repo, &subject).unwrap(), Some(entry));
    }

    #[test]
    fn a_second_open_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledMeta::open(dir.path()).unwrap();
        let e = SledMeta::open(dir.path()).err().unwrap();
        assert!(e.is_locked(), "{e}");
    }
}
