//! What a manifest needs, descriptor by descriptor, for prefetch, export and import: an index's
//! (or manifest list's) platform manifests, an image manifest's config and layers, an artifact's
//! blobs, a schema 1 manifest's `fsLayers`, and the `subject` an artifact is about.
//!
//! Unlike [`crate::oci::media::referenced_digests`], which skips what it cannot read (gc and
//! eviction must never fail on an odd manifest), this is strict: a digest wharf cannot store
//! (another algorithm, a malformed value) is an error, because a bundle or a prefetch that silently
//! left it out would be incomplete.

use crate::oci::Digest;

use super::refs::{describe_platform, Platform};

/// One descriptor of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The content's digest.
    pub digest: Digest,
    /// Its media type, when the descriptor gives one.
    pub media_type: Option<String>,
    /// Its size, when the descriptor gives one.
    pub size: Option<u64>,
    /// For an index entry, the platform it is for.
    pub platform: Option<EntryPlatform>,
    /// Where in the manifest it is (`layers[2]`), for messages.
    pub field: String,
}

/// An index entry's `platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPlatform {
    /// `os`.
    pub os: Option<String>,
    /// `architecture`.
    pub architecture: Option<String>,
    /// `variant`.
    pub variant: Option<String>,
}

/// What a manifest refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    /// The manifest's own `mediaType`, if it has one.
    pub media_type: Option<String>,
    /// An index's entries (other manifests).
    pub children: Vec<Descriptor>,
    /// Config, layers, an artifact's blobs, schema 1 `fsLayers`: content that is not a manifest.
    pub blobs: Vec<Descriptor>,
    /// The manifest an artifact refers to (OCI 1.1 `subject`).
    pub subject: Option<Descriptor>,
}

// === impl EntryPlatform ===

impl EntryPlatform {
    /// Whether one of `filters` accepts this platform (`None`: no filter, everything passes).
    pub fn passes(entry: Option<&Self>, filters: Option<&[Platform]>) -> bool {
        let Some(filters) = filters else {
            return true;
        };
        let Some(p) = entry else {
            return false;
        };
        let (Some(os), Some(arch)) = (&p.os, &p.architecture) else {
            return false;
        };
        filters
            .iter()
            .any(|f| f.matches(os, arch, p.variant.as_deref()))
    }

    /// `os/architecture[/variant]`, for messages.
    pub fn describe(entry: Option<&Self>) -> String {
        match entry {
            Some(p) => describe_platform(
                p.os.as_deref(),
                p.architecture.as_deref(),
                p.variant.as_deref(),
            ),
            None => "no platform".into(),
        }
    }
}

// === impl Refs ===

impl Refs {
    /// Whether the manifest is an index (or manifest list).
    pub fn is_index(&self) -> bool {
        !self.children.is_empty() || self.media_type.as_deref().is_some_and(is_index_type)
    }

    /// Every digest this manifest needs directly: children, blobs and subject.
    pub fn all(&self) -> impl Iterator<Item = &Descriptor> {
        self.children
            .iter()
            .chain(&self.blobs)
            .chain(self.subject.as_ref())
    }
}

/// Whether a media type is an index or manifest list.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == crate::oci::media::OCI_INDEX || media_type == crate::oci::media::DOCKER_LIST
}

/// Reads what a manifest refers to.
///
/// # Errors
/// A message when the bytes are not a JSON object, or a descriptor's digest is missing or not a
/// sha256 digest.
pub fn parse(bytes: &[u8]) -> Result<Refs, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    let mut refs = Refs {
        media_type: obj
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        ..Refs::default()
    };
    if let Some(config) = obj.get("config") {
        refs.blobs.push(descriptor(config, "config", "digest")?);
    }
    for (list, field, into_children) in [
        ("manifests", "digest", true),
        ("layers", "digest", false),
        ("blobs", "digest", false),
        ("fsLayers", "blobSum", false),
    ] {
        let Some(items) = obj.get(list) else {
            continue;
        };
        let items = items
            .as_array()
            .ok_or_else(|| format!("{list} is not a list"))?;
        for (i, item) in items.iter().enumerate() {
            let d = descriptor(item, &format!("{list}[{i}]"), field)?;
            if into_children {
                refs.children.push(d);
            } else if !refs.blobs.iter().any(|b| b.digest == d.digest) {
                refs.blobs.push(d);
            }
        }
    }
    if let Some(subject) = obj.get("subject") {
        refs.subject = Some(descriptor(subject, "subject", "digest")?);
    }
    Ok(refs)
}

fn descriptor(value: &serde_json::Value, at: &str, field: &str) -> Result<Descriptor, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{at} is not a descriptor"))?;
    let text = obj
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{at} has no {field}"))?;
    let digest: Digest = text
        .parse()
        .map_err(|e| format!("{at}.{field} {text:?}: {e}"))?;
    let platform = obj.get("platform").and_then(|p| p.as_object()).map(|p| {
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        EntryPlatform {
            os: s("os"),
            architecture: s("architecture"),
            variant: s("variant"),
        }
    });
    Ok(Descriptor {
        digest,
        media_type: obj
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        size: obj.get("size").and_then(serde_json::Value::as_u64),
        platform,
        field: at.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{OCI_INDEX, OCI_MANIFEST};

    #[test]
    fn image_manifest_index_and_artifact() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let image = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{a}","size":1}},"layers":[{{"digest":"{b}","size":1,"mediaType":"x"}},{{"digest":"{b}","size":1}}],"subject":{{"digest":"{c}","mediaType":"{OCI_MANIFEST}"}}}}"#
        );
        let refs = parse(image.as_bytes()).unwrap();
        assert!(!refs.is_index());
        assert_eq!(
            refs.blobs.iter().map(|d| d.digest).collect::<Vec<_>>(),
            [a, b]
        );
        assert_eq!(refs.blobs[1].media_type.as_deref(), Some("x"));
        assert_eq!(refs.subject.as_ref().unwrap().digest, c);
        assert_eq!(refs.all().count(), 3);

        let index = format!(
            r#"{{"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"{a}","size":5,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},{{"digest":"{b}"}}]}}"#
        );
        let refs = parse(index.as_bytes()).unwrap();
        assert!(refs.is_index());
        assert_eq!(refs.children.len(), 2);
        let arm = refs.children[0].platform.as_ref();
        assert_eq!(EntryPlatform::describe(arm), "linux/arm/v7");
        let filters: Vec<Platform> = vec!["linux/arm".parse().unwrap()];
        assert!(EntryPlatform::passes(arm, Some(&filters)));
        assert!(!EntryPlatform::passes(None, Some(&filters)));
        assert!(EntryPlatform::passes(None, None));
        let empty_index = format!(r#"{{"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(empty_index.as_bytes()).unwrap().is_index());

        let schema1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{a}"}}]}}"#);
        assert_eq!(parse(schema1.as_bytes()).unwrap().blobs[0].digest, a);
    }

    #[test]
    fn strict_about_what_cannot_be_stored() {
        for (bad, want) in [
            ("nope", "not valid JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"layers":{}}"#, "layers is not a list"),
            (
                r#"{"layers":[{"digest":"sha512:abcd"}]}"#,
                "layers[0].digest",
            ),
            (r#"{"layers":[{"size":3}]}"#, "layers[0] has no digest"),
            (r#"{"config":"x"}"#, "config is not a descriptor"),
        ] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
