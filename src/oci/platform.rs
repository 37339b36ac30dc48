//! Platforms as operators write them (`linux/amd64`, `linux/arm/v7`) for `wharf prefetch`, `wharf
//! export` and `[[sync]]`, and as an index's descriptors name them.
//!
//! Pure parsing, no I/O: `config` checks `[[sync]] platforms` with it, `airgap` filters indexes.

use std::fmt;
use std::str::FromStr;

/// A platform filter: `os/architecture[/variant]`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7`, `v8`, ...; a filter without one matches every variant.
    pub variant: Option<String>,
}

/// Why a platform does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a platform; write os/architecture[/variant], e.g. linux/amd64 or linux/arm/v7"
)]
pub struct PlatformError(pub String);

// === impl Platform ===

impl Platform {
    /// Whether an image's platform (as an index's descriptor gives it) passes this filter: the same
    /// os and architecture, and the same variant when the filter names one.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == architecture
            && self.variant.as_deref().is_none_or(|v| Some(v) == variant)
    }

    /// Parses a comma-separated list (`linux/amd64,linux/arm64`), as `--platform` takes it.
    ///
    /// # Errors
    /// The first item that does not parse.
    pub fn parse_list(text: &str) -> Result<Vec<Platform>, PlatformError> {
        let mut out: Vec<Platform> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let p: Platform = item.parse()?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(PlatformError(text.to_owned()));
        }
        Ok(out)
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PlatformError(s.to_owned());
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
                })
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(bad());
        }
        Ok(Self {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `os/architecture[/variant]` of an index entry, for messages (`unknown` for missing parts).
pub fn describe_platform(
    os: Option<&str>,
    architecture: Option<&str>,
    variant: Option<&str>,
) -> String {
    let mut s = format!(
        "{}/{}",
        os.unwrap_or("unknown"),
        architecture.unwrap_or("unknown")
    );
    if let Some(v) = variant {
        s.push('/');
        s.push_str(v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!(p.matches("linux", "arm", Some("v7")));
        assert!(!p.matches("linux", "arm", Some("v6")));
        assert!(!p.matches("linux", "arm", None));
        let any: Platform = "linux/arm64".parse().unwrap();
        assert!(any.matches("linux", "arm64", Some("v8")));
        assert!(any.matches("linux", "arm64", None));
        assert!(!any.matches("windows", "arm64", None));
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "Linux/amd64",
            "linux amd64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
        assert_eq!(
            Platform::parse_list("linux/amd64, linux/arm64,linux/amd64")
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64"]
        );
        assert!(Platform::parse_list(" , ").is_err());
        assert!(Platform::parse_list("linux/amd64,x").is_err());
        assert_eq!(
            describe_platform(Some("linux"), None, Some("v8")),
            "linux/unknown/v8"
        );
    }
}
