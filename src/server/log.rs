//! The request log: one line per request, written when its response body is finished or dropped, so
//! it carries the bytes actually sent and whether the body was cut short.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::response::{header, Body, ErrorDetail, Fault};

/// A response body that logs the request line when it is dropped.
pub struct Logged {
    inner: Body,
    line: Line,
}

struct Line {
    method: Method,
    path: String,
    query: Option<String>,
    status: StatusCode,
    cache: &'static str,
    error: Option<ErrorDetail>,
    started: Instant,
    bytes: u64,
    /// The announced length, when there is one: hyper stops polling once it has sent that much.
    expected: Option<u64>,
    ended: bool,
    failed: bool,
}

// === impl Logged ===

impl Logged {
    /// Wraps a response so its request is logged once the body is done.
    pub fn wrap(
        method: Method,
        path: String,
        query: Option<String>,
        started: Instant,
        response: Response<Body>,
    ) -> Response<Self> {
        let (mut parts, inner) = response.into_parts();
        let cache = match parts
            .headers
            .get(header::X_CACHE)
            .and_then(|v| v.to_str().ok())
        {
            Some("hit") => "hit",
            Some("miss") => "miss",
            Some("coalesced") => "coalesced",
            Some("bypass") => "bypass",
            Some("revalidated") => "revalidated",
            Some("stale") => "stale",
            _ => "-",
        };
        let line = Line {
            method,
            path,
            query,
            status: parts.status,
            cache,
            error: parts.extensions.remove::<ErrorDetail>(),
            started,
            bytes: 0,
            expected: parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            ended: false,
            failed: false,
        };
        Response::from_parts(parts, Self { inner, line })
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.line.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.line.failed = true,
            Poll::Ready(None) => this.line.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let l = &self.line;
        let outcome = if l.failed {
            "aborted"
        } else if l.ended || self.inner.is_end_stream() || l.expected == Some(l.bytes) {
            "complete"
        } else {
            "client-gone"
        };
        let elapsed_ms = l.started.elapsed().as_secs_f64() * 1000.0;
        let query = l.query.as_deref().unwrap_or("");
        let status = l.status.as_u16();
        match &l.error {
            None if l.failed => warn!(
                method = %l.method, path = %l.path, query, status, bytes = l.bytes,
                elapsed_ms, cache = l.cache, outcome, "request"
            ),
            None => info!(
                method = %l.method, path = %l.path, query, status, bytes = l.bytes,
                elapsed_ms, cache = l.cache, outcome, "request"
            ),
            Some(ErrorDetail {
                fault: Fault::Client,
                detail,
            }) => info!(
                method = %l.method, path = %l.path, query, status, bytes = l.bytes,
                elapsed_ms, cache = l.cache, outcome, error = %detail, "request"
            ),
            Some(ErrorDetail {
                fault: Fault::Upstream,
                detail,
            }) => warn!(
                method = %l.method, path = %l.path, query, status, bytes = l.bytes,
                elapsed_ms, cache = l.cache, outcome, error = %detail, "request"
            ),
            Some(ErrorDetail {
                fault: Fault::Internal,
                detail,
            }) => error!(
                method = %l.method, path = %l.path, query, status, bytes = l.bytes,
                elapsed_ms, cache = l.cache, outcome, error = %detail, "request"
            ),
        }
    }
}
