//! Manifest caching policy: what a manifest request is answered with, and when the upstream is
//! asked.
//!
//! Manifests are small (the spec lets registries refuse over 4 MiB), so they are read whole, verified
//! and stored by digest, content-addressed and immutable: a manifest by digest is never asked for
//! again. The bytes are kept exactly as received, since the digest covers every byte.
//!
//! An upstream's answer is parsed, not trusted: it is kept only when it is a manifest of a type
//! wharf serves, by [`media::resolve_manifest_type`], which decides the type from the document and
//! refuses a `Content-Type` that contradicts it. Anything else is a [`ManifestError`] naming the
//! upstream, and nothing is stored. The type served is thus a function of the bytes: no upstream can
//! change what another serves for the same digest. A manifest read back from the store is resolved
//! again, so a type recorded by an older wharf (which kept whatever `Content-Type` came) is
//! corrected on its first read, and stored bytes that are no manifest are not served.
//!
//! A tag maps to a digest in the index. Within `tag_ttl` it is served without asking the upstream.
//! After that it is revalidated with a `HEAD` (Docker Hub rate-limits manifest GETs, not HEADs) and
//! the manifest is fetched again only when the digest changed. When the upstream cannot answer
//! (down, slow, 5xx, 429) the cached tag is served anyway, marked stale, unless `serve_stale` is off;
//! only an authoritative 404 ends a tag's life, and it is remembered for `negative_ttl`. An offline
//! upstream is never asked: its cached tags are served as they are.
//!
//! Concurrent requests for the same reference through the same upstream share one upstream
//! exchange (a flight); the index, not the flight, is the cache. Hot manifests are kept in memory
//! by digest, so a tag hit needs one index lookup and no file I/O.
//!
//! The HTTP side ([`crate::server::manifests`]) only parses requests and maps [`ManifestError`] to
//! OCI error responses; `wharf prefetch` and `[[sync]]` call [`Manifests`] directly.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::{debug, warn};

use super::{Cache, FillError, IndexError, TagEntry};
use crate::oci::{media, referrer, Digest, Reference, RepoName, Tag};
use crate::upstream::{Upstream, UpstreamError};

/// Builds the `Accept` value to send upstream. Called only when the upstream is asked, so a hit
/// does not pay for it.
pub type Accept<'a> = &'a (dyn Fn() -> String + Sync);

/// A manifest as served.
#[derive(Debug)]
pub struct Manifest {
    digest: Digest,
    media_type: &'static str,
    bytes: Bytes,
}

/// Where a manifest came from, for `X-Cache`, logs and `wharf prefetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestStatus {
    /// From the cache, without asking the upstream.
    Hit,
    /// Fetched from the upstream now (and cached).
    Miss,
    /// A tag past its `tag_ttl` that the upstream confirmed unchanged (a `HEAD`, no body fetched).
    Revalidated,
    /// From the cache because the upstream could not be asked.
    Stale,
}

/// How long tags are trusted, and what happens when the upstream cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestPolicy {
    /// How long a tag's digest is trusted before the upstream is asked again.
    pub tag_ttl: Duration,
    /// Whether a cached tag is served when the upstream cannot be asked.
    pub serve_stale: bool,
    /// How long an upstream 404 for a tag is remembered (zero: not at all).
    pub negative_ttl: Duration,
    /// The memory hot manifests may take, weighed by their size.
    pub hot_bytes: u64,
}

/// Why a manifest cannot be served. Cheap to clone: a flight hands the same error to every request
/// that joined it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManifestError {
    /// The upstream said recently that the tag does not exist (remembered for `negative_ttl`).
    #[error("not found at upstream {upstream} (asked recently; not asking again yet)")]
    NotFoundRecently {
        /// The upstream's name.
        upstream: String,
    },
    /// The upstream refused or failed the request (a 404 included).
    #[error(transparent)]
    Upstream(Arc<UpstreamError>),
    /// Asked by digest, the upstream sent a document with another digest.
    #[error("upstream {upstream} sent a manifest that does not match {expected}")]
    DigestMismatch {
        /// The upstream's name.
        upstream: String,
        /// The digest asked for.
        expected: Digest,
    },
    /// The upstream sent something that is not a manifest wharf serves.
    #[error("upstream {upstream} sent a manifest that {reason}")]
    Unacceptable {
        /// The upstream's name.
        upstream: String,
        /// What is wrong with it.
        reason: media::ManifestError,
    },
    /// The index failed.
    #[error("index failure")]
    Index(#[source] Arc<IndexError>),
    /// The store failed to read or keep a manifest.
    #[error("storage failure")]
    Storage(#[source] Arc<FillError>),
}

/// Requests for the same manifest through the same upstream that are in flight together.
type Flights = moka::future::Cache<(String, RepoName, Reference), (Arc<Manifest>, ManifestStatus)>;

/// The manifest cache: policy, flights, negative tags and hot manifests.
pub struct Manifests {
    cache: Arc<Cache>,
    policy: ManifestPolicy,
    flights: Flights,
    /// Tags the upstream said do not exist, by upstream name, remembered for `negative_ttl`.
    negative: moka::future::Cache<(String, RepoName, Tag), ()>,
    /// Manifests in memory by digest. Content-addressed, so an entry can never be wrong, only
    /// absent.
    hot: moka::sync::Cache<Digest, Arc<Manifest>>,
}

// === impl Manifest ===

impl Manifest {
    /// Its digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Its media type, resolved from its bytes.
    pub fn media_type(&self) -> &'static str {
        self.media_type
    }

    /// The document, exactly as the upstream sent it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

// === impl ManifestError ===

impl ManifestError {
    /// The upstream's own error, when that is what this is.
    pub fn upstream_error(&self) -> Option<&UpstreamError> {
        match self {
            Self::Upstream(e) => Some(e),
            Self::Storage(e) => match &**e {
                FillError::Upstream(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the upstream said the manifest does not exist (or, offline, cannot say otherwise).
    pub fn not_found(&self) -> bool {
        matches!(
            self.upstream_error(),
            Some(
                UpstreamError::Status {
                    status: http::StatusCode::NOT_FOUND,
                    ..
                } | UpstreamError::Offline { .. }
            )
        )
    }

    /// Whether the upstream failed in a way a cached copy can stand in for: anything but an
    /// authoritative "not found", and none of wharf's own failures.
    pub fn upstream_trouble(&self) -> bool {
        match self {
            Self::Upstream(_) => !self.not_found(),
            Self::DigestMismatch { .. } | Self::Unacceptable { .. } => true,
            Self::Storage(e) => match &**e {
                FillError::Upstream(_) => !self.not_found(),
                FillError::BodyCut { .. }
                | FillError::TooSlow { .. }
                | FillError::Mismatch { .. } => true,
                FillError::Storage(_) | FillError::Index(_) | FillError::Abandoned => false,
            },
            Self::NotFoundRecently { .. } | Self::Index(_) => false,
        }
    }
}

impl From<UpstreamError> for ManifestError {
    fn from(e: UpstreamError) -> Self {
        Self::Upstream(Arc::new(e))
    }
}

impl From<IndexError> for ManifestError {
    fn from(e: IndexError) -> Self {
        Self::Index(Arc::new(e))
    }
}

impl From<FillError> for ManifestError {
    fn from(e: FillError) -> Self {
        Self::Storage(Arc::new(e))
    }
}

/// The cache of tags the upstream said do not exist, kept `ttl`.
fn negative_cache(ttl: Duration) -> moka::future::Cache<(String, RepoName, Tag), ()> {
    moka::future::Cache::builder()
        .max_capacity(100_000)
        // moka refuses a zero TTL; with negative_ttl = 0 nothing is inserted anyway.
        .time_to_live(ttl.max(Duration::from_millis(1)))
        .build()
}

// === impl Manifests ===

impl Manifests {
    /// The manifest cache over `cache`, with `policy`.
    pub fn new(cache: Arc<Cache>, policy: ManifestPolicy) -> Self {
        Self {
            cache,
            policy,
            flights: moka::future::Cache::builder().max_capacity(10_000).build(),
            negative: negative_cache(policy.negative_ttl),
            hot: moka::sync::Cache::builder()
                .max_capacity(policy.hot_bytes)
                .weigher(|_, m: &Arc<Manifest>| u32::try_from(m.bytes.len()).unwrap_or(u32::MAX))
                .build(),
        }
    }

    /// The same flights and hot manifests under `policy`: what a configuration reload builds, so
    /// requests in flight are still joined and nothing hot is lost. The remembered "no such tag"
    /// answers are kept too, unless `negative_ttl` changed (moka fixes the time to live when the
    /// cache is built): then they start empty, and the upstream is asked again.
    #[must_use]
    pub fn with_policy(&self, policy: ManifestPolicy) -> Self {
        let negative = if policy.negative_ttl == self.policy.negative_ttl {
            self.negative.clone()
        } else {
            negative_cache(policy.negative_ttl)
        };
        Self {
            cache: self.cache.clone(),
            policy: ManifestPolicy {
                // The memory budget is the process's, not the file's.
                hot_bytes: self.policy.hot_bytes,
                ..policy
            },
            flights: self.flights.clone(),
            negative,
            hot: self.hot.clone(),
        }
    }

    /// The policy (tag lists and referrers follow the same `tag_ttl` and `serve_stale`).
    pub fn policy(&self) -> &ManifestPolicy {
        &self.policy
    }

    /// A manifest by tag or digest from `upstream`, as the policy says (see the module docs).
    ///
    /// # Errors
    /// A [`ManifestError`]: the upstream's refusal or failure (when nothing cached may stand in),
    /// a document that does not verify, a remembered 404, an index or storage failure.
    pub async fn get(
        &self,
        upstream: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        accept: Accept<'_>,
    ) -> Result<(Arc<Manifest>, ManifestStatus), ManifestError> {
        match reference {
            Reference::Digest(digest) => match self.cached(digest).await? {
                Some(m) => Ok((m, ManifestStatus::Hit)),
                // Boxed: the upstream exchange's future is tens of KiB, and inline it would make
                // every hit's future as large (copied whole on every move; by hyper's HTTP/2
                // server, at every stream it spawns). A miss can afford the allocation.
                None => {
                    Box::pin(self.flight(upstream, repo, reference, async {
                        let manifest = self.fetch(upstream, repo, reference, accept).await?;
                        Ok((manifest, ManifestStatus::Miss))
                    }))
                    .await
                }
            },
            Reference::Tag(tag) => self.resolve_tag(upstream, repo, tag, accept).await,
        }
    }

    /// Asks the upstream about a tag now, whatever the age of its cached mapping (`tag_ttl` is not
    /// consulted): a `HEAD` when the tag's manifest is cached, and a `GET` only when the digest
    /// changed or nothing is cached. It shares the flight of client requests for the same tag, and
    /// records the answer as a client request would. Returns the digest the tag points to and
    /// whether it was confirmed (`Revalidated`) or fetched (`Miss`). For `[[sync]]` runs.
    ///
    /// # Errors
    /// As [`Manifests::get`] (an offline upstream refuses; nothing is served stale here: a sync
    /// wants the upstream's word).
    pub async fn revalidate(
        &self,
        upstream: &Upstream,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(Digest, ManifestStatus), ManifestError> {
        let entry = self.cache.index().tag(upstream.name(), repo, tag)?;
        let known = match entry {
            Some(entry) => self.cached(&entry.digest).await?,
            None => None,
        };
        let reference = Reference::Tag(tag.clone());
        let accept = || media::upstream_accept([]);
        let (manifest, status) = self
            .flight(
                upstream,
                repo,
                &reference,
                self.refresh_tag(upstream, repo, tag, &accept, known),
            )
            .await?;
        Ok((manifest.digest, status))
    }

    async fn resolve_tag(
        &self,
        upstream: &Upstream,
        repo: &RepoName,
        tag: &Tag,
        accept: Accept<'_>,
    ) -> Result<(Arc<Manifest>, ManifestStatus), ManifestError> {
        let entry = self.cache.index().tag(upstream.name(), repo, tag)?;
        let known = match entry {
            Some(entry) => self.cached(&entry.digest).await?.map(|m| (entry, m)),
            None => None,
        };
        if let Some((entry, manifest)) = &known {
            let age = SystemTime::now()
                .duration_since(entry.fetched_at)
                .unwrap_or_default();
            if upstream.offline() || age < self.policy.tag_ttl {
                return Ok((manifest.clone(), ManifestStatus::Hit));
            }
        }
        let negative_key = (upstream.name().to_owned(), repo.clone(), tag.clone());
        if self.negative.contains_key(&negative_key) {
            return Err(ManifestError::NotFoundRecently {
                upstream: upstream.name().to_owned(),
            });
        }
        let reference = Reference::Tag(tag.clone());
        let known_manifest = known.as_ref().map(|(_, m)| m.clone());
        // Boxed as in `get`: a fresh tag's answer stays a small future.
        let result = Box::pin(self.flight(
            upstream,
            repo,
            &reference,
            self.refresh_tag(upstream, repo, tag, accept, known_manifest),
        ))
        .await;
        match (result, known) {
            (Ok(found), _) => Ok(found),
            (Err(error), Some((entry, manifest)))
                if self.policy.serve_stale && error.upstream_trouble() =>
            {
                warn!(
                    upstream = %upstream.name(), %repo, %tag, digest = %entry.digest,
                    %error, "upstream cannot be asked; serving the cached tag stale"
                );
                Ok((manifest, ManifestStatus::Stale))
            }
            (Err(error), _) => {
                if error.not_found() && !upstream.offline() && !self.policy.negative_ttl.is_zero() {
                    self.negative.insert(negative_key, ()).await;
                }
                Err(error)
            }
        }
    }

    /// Runs `exchange` once for all concurrent requests of the same reference.
    async fn flight(
        &self,
        upstream: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        exchange: impl std::future::Future<
            Output = Result<(Arc<Manifest>, ManifestStatus), ManifestError>,
        >,
    ) -> Result<(Arc<Manifest>, ManifestStatus), ManifestError> {
        let key = (upstream.name().to_owned(), repo.clone(), reference.clone());
        let result = self.flights.try_get_with(key.clone(), exchange).await;
        // The flight only joins concurrent requests; the index is the cache.
        self.flights.invalidate(&key).await;
        result.map_err(|e| (*e).clone())
    }

    /// Asks the upstream about a tag: a `HEAD` first when a manifest is cached (nothing more if its
    /// digest is unchanged), a `GET` otherwise. Records the tag's digest and time.
    async fn refresh_tag(
        &self,
        upstream: &Upstream,
        repo: &RepoName,
        tag: &Tag,
        accept: Accept<'_>,
        known: Option<Arc<Manifest>>,
    ) -> Result<(Arc<Manifest>, ManifestStatus), ManifestError> {
        let reference = Reference::Tag(tag.clone());
        let (manifest, status) = match known {
            Some(known)
                if upstream
                    .head_manifest(repo, &reference, &accept())
                    .await?
                    .digest
                    == Some(known.digest) =>
            {
                (known, ManifestStatus::Revalidated)
            }
            _ => (
                self.fetch(upstream, repo, &reference, accept).await?,
                ManifestStatus::Miss,
            ),
        };
        let entry = TagEntry {
            digest: manifest.digest,
            fetched_at: SystemTime::now(),
        };
        self.cache
            .index()
            .set_tag(upstream.name(), repo, tag, entry)?;
        Ok((manifest, status))
    }

    /// A stored manifest: from memory when it is hot, else from the store (and then kept in
    /// memory). Read from the store, its type is resolved from its bytes again, and the index
    /// record corrected when it differs; stored bytes that are no manifest are treated as not
    /// stored.
    ///
    /// # Errors
    /// Index or storage failures.
    pub async fn cached(&self, digest: &Digest) -> Result<Option<Arc<Manifest>>, ManifestError> {
        if let Some(hot) = self.hot.get(digest) {
            self.cache.touch(*digest);
            return Ok(Some(hot));
        }
        let index = self.cache.index();
        let Some(recorded) = index.manifest_type(digest)? else {
            return self.read_shared(digest).await;
        };
        let Some(bytes) = self.cache.read_small(digest).await? else {
            return Ok(None);
        };
        let media_type = match media::resolve_manifest_type(&bytes, None) {
            Ok(t) => t,
            Err(error) => {
                // debug: a client can ask for it again and again (the 502 that follows is logged).
                debug!(%digest, %error, recorded = %recorded.escape_debug(), "a stored manifest is not one wharf serves; asking the upstream instead");
                return Ok(None);
            }
        };
        if media_type != recorded {
            debug!(%digest, recorded = %recorded.escape_debug(), resolved = media_type, "correcting a stored manifest's media type");
            index.insert_manifest(digest, bytes.len() as u64, media_type)?;
        }
        let manifest = Arc::new(Manifest {
            digest: *digest,
            media_type,
            bytes,
        });
        self.hot.insert(*digest, manifest.clone());
        Ok(Some(manifest))
    }

    /// A manifest the shared object store has (stored there by another replica) and this one does
    /// not: read, verified against its digest, and kept in the local tier.
    ///
    /// # Errors
    /// Index failures.
    async fn read_shared(&self, digest: &Digest) -> Result<Option<Arc<Manifest>>, ManifestError> {
        let Some(bytes) = self.cache.shared_manifest(digest).await else {
            return Ok(None);
        };
        let Ok(media_type) = media::resolve_manifest_type(&bytes, None) else {
            debug!(%digest, "the shared store's blob is not a manifest wharf serves; asking the upstream");
            return Ok(None);
        };
        Ok(Some(self.keep(*digest, bytes, media_type, false).await?))
    }

    /// Stores a verified manifest (in the shared store too, with `to_shared`) and puts it in the
    /// hot map.
    async fn keep(
        &self,
        digest: Digest,
        bytes: Bytes,
        media_type: &'static str,
        to_shared: bool,
    ) -> Result<Arc<Manifest>, ManifestError> {
        self.cache
            .put_manifest_in(&digest, bytes.clone(), media_type, to_shared)
            .await?;
        let manifest = Arc::new(Manifest {
            digest,
            media_type,
            bytes,
        });
        self.hot.insert(digest, manifest.clone());
        Ok(manifest)
    }

    /// `GET`s a manifest from the upstream, verifies it (against the digest, when asked by digest)
    /// and stores it.
    async fn fetch(
        &self,
        upstream: &Upstream,
        repo: &RepoName,
        reference: &Reference,
        accept: Accept<'_>,
    ) -> Result<Arc<Manifest>, ManifestError> {
        let fetched = upstream.manifest(repo, reference, &accept()).await?;
        let bytes = fetched.bytes.clone();
        let digest = Digest::of(&bytes);
        if let Reference::Digest(expected) = reference {
            if *expected != digest {
                return Err(ManifestError::DigestMismatch {
                    upstream: upstream.name().to_owned(),
                    expected: *expected,
                });
            }
        } else if fetched.digest.is_some_and(|d| d != digest) {
            warn!(upstream = %upstream.name(), %repo, %reference, %digest, "upstream's Docker-Content-Digest differs from the manifest's digest; using the manifest's");
        }
        let media_type =
            media::resolve_manifest_type(&bytes, fetched.content_type()).map_err(|reason| {
                ManifestError::Unacceptable {
                    upstream: upstream.name().to_owned(),
                    reason,
                }
            })?;
        let manifest = self.keep(digest, bytes, media_type, true).await?;
        // A signature, SBOM or attestation: recorded under its subject, so the referrers API can
        // be answered from what is held when the upstream cannot be asked (a miss only).
        if let Some(r) = referrer::of_manifest(&manifest.bytes) {
            self.cache.index().add_referrer(
                upstream.name(),
                repo,
                &r.subject,
                &digest,
                &r.descriptor,
            )?;
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn status(status: StatusCode) -> ManifestError {
        UpstreamError::Status {
            upstream: "u".into(),
            status,
            code: None,
            retry_after: None,
        }
        .into()
    }

    #[test]
    fn which_errors_a_cached_tag_stands_in_for() {
        let offline: ManifestError = UpstreamError::Offline {
            upstream: "u".into(),
        }
        .into();
        let timeout: ManifestError = UpstreamError::Timeout {
            upstream: "u".into(),
        }
        .into();
        let mismatch = ManifestError::DigestMismatch {
            upstream: "u".into(),
            expected: Digest::of(b""),
        };
        let storage: ManifestError = FillError::Storage(std::io::Error::other("disk")).into();
        // (error, upstream trouble, not found)
        let cases = [
            (status(StatusCode::NOT_FOUND), false, true),
            (offline, false, true),
            (status(StatusCode::SERVICE_UNAVAILABLE), true, false),
            (status(StatusCode::TOO_MANY_REQUESTS), true, false),
            (status(StatusCode::UNAUTHORIZED), true, false),
            (timeout, true, false),
            (mismatch, true, false),
            (storage, false, false),
        ];
        for (error, trouble, not_found) in cases {
            assert_eq!(error.upstream_trouble(), trouble, "{error:?}");
            assert_eq!(error.not_found(), not_found, "{error:?}");
        }
    }
}
