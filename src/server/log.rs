//! The request log: one line per request, written when its response body is finished or dropped, so
//! it carries the bytes actually sent and whether the body was cut short. The same moment counts
//! the request in the metrics and in the status page's activity ([`crate::activity`]: manifest and
//! blob `GET`s in the charts and top lists, failures in the recent errors), so a request is counted
//! once, with what the log says of it. A failure there is every 5xx and 429 and any other 4xx but
//! 401 and 404, which are normal client traffic (a login challenge, a tag that does not exist).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::request_id::RequestId;
use super::response::{header, Body, ErrorDetail, Fault};
use super::route::{Endpoint, Route};
use super::App;
use crate::activity::{self, FailedRequest, Pulled};
use crate::metrics::{self, Metrics, RequestLabels};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::upstream::Upstream;

/// A response body that logs the request line when it is dropped.
pub struct Logged {
    inner: Body,
    line: Line,
    metrics: Arc<Metrics>,
    pull: Option<Pull>,
}

/// What a manifest or blob `GET` that routed asked for: counted in the status page's top lists
/// with the bytes sent ([`crate::activity`]).
pub struct Pull {
    upstream: Arc<Upstream>,
    name: RepoName,
    what: PullOf,
}

enum PullOf {
    Tag(Tag),
    Manifest(Digest),
    Blob(Digest),
}

/// What the log line says about the request itself.
#[derive(Debug, Clone)]
pub struct RequestLine {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The query, if any.
    pub query: Option<String>,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: Version,
    /// The client's address.
    pub client: SocketAddr,
    /// The request id (also in the `X-Request-Id` response header).
    pub id: RequestId,
    /// When the request arrived.
    pub started: Instant,
}

struct Line {
    request: RequestLine,
    route: &'static str,
    status: StatusCode,
    cache: &'static str,
    error: Option<ErrorDetail>,
    bytes: u64,
    /// The announced length, when there is one: hyper stops polling once it has sent that much.
    expected: Option<u64>,
    ended: bool,
    failed: bool,
}

// === impl Logged ===

impl Logged {
    /// Wraps a response so its request is logged and counted once the body is done.
    pub fn wrap(
        request: RequestLine,
        metrics: Arc<Metrics>,
        response: Response<Body>,
        pull: Option<Pull>,
    ) -> Response<Self> {
        let (mut parts, inner) = response.into_parts();
        let route = route_label(&request.path);
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
            request,
            route,
            status: parts.status,
            cache,
            error: parts.extensions.remove::<ErrorDetail>(),
            bytes: 0,
            expected: parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            ended: false,
            failed: false,
        };
        Response::from_parts(
            parts,
            Self {
                inner,
                line,
                metrics,
                pull,
            },
        )
    }

    /// Records the request in the status page's activity: manifest and blob `GET`s with a cache
    /// outcome in the charts and top lists, failures in the recent errors.
    fn record(&self) {
        let l = &self.line;
        let activity = &self.metrics.activity;
        let hit = match l.cache {
            "hit" | "revalidated" | "stale" => Some(true),
            "miss" | "coalesced" | "bypass" => Some(false),
            _ => None,
        };
        let counted = matches!(l.route, "manifest" | "blob") && l.request.method == Method::GET;
        let status = l.status.as_u16();
        let failed = status >= 500 || (status >= 400 && status != 401 && status != 404);
        if !(failed || (counted && hit.is_some())) {
            return;
        }
        let now = activity::unix_now();
        if let (true, Some(hit)) = (counted, hit) {
            activity.count(now, hit, l.bytes);
            if let Some(pull) = &self.pull {
                let what = match &pull.what {
                    PullOf::Tag(tag) => Pulled::Tag(tag.as_str()),
                    PullOf::Manifest(digest) => Pulled::Manifest(digest),
                    PullOf::Blob(digest) => Pulled::Blob(digest),
                };
                activity.pulled(
                    now,
                    &activity::Pull {
                        upstream: pull.upstream.name(),
                        repository: pull.name.as_str(),
                        what,
                    },
                    l.bytes,
                );
            }
        }
        if failed {
            let (code, message) = match &l.error {
                Some(e) => (e.code, e.message.clone()),
                None => (None, String::new()),
            };
            activity.failed(FailedRequest {
                at: now,
                request_id: l.request.id.as_str().to_owned(),
                method: metrics::method_label(&l.request.method),
                path: l.request.path.clone(),
                status,
                code,
                message,
            });
        }
    }
}

// === impl Pull ===

impl Pull {
    /// What `route` (a manifest or blob request) asks for; `None` for other endpoints.
    pub fn of(app: &App, route: Route) -> Option<Self> {
        let what = match route.endpoint {
            Endpoint::Manifest(Reference::Tag(tag)) => PullOf::Tag(tag),
            Endpoint::Manifest(Reference::Digest(digest)) => PullOf::Manifest(digest),
            Endpoint::Blob(digest) => PullOf::Blob(digest),
            _ => return None,
        };
        Some(Self {
            upstream: app.upstreams.get(route.upstream)?.clone(),
            name: route.name,
            what,
        })
    }
}

/// The API area a path asks for, as a metric label: `manifest`, `blob`, `tags`, `referrers`,
/// `base` or `other`. From the path's shape alone (what the client asked, whether or not it
/// routes), without parsing it again.
pub fn route_label(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else {
        return "other";
    };
    if rest.is_empty() || rest == "/" {
        return "base";
    }
    let mut segments = rest.rsplit('/');
    let last = segments.next().unwrap_or("");
    match (segments.next(), last) {
        (Some("manifests"), _) => "manifest",
        (Some("blobs"), _) => "blob",
        (Some("referrers"), _) => "referrers",
        (Some("tags"), "list") => "tags",
        _ => "other",
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
        self.record();
        let l = &self.line;
        let r = &l.request;
        let outcome = if l.failed {
            "aborted"
        } else if l.ended || self.inner.is_end_stream() || l.expected == Some(l.bytes) {
            "complete"
        } else {
            "client-gone"
        };
        self.metrics.request(
            RequestLabels {
                route: l.route,
                method: metrics::method_label(&r.method),
                status: l.status.as_u16(),
                cache: if l.cache == "-" { "none" } else { l.cache },
            },
            l.bytes,
        );
        let elapsed_ms = r.started.elapsed().as_secs_f64() * 1000.0;
        let query = r.query.as_deref().unwrap_or("");
        let status = l.status.as_u16();
        let (id, method, path, version, client) =
            (r.id.as_str(), &r.method, &r.path, r.version, r.client);
        macro_rules! line {
            ($level:ident $($extra:tt)*) => {
                $level!(
                    id, %method, %path, query, ?version, %client, status, bytes = l.bytes,
                    elapsed_ms, cache = l.cache, outcome $($extra)*, "request"
                )
            };
        }
        match &l.error {
            None if l.failed => line!(warn),
            None => line!(info),
            Some(ErrorDetail {
                fault: Fault::Client,
                detail,
                ..
            }) => line!(info, error = %detail),
            Some(ErrorDetail {
                fault: Fault::Upstream,
                detail,
                ..
            }) => line!(warn, error = %detail),
            Some(ErrorDetail {
                fault: Fault::Internal,
                detail,
                ..
            }) => line!(error, error = %detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels() {
        for (path, want) in [
            ("/v2/", "base"),
            ("/v2", "base"),
            ("/v2/library/nginx/manifests/1.27", "manifest"),
            (
                "/v2/docker.io/library/nginx/manifests/sha256:abc",
                "manifest",
            ),
            ("/v2/org/app/blobs/sha256:abc", "blob"),
            ("/v2/org/app/blobs/uploads/", "other"),
            ("/v2/org/app/tags/list", "tags"),
            ("/v2/org/app/referrers/sha256:abc", "referrers"),
            ("/v2/org/app", "other"),
            ("/metrics", "other"),
            ("/", "other"),
        ] {
            assert_eq!(route_label(path), want, "{path}");
        }
    }
}
