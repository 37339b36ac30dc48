//! The metadata store: what the cache knows about its content, apart from the bytes.
//!
//! [`MetaStore`] is the seam between the cache's policy (`cache/`) and where its records live. It
//! holds, for every stored blob, its size (and so the usage totals); for manifests, their media
//! type; for cached tags and referrers lists, the digest they pointed to and when the upstream said
//! so; the last access time of each blob (flushed in batches by the cache's access log); and the
//! pinned images.
//!
//! Contract, for every implementation:
//! - a record that is absent is `Ok(None)` (or an empty list), never an error: an error means the
//!   backend failed, and the caller answers with a server error, not with a miss;
//! - [`MetaStore::usage`] is kept in step with [`MetaStore::insert_blob`] and
//!   [`MetaStore::remove_blob`] without I/O: inserting a digest again replaces its size (it is not
//!   counted twice), and removing it twice subtracts it once;
//! - removing a blob removes its manifest and access records with it;
//! - lists come in key order: blobs and manifests by digest, tags by upstream, repository and tag
//!   (byte order), pins by reference string;
//! - fetched times are kept to the millisecond.
//!
//! The store is a cache of the blob store, not the truth: everything but the tag mappings and the
//! pins can be rebuilt from the stored blobs (`cache::reconcile`).
//!
//! Implementations: [`super::sled_meta::SledMeta`] (on disk, the one wharf runs) and
//! [`super::memory_meta::MemoryMeta`] (in memory, for tests and embedders).

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::oci::{Digest, ImageRef, RepoName, Tag};

/// An error from a metadata backend, boxed so the trait names no backend's type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A metadata operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Another process holds the store (a wharf running on the same storage).
    #[error("index: {0}")]
    Locked(#[source] BoxError),
    /// The backend failed (I/O, corruption).
    #[error("index: {0}")]
    Backend(#[source] BoxError),
}

/// The name the error had when the sled index was the only metadata store.
pub type IndexError = MetaError;

/// How much the store holds: the sum of the sizes of its blobs (manifests included) and their number.
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

/// A cached tag (or referrers list): what it pointed to, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagEntry {
    /// The manifest digest the tag pointed to.
    pub digest: Digest,
    /// When the upstream said so.
    pub fetched_at: SystemTime,
}

/// A streaming walk over every stored blob and its size, in digest order.
pub type BlobIter<'a> = Box<dyn Iterator<Item = Result<(Digest, u64), MetaError>> + Send + 'a>;

/// What the cache records about its content (see the module docs for the contract).
///
/// Every method but [`MetaStore::flush`] is synchronous: the sled implementation answers from its
/// page cache, and [`MetaStore::blob_size`] runs on every cache hit, so it must stay one call with
/// no task hop.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// The bytes and number of stored blobs, kept in memory (no I/O).
    fn usage(&self) -> Usage;

    /// Every stored blob and its size, in digest order. Streams: a store of 100k+ blobs is not
    /// collected in memory by the sled implementation.
    fn blobs(&self) -> BlobIter<'_>;

    /// Every stored manifest's digest, in digest order.
    ///
    /// # Errors
    /// Backend failures.
    fn manifest_digests(&self) -> Result<Vec<Digest>, MetaError>;

    /// The size of a stored blob, if known. Runs on every cache hit.
    ///
    /// # Errors
    /// Backend failures.
    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// Records a committed blob (replacing its size if it was recorded).
    ///
    /// # Errors
    /// Backend failures.
    fn insert_blob(&self, digest: &Digest, size: u64) -> Result<(), MetaError>;

    /// Forgets a blob (and its manifest and access records). Returns the size it had, or `None`
    /// when it was not recorded (another caller removed it first).
    ///
    /// # Errors
    /// Backend failures.
    fn remove_blob(&self, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// The media type of a stored manifest.
    ///
    /// # Errors
    /// Backend failures.
    fn manifest_type(&self, digest: &Digest) -> Result<Option<String>, MetaError>;

    /// Records a committed manifest: its blob and its media type.
    ///
    /// # Errors
    /// Backend failures.
    fn insert_manifest(
        &self,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<(), MetaError>;

    /// When a blob was last served or stored (Unix microseconds), as last flushed.
    ///
    /// # Errors
    /// Backend failures.
    fn access(&self, digest: &Digest) -> Result<Option<u64>, MetaError>;

    /// Every flushed access time.
    ///
    /// # Errors
    /// Backend failures.
    fn access_times(&self) -> Result<HashMap<Digest, u64>, MetaError>;

    /// Records access times in one batch, skipping digests that are not stored (evicted since they
    /// were served from memory). Returns how many were written.
    ///
    /// # Errors
    /// Backend failures.
    fn record_access(&self, times: &[(Digest, u64)]) -> Result<usize, MetaError>;

    /// Access and manifest records of digests that are not stored (left by a crash between two
    /// removals), each once: `wharf check` reports and removes them.
    ///
    /// # Errors
    /// Backend failures.
    fn stale_records(&self) -> Result<Vec<Digest>, MetaError>;

    /// Removes the access and manifest records of a digest that is not stored as a blob.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_stale_record(&self, digest: &Digest) -> Result<(), MetaError>;

    /// The pinned images and who pinned them, in reference order.
    ///
    /// # Errors
    /// Backend failures.
    fn pins(&self) -> Result<Vec<(ImageRef, PinSource)>, MetaError>;

    /// Pins an image. Returns whether it was not pinned before. A pin from the configuration stays
    /// a configuration pin.
    ///
    /// # Errors
    /// Backend failures.
    fn add_pin(&self, image: &ImageRef, source: PinSource) -> Result<bool, MetaError>;

    /// Unpins an image; returns who had pinned it, if anyone.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_pin(&self, image: &ImageRef) -> Result<Option<PinSource>, MetaError>;

    /// Makes the configuration's pins exactly `pins`: adds the new ones (a command pin of the same
    /// image becomes a configuration pin) and removes configuration pins no longer listed.
    ///
    /// # Errors
    /// Backend failures.
    fn sync_config_pins(&self, pins: &[ImageRef]) -> Result<(), MetaError>;

    /// The cached mapping of a tag.
    ///
    /// # Errors
    /// Backend failures.
    fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<TagEntry>, MetaError>;

    /// Records what a tag points to now.
    ///
    /// # Errors
    /// Backend failures.
    fn set_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        entry: TagEntry,
    ) -> Result<(), MetaError>;

    /// The cached tags of a repository, sorted (for `tags/list` when the upstream cannot be asked).
    ///
    /// # Errors
    /// Backend failures.
    fn tags_of(&self, upstream: &str, repo: &RepoName) -> Result<Vec<String>, MetaError>;

    /// Every cached tag, in key order: its upstream's name, repository, tag and mapping (for
    /// `wharf export --all`). Records that do not parse (written by a later version) are skipped.
    ///
    /// # Errors
    /// Backend failures.
    fn all_tags(&self) -> Result<Vec<(String, RepoName, Tag, TagEntry)>, MetaError>;

    /// The cached (unfiltered) referrers list of a subject: the digest of the stored response,
    /// and when it was fetched.
    ///
    /// # Errors
    /// Backend failures.
    fn referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Option<TagEntry>, MetaError>;

    /// Records a subject's (unfiltered) referrers list.
    ///
    /// # Errors
    /// Backend failures.
    fn set_referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        entry: TagEntry,
    ) -> Result<(), MetaError>;

    /// How many referrers lists are recorded.
    fn referrers_len(&self) -> usize;

    /// Records that the stored manifest `referrer` has `subject` as its OCI 1.1 `subject`, as
    /// seen in `upstream`'s `repo`: `descriptor` is its descriptor in a referrers list (JSON,
    /// opaque to the store). Recording it again replaces it. Kept when manifests go: readers skip
    /// referrers that are not stored.
    ///
    /// # Errors
    /// Backend failures.
    fn add_referrer(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> Result<(), MetaError>;

    /// The referrers recorded with [`MetaStore::add_referrer`] for `subject` in `upstream`'s
    /// `repo`, in referrer digest order, with their descriptors: at most `limit` of them.
    ///
    /// # Errors
    /// Backend failures.
    fn referrers_of(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        limit: usize,
    ) -> Result<Vec<(Digest, Vec<u8>)>, MetaError>;

    /// Drops tags and referrers lists whose manifest is not stored, or is `gone` (about to be
    /// removed: a dry run counts those too). Returns how many were (or would be) dropped.
    ///
    /// # Errors
    /// Backend failures.
    fn drop_dangling_tags(
        &self,
        dry_run: bool,
        gone: &dyn Fn(&Digest) -> bool,
    ) -> Result<usize, MetaError>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// Backend failures.
    async fn flush(&self) -> Result<(), MetaError>;

    /// As [`MetaStore::flush`], blocking (for tools and benches outside a runtime).
    ///
    /// # Errors
    /// Backend failures.
    fn flush_blocking(&self) -> Result<(), MetaError>;
}

// === impl MetaError ===

impl MetaError {
    /// Whether the store could not be opened because another process holds it (a wharf server
    /// running on the same storage).
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Locked(_))
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
}

/// The behaviour every [`MetaStore`] must show, written once and run against each implementation
/// with [`meta_store_tests!`](conformance::meta_store_tests).
#[cfg(test)]
pub(crate) mod conformance {
    use std::collections::HashMap;
    use std::time::{Duration, UNIX_EPOCH};

    use super::{MetaStore, PinSource, TagEntry, Usage};
    use crate::oci::{Digest, ImageRef, RepoName, Tag};

    /// Generates one `#[test]` per behaviour below, each on a fresh store made by `$make` (an
    /// expression whose value dereferences to a `MetaStore`, kept alive for the test).
    macro_rules! meta_store_tests {
        ($make:expr) => {
            $crate::store::meta::conformance::meta_store_tests!(
                $make;
                tags_keep_their_digest_and_fetched_time,
                manifest_types_follow_their_blob,
                pins_sync_with_the_configuration_and_keep_command_pins,
                access_times_skip_what_is_not_stored_and_go_with_the_blob,
                usage_follows_insert_replace_and_remove,
                referrers_lists_are_kept_per_upstream_and_repository,
                dangling_tags_and_referrers_are_dropped,
                subjects_are_indexed_per_upstream_and_repository,
            );
        };
        ($make:expr; $($name:ident),+ $(,)?) => {
            $(
                #[test]
                fn $name() {
                    let store = $make;
                    $crate::store::meta::conformance::$name(&*store);
                }
            )+
        };
    }
    pub(crate) use meta_store_tests;

    fn entry(digest: Digest, secs: u64) -> TagEntry {
        TagEntry {
            digest,
            fetched_at: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    pub(crate) fn tags_keep_their_digest_and_fetched_time(m: &dyn MetaStore) {
        let (d, e) = (Digest::of(b"m"), Digest::of(b"e"));
        let app = repo("org/app");
        assert_eq!(m.tag("up", &app, &tag("1")).unwrap(), None);
        m.set_tag("up", &app, &tag("1"), entry(d, 1_700_000_000))
            .unwrap();
        assert_eq!(
            m.tag("up", &app, &tag("1")).unwrap(),
            Some(entry(d, 1_700_000_000))
        );
        assert_eq!(m.tag("other", &app, &tag("1")).unwrap(), None);
        assert_eq!(m.tag("up", &repo("org/app2"), &tag("1")).unwrap(), None);
        // A new answer replaces the old one.
        m.set_tag("up", &app, &tag("1"), entry(e, 1_700_000_060))
            .unwrap();
        assert_eq!(
            m.tag("up", &app, &tag("1")).unwrap(),
            Some(entry(e, 1_700_000_060))
        );
        // Fetched times are kept to the millisecond.
        let precise = TagEntry {
            digest: d,
            fetched_at: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        };
        m.set_tag("up", &app, &tag("2"), precise).unwrap();
        assert_eq!(
            m.tag("up", &app, &tag("2")).unwrap().map(|e| e.fetched_at),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        // Byte order: "a" sorts after "2", and a repository that extends another comes after it.
        m.set_tag("up", &app, &tag("a"), entry(d, 1)).unwrap();
        m.set_tag("up", &repo("org/app2"), &tag("9"), entry(d, 1))
            .unwrap();
        m.set_tag("up", &repo("org/ap"), &tag("0"), entry(d, 1))
            .unwrap();
        m.set_tag("down", &app, &tag("x"), entry(d, 1)).unwrap();
        assert_eq!(m.tags_of("up", &app).unwrap(), ["1", "2", "a"]);
        assert_eq!(
            m.tags_of("up", &repo("org/none")).unwrap(),
            Vec::<String>::new()
        );
        let all: Vec<String> = m
            .all_tags()
            .unwrap()
            .iter()
            .map(|(u, r, t, e)| format!("{u} {r}:{t} {}", e.digest == d))
            .collect();
        assert_eq!(
            all,
            [
                "down org/app:x true",
                "up org/ap:0 true",
                "up org/app:1 false",
                "up org/app:2 true",
                "up org/app:a true",
                "up org/app2:9 true",
            ]
        );
    }

    pub(crate) fn manifest_types_follow_their_blob(m: &dyn MetaStore) {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        m.insert_blob(&a, 1).unwrap();
        m.insert_manifest(&b, 2, "application/x").unwrap();
        m.insert_manifest(&c, 3, "application/y").unwrap();
        assert_eq!(m.manifest_type(&a).unwrap(), None);
        assert_eq!(
            m.manifest_type(&b).unwrap().as_deref(),
            Some("application/x")
        );
        assert_eq!(m.blob_size(&b).unwrap(), Some(2));
        // Recorded again with another type (an older wharf's guess corrected): replaced.
        m.insert_manifest(&b, 2, "application/z").unwrap();
        assert_eq!(
            m.manifest_type(&b).unwrap().as_deref(),
            Some("application/z")
        );
        let mut expected = vec![b, c];
        expected.sort();
        assert_eq!(m.manifest_digests().unwrap(), expected);
        assert_eq!(m.remove_blob(&b).unwrap(), Some(2));
        assert_eq!(m.manifest_type(&b).unwrap(), None);
        assert_eq!(m.manifest_digests().unwrap(), [c]);
        assert!(m.stale_records().unwrap().is_empty());
    }

    pub(crate) fn pins_sync_with_the_configuration_and_keep_command_pins(m: &dyn MetaStore) {
        let img = |s: &str| s.parse::<ImageRef>().unwrap();
        let (a, b, c) = (img("r.io/a:1"), img("r.io/b:1"), img("r.io/c:1"));
        assert!(m.pins().unwrap().is_empty());
        assert!(m.add_pin(&c, PinSource::Command).unwrap());
        assert!(!m.add_pin(&c, PinSource::Command).unwrap());
        m.sync_config_pins(&[a.clone(), b.clone()]).unwrap();
        // A command cannot turn a configuration pin into its own.
        assert!(!m.add_pin(&a, PinSource::Command).unwrap());
        m.sync_config_pins(std::slice::from_ref(&b)).unwrap();
        assert_eq!(
            m.pins().unwrap(),
            [
                (b.clone(), PinSource::Config),
                (c.clone(), PinSource::Command)
            ]
        );
        // The configuration takes over a command pin of the same image.
        m.sync_config_pins(&[b.clone(), c.clone()]).unwrap();
        assert_eq!(m.remove_pin(&c).unwrap(), Some(PinSource::Config));
        assert!(m.add_pin(&c, PinSource::Command).unwrap());
        assert_eq!(m.remove_pin(&c).unwrap(), Some(PinSource::Command));
        assert_eq!(m.remove_pin(&c).unwrap(), None);
        assert_eq!(m.pins().unwrap(), [(b, PinSource::Config)]);
    }

    pub(crate) fn access_times_skip_what_is_not_stored_and_go_with_the_blob(m: &dyn MetaStore) {
        let (a, b, gone) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"gone"));
        m.insert_blob(&a, 1).unwrap();
        assert_eq!(m.record_access(&[(a, 5), (gone, 6)]).unwrap(), 1);
        assert_eq!(m.access(&a).unwrap(), Some(5));
        assert_eq!(m.access(&gone).unwrap(), None);
        assert_eq!(m.access_times().unwrap(), HashMap::from([(a, 5)]));
        assert!(m.stale_records().unwrap().is_empty());
        // Manifests have access times too; a later batch replaces a time.
        m.insert_manifest(&b, 1, "x/y").unwrap();
        assert_eq!(m.record_access(&[]).unwrap(), 0);
        assert_eq!(m.record_access(&[(b, 7), (a, 8)]).unwrap(), 2);
        assert_eq!(m.access_times().unwrap(), HashMap::from([(a, 8), (b, 7)]));
        // Not stale while stored: left alone.
        m.remove_stale_record(&a).unwrap();
        assert_eq!(m.access(&a).unwrap(), Some(8));
        m.remove_blob(&a).unwrap();
        assert_eq!(m.access(&a).unwrap(), None);
        assert_eq!(m.access_times().unwrap(), HashMap::from([(b, 7)]));
    }

    pub(crate) fn usage_follows_insert_replace_and_remove(m: &dyn MetaStore) {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert_eq!(m.usage(), Usage::default());
        assert_eq!(m.blobs().count(), 0);
        m.insert_blob(&a, 100).unwrap();
        m.insert_manifest(&b, 10, "x/y").unwrap();
        // Inserting again (a manifest stored twice) does not count twice.
        m.insert_blob(&a, 100).unwrap();
        m.insert_manifest(&b, 10, "x/y").unwrap();
        assert_eq!(
            m.usage(),
            Usage {
                bytes: 110,
                entries: 2
            }
        );
        // A record replaced with another size counts the new size only.
        m.insert_blob(&a, 50).unwrap();
        assert_eq!(
            m.usage(),
            Usage {
                bytes: 60,
                entries: 2
            }
        );
        let listed: Vec<(Digest, u64)> = m.blobs().map(Result::unwrap).collect();
        let mut expected = vec![(a, 50), (b, 10)];
        expected.sort();
        assert_eq!(listed, expected, "every blob, in digest order");
        assert_eq!(m.remove_blob(&a).unwrap(), Some(50));
        assert_eq!(m.remove_blob(&a).unwrap(), None);
        assert_eq!(m.blob_size(&a).unwrap(), None);
        assert_eq!(
            m.usage(),
            Usage {
                bytes: 10,
                entries: 1
            }
        );
        m.remove_blob(&b).unwrap();
        assert_eq!(m.usage(), Usage::default());
    }

    pub(crate) fn referrers_lists_are_kept_per_upstream_and_repository(m: &dyn MetaStore) {
        let (subject, list, newer) = (
            Digest::of(b"subject"),
            Digest::of(b"list"),
            Digest::of(b"newer"),
        );
        let app = repo("org/app");
        assert_eq!(m.referrers("up", &app, &subject).unwrap(), None);
        assert_eq!(m.referrers_len(), 0);
        m.set_referrers("up", &app, &subject, entry(list, 10))
            .unwrap();
        assert_eq!(m.referrers("other", &app, &subject).unwrap(), None);
        assert_eq!(m.referrers("up", &repo("org/b"), &subject).unwrap(), None);
        assert_eq!(m.referrers("up", &app, &list).unwrap(), None);
        assert_eq!(
            m.referrers("up", &app, &subject).unwrap(),
            Some(entry(list, 10))
        );
        m.set_referrers("up", &app, &subject, entry(newer, 20))
            .unwrap();
        assert_eq!(
            m.referrers("up", &app, &subject).unwrap(),
            Some(entry(newer, 20))
        );
        assert_eq!(m.referrers_len(), 1);
        m.set_referrers("other", &app, &subject, entry(list, 10))
            .unwrap();
        assert_eq!(m.referrers_len(), 2);
        // Referrers lists are not tags.
        assert!(m.all_tags().unwrap().is_empty());
    }

    pub(crate) fn dangling_tags_and_referrers_are_dropped(m: &dyn MetaStore) {
        let (kept, doomed, missing) =
            (Digest::of(b"kept"), Digest::of(b"doomed"), Digest::of(b"x"));
        let app = repo("org/app");
        m.insert_manifest(&kept, 1, "x/y").unwrap();
        m.insert_manifest(&doomed, 1, "x/y").unwrap();
        // A plain blob is not a manifest: a tag to it dangles.
        m.insert_blob(&missing, 1).unwrap();
        m.set_tag("up", &app, &tag("kept"), entry(kept, 1)).unwrap();
        m.set_tag("up", &app, &tag("doomed"), entry(doomed, 1))
            .unwrap();
        m.set_tag("up", &app, &tag("missing"), entry(missing, 1))
            .unwrap();
        m.set_referrers("up", &app, &kept, entry(kept, 1)).unwrap();
        m.set_referrers("up", &app, &doomed, entry(Digest::of(b"none"), 1))
            .unwrap();
        let gone = |d: &Digest| *d == doomed;
        // A dry run counts what would go, the doomed manifest's tag included, and drops nothing.
        assert_eq!(m.drop_dangling_tags(true, &gone).unwrap(), 3);
        assert_eq!(
            m.tags_of("up", &app).unwrap(),
            ["doomed", "kept", "missing"]
        );
        assert_eq!(m.referrers_len(), 2);
        assert_eq!(m.drop_dangling_tags(false, &|_| false).unwrap(), 2);
        assert_eq!(m.tags_of("up", &app).unwrap(), ["doomed", "kept"]);
        assert_eq!(m.referrers_len(), 1);
        assert_eq!(m.drop_dangling_tags(false, &gone).unwrap(), 1);
        assert_eq!(m.tags_of("up", &app).unwrap(), ["kept"]);
        assert_eq!(m.drop_dangling_tags(false, &|_| false).unwrap(), 0);
    }

    pub(crate) fn subjects_are_indexed_per_upstream_and_repository(m: &dyn MetaStore) {
        let (subject, sig, sbom) = (
            Digest::of(b"subject"),
            Digest::of(b"sig"),
            Digest::of(b"sbom"),
        );
        let app = repo("org/app");
        assert!(m
            .referrers_of("up", &app, &subject, 100)
            .unwrap()
            .is_empty());
        m.add_referrer("up", &app, &subject, &sig, b"{\"a\":1}")
            .unwrap();
        m.add_referrer("up", &app, &subject, &sbom, b"{\"b\":2}")
            .unwrap();
        m.add_referrer("up", &app, &subject, &sig, b"{\"a\":3}")
            .unwrap();
        let mut want = vec![(sig, b"{\"a\":3}".to_vec()), (sbom, b"{\"b\":2}".to_vec())];
        want.sort_by_key(|(d, _)| *d);
        assert_eq!(m.referrers_of("up", &app, &subject, 100).unwrap(), want);
        assert_eq!(m.referrers_of("up", &app, &subject, 1).unwrap(), want[..1]);
        assert!(m
            .referrers_of("other", &app, &subject, 100)
            .unwrap()
            .is_empty());
        assert!(m
            .referrers_of("up", &repo("org/b"), &subject, 100)
            .unwrap()
            .is_empty());
        assert!(m.referrers_of("up", &app, &sig, 100).unwrap().is_empty());
        // Not referrers lists, not tags.
        assert_eq!(m.referrers_len(), 0);
        assert!(m.all_tags().unwrap().is_empty());
    }
}
