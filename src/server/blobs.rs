//! `GET`/`HEAD /v2/<name>/blobs/<digest>`: served from the store on a hit, from a fill otherwise,
//! with single `Range` requests. While the storage cannot take writes (disk full), a miss streams
//! from the upstream without caching, verified all the same (`X-Cache: bypass`).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::response::{self, header, ApiError, Area, Body, CacheStatus};
use super::route::Route;
use super::App;
use crate::cache::passthrough::Bypass;
use crate::cache::{Blob, SMALL_BLOB};
use crate::cache::{BlobSource, Fill};
use crate::oci::{media, Digest, ErrorCode};

/// Small blobs (configs, tiny layers: at most [`SMALL_BLOB`] each) kept in memory by digest, weighed by size.
pub type HotBlobs = moka::sync::Cache<Digest, Bytes>;

/// Builds the in-memory small-blob cache holding up to `bytes`.
pub fn hot_blobs(bytes: u64) -> HotBlobs {
    moka::sync::Cache::builder()
        .max_capacity(bytes)
        .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
        .build()
}

/// What a `Range` header asks of a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole blob (no header, or one wharf ignores: several ranges, bad syntax).
    Full,
    /// Bytes `[start, end)`.
    Partial(u64, u64),
    /// Nothing of the blob can satisfy it.
    Unsatisfiable,
}

/// Serves a blob request; one `from_peer` (another replica) is never forwarded to the owner.
pub async fn get(
    app: &App,
    route: &Route,
    digest: Digest,
    method: &Method,
    headers: &HeaderMap,
    from_peer: bool,
) -> Result<Response<Body>, ApiError> {
    let head = *method == Method::HEAD;
    let range = headers.get(http::header::RANGE);
    if let Some(bytes) = app.hot_blobs.get(&digest) {
        app.cache.touch(digest);
        return Ok(serve_bytes(&bytes, digest, range, head));
    }
    // The paths that may ask the upstream are boxed: their futures are KiB large, and inline they
    // would make every hit's future as large (copied whole on every move).
    if head {
        return Box::pin(head_blob(app, route, digest)).await;
    }
    let upstream = &app.upstreams[route.upstream];
    let source = app
        .cache
        .blob_with(upstream, &route.name, digest, !from_peer)
        .await
        .map_err(|e| ApiError::from_fill(&e, Area::Blob))?;
    match source {
        BlobSource::Hit(blob) => {
            if let Some(contents) = blob.contents() {
                app.hot_blobs.insert(digest, contents.clone());
            }
            serve_file(blob, digest, range, CacheStatus::Hit).await
        }
        BlobSource::Fill { fill, leader } => {
            let size = fill
                .started()
                .await
                .map_err(|e| ApiError::from_fill(&e, Area::Blob))?;
            let status = fill_status(&fill, leader);
            Ok(serve_fill(fill, size, digest, range, status))
        }
        BlobSource::Bypass => {
            let bypass = Box::pin(app.cache.bypass(upstream, &route.name, digest))
                .await
                .map_err(|e| ApiError::from_upstream(&e, Area::Blob))?;
            Ok(serve_bypass(bypass, digest, range))
        }
    }
}

/// What `X-Cache` says of a response that follows a fill: `bypass` once the fill handed off (the
/// storage could not take the blob), `miss` for the request that started it, `coalesced` for the
/// others.
pub(crate) fn fill_status(fill: &Fill, leader: bool) -> CacheStatus {
    if fill.handed_off() {
        CacheStatus::Bypass
    } else if leader {
        CacheStatus::Miss
    } else {
        CacheStatus::Coalesced
    }
}

/// Streams a blob from the upstream without caching it.
fn serve_bypass(bypass: Bypass, digest: Digest, range: Option<&HeaderValue>) -> Response<Body> {
    match bypass.size() {
        Some(size) => match ranged(digest, size, range, CacheStatus::Bypass) {
            Ok((head, start, end)) => {
                head.map(|()| response::stream(bypass.stream(start, Some(end))))
            }
            Err(e) => range_error(size, e),
        },
        None => {
            let mut response = Response::new(response::stream(bypass.stream(0, None)));
            set_blob_headers(response.headers_mut(), digest, CacheStatus::Bypass);
            response
        }
    }
}

async fn head_blob(app: &App, route: &Route, digest: Digest) -> Result<Response<Body>, ApiError> {
    let cache = &app.cache;
    let fail = |e: crate::cache::FillError| ApiError::from_fill(&e, Area::Blob);
    if let Some(blob) = cache.committed(&digest).await.map_err(fail)? {
        return Ok(blob_head(digest, Some(blob.size()), CacheStatus::Hit));
    }
    let upstream = &app.upstreams[route.upstream];
    // Only a fill from the client's own upstream: another one may be stalled.
    if let Some(fill) = cache.inflight().get_from(upstream.name(), &digest) {
        let size = fill
            .started()
            .await
            .map_err(|e| ApiError::from_fill(&e, Area::Blob))?;
        return Ok(blob_head(digest, size, CacheStatus::Coalesced));
    }
    // A HEAD does not start a fill: ask the upstream for the size only.
    let size = upstream
        .head_blob(&route.name, &digest)
        .await
        .map_err(|e| ApiError::from_upstream(&e, Area::Blob))?;
    Ok(blob_head(digest, size, CacheStatus::Miss))
}

fn blob_head(digest: Digest, size: Option<u64>, cache: CacheStatus) -> Response<Body> {
    let mut response = Response::new(response::empty());
    set_blob_headers(response.headers_mut(), digest, cache);
    if let Some(size) = size {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(size));
    }
    response
}

fn set_blob_headers(h: &mut HeaderMap, digest: Digest, cache: CacheStatus) {
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media::OCTET_STREAM));
    h.insert(
        header::DOCKER_CONTENT_DIGEST,
        response::header_value(&digest.to_string()),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::X_CACHE, cache.header_value());
}

/// Builds the response for `[start, end)` of a blob of `size` bytes, or the 416.
fn ranged(
    digest: Digest,
    size: u64,
    range: Option<&HeaderValue>,
    cache: CacheStatus,
) -> Result<(Response<()>, u64, u64), ApiError> {
    let (status, start, end) = match parse_range(range, size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeInvalid,
                format!("range not satisfiable for a blob of {size} bytes"),
            ));
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    let h = response.headers_mut();
    set_blob_headers(h, digest, cache);
    h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            CONTENT_RANGE,
            response::header_value(&format!("bytes {start}-{}/{size}", end - 1)),
        );
    }
    Ok((response, start, end))
}

/// Serves a small blob kept in memory.
fn serve_bytes(
    bytes: &Bytes,
    digest: Digest,
    range: Option<&HeaderValue>,
    head: bool,
) -> Response<Body> {
    let size = bytes.len() as u64;
    match ranged(digest, size, range, CacheStatus::Hit) {
        Ok((response, start, end)) => {
            let body = if head {
                response::empty()
            } else {
                // Both bounds are within `bytes`, whose length fits in usize.
                response::full(bytes.slice(start as usize..end as usize))
            };
            response.map(|()| body)
        }
        Err(e) => range_error(size, e),
    }
}

async fn serve_file(
    blob: Blob,
    digest: Digest,
    range: Option<&HeaderValue>,
    cache: CacheStatus,
) -> Result<Response<Body>, ApiError> {
    let size = blob.size();
    let (head, start, end) = match ranged(digest, size, range, cache) {
        Ok(parts) => parts,
        Err(e) => return Ok(range_error(size, e)),
    };
    let body = if end - start <= SMALL_BLOB {
        let bytes = blob
            .read_range(start, end)
            .await
            .map_err(|e| ApiError::internal("reading a stored blob", &e))?;
        response::full(bytes)
    } else {
        response::stream(blob.stream_range(start, end))
    };
    Ok(head.map(|()| body))
}

fn serve_fill(
    fill: Arc<Fill>,
    size: Option<u64>,
    digest: Digest,
    range: Option<&HeaderValue>,
    cache: CacheStatus,
) -> Response<Body> {
    match size {
        Some(size) => match ranged(digest, size, range, cache) {
            Ok((head, start, end)) => {
                head.map(|()| response::stream(fill.follow(start, Some(end))))
            }
            Err(e) => range_error(size, e),
        },
        None => {
            // Size unknown until the upstream finishes: serve the whole blob, ignoring Range.
            let mut response = Response::new(response::stream(fill.follow(0, None)));
            set_blob_headers(response.headers_mut(), digest, cache);
            response
        }
    }
}

fn range_error(size: u64, e: ApiError) -> Response<Body> {
    let mut response = e.into_response(false);
    response.headers_mut().insert(
        CONTENT_RANGE,
        response::header_value(&format!("bytes */{size}")),
    );
    response
}

/// Parses a single-range `Range` header against a blob of `size` bytes (RFC 9110 §14.1.2).
pub fn parse_range(header: Option<&HeaderValue>, size: u64) -> RangeRequest {
    let Some(spec) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().strip_prefix("bytes="))
    else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let parse = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    match (parse(first), parse(last), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (None, Some(n), _) if first.trim().is_empty() => {
            if n == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial(size - n.min(size), size)
            }
        }
        (Some(start), None, true) => {
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial(start, size)
            }
        }
        (Some(start), Some(end), _) if start <= end => {
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial(start, end.min(size - 1) + 1)
            }
        }
        _ => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_table() {
        let cases: &[(Option<&str>, u64, RangeRequest)] = &[
            (None, 10, RangeRequest::Full),
            (Some("bytes=0-9"), 100, RangeRequest::Partial(0, 10)),
            (Some("bytes=10-"), 100, RangeRequest::Partial(10, 100)),
            (Some("bytes=-5"), 100, RangeRequest::Partial(95, 100)),
            (Some("bytes=-500"), 100, RangeRequest::Partial(0, 100)),
            (Some("bytes=90-200"), 100, RangeRequest::Partial(90, 100)),
            (Some("bytes=100-"), 100, RangeRequest::Unsatisfiable),
            (Some("bytes=100-200"), 100, RangeRequest::Unsatisfiable),
            (Some("bytes=-0"), 100, RangeRequest::Unsatisfiable),
            (Some("bytes=0-0"), 0, RangeRequest::Unsatisfiable),
            (Some("bytes=5-2"), 100, RangeRequest::Full),
            (Some("bytes=0-1,5-6"), 100, RangeRequest::Full),
            (Some("items=0-1"), 100, RangeRequest::Full),
            (Some("bytes=a-b"), 100, RangeRequest::Full),
            (Some("bytes=+1-2"), 100, RangeRequest::Full),
        ];
        for (header, size, want) in cases {
            let value = header.map(HeaderValue::from_static);
            assert_eq!(
                parse_range(value.as_ref(), *size),
                *want,
                "{header:?} of {size}"
            );
        }
    }
}
