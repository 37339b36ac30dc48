//! Image references as operators write them on the command line and in `[[pin]]`:
//! `docker.io/library/nginx:1.27`, `ghcr.io/org/app@sha256:…`.
//!
//! Unlike docker's own grammar, the registry is never guessed: the first path segment always names
//! it, and it must be the `name` of a configured `[[upstream]]` (the caller checks that, since it
//! holds the configuration). Without a tag or digest the tag is `latest`, as docker does; with both
//! (`name:tag@digest`) the digest wins, also as docker does.

use std::fmt;
use std::str::FromStr;

use super::reference::{ParseError, Reference, RepoName, Tag};

/// An image in a registry: `<registry>/<repository>(:<tag>|@<digest>)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry, as the `name` of an `[[upstream]]` (`docker.io`, `localhost:5001`).
    pub registry: String,
    /// The repository within it.
    pub repo: RepoName,
    /// The tag or digest.
    pub reference: Reference,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// No `/`: the registry is missing.
    #[error("no registry: write <registry>/<repository>:<tag>, e.g. docker.io/library/nginx:1.27")]
    NoRegistry,
    /// The registry part is empty or holds characters no host name has.
    #[error("the registry {0:?} is not a host name")]
    BadRegistry(String),
    /// The repository, tag or digest does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

// === impl ImageRef ===

impl ImageRef {
    /// Docker Hub's normalisation: a one-component repository gets `library/`. Call it when the
    /// registry is Docker Hub.
    #[must_use]
    pub fn with_library_prefix(self) -> Self {
        Self {
            repo: self.repo.with_library_prefix(),
            ..self
        }
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (registry, rest) = s.split_once('/').ok_or(ImageRefError::NoRegistry)?;
        let host_ok = !registry.is_empty()
            && registry.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b':')
            });
        if !host_ok {
            return Err(ImageRefError::BadRegistry(registry.to_owned()));
        }
        let (name, reference) = match rest.split_once('@') {
            // name[:tag]@digest: the digest is what is meant; the tag is only a label.
            Some((name_tag, digest)) => {
                let name = match name_tag.rsplit_once(':') {
                    Some((name, tag)) if !tag.contains('/') => {
                        tag.parse::<Tag>()?;
                        name
                    }
                    _ => name_tag,
                };
                (
                    name,
                    Reference::Digest(digest.parse().map_err(ParseError::from)?),
                )
            }
            None => match rest.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, Reference::Tag(tag.parse()?)),
                _ => (rest, Reference::Tag("latest".parse()?)),
            },
        };
        Ok(Self {
            registry: registry.to_owned(),
            repo: name.parse()?,
            reference,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = match self.reference {
            Reference::Tag(_) => ':',
            Reference::Digest(_) => '@',
        };
        write!(f, "{}/{}{sep}{}", self.registry, self.repo, self.reference)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_table() {
        let ok = |s: &str| Ok::<String, ImageRefError>(s.to_owned());
        let cases: Vec<(String, Result<String, ImageRefError>)> = vec![
            (
                "docker.io/library/nginx:1.27".into(),
                ok("docker.io/library/nginx:1.27"),
            ),
            ("docker.io/nginx".into(), ok("docker.io/nginx:latest")),
            (
                "localhost:5001/org/app:v1".into(),
                ok("localhost:5001/org/app:v1"),
            ),
            (
                "localhost:5001/org/app".into(),
                ok("localhost:5001/org/app:latest"),
            ),
            (
                format!("ghcr.io/org/app@{D}"),
                Ok(format!("ghcr.io/org/app@{D}")),
            ),
            (
                format!("ghcr.io/org/app:v1@{D}"),
                Ok(format!("ghcr.io/org/app@{D}")),
            ),
            (" quay.io/a/b:c ".into(), ok("quay.io/a/b:c")),
            ("nginx:1.27".into(), Err(ImageRefError::NoRegistry)),
            ("nginx".into(), Err(ImageRefError::NoRegistry)),
            (
                "Docker.io/nginx".into(),
                Err(ImageRefError::BadRegistry("Docker.io".into())),
            ),
            (
                "/nginx".into(),
                Err(ImageRefError::BadRegistry(String::new())),
            ),
            (
                "docker.io/Nginx".into(),
                Err(ImageRefError::Parse(ParseError::NameContainsUppercase)),
            ),
            (
                "docker.io/nginx:bad tag".into(),
                Err(ImageRefError::Parse(ParseError::TagInvalid)),
            ),
            (
                "docker.io/nginx@sha256:xyz".into(),
                Err(ImageRefError::Parse(ParseError::Digest(
                    crate::oci::DigestError::InvalidEncoding,
                ))),
            ),
            (
                "docker.io/".into(),
                Err(ImageRefError::Parse(ParseError::NameEmpty)),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<ImageRef>().map(|r| r.to_string());
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn display_round_trips_and_docker_hub_gets_library() {
        for s in ["docker.io/library/nginx:1.27", &format!("a.io/b/c@{D}")] {
            let r: ImageRef = s.parse().unwrap();
            assert_eq!(r.to_string().parse::<ImageRef>().unwrap(), r);
        }
        let r: ImageRef = "docker.io/nginx:1".parse().unwrap();
        assert_eq!(
            r.with_library_prefix().to_string(),
            "docker.io/library/nginx:1"
        );
    }
}
