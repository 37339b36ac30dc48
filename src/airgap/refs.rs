//! Image lists as operators write them for `wharf prefetch`, `wharf export` and `[[sync]]`: one
//! reference per line or argument, `#` comments, and platforms (`linux/arm64`, `linux/arm/v7`).
//!
//! A reference names its registry by the `name` of an `[[upstream]]`
//! (`docker.io/library/nginx:1.27`, `upstream.test/org/app@sha256:...`). Docker Hub's short forms
//! (`nginx:1.27`, `myorg/app:1`) are accepted when an upstream is named `docker.io`, with docker's
//! own rule: the first path segment is a registry only when it looks like a host (it has a `.` or a
//! `:`, or is `localhost`) or is the name of a configured upstream.

use std::fmt;
use std::str::FromStr;

use crate::config::{resolve_image, UpstreamConfig};
use crate::oci::ImageRef;

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

/// Parses one image reference against the configured upstreams, accepting Docker Hub's short forms
/// when an upstream is named `docker.io`.
///
/// # Errors
/// A message naming the reference and what is wrong (an unknown registry lists the configured
/// ones).
pub fn resolve(text: &str, upstreams: &[UpstreamConfig]) -> Result<ImageRef, String> {
    let text = text.trim();
    let registry_given = match text.split_once('/') {
        None => false,
        Some((first, _)) => {
            first.contains(['.', ':'])
                || first == "localhost"
                || upstreams.iter().any(|u| u.name == first)
        }
    };
    if registry_given {
        return resolve_image(text, upstreams);
    }
    if upstreams.iter().any(|u| u.is_docker_hub()) {
        return resolve_image(&format!("docker.io/{text}"), upstreams)
            .map_err(|e| e.replace(&format!("\"docker.io/{text}\""), &format!("{text:?}")));
    }
    let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    Err(format!(
        "{text:?} names no registry (and no [[upstream]] is named docker.io for Docker Hub short names); write <registry>/<repository>:<tag> with one of: {}",
        names.join(", ")
    ))
}

/// Parses an image list: one reference per line, `#` starts a comment, blank lines are skipped.
/// Duplicates are dropped (the first stays).
///
/// # Errors
/// `line N: <problem>` for the first line that does not parse.
pub fn parse_list(text: &str, upstreams: &[UpstreamConfig]) -> Result<Vec<ImageRef>, String> {
    let mut out: Vec<ImageRef> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let image = resolve(line, upstreams).map_err(|e| format!("line {}: {e}", n + 1))?;
        if seen.insert(image.clone()) {
            out.push(image);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn upstreams(with_hub: bool) -> Vec<UpstreamConfig> {
        let mut text = String::from(
            "[[upstream]]\nname = \"upstream.test\"\nurl = \"https://u.test\"\n[[upstream]]\nname = \"lab\"\nurl = \"https://lab.test\"\n",
        );
        if with_hub {
            text.push_str(
                "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n",
            );
        }
        crate::Config::from_toml(&text, Path::new("t.toml"))
            .unwrap()
            .upstreams
    }

    #[test]
    fn references_and_short_forms() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let hub = upstreams(true);
        let no_hub = upstreams(false);
        let cases: Vec<(&[UpstreamConfig], String, Result<String, &str>)> = vec![
            (
                &hub,
                "nginx:1.27".into(),
                Ok("docker.io/library/nginx:1.27".into()),
            ),
            (
                &hub,
                "nginx".into(),
                Ok("docker.io/library/nginx:latest".into()),
            ),
            (
                &hub,
                "myorg/app:1".into(),
                Ok("docker.io/myorg/app:1".into()),
            ),
            (
                &hub,
                "docker.io/nginx:1".into(),
                Ok("docker.io/library/nginx:1".into()),
            ),
            (
                &hub,
                "upstream.test/org/app:2".into(),
                Ok("upstream.test/org/app:2".into()),
            ),
            (
                &hub,
                format!("upstream.test/org/app@{d}"),
                Ok(format!("upstream.test/org/app@{d}")),
            ),
            (&hub, "lab/team/app:3".into(), Ok("lab/team/app:3".into())),
            (
                &hub,
                "ghcr.io/org/app:1".into(),
                Err("not an [[upstream]] name"),
            ),
            (&hub, "Nginx:1".into(), Err("\"Nginx:1\"")),
            (&no_hub, "nginx:1.27".into(), Err("names no registry")),
            (
                &no_hub,
                "upstream.test/a:1".into(),
                Ok("upstream.test/a:1".into()),
            ),
        ];
        for (ups, input, want) in cases {
            let got = resolve(&input, ups).map(|r| r.to_string());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{input}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{input}: {g}"),
                _ => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn lists_skip_comments_and_duplicates_and_name_the_bad_line() {
        let ups = upstreams(true);
        let text = "# images for the ship\n\nnginx:1.27   # the web server\nupstream.test/org/app:1\n  docker.io/library/nginx:1.27\n";
        let got: Vec<String> = parse_list(text, &ups)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["docker.io/library/nginx:1.27", "upstream.test/org/app:1"]
        );
        let e = parse_list("nginx\n\nquay.io/x:1\n", &ups).unwrap_err();
        assert!(e.starts_with("line 3: "), "{e}");
        assert!(e.contains("upstream.test, lab, docker.io"), "{e}");
        assert!(parse_list("# nothing\n", &ups).unwrap().is_empty());
    }

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
