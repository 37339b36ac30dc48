//! Repository names, tags and manifest references, parsed once at the edge.
//!
//! The grammar is the distribution spec's (and distribution's `reference/regexp.go`):
//! a name is path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`, at most 255
//! characters in all; a tag is `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Anything else, such as `..`, an
//! empty segment or upper case, is refused here, before it can reach the disk or the upstream.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// The longest repository name distribution accepts.
pub const NAME_MAX: usize = 255;
/// The longest tag.
pub const TAG_MAX: usize = 128;

/// A valid repository name, such as `library/nginx`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A valid tag, such as `1.27-alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What a manifest request names: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag, resolved through the upstream (and cached for the tag TTL).
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

/// Why a name, tag or reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An empty name.
    #[error("repository name is empty")]
    NameEmpty,
    /// Longer than [`NAME_MAX`].
    #[error("repository name is longer than {NAME_MAX} characters")]
    NameTooLong,
    /// Upper-case letters, which the grammar forbids.
    #[error("repository name must be lower case")]
    NameContainsUppercase,
    /// An empty path component (`a//b`, a leading or trailing `/`).
    #[error("repository name has an empty path component")]
    NameEmptyComponent,
    /// A component that breaks the grammar (`..`, `-a`, `a_`, `a$b`).
    #[error("repository name component {0:?} is not valid")]
    NameInvalidComponent(String),
    /// A tag that breaks the grammar.
    #[error("tag is not valid (expected [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}})")]
    TagInvalid,
    /// A digest that does not parse.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

// === impl RepoName ===

impl RepoName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number of `/`-separated components.
    pub fn components(&self) -> usize {
        self.0.split('/').count()
    }

    /// Prefixes `library/` to a one-component name, as Docker Hub does for official images.
    #[must_use]
    pub fn with_library_prefix(self) -> Self {
        if self.0.contains('/') {
            self
        } else {
            Self(format!("library/{}", self.0))
        }
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseError::NameEmpty);
        }
        if s.len() > NAME_MAX {
            return Err(ParseError::NameTooLong);
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ParseError::NameContainsUppercase);
        }
        for component in s.split('/') {
            if component.is_empty() {
                return Err(ParseError::NameEmptyComponent);
            }
            if !valid_component(component) {
                return Err(ParseError::NameInvalidComponent(component.to_owned()));
            }
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

// === impl Tag ===

impl Tag {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && b.len() <= TAG_MAX {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::TagInvalid)
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

// === impl Reference ===

impl FromStr for Reference {
    type Err = ParseError;

    /// A reference with a `:` is a digest (tags cannot contain one); anything else is a tag.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Self::Digest(s.parse()?))
        } else {
            Ok(Self::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => t.fmt(f),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => fmt::Debug::fmt(t, f),
            Self::Digest(d) => fmt::Debug::fmt(d, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_name_table() {
        let long = "a".repeat(NAME_MAX + 1);
        let max = "a".repeat(NAME_MAX);
        let cases: Vec<(&str, Result<(), ParseError>)> = vec![
            ("nginx", Ok(())),
            ("library/nginx", Ok(())),
            ("a/b/c/d/e", Ok(())),
            ("my-org/my_app.v2", Ok(())),
            ("a__b", Ok(())),
            ("a---b", Ok(())),
            ("ghcr.io/org/app", Ok(())),
            (&max, Ok(())),
            ("", Err(ParseError::NameEmpty)),
            (&long, Err(ParseError::NameTooLong)),
            ("Upper/case", Err(ParseError::NameContainsUppercase)),
            ("a//b", Err(ParseError::NameEmptyComponent)),
            ("/a", Err(ParseError::NameEmptyComponent)),
            ("a/", Err(ParseError::NameEmptyComponent)),
            ("..", Err(ParseError::NameInvalidComponent("..".into()))),
            ("a/../b", Err(ParseError::NameInvalidComponent("..".into()))),
            ("a/./b", Err(ParseError::NameInvalidComponent(".".into()))),
            ("-a", Err(ParseError::NameInvalidComponent("-a".into()))),
            ("a_", Err(ParseError::NameInvalidComponent("a_".into()))),
            (
                "a___b",
                Err(ParseError::NameInvalidComponent("a___b".into())),
            ),
            ("a._b", Err(ParseError::NameInvalidComponent("a._b".into()))),
            ("a b", Err(ParseError::NameInvalidComponent("a b".into()))),
            (
                "a%2fb",
                Err(ParseError::NameInvalidComponent("a%2fb".into())),
            ),
            (
                "localhost:5000/a",
                Err(ParseError::NameInvalidComponent("localhost:5000".into())),
            ),
        ];
        for (input, want) in &cases {
            let got = input.parse::<RepoName>().map(|_| ());
            assert_eq!(&got, want, "{input:?}");
        }
    }

    #[test]
    fn tag_table() {
        let max = "t".repeat(TAG_MAX);
        let long = "t".repeat(TAG_MAX + 1);
        let cases: Vec<(&str, bool)> = vec![
            ("latest", true),
            ("1.27-alpine", true),
            ("_x", true),
            ("Mixed.Case_1", true),
            (&max, true),
            ("sha256-abcdef.sig", true),
            ("", false),
            (&long, false),
            (".hidden", false),
            ("-x", false),
            ("a/b", false),
            ("a:b", false),
        ];
        for (input, ok) in &cases {
            assert_eq!(input.parse::<Tag>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn reference_picks_digest_or_tag() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert_eq!(
            "sha256:xyz".parse::<Reference>(),
            Err(ParseError::Digest(DigestError::InvalidEncoding))
        );
        assert_eq!("bad tag".parse::<Reference>(), Err(ParseError::TagInvalid));
        for input in [d, "v1"] {
            assert_eq!(input.parse::<Reference>().unwrap().to_string(), input);
        }
    }

    #[test]
    fn library_prefix_only_for_one_component() {
        let n: RepoName = "nginx".parse().unwrap();
        assert_eq!(n.with_library_prefix().as_str(), "library/nginx");
        let n: RepoName = "org/app".parse().unwrap();
        assert_eq!(n.with_library_prefix().as_str(), "org/app");
    }
}
