//! The registry protocol, typed: the operations wharf asks of an upstream, each owning its
//! `/v2/...` path, its pull scope and how its answer is checked.
//!
//! Nothing outside `upstream/` builds a registry URL or sees the HTTP client's types: the cache and
//! the server ask for a manifest, a blob from an offset, a tag list or a referrers list, and get
//! bytes, typed headers and an [`UpstreamError`] back.
//!
//! A blob from an offset (a resume) is a `Range: bytes=N-` request. The upstream may answer `206`
//! with a `Content-Range` that must start at `N`, or ignore the header (RFC 9110 §14.2 lets it) and
//! send the whole blob again with a `200`, whose first `N` bytes [`BlobBody`] then drops by itself:
//! the caller always reads from `N`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, RANGE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::auth;
use super::client::{Upstream, UpstreamError};
use super::rate::{Cut, PacedBody};
use crate::limits::{MAX_MANIFEST, MAX_TAGS_BODY};
use crate::oci::{Digest, Reference, RepoName};

/// The digest a registry reports for a manifest or blob.
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// A manifest as the upstream sent it, read whole (at most [`MAX_MANIFEST`] bytes). Nothing in it
/// is verified yet: the caller checks the bytes against what it asked for.
#[derive(Debug)]
pub struct ManifestResponse {
    /// The document, exactly as received.
    pub bytes: Bytes,
    /// The `Docker-Content-Digest` the upstream announced, when it sent a valid one.
    pub digest: Option<Digest>,
    content_type: Option<HeaderValue>,
}

/// What a `HEAD` of a manifest reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// The `Docker-Content-Digest` the upstream announced, when it sent a valid one.
    pub digest: Option<Digest>,
    /// The `Content-Type` it announced, when it is text.
    pub content_type: Option<String>,
    /// The `Content-Length` it announced.
    pub size: Option<u64>,
}

/// A page of an upstream's tag list, read whole (at most [`MAX_TAGS_BODY`] bytes), unparsed.
#[derive(Debug)]
pub struct TagsPage {
    /// The JSON document.
    pub body: Bytes,
    /// Whether the upstream announced a next page (a `Link` header).
    pub more: bool,
}

/// A blob's body from the upstream, read under the upstream's minimum rate, starting at the
/// offset asked for whatever the upstream sent.
pub struct BlobBody {
    size: Option<u64>,
    body: PacedBody,
}

// === impl ManifestResponse ===

impl ManifestResponse {
    /// The `Content-Type` the upstream announced (`?` when it is not text), if it sent one.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type
            .as_ref()
            .map(|v| v.to_str().unwrap_or("?"))
    }

    /// The document's size.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

// === impl Upstream ===

impl Upstream {
    /// `GET`s a manifest whole, asking for the manifest types in `accept` (an `Accept` value), all
    /// within the upstream's `timeout`.
    ///
    /// # Errors
    /// Transport failures, timeouts, refused authentication or redirects; an error status, classified; a body longer than [`MAX_MANIFEST`] or
    /// one that breaks off.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
    ) -> Result<ManifestResponse, UpstreamError> {
        let (mut headers, bytes) = self
            .get_small(
                &manifest_path(repo, reference),
                accept_header(accept),
                &auth::pull_scope(repo.as_str()),
                MAX_MANIFEST,
            )
            .await?;
        Ok(ManifestResponse {
            bytes,
            digest: announced_digest(&headers),
            content_type: headers.remove(CONTENT_TYPE),
        })
    }

    /// `HEAD`s a manifest: what the upstream reports for it, without its body. Docker Hub counts
    /// manifest `GET`s against its rate limit, not `HEAD`s.
    ///
    /// # Errors
    /// Transport failures, timeouts, refused authentication or redirects; an error status, classified.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &str,
    ) -> Result<ManifestHead, UpstreamError> {
        let path = manifest_path(repo, reference);
        let scope = auth::pull_scope(repo.as_str());
        let response = self
            .send(Method::HEAD, &path, accept_header(accept), &scope)
            .await?;
        if !response.status().is_success() {
            let status = response.status();
            let error = self.status_error(response).await;
            if status == StatusCode::NOT_FOUND && self.forwards() {
                // A HEAD has no body to tell "no such manifest" from "no such registry" (a
                // mismatch that must not be remembered as a missing tag): a GET's error says.
                return Err(self
                    .get_small(&path, accept_header(accept), &scope, MAX_MANIFEST)
                    .await
                    .err()
                    .unwrap_or(error));
            }
            return Err(error);
        }
        let headers = response.headers();
        Ok(ManifestHead {
            digest: announced_digest(headers),
            content_type: headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            size: announced_length(headers),
        })
    }

    /// `HEAD`s a blob: the size the upstream announces for it, if it does.
    ///
    /// # Errors
    /// Transport failures, timeouts, refused authentication or redirects; an error status, classified.
    pub async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, UpstreamError> {
        let response = self
            .send(
                Method::HEAD,
                &blob_path(repo, digest),
                HeaderMap::new(),
                &auth::pull_scope(repo.as_str()),
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response).await);
        }
        Ok(announced_length(response.headers()))
    }

    /// `GET`s a blob: the whole of it with a plain request when `from` is `None`; with
    /// `Some(offset)`, the rest from `offset` with a `Range` request (a resume, even from 0: see the
    /// module docs). Waits for the response headers at most the upstream's `timeout`; the body is
    /// bounded by its minimum rate instead.
    ///
    /// # Errors
    /// Transport failures, timeouts, refused authentication or redirects; an error status,
    /// classified; a `206` whose `Content-Range` does not start at `from`, as
    /// [`UpstreamError::Protocol`].
    pub async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<u64>,
    ) -> Result<BlobBody, UpstreamError> {
        let path = blob_path(repo, digest);
        let scope = auth::pull_scope(repo.as_str());
        let Some(from) = from else {
            let response = self
                .send(Method::GET, &path, HeaderMap::new(), &scope)
                .await?;
            if !response.status().is_success() {
                return Err(self.status_error(response).await);
            }
            let size = response.content_length();
            return Ok(BlobBody {
                size,
                body: self.pace().body(response, 0),
            });
        };
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, range_from(from));
        let response = self.send(Method::GET, &path, headers, &scope).await?;
        match response.status() {
            // The whole blob again: drop what was asked to be skipped.
            StatusCode::OK => {
                let size = response.content_length();
                Ok(BlobBody {
                    size,
                    body: self.pace().body(response, from),
                })
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(ContentRange::parse);
                let start = range.and_then(|r| r.start);
                if start != Some(from) {
                    return Err(UpstreamError::Protocol {
                        upstream: self.name().to_owned(),
                        reason: format!(
                            "asked to resume at byte {from}, got Content-Range starting at {start:?}"
                        ),
                    });
                }
                Ok(BlobBody {
                    size: range.and_then(|r| r.total),
                    body: self.pace().body(response, 0),
                })
            }
            _ => Err(self.status_error(response).await),
        }
    }

    /// `GET`s one page of a repository's tag list (`n` and `last` as the distribution spec's
    /// pagination), whole, at most [`MAX_TAGS_BODY`] bytes, within the upstream's `timeout`.
    ///
    /// # Errors
    /// As [`Upstream::manifest`], with [`MAX_TAGS_BODY`] as the bound.
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<u32>,
        last: Option<&str>,
    ) -> Result<TagsPage, UpstreamError> {
        let query = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some(n) = n {
                q.append_pair("n", &n.to_string());
            }
            if let Some(last) = last {
                q.append_pair("last", last);
            }
            q.finish()
        };
        let mut path = format!("/v2/{repo}/tags/list");
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let (headers, body) = self
            .get_small(
                &path,
                HeaderMap::new(),
                &auth::pull_scope(repo.as_str()),
                MAX_TAGS_BODY,
            )
            .await?;
        Ok(TagsPage {
            body,
            more: headers.contains_key(LINK),
        })
    }

    /// `GET`s the (unfiltered) referrers list of `subject` whole, at most [`MAX_MANIFEST`] bytes,
    /// within the upstream's `timeout`. Unparsed: the caller checks that it is a list.
    ///
    /// # Errors
    /// As [`Upstream::manifest`].
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Bytes, UpstreamError> {
        let (_, body) = self
            .get_small(
                &format!("/v2/{repo}/referrers/{subject}"),
                HeaderMap::new(),
                &auth::pull_scope(repo.as_str()),
                MAX_MANIFEST,
            )
            .await?;
        Ok(body)
    }
}

/// The pause before resume number `attempt` (1, 2, 3) of a blob body that stopped short: 400 ms,
/// 800 ms, 1.6 s.
pub fn resume_pause(attempt: u32) -> Duration {
    Duration::from_millis(200 << attempt.min(8))
}

fn manifest_path(repo: &RepoName, reference: &Reference) -> String {
    format!("/v2/{repo}/manifests/{reference}")
}

fn blob_path(repo: &RepoName, digest: &Digest) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

fn accept_header(accept: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // As the server's `header_value`: a value that cannot be sent is sent empty.
    let value = HeaderValue::from_str(accept).unwrap_or_else(|_| HeaderValue::from_static(""));
    headers.insert(ACCEPT, value);
    headers
}

fn announced_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `bytes=N-`, for a `Range` header.
fn range_from(from: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes={from}-")).expect("digits are a valid header")
}

/// What a `Content-Range: bytes <start>-<end>/<total>` says, as far as it parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    start: Option<u64>,
    total: Option<u64>,
}

impl ContentRange {
    fn parse(value: &str) -> Self {
        let range = value.strip_prefix("bytes ");
        Self {
            start: range
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse().ok()),
            total: range
                .and_then(|v| v.rsplit_once('/'))
                .and_then(|(_, total)| total.parse().ok()),
        }
    }
}

// === impl BlobBody ===

impl BlobBody {
    /// The blob's size as the upstream announced it (for a resumed body, the whole blob's size when
    /// the upstream said), if it did.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The next chunk of the body (never empty); `None` at its end. After an error the body is over.
    ///
    /// # Errors
    /// [`Cut::Broke`] when the connection breaks, [`Cut::TooSlow`] when the upstream falls below
    /// its minimum rate.
    pub async fn next(&mut self) -> Option<Result<Bytes, Cut>> {
        self.body.next().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_table() {
        let cases = [
            ("bytes 100-199/200", Some(100), Some(200)),
            ("bytes 0-0/*", Some(0), None),
            ("bytes 7-9", Some(7), None),
            ("bytes */200", None, Some(200)),
            ("items 1-2/3", None, None),
            ("", None, None),
        ];
        for (value, start, total) in cases {
            assert_eq!(
                ContentRange::parse(value),
                ContentRange { start, total },
                "{value}"
            );
        }
    }

    #[test]
    fn range_from_header() {
        assert_eq!(range_from(42), "bytes=42-");
    }

    #[test]
    fn resume_pauses_double() {
        let pauses: Vec<_> = (1..=3).map(resume_pause).collect();
        assert_eq!(pauses, [400, 800, 1600].map(Duration::from_millis).to_vec());
    }
}
