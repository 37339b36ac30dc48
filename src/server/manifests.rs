//! `GET`/`HEAD /v2/<name>/manifests/<tag|digest>`.
//!
//! Manifests are small (the spec lets registries refuse over 4 MiB), so they are read whole, verified
//! and stored by digest, content-addressed and immutable. A tag maps to a digest in the index for
//! `tag_ttl`, after which the upstream is asked again. The bytes are kept exactly as received, with the
//! media type the upstream gave them, since the digest covers every byte.

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::warn;

use super::response::{self, header, ApiError, Area, Body, CacheStatus, Fault};
use super::route::Route;
use super::App;
use crate::cache::TagEntry;
use crate::oci::{media, Digest, ErrorCode, Reference, RepoName, Tag};
use crate::upstream::auth;

/// The largest manifest wharf accepts from an upstream (distribution's limit too).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Requests for the same manifest that are in flight together share one upstream fetch.
pub type ManifestFlights = moka::future::Cache<(usize, RepoName, Reference), Arc<Manifest>>;

/// A manifest as served.
#[derive(Debug)]
pub struct Manifest {
    digest: Digest,
    media_type: String,
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
            None => (
                fetch_once(app, route, reference, headers).await?,
                CacheStatus::Miss,
            ),
        },
        Reference::Tag(tag) => match fresh_tag(app, route, tag).await? {
            Some(m) => (m, CacheStatus::Hit),
            None => (
                fetch_once(app, route, reference, headers).await?,
                CacheStatus::Miss,
            ),
        },
    };
    let len = manifest.bytes.len();
    let body = if *method == Method::HEAD {
        response::empty()
    } else {
        response::full(manifest.bytes.clone())
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, response::header_value(&manifest.media_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::DOCKER_CONTENT_DIGEST,
        response::header_value(&manifest.digest.to_string()),
    );
    h.insert(header::X_CACHE, cache.header_value());
    Ok(response)
}

/// Fetches a manifest from the upstream, sharing the fetch with concurrent requests for the same
/// reference, and records a tag's new digest.
async fn fetch_once(
    app: &App,
    route: &Route,
    reference: &Reference,
    headers: &HeaderMap,
) -> Result<Arc<Manifest>, ApiError> {
    let key = (route.upstream, route.name.clone(), reference.clone());
    let result = app
        .manifest_flights
        .try_get_with(key.clone(), async {
            let manifest = fetch(app, route, reference, headers).await?;
            if let Reference::Tag(tag) = reference {
                let entry = TagEntry {
                    digest: manifest.digest,
                    fetched_at: SystemTime::now(),
                };
                let upstream = app.upstreams[route.upstream].name();
                app.cache
                    .index()
                    .set_tag(upstream, &route.name, tag, entry)
                    .map_err(|e| ApiError::internal("index failure", &e))?;
            }
            Ok::<_, ApiError>(Arc::new(manifest))
        })
        .await;
    // The flight only joins concurrent requests; the index is the cache.
    app.manifest_flights.invalidate(&key).await;
    result.map_err(|e| (*e).clone())
}

async fn cached(app: &App, digest: &Digest) -> Result<Option<Arc<Manifest>>, ApiError> {
    let index = app.cache.index();
    let Some(media_type) = index
        .manifest_type(digest)
        .map_err(|e| ApiError::internal("index failure", &e))?
    else {
        return Ok(None);
    };
    let bytes = app
        .cache
        .read_small(digest)
        .await
        .map_err(|e| ApiError::from_fill(&e, Area::Manifest))?;
    Ok(bytes.map(|bytes| {
        Arc::new(Manifest {
            digest: *digest,
            media_type,
            bytes,
        })
    }))
}

async fn fresh_tag(app: &App, route: &Route, tag: &Tag) -> Result<Option<Arc<Manifest>>, ApiError> {
    let upstream = app.upstreams[route.upstream].name();
    let Some(entry) = app
        .cache
        .index()
        .tag(upstream, &route.name, tag)
        .map_err(|e| ApiError::internal("index failure", &e))?
    else {
        return Ok(None);
    };
    let age = SystemTime::now()
        .duration_since(entry.fetched_at)
        .unwrap_or_default();
    if age >= app.tag_ttl {
        return Ok(None);
    }
    cached(app, &entry.digest).await
}

async fn fetch(
    app: &App,
    route: &Route,
    reference: &Reference,
    client_headers: &HeaderMap,
) -> Result<Manifest, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let mut headers = HeaderMap::new();
    let accept = media::upstream_accept(
        client_headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    headers.insert(ACCEPT, response::header_value(&accept));
    let path = format!("/v2/{}/manifests/{reference}", route.name);
    let up_err = |e: crate::upstream::UpstreamError| ApiError::from_upstream(&e, Area::Manifest);
    let mut res = upstream
        .send(
            Method::GET,
            &path,
            headers,
            &auth::pull_scope(route.name.as_str()),
        )
        .await
        .map_err(up_err)?;
    if !res.status().is_success() {
        return Err(up_err(upstream.status_error(res).await));
    }
    let announced_type = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
    let announced_digest = res
        .headers()
        .get(header::DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());

    let mut body = BytesMut::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_MANIFEST {
                    return Err(bad_upstream(
                        ErrorCode::ManifestInvalid,
                        format!(
                            "upstream {} sent a manifest larger than {MAX_MANIFEST} bytes",
                            upstream.name()
                        ),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(up_err(upstream.transport(e))),
        }
    }
    let bytes = body.freeze();
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
    let media_type = match announced_type.as_deref() {
        Some(t) if !t.is_empty() && t != "application/json" && t != "text/plain" => t.to_owned(),
        _ => media::sniff_manifest_type(&bytes).ok_or_else(|| {
            bad_upstream(
                ErrorCode::ManifestInvalid,
                format!(
                    "upstream {} sent a manifest that is not JSON",
                    upstream.name()
                ),
            )
        })?,
    };
    app.cache
        .put_manifest(&digest, bytes.clone(), &media_type)
        .await
        .map_err(|e| ApiError::from_fill(&e, Area::Manifest))?;
    Ok(Manifest {
        digest,
        media_type,
        bytes,
    })
}

fn bad_upstream(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, code, message).fault(Fault::Upstream)
}
