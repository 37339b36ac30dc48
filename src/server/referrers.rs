//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]`: the OCI referrers API (signatures, SBOMs
//! and attestations that point at a manifest), proxied and cached like a tag: fresh for `tag_ttl`,
//! then asked again, served stale when the upstream cannot answer, served from the cache only when
//! the upstream is offline.
//!
//! One list is cached per upstream, repository and subject: the unfiltered one. The
//! `artifactType` filter (a media type, checked by [`super::route`]) is applied by wharf to that
//! list when answering, and announced with `OCI-Filters-Applied`, so a client cannot grow the
//! index or the upstream's load by sending many filter values, and a cached list answers every
//! filter as a fresh one would. The upstream's list must be a JSON object with a `manifests` list
//! (at most [`crate::limits::MAX_MANIFEST`] bytes), or it is a `502`. Registries without the API answer 404,
//! which is passed on: clients then fall back to the tag schema (`sha256-<hex>` tags), which wharf
//! serves like any tag.
//!
//! An offline upstream is never asked: the list is built from what wharf holds, the cached list
//! (if any) and every stored manifest whose `subject` is the digest (recorded per upstream and
//! repository when the manifest was stored: fetched, or imported from a bundle), so an air-gapped
//! wharf answers the API also for referrers that came from a registry without it. With none, the
//! answer is an empty list, as a registry with the API gives.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, WARNING};
use http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use tracing::warn;

use super::manifests::STALE_WARNING;
use super::response::{self, header, ApiError, Area, Body, CacheStatus, Fault};
use super::route::Route;
use super::App;
use crate::cache::TagEntry;
use crate::oci::{media, referrer, Digest, ErrorCode};

/// The most held referrers an offline answer lists for one subject.
const MAX_HELD: usize = 4096;

/// Tells the client which filters were applied.
const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Serves a referrers request.
pub async fn get(
    app: &App,
    route: &Route,
    subject: Digest,
    artifact_type: Option<&str>,
    method: &Method,
) -> Result<Response<Body>, ApiError> {
    let (bytes, status) = list(app, route, subject).await?;
    respond(bytes, artifact_type, status, method)
}

/// The unfiltered referrers list of `subject` as a request would get it (cached, fetched, stale, or
/// built from what is held for an offline upstream), and where it came from. `wharf prefetch`
/// asks this too.
///
/// # Errors
/// As the request would: the upstream's refusal (a 404 when it has no referrers API), an index or
/// storage failure.
pub async fn list(
    app: &App,
    route: &Route,
    subject: Digest,
) -> Result<(Bytes, CacheStatus), ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let index = app.cache.index();
    let index_err = |e: crate::cache::IndexError| ApiError::internal("index failure", &e);
    let storage_err = |e: crate::cache::FillError| ApiError::from_fill(&e, Area::Referrers);
    let entry = index
        .referrers(upstream.name(), &route.name, &subject)
        .map_err(index_err)?;
    let known = match entry {
        Some(entry) => app
            .cache
            .read_small(&entry.digest)
            .await
            .map_err(storage_err)?
            .map(|b| (entry, b)),
        None => None,
    };
    if upstream.offline() {
        let held = held(app, route, &subject, known.as_ref().map(|(_, b)| b))?;
        return Ok((held, CacheStatus::Hit));
    }
    if let Some((entry, bytes)) = &known {
        let age = SystemTime::now()
            .duration_since(entry.fetched_at)
            .unwrap_or_default();
        if age < app.manifests.policy().tag_ttl {
            return Ok((bytes.clone(), CacheStatus::Hit));
        }
    }
    match fetch(app, route, subject).await {
        Ok(bytes) => {
            let digest = Digest::of(&bytes);
            app.cache
                .put_manifest(&digest, bytes.clone(), media::OCI_INDEX)
                .await
                .map_err(storage_err)?;
            let entry = TagEntry {
                digest,
                fetched_at: SystemTime::now(),
            };
            index
                .set_referrers(upstream.name(), &route.name, &subject, entry)
                .map_err(index_err)?;
            Ok((bytes, CacheStatus::Miss))
        }
        Err(e) => match known {
            Some((_, bytes)) if app.manifests.policy().serve_stale && e.upstream_trouble() => {
                warn!(upstream = %upstream.name(), repo = %route.name, %subject, error = %e.message(), "upstream cannot be asked; serving cached referrers stale");
                Ok((bytes, CacheStatus::Stale))
            }
            _ => Err(e),
        },
    }
}

/// The list an offline upstream's referrers are answered with: the cached list as it is when no
/// stored manifest adds to it, else its entries and then each stored referrer it does not name.
fn held(
    app: &App,
    route: &Route,
    subject: &Digest,
    cached: Option<&Bytes>,
) -> Result<Bytes, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let index = app.cache.index();
    let index_err = |e: crate::cache::IndexError| ApiError::internal("index failure", &e);
    let mut named: Vec<Digest> = cached
        .map(|b| {
            referrer::list_entries(b)
                .into_iter()
                .map(|(d, _)| d)
                .collect()
        })
        .unwrap_or_default();
    let mut added = Vec::new();
    for (digest, descriptor) in index
        .referrers_of(upstream.name(), &route.name, subject, MAX_HELD)
        .map_err(index_err)?
    {
        if named.contains(&digest) || index.manifest_type(&digest).map_err(index_err)?.is_none() {
            continue;
        }
        named.push(digest);
        added.push(descriptor);
    }
    if added.is_empty() {
        if let Some(cached) = cached {
            return Ok(cached.clone());
        }
    }
    let mut entries: Vec<Vec<u8>> = Vec::new();
    if let Some(cached) = cached {
        let list: serde_json::Value = serde_json::from_slice(cached)
            .map_err(|e| ApiError::internal("reading a stored referrers list", &e))?;
        for m in list
            .get("manifests")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            entries.push(
                serde_json::to_vec(m)
                    .map_err(|e| ApiError::internal("encoding a referrers list", &e))?,
            );
        }
    }
    entries.extend(added);
    Ok(Bytes::from(referrer::list(
        entries.iter().map(Vec::as_slice),
    )))
}

/// Answers with the unfiltered list `bytes`, filtered by `artifact_type` when one is asked for.
fn respond(
    bytes: Bytes,
    artifact_type: Option<&str>,
    cache: CacheStatus,
    method: &Method,
) -> Result<Response<Body>, ApiError> {
    let bytes = match artifact_type {
        None => bytes,
        Some(wanted) => filter(&bytes, wanted)?,
    };
    let len = bytes.len();
    let mut response = Response::new(if *method == Method::HEAD {
        response::empty()
    } else {
        response::full(bytes)
    });
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media::OCI_INDEX));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::X_CACHE, cache.header_value());
    if artifact_type.is_some() {
        h.insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    if cache == CacheStatus::Stale {
        h.insert(WARNING, HeaderValue::from_static(STALE_WARNING));
    }
    Ok(response)
}

/// The list with only the referrers of type `wanted`.
fn filter(bytes: &[u8], wanted: &str) -> Result<Bytes, ApiError> {
    let mut list: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal("reading a stored referrers list", &e))?;
    if let Some(manifests) = list.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        manifests.retain(|m| m.get("artifactType").and_then(|t| t.as_str()) == Some(wanted));
    }
    let bytes = serde_json::to_vec(&list)
        .map_err(|e| ApiError::internal("encoding a referrers list", &e))?;
    Ok(Bytes::from(bytes))
}

/// Gets the unfiltered list from the upstream and checks that it is one.
async fn fetch(app: &App, route: &Route, subject: Digest) -> Result<Bytes, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let body = upstream
        .referrers(&route.name, &subject)
        .await
        .map_err(|e| ApiError::from_upstream(&e, Area::Referrers))?;
    let list: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| invalid(upstream.name(), "a referrers list that is not JSON"))?;
    if !list
        .get("manifests")
        .is_some_and(serde_json::Value::is_array)
    {
        return Err(invalid(
            upstream.name(),
            "a referrers list without a manifests list",
        ));
    }
    let bytes = serde_json::to_vec(&list)
        .map_err(|e| ApiError::internal("encoding a referrers list", &e))?;
    Ok(Bytes::from(bytes))
}

fn invalid(upstream: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::Unknown,
        format!("upstream {upstream} sent {what}"),
    )
    .fault(Fault::Upstream)
}
