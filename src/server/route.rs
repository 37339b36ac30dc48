//! Request line → [`Route`]: which API area, which upstream, which repository.
//!
//! Repository names contain `/`, so the path is parsed from the right: the last segments say what
//! is asked (`manifests/<ref>`, `blobs/<digest>`, `tags/list`), everything before is the name. The
//! upstream is then picked the way each client kind names it:
//! 1. `?ns=<registry>`, which containerd adds to every request it sends to a mirror;
//! 2. a first path segment equal to an upstream's name (`/v2/ghcr.io/org/app/...`), which Podman
//!    and CRI-O send for a `registries.conf` mirror with a path prefix;
//! 3. otherwise the `default = true` upstream, which is what the Docker daemon's `registry-mirrors`
//!    reaches (Docker Hub only).
//!
//! Everything here is pure, so it is tested as tables.

use http::Method;

use crate::oci::reference::ParseError;
use crate::oci::{media, Digest, DigestError, Reference, RepoName};

/// The upstream names, as routing needs them.
#[derive(Debug, Clone, Default)]
pub struct RegistryTable {
    entries: Vec<(String, bool)>,
    default: Option<usize>,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `GET /v2/`: the API version check.
    Base,
    /// A request on a repository.
    Api(Route),
}

/// A request on a repository of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index of the upstream in [`RegistryTable`] (and in the configured list).
    pub upstream: usize,
    /// The name as the client wrote it, path prefix included; used in responses.
    pub client_name: String,
    /// The name at the upstream (prefix removed, `library/` added for Docker Hub).
    pub name: RepoName,
    /// What is asked.
    pub endpoint: Endpoint,
}

/// The API area of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/manifests/<tag|digest>`.
    Manifest(Reference),
    /// `/blobs/<digest>`.
    Blob(Digest),
    /// `/referrers/<digest>`, optionally filtered by `artifactType` (a media type by RFC 6838, at
    /// most [`crate::limits::MAX_MEDIA_TYPE`] bytes; anything else does not route).
    Referrers {
        /// The subject's digest.
        digest: Digest,
        /// `artifactType`: only referrers of this type.
        artifact_type: Option<String>,
    },
    /// `/tags/list`, with the pagination the client asked for.
    TagsList {
        /// `n`: the page size.
        n: Option<u32>,
        /// `last`: the tag after which the page starts.
        last: Option<String>,
    },
}

/// Why a request does not route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not an API path at all.
    #[error("no such endpoint")]
    NotFound,
    /// A write method: wharf is a read-only mirror.
    #[error("wharf is a read-only mirror: {0} is not supported")]
    ReadOnly(Method),
    /// A method that no endpoint has.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(Method),
    /// The repository name breaks the grammar.
    #[error("invalid repository name: {0}")]
    NameInvalid(ParseError),
    /// The digest in the path does not parse.
    #[error("invalid digest: {0}")]
    DigestInvalid(DigestError),
    /// The tag in the path breaks the grammar.
    #[error("invalid tag: {0}")]
    TagInvalid(ParseError),
    /// `?ns=` names a registry that is not configured.
    #[error("registry {0:?} is not configured on this mirror")]
    UnknownRegistry(String),
    /// No registry named and no default upstream.
    #[error("no registry named in the request and no default upstream is configured; use a path prefix (/v2/<registry>/<name>/...) or ?ns=<registry>")]
    NoDefault,
    /// A query parameter that does not parse.
    #[error("invalid query parameter {0}")]
    BadQuery(&'static str),
}

// === impl RegistryTable ===

impl RegistryTable {
    /// Builds the table from `(name, is_docker_hub)` pairs and the index of the default upstream.
    pub fn new(entries: Vec<(String, bool)>, default: Option<usize>) -> Self {
        Self { entries, default }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }
}

// === parsing ===

/// Routes a request.
///
/// # Errors
/// A [`RouteError`] saying what is wrong; each maps to one OCI error code.
pub fn parse(
    method: &Method,
    path: &str,
    query: Option<&str>,
    registries: &RegistryTable,
) -> Result<Parsed, RouteError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Err(RouteError::NotFound);
    };
    let readable = *method == Method::GET || *method == Method::HEAD;
    let writes = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    if !readable {
        return Err(if writes.contains(method) {
            RouteError::ReadOnly(method.clone())
        } else {
            RouteError::MethodNotAllowed(method.clone())
        });
    }
    if rest.is_empty() || rest == "/" {
        return Ok(Parsed::Base);
    }
    let rest = rest.strip_prefix('/').ok_or(RouteError::NotFound)?;
    let (raw_name, endpoint) = split_endpoint(rest)?;

    let ns = query_param(query, "ns");
    let (upstream, name_at_upstream) = match ns {
        Some(ns) => (
            registries
                .find(&ns)
                .ok_or_else(|| RouteError::UnknownRegistry(ns.clone()))?,
            raw_name,
        ),
        None => match raw_name
            .split_once('/')
            .map(|(first, tail)| (first, tail, registries.find(first)))
        {
            Some((_, tail, Some(index))) => (index, tail),
            // A first segment that can only be a registry host (docker's reference grammar: it
            // has a '.' or a ':', or is localhost) names a registry this mirror does not have.
            // Sending it to the default upstream would be a guess.
            Some((first, _, None)) if looks_like_registry(first) => {
                return Err(RouteError::UnknownRegistry(first.to_owned()));
            }
            _ => (registries.default.ok_or(RouteError::NoDefault)?, raw_name),
        },
    };
    let mut name: RepoName = name_at_upstream.parse().map_err(RouteError::NameInvalid)?;
    if registries.entries[upstream].1 {
        name = name.with_library_prefix();
    }
    let endpoint = match endpoint {
        RawEndpoint::Manifest(reference) => {
            Endpoint::Manifest(reference.parse().map_err(|e| match e {
                ParseError::Digest(d) => RouteError::DigestInvalid(d),
                other => RouteError::TagInvalid(other),
            })?)
        }
        RawEndpoint::Blob(digest) => {
            Endpoint::Blob(digest.parse().map_err(RouteError::DigestInvalid)?)
        }
        RawEndpoint::Referrers(digest) => Endpoint::Referrers {
            digest: digest.parse().map_err(RouteError::DigestInvalid)?,
            artifact_type: query_param(query, "artifactType")
                .map(|t| {
                    media::is_media_type(&t)
                        .then_some(t)
                        .ok_or(RouteError::BadQuery("artifactType"))
                })
                .transpose()?,
        },
        RawEndpoint::TagsList => Endpoint::TagsList {
            n: query_param(query, "n")
                .map(|n| n.parse().map_err(|_| RouteError::BadQuery("n")))
                .transpose()?,
            last: query_param(query, "last"),
        },
    };
    Ok(Parsed::Api(Route {
        upstream,
        client_name: raw_name.to_owned(),
        name,
        endpoint,
    }))
}

enum RawEndpoint<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    Referrers(&'a str),
    TagsList,
}

/// Splits `<name>/<area>/<arg>` from the right.
fn split_endpoint(rest: &str) -> Result<(&str, RawEndpoint<'_>), RouteError> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok((name, RawEndpoint::TagsList));
    }
    let (head, last) = rest.rsplit_once('/').ok_or(RouteError::NotFound)?;
    if let Some(name) = head.strip_suffix("/manifests") {
        return Ok((name, RawEndpoint::Manifest(last)));
    }
    if let Some(name) = head.strip_suffix("/blobs") {
        return Ok((name, RawEndpoint::Blob(last)));
    }
    if let Some(name) = head.strip_suffix("/referrers") {
        return Ok((name, RawEndpoint::Referrers(last)));
    }
    Err(RouteError::NotFound)
}

/// Whether a path segment is a registry host rather than a repository component, by the rule docker
/// uses to split a reference (distribution `reference/normalize.go`, `splitDockerDomain`).
fn looks_like_registry(segment: &str) -> bool {
    let host = segment.split_once(':').map_or(segment, |(host, _)| host);
    let host_shaped = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    host_shaped && (segment.contains(['.', ':']) || segment == "localhost")
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RegistryTable {
        RegistryTable::new(
            vec![
                ("docker.io".into(), true),
                ("ghcr.io".into(), false),
                ("localhost:5001".into(), false),
            ],
            Some(0),
        )
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn api(
        upstream: usize,
        client: &str,
        name: &str,
        endpoint: Endpoint,
    ) -> Result<Parsed, RouteError> {
        Ok(Parsed::Api(Route {
            upstream,
            client_name: client.into(),
            name: name.parse().unwrap(),
            endpoint,
        }))
    }

    fn tag(t: &str) -> Endpoint {
        Endpoint::Manifest(Reference::Tag(t.parse().unwrap()))
    }

    #[test]
    fn route_table() {
        let digest: Digest = D.parse().unwrap();
        let blob = |s: &str| format!("{s}/blobs/{D}");
        type Case<'a> = (Method, String, Option<&'a str>, Result<Parsed, RouteError>);
        let cases: Vec<Case<'_>> = vec![
            (Method::GET, "/v2/".into(), None, Ok(Parsed::Base)),
            (Method::HEAD, "/v2".into(), None, Ok(Parsed::Base)),
            (
                Method::GET,
                "/v2/nginx/manifests/1.27".into(),
                None,
                api(0, "nginx", "library/nginx", tag("1.27")),
            ),
            (
                Method::GET,
                "/v2/library/nginx/manifests/latest".into(),
                None,
                api(0, "library/nginx", "library/nginx", tag("latest")),
            ),
            (
                Method::GET,
                "/v2/ghcr.io/org/app/manifests/1".into(),
                None,
                api(1, "ghcr.io/org/app", "org/app", tag("1")),
            ),
            (
                Method::GET,
                "/v2/org/app/manifests/1".into(),
                Some("ns=ghcr.io"),
                api(1, "org/app", "org/app", tag("1")),
            ),
            (
                Method::GET,
                "/v2/nginx/manifests/1".into(),
                Some("ns=docker.io"),
                api(0, "nginx", "library/nginx", tag("1")),
            ),
            (
                Method::GET,
                "/v2/localhost:5001/a/manifests/1".into(),
                None,
                api(2, "localhost:5001/a", "a", tag("1")),
            ),
            (
                Method::GET,
                "/v2/quay.io/org/app/manifests/1".into(),
                None,
                Err(RouteError::UnknownRegistry("quay.io".into())),
            ),
            (
                Method::GET,
                "/v2/localhost/app/manifests/1".into(),
                None,
                Err(RouteError::UnknownRegistry("localhost".into())),
            ),
            (
                Method::GET,
                "/v2/my-org/app/manifests/1".into(),
                None,
                api(0, "my-org/app", "my-org/app", tag("1")),
            ),
            (
                Method::GET,
                format!("/v2/{}", blob("a/blobs/b")),
                None,
                api(0, "a/blobs/b", "a/blobs/b", Endpoint::Blob(digest)),
            ),
            (
                Method::GET,
                "/v2/a/manifests/b/manifests/x".into(),
                None,
                api(0, "a/manifests/b", "a/manifests/b", tag("x")),
            ),
            (
                Method::GET,
                format!("/v2/org/app/manifests/{D}"),
                None,
                api(
                    0,
                    "org/app",
                    "org/app",
                    Endpoint::Manifest(Reference::Digest(digest)),
                ),
            ),
            (
                Method::GET,
                "/v2/org/app/tags/list".into(),
                Some("n=2&last=b"),
                api(
                    0,
                    "org/app",
                    "org/app",
                    Endpoint::TagsList {
                        n: Some(2),
                        last: Some("b".into()),
                    },
                ),
            ),
            (
                Method::GET,
                "/v2/org/app/tags/list".into(),
                Some("n=x"),
                Err(RouteError::BadQuery("n")),
            ),
            (
                Method::GET,
                format!("/v2/org/app/referrers/{D}"),
                Some("artifactType=application%2Fspdx%2Bjson"),
                api(
                    0,
                    "org/app",
                    "org/app",
                    Endpoint::Referrers {
                        digest,
                        artifact_type: Some("application/spdx+json".into()),
                    },
                ),
            ),
            (
                Method::GET,
                format!("/v2/org/app/referrers/{D}"),
                Some("artifactType=application%2Fx%00y"),
                Err(RouteError::BadQuery("artifactType")),
            ),
            (
                Method::GET,
                format!("/v2/org/app/referrers/{D}"),
                Some("artifactType=text%2Fplain%3B%20charset%3Dutf-8"),
                Err(RouteError::BadQuery("artifactType")),
            ),
            (
                Method::GET,
                format!("/v2/org/app/referrers/{D}"),
                Some("artifactType="),
                Err(RouteError::BadQuery("artifactType")),
            ),
            (
                Method::GET,
                "/v2/a/manifests/1".into(),
                Some("ns=quay.io"),
                Err(RouteError::UnknownRegistry("quay.io".into())),
            ),
            (
                Method::GET,
                "/v2/Upper/manifests/1".into(),
                None,
                Err(RouteError::NameInvalid(ParseError::NameContainsUppercase)),
            ),
            (
                Method::GET,
                "/v2/a//b/manifests/1".into(),
                None,
                Err(RouteError::NameInvalid(ParseError::NameEmptyComponent)),
            ),
            (
                Method::GET,
                "/v2/../etc/manifests/1".into(),
                None,
                Err(RouteError::NameInvalid(ParseError::NameInvalidComponent(
                    "..".into(),
                ))),
            ),
            (
                Method::GET,
                "/v2/ghcr.io/manifests/1".into(),
                None,
                api(0, "ghcr.io", "library/ghcr.io", tag("1")),
            ),
            (
                Method::GET,
                "/v2/a/manifests/sha256:xyz".into(),
                None,
                Err(RouteError::DigestInvalid(DigestError::InvalidEncoding)),
            ),
            (
                Method::GET,
                "/v2/a/manifests/bad%20tag".into(),
                None,
                Err(RouteError::TagInvalid(ParseError::TagInvalid)),
            ),
            (
                Method::GET,
                "/v2/a/blobs/latest".into(),
                None,
                Err(RouteError::DigestInvalid(DigestError::MissingAlgorithm)),
            ),
            (
                Method::GET,
                "/v2/a/blobs/uploads/".into(),
                None,
                Err(RouteError::NotFound),
            ),
            (Method::GET, "/v2/a".into(), None, Err(RouteError::NotFound)),
            (
                Method::GET,
                "/v2/manifests/x".into(),
                None,
                Err(RouteError::NotFound),
            ),
            (
                Method::GET,
                "/v1/_ping".into(),
                None,
                Err(RouteError::NotFound),
            ),
            (
                Method::POST,
                "/v2/a/blobs/uploads/".into(),
                None,
                Err(RouteError::ReadOnly(Method::POST)),
            ),
            (
                Method::PUT,
                "/v2/a/manifests/1".into(),
                None,
                Err(RouteError::ReadOnly(Method::PUT)),
            ),
            (
                Method::DELETE,
                format!("/v2/a/manifests/{D}"),
                None,
                Err(RouteError::ReadOnly(Method::DELETE)),
            ),
            (
                Method::PATCH,
                "/v2/a/blobs/uploads/x".into(),
                None,
                Err(RouteError::ReadOnly(Method::PATCH)),
            ),
            (
                Method::OPTIONS,
                "/v2/".into(),
                None,
                Err(RouteError::MethodNotAllowed(Method::OPTIONS)),
            ),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(
                parse(&method, &path, query, &table()),
                want,
                "{method} {path} {query:?}"
            );
        }
    }

    #[test]
    fn no_default_upstream() {
        let t = RegistryTable::new(vec![("ghcr.io".into(), false)], None);
        assert_eq!(
            parse(&Method::GET, "/v2/org/app/manifests/1", None, &t),
            Err(RouteError::NoDefault)
        );
        assert!(parse(&Method::GET, "/v2/ghcr.io/org/app/manifests/1", None, &t).is_ok());
    }

    #[test]
    fn long_name_is_invalid() {
        let path = format!("/v2/{}/manifests/1", "a".repeat(300));
        assert_eq!(
            parse(&Method::GET, &path, None, &table()),
            Err(RouteError::NameInvalid(ParseError::NameTooLong))
        );
    }
}
