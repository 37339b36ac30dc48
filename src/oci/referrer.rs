//! Referrers: manifests about other manifests (signatures, SBOMs, attestations), in the two ways
//! registries carry them.
//!
//! - OCI 1.1: the artifact's manifest names the manifest it is about in its `subject`; the
//!   referrers API (`GET /v2/<name>/referrers/<digest>`) lists them as descriptors in an image
//!   index, with `artifactType` (the manifest's `artifactType`, else its config's `mediaType`) and
//!   the manifest's `annotations`. Registries without the API keep the same index under the tag
//!   `sha256-<hex>` (the referrers tag schema,
//!   <https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#referrers-tag-schema>).
//! - cosign's tag scheme: `sha256-<hex>.sig`, `.att` and `.sbom` tags in the image's repository.
//!
//! Pure: parsing and building documents, no I/O. The cache records the descriptor of every stored
//! manifest that has a `subject` ([`of_manifest`]), and answers the API from those records when the
//! upstream cannot be asked ([`list`]).

use serde_json::{Map, Value};

use super::{media, Digest, Tag};

/// The suffixes of cosign's tags.
pub const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// A manifest with a `subject`: what it is about, and its descriptor in a referrers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// The manifest it refers to.
    pub subject: Digest,
    /// Its descriptor (`mediaType`, `digest`, `size`, `artifactType`, `annotations`), as JSON.
    pub descriptor: Vec<u8>,
}

/// The referrer record of a manifest: `None` when it has no (readable) `subject`. Cheap for the
/// manifests that have none: the bytes are searched before they are parsed.
pub fn of_manifest(bytes: &[u8]) -> Option<Referrer> {
    if !contains(bytes, b"\"subject\"") {
        return None;
    }
    let doc: Value = serde_json::from_slice(bytes).ok()?;
    let subject = doc
        .get("subject")?
        .get("digest")?
        .as_str()?
        .parse::<Digest>()
        .ok()?;
    Some(Referrer {
        subject,
        descriptor: descriptor(bytes, &doc),
    })
}

/// A manifest's descriptor in a referrers list (any manifest: cosign's tags hold manifests
/// without a `subject`, listed by wharf the same way).
pub fn descriptor_of(bytes: &[u8]) -> Option<Vec<u8>> {
    let doc: Value = serde_json::from_slice(bytes).ok()?;
    doc.is_object().then(|| descriptor(bytes, &doc))
}

fn descriptor(bytes: &[u8], doc: &Value) -> Vec<u8> {
    let mut d = Map::new();
    let media_type = media::resolve_manifest_type(bytes, None).unwrap_or(media::OCI_MANIFEST);
    d.insert("mediaType".into(), media_type.into());
    d.insert("digest".into(), Digest::of(bytes).to_string().into());
    d.insert("size".into(), (bytes.len() as u64).into());
    if let Some(t) = artifact_type(doc) {
        d.insert("artifactType".into(), t.into());
    }
    if let Some(a) = doc.get("annotations").filter(|a| a.is_object()) {
        d.insert("annotations".into(), a.clone());
    }
    serde_json::to_vec(&Value::Object(d)).unwrap_or_default()
}

/// A manifest's artifact type as the referrers API gives it: its `artifactType`, else its
/// config's `mediaType`.
pub fn artifact_type(doc: &Value) -> Option<&str> {
    doc.get("artifactType")
        .and_then(Value::as_str)
        .or_else(|| doc.get("config")?.get("mediaType")?.as_str())
}

/// The types `--referrers-type` matches a referrer against: its artifact type, and the media type
/// of its first layer (cosign's signatures and attestations carry a generic config, and say what
/// they are in their layers: `application/vnd.dev.cosign.simplesigning.v1+json`,
/// `application/vnd.dsse.envelope.v1+json`).
pub fn kinds(bytes: &[u8]) -> Vec<String> {
    let Ok(doc) = serde_json::from_slice::<Value>(bytes) else {
        return Vec::new();
    };
    let mut out: Vec<String> = artifact_type(&doc).map(str::to_owned).into_iter().collect();
    let first = doc
        .get("layers")
        .or_else(|| doc.get("blobs"))
        .and_then(|l| l.get(0)?.get("mediaType")?.as_str());
    if let Some(t) = first {
        out.push(t.to_owned());
    }
    out
}

/// The referrers list (an OCI image index) of these descriptors, in the order given.
pub fn list<'a>(descriptors: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let manifests: Vec<Value> = descriptors
        .into_iter()
        .filter_map(|d| serde_json::from_slice(d).ok())
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    serde_json::to_vec(&index).unwrap_or_default()
}

/// The digests a referrers list (from the API, or the tag schema's index) names, with their
/// `artifactType`.
pub fn list_entries(bytes: &[u8]) -> Vec<(Digest, Option<String>)> {
    let Ok(doc) = serde_json::from_slice::<Value>(bytes) else {
        return Vec::new();
    };
    doc.get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let digest = m.get("digest")?.as_str()?.parse().ok()?;
            let t = m.get("artifactType").and_then(Value::as_str);
            Some((digest, t.map(str::to_owned)))
        })
        .collect()
}

/// The tags that may hold referrers of `subject`, in the order they are tried: the referrers tag
/// schema's `sha256-<hex>`, then cosign's `sha256-<hex>.sig`, `.att`, `.sbom`. (All 7 + 64 + at
/// most 5 characters of `[a-z0-9.-]`: valid tags, so none is dropped.)
pub fn scheme_tags(subject: &Digest) -> Vec<Tag> {
    let hex = subject.hex();
    std::iter::once(format!("sha256-{hex}"))
        .chain(COSIGN_SUFFIXES.iter().map(|s| format!("sha256-{hex}.{s}")))
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// Whether `tag` is one of [`scheme_tags`] (of any subject).
pub fn is_scheme_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let (Some(hex), Some(suffix)) = (rest.get(..64), rest.get(64..)) else {
        return false;
    };
    hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (suffix.is_empty()
            || suffix
                .strip_prefix('.')
                .is_some_and(|s| COSIGN_SUFFIXES.contains(&s)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_descriptor_and_list() {
        let subject = Digest::of(b"image");
        let sbom = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/spdx+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/spdx+json","digest":"{}","size":3}}],"subject":{{"mediaType":"{}","digest":"{subject}","size":9}},"annotations":{{"org.example":"x"}}}}"#,
            media::OCI_MANIFEST,
            Digest::of(b"{}"),
            Digest::of(b"sbo"),
            media::OCI_MANIFEST
        );
        let r = of_manifest(sbom.as_bytes()).unwrap();
        assert_eq!(r.subject, subject);
        let d: Value = serde_json::from_slice(&r.descriptor).unwrap();
        assert_eq!(d["artifactType"], "application/spdx+json");
        assert_eq!(d["digest"], Digest::of(sbom.as_bytes()).to_string());
        assert_eq!(d["size"], sbom.len());
        assert_eq!(d["annotations"]["org.example"], "x");
        assert_eq!(d["mediaType"], media::OCI_MANIFEST);
        let listed = list([r.descriptor.as_slice()]);
        assert_eq!(
            list_entries(&listed),
            [(
                Digest::of(sbom.as_bytes()),
                Some("application/spdx+json".to_owned())
            )]
        );
        assert_eq!(kinds(sbom.as_bytes())[0], "application/spdx+json");
        assert!(of_manifest(br#"{"schemaVersion":2}"#).is_none());
        assert!(of_manifest(br#"{"subject":{"digest":"md5:x"}}"#).is_none());
    }

    #[test]
    fn tags_of_the_two_schemes() {
        let d = Digest::of(b"x");
        let tags = scheme_tags(&d);
        assert_eq!(tags.len(), 4);
        assert_eq!(tags[0].as_str(), format!("sha256-{}", d.hex()));
        assert_eq!(tags[1].as_str(), format!("sha256-{}.sig", d.hex()));
        assert!(tags[2].as_str().ends_with(".att") && tags[3].as_str().ends_with(".sbom"));
        assert!(tags.iter().all(|t| is_scheme_tag(t.as_str())));
        for not in [
            "latest",
            "sha256-abc.sig",
            &format!("sha256-{}.foo", d.hex()),
        ] {
            assert!(!is_scheme_tag(not), "{not}");
        }
    }
}
