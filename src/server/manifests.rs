//! `GET`/`HEAD /v2/<name>/manifests/<tag|digest>`.
//!
//! Manifests are small (the spec lets registries refuse over 4 MiB), so they are read whole, verified
//! and stored by digest, content-addressed and immutable: a manifest by digest is never asked for
//! again. The bytes are kept exactly as received, since the digest covers every byte.
//!
//! An upstream's answer is parsed, not trusted: it is kept only when it is a manifest of a type
//! wharf serves, by [`media::resolve_manifest_type`], which decides the type from the document and
//! refuses a `Content-Type` that contradicts it. Anything else is a `502` naming the upstream, and
//! nothing is stored. The type served is thus a function of the bytes: no upstream can change what
//! another serves for the same digest. A manifest read back from the store is resolved again, so
//! a type recorded by an older wharf (which kept whatever `Content-Type` came) is corrected on its
//! first read, and stored bytes that are no manifest are not served.
//!
//! A tag maps to a digest in the index. Within `tag_ttl` it is served without asking the upstream.
//! After that it is revalidated with a `HEAD` (Docker Hub rate-limits manifest GETs, not HEADs) and
//! the manifest is fetched again only when the digest changed. When the upstream cannot answer
//! (down, slow, 5xx, 429) the cached tag is served anyway, marked stale, unless `serve_stale` is off;
//! only an authoritative 404 ends a tag's life, and it is remembered for `negative_ttl`. An offline
//! upstream is never asked: its cached tags are served as they are.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, WARNING};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{debug, warn};

use super::response::{self, header, ApiError, Area, Body, CacheStatus, Fault};
use super::route::Route;
use super::App;
use crate::cache::TagEntry;
use crate::oci::{media, Digest, ErrorCode, Reference, RepoName, Tag};

pub use crate::limits::MAX_MANIFEST;

/// The `Warning` sent with content served stale (RFC 7234 §5.5.1).
pub const STALE_WARNING: &str = "110 - \"Response is Stale\"";

/// Requests for the same manifest that are in flight together share one upstream exchange.
pub type ManifestFlights =
    moka::future::Cache<(usize, RepoName, Reference), (Arc<Manifest>, CacheStatus)>;

/// Tags the upstream said do not exist, remembered for `negative_ttl`.
pub type NegativeTags = moka::future::Cache<(usize, RepoName, Tag), ()>;

/// Manifests kept in memory by digest, weighed by their size: a tag hit then needs one index lookup
/// and no file I/O. Content-addressed, so an entry can never be wrong, only absent.
pub type HotManifests = moka::sync::Cache<Digest, Arc<Manifest>>;

/// Builds the in-memory manifest cache holding up to `bytes` of manifests.
pub fn hot_manifests(bytes: u64) -> HotManifests {
    moka::sync::Cache::builder()
        .max_capacity(bytes)
        .weigher(|_, m: &Arc<Manifest>| u32::try_from(m.bytes.len()).unwrap_or(u32::MAX))
        .build()
}

/// A manifest as served.
#[derive(Debug)]
pub struct Manifest {
    digest: Digest,
    media_type: &'static str,
    bytes: Bytes,
}

/// Serves a manifest request.
pub async fn get(
    app: &App,
    route: &Route,
    reference: &Reference,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let (manifest, cache) = match reference {
        Reference::Digest(digest) => match cached(app, digest).await? {
            Some(m) => (m, CacheStatus::Hit),
            None => {
                flight(
                    app,
                    route,
                    reference,
                    fetch_digest(app, route, reference, headers),
                )
                .await?
            }
        },
        Reference::Tag(tag) => resolve_tag(app, route, tag, headers).await?,
    };
    let len = manifest.bytes.len();
    let body = if *method == Method::HEAD {
        response::empty()
    } else {
        response::full(manifest.bytes.clone())
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(manifest.media_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::DOCKER_CONTENT_DIGEST,
        response::header_value(&manifest.digest.to_string()),
    );
    h.insert(header::X_CACHE, cache.header_value());
    if cache == CacheStatus::Stale {
        h.insert(WARNING, HeaderValue::from_static(STALE_WARNING));
    }
    Ok(response)
}

/// Runs `exchange` once for all concurrent requests of the same reference.
async fn flight(
    app: &App,
    route: &Route,
    reference: &Reference,
    exchange: impl std::future::Future<Output = Result<(Arc<Manifest>, CacheStatus), ApiError>>,
) -> Result<(Arc<Manifest>, CacheStatus), ApiError> {
    let key = (route.upstream, route.name.clone(), reference.clone());
    let result = app
        .manifest_flights
        .try_get_with(key.clone(), exchange)
        .await;
    // The flight only joins concurrent requests; the index is the cache.
    app.manifest_flights.invalidate(&key).await;
    result.map_err(|e| (*e).clone())
}

async fn fetch_digest(
    app: &App,
    route: &Route,
    reference: &Reference,
    headers: &HeaderMap,
) -> Result<(Arc<Manifest>, CacheStatus), ApiError> {
    Ok((
        fetch(app, route, reference, headers).await?,
        CacheStatus::Miss,
    ))
}

async fn resolve_tag(
    app: &App,
    route: &Route,
    tag: &Tag,
    headers: &HeaderMap,
) -> Result<(Arc<Manifest>, CacheStatus), ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let index_err = |e: crate::cache::IndexError| ApiError::internal("index failure", &e);
    let entry = app
        .cache
        .index()
        .tag(upstream.name(), &route.name, tag)
        .map_err(index_err)?;
    let known = match entry {
        Some(entry) => cached(app, &entry.digest).await?.map(|m| (entry, m)),
        None => None,
    };
    if let Some((entry, manifest)) = &known {
        let age = SystemTime::now()
            .duration_since(entry.fetched_at)
            .unwrap_or_default();
        if upstream.offline() || age < app.tag_ttl {
            return Ok((manifest.clone(), CacheStatus::Hit));
        }
    }
    let negative_key = (route.upstream, route.name.clone(), tag.clone());
    if app.negative_tags.contains_key(&negative_key) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            format!(
                "not found at upstream {} (asked recently; not asking again yet)",
                upstream.name()
            ),
        ));
    }
    let reference = Reference::Tag(tag.clone());
    let known_manifest = known.as_ref().map(|(_, m)| m.clone());
    let result = flight(
        app,
        route,
        &reference,
        refresh_tag(app, route, tag, headers, known_manifest),
    )
    .await;
    match (result, known) {
        (Ok(found), _) => Ok(found),
        (Err(e), Some((entry, manifest))) if app.serve_stale && e.upstream_trouble() => {
            warn!(
                upstream = %upstream.name(), repo = %route.name, %tag, digest = %entry.digest,
                error = %e.message(), "upstream cannot be asked; serving the cached tag stale"
            );
            Ok((manifest, CacheStatus::Stale))
        }
        (Err(e), _) => {
            if e.status() == StatusCode::NOT_FOUND
                && !upstream.offline()
                && !app.negative_ttl.is_zero()
            {
                app.negative_tags.insert(negative_key, ()).await;
            }
            Err(e)
        }
    }
}

/// Asks the upstream about a tag now, whatever the age of its cached mapping (`tag_ttl` is not
/// consulted): a `HEAD` when the tag's manifest is cached, and a `GET` only when the digest
/// changed or nothing is cached. It shares the flight of client requests for the same tag, and
/// records the answer as a client request would. Returns the digest the tag points to and whether
/// it was confirmed (`Revalidated`) or fetched (`Miss`). For `[[sync]]` runs.
///
/// # Errors
/// The upstream's answer as an [`ApiError`] (an offline upstream refuses; nothing is served stale
/// here: a sync wants the upstream's word).
pub async fn revalidate(
    app: &App,
    route: &Route,
    tag: &Tag,
) -> Result<(Digest, CacheStatus), ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let entry = app
        .cache
        .index()
        .tag(upstream.name(), &route.name, tag)
        .map_err(|e| ApiError::internal("index failure", &e))?;
    let known = match entry {
        Some(entry) => cached(app, &entry.digest).await?,
        None => None,
    };
    let reference = Reference::Tag(tag.clone());
    let (manifest, status) = flight(
        app,
        route,
        &reference,
        refresh_tag(app, route, tag, &HeaderMap::new(), known),
    )
    .await?;
    Ok((manifest.digest, status))
}

/// Asks the upstream about a tag: a `HEAD` first when a manifest is cached (nothing more if its
/// digest is unchanged), a `GET` otherwise. Records the tag's digest and time.
async fn refresh_tag(
    app: &App,
    route: &Route,
    tag: &Tag,
    headers: &HeaderMap,
    known: Option<Arc<Manifest>>,
) -> Result<(Arc<Manifest>, CacheStatus), ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let reference = Reference::Tag(tag.clone());
    let (manifest, status) = match known {
        Some(known)
            if head_digest(app, route, &reference, headers).await? == Some(known.digest) =>
        {
            (known, CacheStatus::Revalidated)
        }
        _ => (
            fetch(app, route, &reference, headers).await?,
            CacheStatus::Miss,
        ),
    };
    let entry = TagEntry {
        digest: manifest.digest,
        fetched_at: SystemTime::now(),
    };
    app.cache
        .index()
        .set_tag(upstream.name(), &route.name, tag, entry)
        .map_err(|e| ApiError::internal("index failure", &e))?;
    Ok((manifest, status))
}

/// The digest the upstream reports for a reference, from a `HEAD`; `None` when it sends none.
async fn head_digest(
    app: &App,
    route: &Route,
    reference: &Reference,
    client_headers: &HeaderMap,
) -> Result<Option<Digest>, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let head = upstream
        .head_manifest(&route.name, reference, &upstream_accept(client_headers))
        .await
        .map_err(|e| ApiError::from_upstream(&e, Area::Manifest))?;
    Ok(head.digest)
}

/// The `Accept` to send upstream for a client's request.
fn upstream_accept(client_headers: &HeaderMap) -> String {
    media::upstream_accept(
        client_headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// A stored manifest: from memory when it is hot, else from the store (and then kept in memory).
/// Read from the store, its type is resolved from its bytes again, and the index record corrected
/// when it differs; stored bytes that are no manifest are treated as not stored.
async fn cached(app: &App, digest: &Digest) -> Result<Option<Arc<Manifest>>, ApiError> {
    if let Some(hot) = app.hot_manifests.get(digest) {
        app.cache.touch(*digest);
        return Ok(Some(hot));
    }
    let index = app.cache.index();
    let index_err = |e: crate::cache::IndexError| ApiError::internal("index failure", &e);
    let Some(recorded) = index.manifest_type(digest).map_err(index_err)? else {
        return Ok(None);
    };
    let Some(bytes) = app
        .cache
        .read_small(digest)
        .await
        .map_err(|e| ApiError::from_fill(&e, Area::Manifest))?
    else {
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
        index
            .insert_manifest(digest, bytes.len() as u64, media_type)
            .map_err(index_err)?;
    }
    let manifest = Arc::new(Manifest {
        digest: *digest,
        media_type,
        bytes,
    });
    app.hot_manifests.insert(*digest, manifest.clone());
    Ok(Some(manifest))
}

/// `GET`s a manifest from the upstream, verifies it (against the digest, when asked by digest) and
/// stores it.
async fn fetch(
    app: &App,
    route: &Route,
    reference: &Reference,
    client_headers: &HeaderMap,
) -> Result<Arc<Manifest>, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let fetched = upstream
        .manifest(&route.name, reference, &upstream_accept(client_headers))
        .await
        .map_err(|e| ApiError::from_upstream(&e, Area::Manifest))?;
    let announced_type = fetched.content_type();
    let announced_digest = fetched.digest;
    let bytes = fetched.bytes.clone();
    let digest = Digest::of(&bytes);
    if let Reference::Digest(expected) = reference {
        if *expected != digest {
            return Err(bad_upstream(
                ErrorCode::DigestInvalid,
                format!(
                    "upstream {} sent a manifest that does not match {expected}",
                    upstream.name()
                ),
            ));
        }
    } else if announced_digest.is_some_and(|d| d != digest) {
        warn!(upstream = %upstream.name(), repo = %route.name, %reference, %digest, "upstream's Docker-Content-Digest differs from the manifest's digest; using the manifest's");
    }
    let media_type = media::resolve_manifest_type(&bytes, announced_type).map_err(|e| {
        bad_upstream(
            ErrorCode::ManifestInvalid,
            format!("upstream {} sent a manifest that {e}", upstream.name()),
        )
    })?;
    app.cache
        .put_manifest(&digest, bytes.clone(), media_type)
        .await
        .map_err(|e| ApiError::from_fill(&e, Area::Manifest))?;
    let manifest = Arc::new(Manifest {
        digest,
        media_type,
        bytes,
    });
    app.hot_manifests.insert(digest, manifest.clone());
    Ok(manifest)
}

fn bad_upstream(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, code, message).fault(Fault::Upstream)
}
