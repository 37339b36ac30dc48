//! `GET`/`HEAD /v2/<name>/manifests/<tag|digest>`: HTTP only. What is served, and when the
//! upstream is asked (tag TTL, revalidation, stale serving, the negative cache), is the cache's
//! policy ([`crate::cache::manifests`]); this maps its answer to headers and its
//! [`ManifestError`] to the OCI error response.

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, WARNING};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::response::{self, header, ApiError, Area, Body, CacheStatus, Fault};
use super::route::Route;
use super::App;
use crate::cache::manifests::ManifestError;
use crate::oci::{media, ErrorCode, Reference};

pub use crate::limits::MAX_MANIFEST;

/// The `Warning` sent with content served stale (RFC 7234 §5.5.1).
pub const STALE_WARNING: &str = "110 - \"Response is Stale\"";

/// Serves a manifest request.
pub async fn get(
    app: &App,
    route: &Route,
    reference: &Reference,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let upstream = &app.upstreams[route.upstream];
    let accept = || upstream_accept(headers);
    let (manifest, status) = app
        .manifests
        .get(upstream, &route.name, reference, &accept)
        .await
        .map_err(|e| api_error(&e))?;
    let cache = CacheStatus::from(status);
    let bytes = manifest.bytes();
    let len = bytes.len();
    let body = if *method == Method::HEAD {
        response::empty()
    } else {
        // For the status page: which image this manifest, and what it names, belong to.
        let tag = match reference {
            Reference::Tag(tag) => Some(tag.as_str()),
            Reference::Digest(_) => None,
        };
        app.metrics.activity.manifest_served(
            upstream.name(),
            route.name.as_str(),
            tag,
            &manifest.digest(),
            bytes,
        );
        response::full(bytes.clone())
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(manifest.media_type()),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::DOCKER_CONTENT_DIGEST,
        response::header_value(&manifest.digest().to_string()),
    );
    h.insert(header::X_CACHE, cache.header_value());
    if cache == CacheStatus::Stale {
        h.insert(WARNING, HeaderValue::from_static(STALE_WARNING));
    }
    Ok(response)
}

/// The OCI error response for a manifest that cannot be served.
pub fn api_error(error: &ManifestError) -> ApiError {
    match error {
        ManifestError::NotFoundRecently { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            error.to_string(),
        ),
        ManifestError::Upstream(e) => ApiError::from_upstream(e, Area::Manifest),
        ManifestError::DigestMismatch { .. } => {
            bad_upstream(ErrorCode::DigestInvalid, error.to_string())
        }
        ManifestError::Unacceptable { .. } => {
            bad_upstream(ErrorCode::ManifestInvalid, error.to_string())
        }
        ManifestError::Index(e) => ApiError::internal("index failure", &**e),
        ManifestError::Storage(e) => ApiError::from_fill(e, Area::Manifest),
    }
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

fn bad_upstream(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, code, message).fault(Fault::Upstream)
}
