//! Image references resolved against the registries wharf knows, and image lists as operators write
//! them for `wharf prefetch`, `wharf export`, `wharf pin` and `[[pin]]`/`[[sync]]`: one reference
//! per line or argument, `#` comments.
//!
//! A reference names its registry by the `name` of an `[[upstream]]`
//! (`docker.io/library/nginx:1.27`, `upstream.test/org/app@sha256:...`). Docker Hub's short forms
//! (`nginx:1.27`, `myorg/app:1`) are accepted by [`resolve`] when a registry is named `docker.io`,
//! with docker's own rule: the first path segment is a registry only when it looks like a host (it
//! has a `.` or a `:`, or is `localhost`) or is one of the known names.
//!
//! The known registries come in as plain names (the configured upstreams' `name`s), so this module
//! stays pure and below `config`, which calls it to check `[[pin]]` and `[[sync]]`.

use super::image_ref::{ImageRef, ImageRefError};

/// The registry name of Docker Hub, whose one-segment repository names get `library/`.
pub const DOCKER_HUB: &str = "docker.io";

/// Why an image reference does not resolve. Each message names the reference as written and what
/// is wrong with it, without a fix for the place it came from (callers add theirs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The text is not `<registry>/<repository>(:<tag>|@<digest>)`.
    #[error("{text:?} is not an image reference ({source})")]
    NotAReference {
        /// The reference as written.
        text: String,
        /// What the parser refused.
        source: ImageRefError,
    },
    /// The registry is not one of the known names.
    #[error("{text:?} names registry {registry:?}, which is not an [[upstream]] name; start the image with one of: {}", known.join(", "))]
    UnknownRegistry {
        /// The reference as written.
        text: String,
        /// The registry it names.
        registry: String,
        /// The known registry names, in configuration order.
        known: Vec<String>,
    },
    /// A short name (no registry) while no registry is Docker Hub.
    #[error("{text:?} names no registry (and no [[upstream]] is named docker.io for Docker Hub short names); write <registry>/<repository>:<tag> with one of: {}", known.join(", "))]
    NoRegistry {
        /// The reference as written.
        text: String,
        /// The known registry names, in configuration order.
        known: Vec<String>,
    },
}

/// A line of an image list that does not resolve: `line N: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct ListError {
    /// The line's number, from 1.
    pub line: usize,
    /// Why its reference does not resolve.
    pub source: ResolveError,
}

/// Parses an image reference whose registry must be one of `registries`, and applies Docker Hub's
/// `library/` normalisation when it names Docker Hub. No short forms: the registry is always
/// written (`[[pin]]`, `wharf pin IMAGE`).
///
/// # Errors
/// [`ResolveError::NotAReference`] or [`ResolveError::UnknownRegistry`].
pub fn resolve_strict(text: &str, registries: &[&str]) -> Result<ImageRef, ResolveError> {
    resolve_shown(text, text, registries)
}

/// Parses one image reference against `registries`, accepting Docker Hub's short forms
/// (`nginx:1.27`, `myorg/app:1`) when one of them is `docker.io`.
///
/// # Errors
/// A [`ResolveError`] naming the reference (trimmed, as written) and what is wrong; an unknown
/// registry lists the known ones.
pub fn resolve(text: &str, registries: &[&str]) -> Result<ImageRef, ResolveError> {
    let text = text.trim();
    let registry_given = match text.split_once('/') {
        None => false,
        Some((first, _)) => {
            first.contains(['.', ':']) || first == "localhost" || registries.contains(&first)
        }
    };
    if registry_given {
        return resolve_shown(text, text, registries);
    }
    if registries.contains(&DOCKER_HUB) {
        return resolve_shown(&format!("{DOCKER_HUB}/{text}"), text, registries);
    }
    Err(ResolveError::NoRegistry {
        text: text.to_owned(),
        known: known(registries),
    })
}

/// Parses an image list: one reference per line (as [`resolve`] takes it), `#` starts a comment,
/// blank lines are skipped. Duplicates are dropped (the first stays).
///
/// # Errors
/// A [`ListError`] for the first line that does not resolve.
pub fn parse_list(text: &str, registries: &[&str]) -> Result<Vec<ImageRef>, ListError> {
    let mut out: Vec<ImageRef> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let image = resolve(line, registries).map_err(|source| ListError {
            line: n + 1,
            source,
        })?;
        if seen.insert(image.clone()) {
            out.push(image);
        }
    }
    Ok(out)
}

/// Resolves `full`, naming it as `shown` in errors (a short form is shown as the operator wrote it,
/// not with the `docker.io/` wharf added).
fn resolve_shown(full: &str, shown: &str, registries: &[&str]) -> Result<ImageRef, ResolveError> {
    let image: ImageRef = full.parse().map_err(|source| ResolveError::NotAReference {
        text: shown.to_owned(),
        source,
    })?;
    if !registries.contains(&image.registry.as_str()) {
        return Err(ResolveError::UnknownRegistry {
            text: shown.to_owned(),
            registry: image.registry,
            known: known(registries),
        });
    }
    Ok(if image.registry == DOCKER_HUB {
        image.with_library_prefix()
    } else {
        image
    })
}

fn known(registries: &[&str]) -> Vec<String> {
    registries.iter().map(|&r| r.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &[&str] = &["upstream.test", "lab", "docker.io"];
    const NO_HUB: &[&str] = &["upstream.test", "lab"];

    #[test]
    fn references_and_short_forms() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let cases: Vec<(&[&str], String, Result<String, &str>)> = vec![
            (
                HUB,
                "nginx:1.27".into(),
                Ok("docker.io/library/nginx:1.27".into()),
            ),
            (
                HUB,
                "nginx".into(),
                Ok("docker.io/library/nginx:latest".into()),
            ),
            (
                HUB,
                "myorg/app:1".into(),
                Ok("docker.io/myorg/app:1".into()),
            ),
            (
                HUB,
                "docker.io/nginx:1".into(),
                Ok("docker.io/library/nginx:1".into()),
            ),
            (
                HUB,
                "upstream.test/org/app:2".into(),
                Ok("upstream.test/org/app:2".into()),
            ),
            (
                HUB,
                format!("upstream.test/org/app@{d}"),
                Ok(format!("upstream.test/org/app@{d}")),
            ),
            (HUB, "lab/team/app:3".into(), Ok("lab/team/app:3".into())),
            (
                HUB,
                "ghcr.io/org/app:1".into(),
                Err("not an [[upstream]] name"),
            ),
            (HUB, "Nginx:1".into(), Err("\"Nginx:1\"")),
            (NO_HUB, "nginx:1.27".into(), Err("names no registry")),
            (
                NO_HUB,
                "upstream.test/a:1".into(),
                Ok("upstream.test/a:1".into()),
            ),
        ];
        for (registries, input, want) in cases {
            let got = resolve(&input, registries)
                .map(|r| r.to_string())
                .map_err(|e| e.to_string());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{input}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{input}: {g}"),
                _ => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn short_forms_are_named_as_written() {
        let e = resolve("Nginx:1", HUB).unwrap_err().to_string();
        assert!(
            e.starts_with("\"Nginx:1\" is not an image reference ("),
            "{e}"
        );
        assert!(!e.contains("docker.io/Nginx"), "{e}");
    }

    #[test]
    fn strict_references_need_a_known_registry() {
        let got = resolve_strict("docker.io/nginx:1", HUB).unwrap();
        assert_eq!(got.to_string(), "docker.io/library/nginx:1");
        let e = resolve_strict("nginx:1", HUB).unwrap_err().to_string();
        assert!(
            e.starts_with("\"nginx:1\" is not an image reference (no registry"),
            "{e}"
        );
        let e = resolve_strict("quay.io/a/b:1", &["docker.io"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "\"quay.io/a/b:1\" names registry \"quay.io\", which is not an [[upstream]] name; start the image with one of: docker.io"
        );
    }

    #[test]
    fn lists_skip_comments_and_duplicates_and_name_the_bad_line() {
        let text = "# images for the ship\n\nnginx:1.27   # the web server\nupstream.test/org/app:1\n  docker.io/library/nginx:1.27\n";
        let got: Vec<String> = parse_list(text, HUB)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["docker.io/library/nginx:1.27", "upstream.test/org/app:1"]
        );
        let e = parse_list("nginx\n\nquay.io/x:1\n", HUB)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3: "), "{e}");
        assert!(e.contains("upstream.test, lab, docker.io"), "{e}");
        assert!(parse_list("# nothing\n", HUB).unwrap().is_empty());
    }
}
