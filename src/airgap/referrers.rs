//! Referrers travel with their images: which signatures, SBOMs and attestations `wharf prefetch`,
//! `[[sync]]` and `wharf export` take along, and where they are looked for.
//!
//! For every manifest of an image (the index's and each platform's):
//! - **connected** (prefetch, sync): the upstream's referrers API
//!   (`GET /v2/<name>/referrers/<digest>`, cached as a client's request would be). When the upstream
//!   has no API (a 4xx other than 429: docker-registry 2.8 answers 404), the referrers tag schema's
//!   `sha256-<hex>` tag (an index of referrers). Always, cosign's `sha256-<hex>.sig`, `.att` and
//!   `.sbom` tags, because cosign writes those even to registries that have the API. A tag that
//!   does not exist costs one request (a 404, remembered for `negative_ttl`).
//! - **held** (export): the stored manifests whose `subject` is the manifest (recorded when they
//!   were stored), and the scheme tags the cache maps to stored manifests.
//!
//! Referrers are found recursively (a signature of an SBOM), at most [`MAX_DEPTH`] levels below an
//! image and at most [`MAX_REFERRERS`] per image: a registry that returns endless referrers cannot
//! make a prefetch or an export endless. `--no-referrers` leaves them all out; `--referrers-type T`
//! (repeatable) keeps those whose artifact type or first layer's media type is one of the `T`s
//! (see [`referrer::kinds`]); an index found under a scheme tag is kept, and its entries judged.

use serde::{Deserialize, Serialize};

use crate::cache::IndexError;
use crate::oci::{referrer, Digest, ImageRef, Reference};
use crate::server::response::ApiError;
use crate::server::App;

/// How many levels of referrers below an image are followed (a signature of an SBOM of an image is
/// two).
pub const MAX_DEPTH: usize = 4;

/// The most referrers taken along per image.
pub const MAX_REFERRERS: usize = 256;

/// Which referrers go along.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Whether any do (`--no-referrers` turns it off).
    pub enabled: bool,
    /// Only these types (`--referrers-type`); empty for all.
    #[serde(default)]
    pub types: Vec<String>,
}

/// A referrer of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// How it is named: by a scheme tag, or by digest (a manifest with a `subject`).
    pub reference: Reference,
    /// Its manifest.
    pub digest: Digest,
}

// === impl Options ===

impl Default for Options {
    fn default() -> Self {
        Self {
            enabled: true,
            types: Vec::new(),
        }
    }
}

impl Options {
    /// No referrers.
    pub fn none() -> Self {
        Self {
            enabled: false,
            types: Vec::new(),
        }
    }

    /// Whether the referrer manifest `bytes` goes along (an index always does: its entries are
    /// judged one by one).
    pub fn wants(&self, bytes: &[u8], is_index: bool) -> bool {
        self.enabled
            && (self.types.is_empty()
                || is_index
                || referrer::kinds(bytes)
                    .iter()
                    .any(|k| self.types.contains(k)))
    }
}

/// The referrers of `subject` in the image's repository that the cache holds (for export).
///
/// # Errors
/// Index failures.
pub fn held(app: &App, image: &ImageRef, subject: &Digest) -> Result<Vec<Found>, IndexError> {
    let index = app.cache.index();
    let mut out = Vec::new();
    for (digest, _) in index.referrers_of(&image.registry, &image.repo, subject, MAX_REFERRERS)? {
        if index.manifest_type(&digest)?.is_some() {
            out.push(Found {
                reference: Reference::Digest(digest),
                digest,
            });
        }
    }
    for tag in referrer::scheme_tags(subject) {
        if let Some(entry) = index.tag(&image.registry, &image.repo, &tag)? {
            if index.manifest_type(&entry.digest)?.is_some() {
                out.push(Found {
                    reference: Reference::Tag(tag),
                    digest: entry.digest,
                });
            }
        }
    }
    Ok(out)
}

/// Where to look for the referrers of `subject` upstream (for prefetch): the digests the referrers
/// API lists, or, without the API, the tag schema's tag; then cosign's tags. The tags may not
/// exist (a 404 for them means none). For an offline upstream, the referrers held.
///
/// # Errors
/// The referrers API failing for another reason than not being there.
pub async fn upstream(
    app: &App,
    image: &ImageRef,
    subject: &Digest,
) -> Result<Vec<Reference>, ApiError> {
    let route = super::prefetch::route_to(app, image, &format!("referrers/{subject}"))?;
    if app.upstreams[route.upstream].offline() {
        // Nothing can be asked: what is held is what there is.
        return Ok(held(app, image, subject)
            .map_err(|e| ApiError::internal("index failure", &e))?
            .into_iter()
            .map(|f| f.reference)
            .collect());
    }
    let mut tags = referrer::scheme_tags(subject);
    let mut out = Vec::new();
    match crate::server::referrers::list(app, &route, *subject).await {
        Ok((list, _)) => {
            out.extend(
                referrer::list_entries(&list)
                    .into_iter()
                    .map(|(d, _)| Reference::Digest(d)),
            );
            // The API answers for the tag schema's index.
            tags.remove(0);
        }
        Err(e) if no_api(&e) => {}
        Err(e) => return Err(e),
    }
    out.extend(tags.into_iter().map(Reference::Tag));
    Ok(out)
}

/// Whether the referrers API's refusal means the registry does not have it.
fn no_api(e: &ApiError) -> bool {
    let status = e.status();
    status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS
}
