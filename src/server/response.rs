//! Response building: the body type, the headers wharf sets, the cache outcome, and the one place
//! where errors become OCI error responses.
//!
//! Converting an error has no side effects: [`ApiError::into_response`] builds the JSON body and
//! attaches an [`ErrorDetail`] extension; the request logger in [`super::log`] writes it, inside the
//! request's line, at a level that says whose fault it was. Internal detail (I/O errors, transport
//! errors) goes to the log only; clients get a message that says what failed and where.

use std::io;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

use super::route::RouteError;
use crate::cache::manifests::ManifestStatus;
use crate::cache::ByteStream;
use crate::cache::FillError;
use crate::oci::{ErrorCode, ErrorEnvelope};
use crate::upstream::UpstreamError;

/// The response body: a buffer or a stream of file or upstream chunks.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Header names wharf sets.
pub mod header {
    use http::HeaderName;

    /// The digest of the content served.
    pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
    /// The API version, on every response.
    pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
    /// The cache outcome: `hit`, `miss`, `coalesced`, `bypass`.
    pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
}

/// How a request was served from the cache. The same words appear in the log, the `X-Cache` header
/// and (later) metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache without asking the upstream.
    Hit,
    /// Fetched from the upstream (and cached).
    Miss,
    /// Followed a fill another request started.
    Coalesced,
    /// Passed through from the upstream without caching.
    Bypass,
    /// A stale entry the upstream confirmed unchanged (a HEAD, no body fetched).
    Revalidated,
    /// Served from the cache because the upstream could not be asked.
    Stale,
}

impl From<ManifestStatus> for CacheStatus {
    fn from(status: ManifestStatus) -> Self {
        match status {
            ManifestStatus::Hit => Self::Hit,
            ManifestStatus::Miss => Self::Miss,
            ManifestStatus::Revalidated => Self::Revalidated,
            ManifestStatus::Stale => Self::Stale,
        }
    }
}

/// Whose fault an error is: picks the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client asked for something wrong or absent.
    Client,
    /// The upstream failed or refused.
    Upstream,
    /// wharf itself (storage, index).
    Internal,
}

/// What the log line says about a failed request; attached to the response as an extension.
#[derive(Debug, Clone)]
pub struct ErrorDetail {
    /// Whose fault it was.
    pub fault: Fault,
    /// The full error chain, for operators.
    pub detail: String,
    /// The OCI error code the client was sent.
    pub code: Option<&'static str>,
    /// The message the client was sent (never internal detail or secrets).
    pub message: String,
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after: Option<HeaderValue>,
    fault: Fault,
    detail: Option<String>,
}

/// The API area of a request, which decides the "unknown" code of a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Manifests.
    Manifest,
    /// Blobs.
    Blob,
    /// Tag lists.
    Tags,
    /// Referrers lists.
    Referrers,
}

// === impl CacheStatus ===

impl CacheStatus {
    /// The word used in logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
            Self::Revalidated => "revalidated",
            Self::Stale => "stale",
        }
    }

    /// The `X-Cache` header value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

// === body helpers ===

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body from a stream of chunks; an error in the stream aborts the response.
pub fn stream(chunks: ByteStream) -> Body {
    use futures_util::TryStreamExt;
    StreamBody::new(chunks.map_ok(http_body::Frame::data)).boxed_unsync()
}

// === impl ApiError ===

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            fault: if status.is_server_error() {
                Fault::Internal
            } else {
                Fault::Client
            },
            detail: None,
        }
    }

    /// Sets whose fault it is.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Sets `Retry-After` to `seconds` (at least 1).
    #[must_use]
    pub fn retry_after_secs(mut self, seconds: u64) -> Self {
        self.retry_after = Some(HeaderValue::from(seconds.max(1)));
        self
    }

    /// Adds detail for the log only.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// An internal failure: the client gets a generic message, the log the detail.
    pub fn internal(what: &str, error: &dyn std::error::Error) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            format!("internal error: {what}"),
        )
        .fault(Fault::Internal)
        .detail(error_chain(error))
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message the client gets.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the upstream failed in a way a cached copy can stand in for: anything but an
    /// authoritative "not found".
    pub fn upstream_trouble(&self) -> bool {
        self.fault == Fault::Upstream && self.status != StatusCode::NOT_FOUND
    }

    /// Maps an upstream failure for a request in `area`.
    pub fn from_upstream(error: &UpstreamError, area: Area) -> Self {
        let detail = error_chain(error);
        let err = match error {
            UpstreamError::Unreachable { upstream, .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                format!("upstream {upstream} is unreachable"),
            ),
            UpstreamError::Timeout { upstream } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::Unavailable,
                format!("upstream {upstream} did not answer in time"),
            ),
            UpstreamError::Status {
                upstream,
                status,
                code,
                retry_after,
            } => {
                return Self::from_upstream_status(
                    upstream,
                    *status,
                    *code,
                    retry_after.clone(),
                    area,
                )
                .detail(detail)
            }
            UpstreamError::Offline { .. } => {
                let code = match area {
                    Area::Manifest => ErrorCode::ManifestUnknown,
                    Area::Blob => ErrorCode::BlobUnknown,
                    Area::Tags | Area::Referrers => ErrorCode::NameUnknown,
                };
                return Self::new(StatusCode::NOT_FOUND, code, error.to_string()).detail(detail);
            }
            UpstreamError::Busy { .. } => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::TooManyRequests,
                    error.to_string(),
                );
                e.retry_after = Some(HeaderValue::from_static("1"));
                e
            }
            // No credential for the upstream (a helper failed or hung): the mirror's trouble, not
            // the client's, so not a 401 (which would make Docker ask its user to log in).
            UpstreamError::Credentials { upstream, source } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                format!("upstream {upstream}: {}", source.public_message()),
            ),
            UpstreamError::Auth { .. } | UpstreamError::Protocol { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unknown,
                error.to_string(),
            ),
        };
        err.fault(Fault::Upstream).detail(detail)
    }

    fn from_upstream_status(
        upstream: &str,
        status: StatusCode,
        code: Option<ErrorCode>,
        retry_after: Option<HeaderValue>,
        area: Area,
    ) -> Self {
        match status {
            StatusCode::NOT_FOUND => {
                let code = match code {
                    Some(c @ (ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::NameUnknown)) => c,
                    _ => match area {
                        Area::Manifest => ErrorCode::ManifestUnknown,
                        Area::Blob => ErrorCode::BlobUnknown,
                        Area::Tags | Area::Referrers => ErrorCode::NameUnknown,
                    },
                };
                Self::new(StatusCode::NOT_FOUND, code, format!("not found at upstream {upstream}"))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    format!("upstream {upstream} is rate-limiting this mirror; retry later"),
                )
                .fault(Fault::Upstream);
                e.retry_after = retry_after;
                e
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                format!(
                    "upstream {upstream} denied access ({status}); the repository may not exist, or the mirror's credentials for it may be missing or wrong"
                ),
            )
            .fault(Fault::Upstream),
            s if s.is_server_error() => {
                let mut e = Self::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::Unavailable,
                    format!("upstream {upstream} failed ({status})"),
                )
                .fault(Fault::Upstream);
                e.retry_after = retry_after;
                e
            }
            _ => Self::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unknown,
                format!("upstream {upstream} answered {status}"),
            )
            .fault(Fault::Upstream),
        }
    }

    /// Maps a fill failure for a request in `area`.
    pub fn from_fill(error: &FillError, area: Area) -> Self {
        match error {
            FillError::Upstream(e) => Self::from_upstream(e, area),
            FillError::BodyCut { .. } | FillError::TooSlow { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unavailable,
                error.to_string(),
            )
            .fault(Fault::Upstream),
            FillError::Mismatch { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::DigestInvalid,
                error.to_string(),
            )
            .fault(Fault::Upstream),
            FillError::Storage(e) => Self::internal("storage failure", e),
            FillError::Index(e) => Self::internal("index failure", e),
            FillError::Abandoned => Self::internal("fill stopped", error),
        }
    }

    /// The response: JSON envelope (no body for HEAD), status, `Retry-After`, and the log detail.
    pub fn into_response(self, head: bool) -> Response<Body> {
        let json = ErrorEnvelope::single(self.code, self.message.clone()).to_json();
        let len = json.len();
        let mut response = Response::new(if head { empty() } else { full(json) });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        if let Some(retry_after) = self.retry_after {
            headers.insert(RETRY_AFTER, retry_after);
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response.extensions_mut().insert(ErrorDetail {
            fault: self.fault,
            code: Some(self.code.as_str()),
            message: self.message.clone(),
            detail: self
                .detail
                .unwrap_or_else(|| format!("{}: {}", self.code.as_str(), self.message)),
        });
        response
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        let (status, code) = match &e {
            RouteError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::Unsupported),
            RouteError::ReadOnly(_) | RouteError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported)
            }
            RouteError::NameInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::NameInvalid),
            RouteError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid),
            RouteError::TagInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid),
            RouteError::UnknownRegistry(_) | RouteError::NoDefault => {
                (StatusCode::NOT_FOUND, ErrorCode::NameUnknown)
            }
            RouteError::BadQuery(_) => (StatusCode::BAD_REQUEST, ErrorCode::Unsupported),
        };
        Self::new(status, code, e.to_string())
    }
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// A header value from a string wharf made (digests, numbers): these are always valid.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Adds a header by name.
pub fn set(response: &mut Response<Body>, name: HeaderName, value: HeaderValue) {
    response.headers_mut().insert(name, value);
}
