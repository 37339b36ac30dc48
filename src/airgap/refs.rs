//! Image lists and platforms as `wharf prefetch`, `wharf export` and `[[sync]]` take them, resolved
//! against the configured upstreams.
//!
//! The parsing itself is pure and lives in [`crate::oci`] ([`crate::oci::image_list`],
//! [`crate::oci::platform`]), where `config` can use it too; this module adapts it to
//! [`UpstreamConfig`]s and to the one-line `String` messages the commands print.

use crate::config::UpstreamConfig;
use crate::oci::{image_list, ImageRef};

pub use crate::oci::platform::{describe_platform, Platform, PlatformError};

/// Parses one image reference against the configured upstreams, accepting Docker Hub's short forms
/// when an upstream is named `docker.io` (see [`image_list::resolve`]).
///
/// # Errors
/// A message naming the reference and what is wrong (an unknown registry lists the configured
/// ones).
pub fn resolve(text: &str, upstreams: &[UpstreamConfig]) -> Result<ImageRef, String> {
    image_list::resolve(text, &names(upstreams)).map_err(|e| e.to_string())
}

/// Parses an image list: one reference per line, `#` starts a comment, blank lines are skipped.
/// Duplicates are dropped (the first stays).
///
/// # Errors
/// `line N: <problem>` for the first line that does not parse.
pub fn parse_list(text: &str, upstreams: &[UpstreamConfig]) -> Result<Vec<ImageRef>, String> {
    image_list::parse_list(text, &names(upstreams)).map_err(|e| e.to_string())
}

/// The upstreams' names, the registries a reference may name.
fn names(upstreams: &[UpstreamConfig]) -> Vec<&str> {
    upstreams.iter().map(|u| u.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn upstreams() -> Vec<UpstreamConfig> {
        let text = "[[upstream]]\nname = \"upstream.test\"\nurl = \"https://u.test\"\n[[upstream]]\nname = \"lab\"\nurl = \"https://lab.test\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n";
        crate::Config::from_toml(text, Path::new("t.toml"))
            .unwrap()
            .upstreams
    }

    #[test]
    fn resolves_against_the_configured_upstreams() {
        let ups = upstreams();
        assert_eq!(
            resolve("nginx:1.27", &ups).unwrap().to_string(),
            "docker.io/library/nginx:1.27"
        );
        let e = resolve("ghcr.io/org/app:1", &ups).unwrap_err();
        assert!(
            e.contains("start the image with one of: upstream.test, lab, docker.io"),
            "{e}"
        );
        let e = parse_list("nginx\n\nquay.io/x:1\n", &ups).unwrap_err();
        assert!(e.starts_with("line 3: "), "{e}");
    }
}
