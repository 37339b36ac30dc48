//! The in-memory metadata store: a [`MetaStore`] that keeps its records in ordered maps behind one
//! lock, and forgets them when dropped.
//!
//! It proves the seam (the cache runs the same code on it as on sled) and lets tests of fills,
//! eviction and air-gap run without a database on disk. It follows the contract of
//! [`super::meta`] to the letter, down to the details sled's encoding implies: lists come in the
//! same order (maps keyed so that their order is sled's byte order), and fetched times are kept to
//! the millisecond. It never fails.
//!
//! One [`RwLock`] guards every map: each operation is short, and holding it across two maps makes
//! the usage totals exact by construction (sled needs atomics and the previous value for that).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::RwLock;

use super::meta::{BlobIter, MetaError, MetaStore, PinSource, TagEntry, Usage};
use crate::oci::{Digest, ImageRef, RepoName, Tag};

/// The metadata store in memory.
#[derive(Default)]
pub struct MemoryMeta {
    state: RwLock<State>,
}

/// `(upstream, repository, last)`: as tuples of strings order like sled's NUL-joined keys, because
/// NUL sorts before every other byte and occurs in none of the parts.
type Key = (String, String, String);

#[derive(Default)]
struct State {
    /// Digest → size.
    blobs: BTreeMap<Digest, u64>,
    /// Digest → media type.
    manifests: BTreeMap<Digest, String>,
    /// (upstream, repo, tag) → mapping.
    tags: BTreeMap<Key, TagEntry>,
    /// (upstream, repo, subject digest) → mapping of the stored referrers list.
    referrers: BTreeMap<Key, TagEntry>,
    /// (upstream, repo, subject digest) → referrer digest → its descriptor (JSON).
    subjects: BTreeMap<Key, BTreeMap<Digest, Vec<u8>>>,
    /// Digest → last access (Unix microseconds).
    access: BTreeMap<Digest, u64>,
    /// Reference string → the parsed reference and who pinned it.
    pins: BTreeMap<String, (ImageRef, PinSource)>,
    usage: Usage,
}

// === impl MemoryMeta ===

impl MemoryMeta {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl MetaStore for MemoryMeta {
    fn usage(&self) -> Usage {
        self.state.read().usage
    }

    fn blobs(&self) -> BlobIter<'_> {
        // A snapshot: the caller may change the store while it walks (eviction, gc), and the
        // records are in memory already.
        let blobs: Vec<_> = self
            .state
            .read()
            .blobs
            .iter()
            .map(|(d, s)| Ok((*d, *s)))
            .collect();
        Box::new(blobs.into_iter())
    }

    fn manifest_digests(&self) -> Result<Vec<Digest>, MetaError> {
        Ok(self.state.read().manifests.keys().copied().collect())
    }

    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        Ok(self.state.read().blobs.get(digest).copied())
    }

    fn insert_blob(&self, digest: &Digest, size: u64) -> Result<(), MetaError> {
        self.state.write().insert_blob(*digest, size);
        Ok(())
    }

    fn remove_blob(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let mut state = self.state.write();
        let before = state.blobs.remove(digest);
        if let Some(size) = before {
            state.usage.bytes -= size;
            state.usage.entries -= 1;
        }
        state.manifests.remove(digest);
        state.access.remove(digest);
        Ok(before)
    }

    fn manifest_type(&self, digest: &Digest) -> Result<Option<String>, MetaError> {
        Ok(self.state.read().manifests.get(digest).cloned())
    }

    fn insert_manifest(
        &self,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<(), MetaError> {
        let mut state = self.state.write();
        state.insert_blob(*digest, size);
        state.manifests.insert(*digest, media_type.to_owned());
        Ok(())
    }

    fn access(&self, digest: &Digest) -> Result<Option<u64>, MetaError> {
        Ok(self.state.read().access.get(digest).copied())
    }

    fn access_times(&self) -> Result<HashMap<Digest, u64>, MetaError> {
        Ok(self
            .state
            .read()
            .access
            .iter()
            .map(|(d, t)| (*d, *t))
            .collect())
    }

    fn record_access(&self, times: &[(Digest, u64)]) -> Result<usize, MetaError> {
        let mut state = self.state.write();
        let mut written = 0;
        for (digest, at) in times {
            if state.blobs.contains_key(digest) {
                state.access.insert(*digest, *at);
                written += 1;
            }
        }
        Ok(written)
    }

    fn stale_records(&self) -> Result<Vec<Digest>, MetaError> {
        let state = self.state.read();
        let mut out = Vec::new();
        for d in state.access.keys().chain(state.manifests.keys()) {
            if !state.blobs.contains_key(d) && !out.contains(d) {
                out.push(*d);
            }
        }
        Ok(out)
    }

    fn remove_stale_record(&self, digest: &Digest) -> Result<(), MetaError> {
        let mut state = self.state.write();
        if !state.blobs.contains_key(digest) {
            state.access.remove(digest);
            state.manifests.remove(digest);
        }
        Ok(())
    }

    fn pins(&self) -> Result<Vec<(ImageRef, PinSource)>, MetaError> {
        Ok(self.state.read().pins.values().cloned().collect())
    }

    fn add_pin(&self, image: &ImageRef, source: PinSource) -> Result<bool, MetaError> {
        let mut state = self.state.write();
        let key = image.to_string();
        let before = state.pins.get(&key).map(|(_, s)| *s);
        if before == Some(PinSource::Config) {
            return Ok(false);
        }
        state.pins.insert(key, (image.clone(), source));
        Ok(before.is_none())
    }

    fn remove_pin(&self, image: &ImageRef) -> Result<Option<PinSource>, MetaError> {
        Ok(self
            .state
            .write()
            .pins
            .remove(&image.to_string())
            .map(|(_, s)| s))
    }

    fn sync_config_pins(&self, pins: &[ImageRef]) -> Result<(), MetaError> {
        let mut state = self.state.write();
        state
            .pins
            .retain(|_, (image, source)| *source != PinSource::Config || pins.contains(image));
        for image in pins {
            state
                .pins
                .insert(image.to_string(), (image.clone(), PinSource::Config));
        }
        Ok(())
    }

    fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<TagEntry>, MetaError> {
        Ok(self
            .state
            .read()
            .tags
            .get(&key(upstream, repo, tag.as_str()))
            .copied())
    }

    fn set_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        entry: TagEntry,
    ) -> Result<(), MetaError> {
        self.state
            .write()
            .tags
            .insert(key(upstream, repo, tag.as_str()), to_millis(entry));
        Ok(())
    }

    fn tags_of(&self, upstream: &str, repo: &RepoName) -> Result<Vec<String>, MetaError> {
        let from = key(upstream, repo, "");
        Ok(self
            .state
            .read()
            .tags
            .range(from..)
            .take_while(|((u, r, _), _)| u == upstream && r == repo.as_str())
            .map(|((_, _, t), _)| t.clone())
            .collect())
    }

    fn all_tags(&self) -> Result<Vec<(String, RepoName, Tag, TagEntry)>, MetaError> {
        let state = self.state.read();
        let mut out = Vec::with_capacity(state.tags.len());
        for ((upstream, repo, tag), entry) in &state.tags {
            if let (Ok(repo), Ok(tag)) = (repo.parse(), tag.parse()) {
                out.push((upstream.clone(), repo, tag, *entry));
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
        Ok(self
            .state
            .read()
            .referrers
            .get(&key(upstream, repo, &subject.to_string()))
            .copied())
    }

    fn set_referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        entry: TagEntry,
    ) -> Result<(), MetaError> {
        self.state
            .write()
            .referrers
            .insert(key(upstream, repo, &subject.to_string()), to_millis(entry));
        Ok(())
    }

    fn referrers_len(&self) -> usize {
        self.state.read().referrers.len()
    }

    fn add_referrer(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> Result<(), MetaError> {
        self.state
            .write()
            .subjects
            .entry(key(upstream, repo, &subject.to_string()))
            .or_default()
            .insert(*referrer, descriptor.to_vec());
        Ok(())
    }

    fn referrers_of(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        limit: usize,
    ) -> Result<Vec<(Digest, Vec<u8>)>, MetaError> {
        Ok(self
            .state
            .read()
            .subjects
            .get(&key(upstream, repo, &subject.to_string()))
            .map(|m| m.iter().take(limit).map(|(d, v)| (*d, v.clone())).collect())
            .unwrap_or_default())
    }

    fn drop_dangling_tags(
        &self,
        dry_run: bool,
        gone: &dyn Fn(&Digest) -> bool,
    ) -> Result<usize, MetaError> {
        let mut state = self.state.write();
        let State {
            manifests,
            tags,
            referrers,
            ..
        } = &mut *state;
        let mut dropped = 0;
        for map in [tags, referrers] {
            map.retain(|_, entry| {
                let dangling = gone(&entry.digest) || !manifests.contains_key(&entry.digest);
                if dangling {
                    dropped += 1;
                }
                dry_run || !dangling
            });
        }
        Ok(dropped)
    }

    /// Nothing to write: the records live only in memory.
    async fn flush(&self) -> Result<(), MetaError> {
        Ok(())
    }

    /// Nothing to write: the records live only in memory.
    fn flush_blocking(&self) -> Result<(), MetaError> {
        Ok(())
    }
}

// === impl State ===

impl State {
    /// Records a blob, replacing (not adding to) the size it had.
    fn insert_blob(&mut self, digest: Digest, size: u64) {
        match self.blobs.insert(digest, size) {
            Some(before) => {
                self.usage.bytes = self.usage.bytes - before + size;
            }
            None => {
                self.usage.bytes += size;
                self.usage.entries += 1;
            }
        }
    }
}

fn key(upstream: &str, repo: &RepoName, last: &str) -> Key {
    (
        upstream.to_owned(),
        repo.as_str().to_owned(),
        last.to_owned(),
    )
}

/// The entry as sled keeps it: its time to the millisecond (0 for times before 1970).
fn to_millis(entry: TagEntry) -> TagEntry {
    let millis = entry
        .fetched_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    TagEntry {
        digest: entry.digest,
        fetched_at: UNIX_EPOCH + Duration::from_millis(millis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::meta::conformance::meta_store_tests!(Box::new(MemoryMeta::new()));
}
