//! Manifest media types, the `Accept` list wharf sends upstream, and what a manifest refers to.

use super::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1, signed (still served by old registries).
pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// The media type wharf gives blobs.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Every manifest type wharf knows, in the order sent upstream when the client sent none.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// The `Accept` value to send upstream: the client's list, then the known manifest types it lacks.
///
/// Forwarding the client's list keeps its preference; adding the rest makes sure the answer cached
/// for a tag is the full manifest (an index for a multi-arch tag), the same one every modern client
/// gets, rather than whatever the first client happened to ask for.
pub fn upstream_accept<'a>(client: impl IntoIterator<Item = &'a str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for value in client {
        for item in value.split(',') {
            let item = item.trim();
            if !item.is_empty() && !out.contains(&item) {
                out.push(item);
            }
        }
    }
    for t in MANIFEST_TYPES {
        if !out.iter().any(|have| media_type_of(have) == t) {
            out.push(t);
        }
    }
    out.join(", ")
}

fn media_type_of(accept_item: &str) -> &str {
    accept_item.split(';').next().unwrap_or("").trim()
}

/// The media type of a manifest from its own `mediaType` field, or from its shape when it has none.
///
/// Used when an upstream sends no usable `Content-Type`, and when the index is rebuilt from stored
/// bytes. Returns `None` for bytes that are not a JSON object.
pub fn sniff_manifest_type(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let obj = value.as_object()?;
    if let Some(t) = obj.get("mediaType").and_then(|v| v.as_str()) {
        return Some(t.to_owned());
    }
    if obj.contains_key("manifests") {
        Some(OCI_INDEX.to_owned())
    } else if obj.contains_key("signatures") || obj.get("schemaVersion") == Some(&1.into()) {
        Some(DOCKER_V1_SIGNED.to_owned())
    } else {
        Some(OCI_MANIFEST.to_owned())
    }
}

/// The digests a manifest refers to: an index's (or manifest list's) manifests, an image manifest's
/// config and layers, an artifact manifest's blobs, a schema 1 manifest's `fsLayers`. The `subject`
/// is left out: it points at the image an artifact is about, not at content the artifact needs.
///
/// Used to keep what a pinned image needs and to find blobs no manifest refers to. Entries whose
/// digest wharf does not store (another algorithm, a malformed value) are skipped; bytes that are
/// not a JSON object refer to nothing.
pub fn referenced_digests(bytes: &[u8]) -> Vec<Digest> {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |value: Option<&serde_json::Value>| {
        if let Some(d) = value.and_then(|v| v.as_str()).and_then(|v| v.parse().ok()) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    };
    push(obj.get("config").and_then(|c| c.get("digest")));
    for (list, field) in [
        ("manifests", "digest"),
        ("layers", "digest"),
        ("blobs", "digest"),
        ("fsLayers", "blobSum"),
    ] {
        if let Some(items) = obj.get(list).and_then(|v| v.as_array()) {
            for item in items {
                push(item.get(field));
            }
        }
    }
    out
}

/// Whether stored bytes are evidently a manifest, and of which type: a `mediaType` wharf knows, or
/// the shape of an index (`manifests`) or image manifest (`config` and `layers`). Stricter than
/// [`sniff_manifest_type`], because an image config is a JSON object too: used to re-adopt a stored
/// file whose index record was lost, where a guess would serve a config as a manifest.
pub fn evident_manifest_type(bytes: &[u8]) -> Option<&'static str> {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(bytes) else {
        return None;
    };
    if let Some(t) = obj.get("mediaType").and_then(|v| v.as_str()) {
        return MANIFEST_TYPES
            .into_iter()
            .chain([DOCKER_V1_SIGNED])
            .find(|known| *known == t);
    }
    if obj
        .get("manifests")
        .is_some_and(serde_json::Value::is_array)
    {
        Some(OCI_INDEX)
    } else if obj.contains_key("config")
        && obj.get("layers").is_some_and(serde_json::Value::is_array)
    {
        Some(OCI_MANIFEST)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_keeps_client_order_and_adds_the_rest() {
        let got = upstream_accept([
            DOCKER_MANIFEST,
            "application/vnd.oci.image.manifest.v1+json; q=0.5",
        ]);
        assert_eq!(
            got,
            format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}; q=0.5, {OCI_INDEX}, {DOCKER_LIST}")
        );
        let none: [&str; 0] = [];
        assert_eq!(upstream_accept(none), MANIFEST_TYPES.join(", "));
        assert_eq!(
            upstream_accept([&format!("{OCI_INDEX},{OCI_INDEX}")[..]]),
            format!("{OCI_INDEX}, {DOCKER_LIST}, {OCI_MANIFEST}, {DOCKER_MANIFEST}")
        );
    }

    #[test]
    fn sniff_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"mediaType":"x/y","layers":[]}"#, Some("x/y")),
            (r#"{"schemaVersion":2,"manifests":[]}"#, Some(OCI_INDEX)),
            (
                r#"{"schemaVersion":2,"config":{},"layers":[]}"#,
                Some(OCI_MANIFEST),
            ),
            (
                r#"{"schemaVersion":1,"fsLayers":[]}"#,
                Some(DOCKER_V1_SIGNED),
            ),
            ("[1]", None),
            ("nope", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                sniff_manifest_type(input.as_bytes()).as_deref(),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn referenced_digests_table() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = Digest::of(b"c");
        let cases: Vec<(String, Vec<Digest>)> = vec![
            (
                format!(
                    r#"{{"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}"}},{{"digest":"{c}"}}],"subject":{{"digest":"{c}"}}}}"#
                ),
                vec![a, b, c],
            ),
            (
                format!(
                    r#"{{"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"{a}"}},{{"digest":"{b}"}}]}}"#
                ),
                vec![a, b],
            ),
            (format!(r#"{{"blobs":[{{"digest":"{c}"}}]}}"#), vec![c]),
            (
                format!(
                    r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{a}"}},{{"blobSum":"{a}"}}]}}"#
                ),
                vec![a],
            ),
            (format!(r#"{{"subject":{{"digest":"{a}"}}}}"#), vec![]),
            (
                r#"{"layers":[{"digest":"sha512:abcd"},{"digest":7},{}]}"#.into(),
                vec![],
            ),
            ("[1,2]".into(), vec![]),
            ("not json".into(), vec![]),
        ];
        for (input, want) in cases {
            assert_eq!(referenced_digests(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn evident_manifest_type_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
                Some(OCI_INDEX),
            ),
            (
                r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}"#,
                Some(DOCKER_MANIFEST),
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.config.v1+json"}"#,
                None,
            ),
            (r#"{"schemaVersion":2,"manifests":[]}"#, Some(OCI_INDEX)),
            (
                r#"{"schemaVersion":2,"config":{},"layers":[]}"#,
                Some(OCI_MANIFEST),
            ),
            (r#"{"architecture":"amd64","os":"linux","rootfs":{}}"#, None),
            ("[]", None),
            ("\u{1f}binary", None),
        ];
        for (input, want) in cases {
            assert_eq!(evident_manifest_type(input.as_bytes()), *want, "{input}");
        }
    }
}
