//! Manifest media types, the `Accept` list wharf sends upstream, which documents are manifests (and
//! of which type), and what a manifest refers to.
//!
//! An upstream's `Content-Type` is a claim, not a fact: [`resolve_manifest_type`] decides a
//! manifest's type from the document itself and only checks the claim against it, so the type
//! wharf serves is a function of the bytes (and so of the digest), the same whichever upstream sent
//! them.

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
/// OCI artifact manifest (OCI 1.1 release candidates; withdrawn from the final 1.1, still stored
/// by registries that accepted it).
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
/// The media type wharf gives blobs.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Every manifest type wharf accepts from an upstream and serves.
pub const SERVED_TYPES: [&str; 5] = [
    OCI_INDEX,
    DOCKER_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    OCI_ARTIFACT,
];

/// The longest piece of an upstream's claim (a `Content-Type`, a `mediaType`) quoted in an error.
const QUOTED: usize = 80;

/// Why a document is not a manifest wharf serves. The messages complete "upstream X sent a
/// manifest that ..." and quote what the upstream sent only shortened and escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Over [`crate::limits::MAX_MANIFEST`].
    #[error("is larger than {} bytes", crate::limits::MAX_MANIFEST)]
    TooLarge,
    /// Not a JSON object.
    #[error("is not a JSON object")]
    NotJson,
    /// A `Content-Type` that is neither a manifest type nor a generic JSON one.
    #[error("came as {0:?}, which is no manifest media type")]
    ContentType(String),
    /// A `mediaType` field that is not a manifest type wharf serves.
    #[error("has mediaType {0:?}, which is no manifest media type wharf serves")]
    MediaType(String),
    /// A manifest `Content-Type` that the document contradicts.
    #[error("came as {announced} but is a {document} by its content")]
    Mismatch {
        /// The `Content-Type`.
        announced: &'static str,
        /// The type the document has.
        document: &'static str,
    },
    /// A document of the right type but the wrong shape.
    #[error("is not a valid {kind}: {what}")]
    Shape {
        /// The type it claims.
        kind: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

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

/// The media type of a manifest, decided from the document and checked against `announced` (the
/// upstream's `Content-Type`, parameters allowed).
///
/// - The document must be a JSON object of at most [`crate::limits::MAX_MANIFEST`] bytes.
/// - Its `mediaType`, when present, must be one of [`SERVED_TYPES`]. Without one it is an OCI
///   index when it has `manifests`, else an OCI image manifest, as distribution decides
///   (`registry/storage/manifeststore.go`, the `case "":` branch). Docker types and the artifact
///   manifest always carry their `mediaType`, so a document without one is never of those.
/// - An `announced` type of `application/json`, `text/plain` or none says nothing; any other must
///   be the document's type (a Docker `Content-Type` on a document without `mediaType` is refused,
///   as distribution's schema 2 parser refuses it).
/// - The shape must fit the type: schema version 2 for image manifests and indexes, a
///   `manifests` array for indexes and none for the others, no `config` or `layers` in an index.
///
/// # Errors
/// A [`ManifestError`] saying what is wrong.
pub fn resolve_manifest_type(
    bytes: &[u8],
    announced: Option<&str>,
) -> Result<&'static str, ManifestError> {
    if bytes.len() > crate::limits::MAX_MANIFEST {
        return Err(ManifestError::TooLarge);
    }
    let announced = match announced.map(|t| media_type_of(t).to_ascii_lowercase()) {
        None => None,
        Some(t) if t.is_empty() || t == "application/json" || t == "text/plain" => None,
        Some(t) => Some(
            SERVED_TYPES
                .into_iter()
                .find(|known| *known == t)
                .ok_or_else(|| ManifestError::ContentType(quote(&t)))?,
        ),
    };
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(bytes) else {
        return Err(ManifestError::NotJson);
    };
    let has = |field: &str| obj.get(field).is_some_and(|v| !v.is_null());
    let document = match obj.get("mediaType") {
        Some(serde_json::Value::String(t)) => SERVED_TYPES
            .into_iter()
            .find(|known| known == t)
            .ok_or_else(|| ManifestError::MediaType(quote(t)))?,
        None | Some(serde_json::Value::Null) if has("manifests") => OCI_INDEX,
        None | Some(serde_json::Value::Null) => OCI_MANIFEST,
        Some(_) => {
            return Err(ManifestError::Shape {
                kind: "manifest",
                what: "its mediaType is not a string",
            })
        }
    };
    if let Some(announced) = announced {
        if announced != document {
            return Err(ManifestError::Mismatch {
                announced,
                document,
            });
        }
    }
    let shape = |what: &'static str| ManifestError::Shape {
        kind: document,
        what,
    };
    let is_index = document == OCI_INDEX || document == DOCKER_LIST;
    if document != OCI_ARTIFACT
        && obj.get("schemaVersion").and_then(serde_json::Value::as_u64) != Some(2)
    {
        return Err(shape("its schemaVersion is not 2"));
    }
    if is_index {
        if !obj
            .get("manifests")
            .is_some_and(serde_json::Value::is_array)
        {
            return Err(shape("it has no manifests list"));
        }
        if has("config") || has("layers") {
            return Err(shape("it has config or layers, as an image manifest does"));
        }
    } else if has("manifests") {
        return Err(shape("it has a manifests list, as an index does"));
    }
    for list in ["manifests", "layers", "blobs"] {
        if obj.get(list).is_some_and(|v| !v.is_null() && !v.is_array()) {
            return Err(shape("one of its descriptor lists is not a list"));
        }
    }
    Ok(document)
}

/// Whether `text` is a media type by RFC 6838 section 4.2: `type/subtype`, each a
/// restricted-name (a letter or digit, then up to 126 of letters, digits and ``!#$&-^_.+``), with
/// no parameters, and at most [`crate::limits::MAX_MEDIA_TYPE`] bytes in all. No control
/// character, space or NUL can pass. For client-sent values such as `artifactType`.
pub fn is_media_type(text: &str) -> bool {
    fn restricted_name(name: &str) -> bool {
        let b = name.as_bytes();
        !b.is_empty()
            && b.len() <= 127
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(c))
    }
    text.len() <= crate::limits::MAX_MEDIA_TYPE
        && text
            .split_once('/')
            .is_some_and(|(t, sub)| restricted_name(t) && restricted_name(sub))
}

/// At most [`QUOTED`] characters of an upstream's claim, for an error message.
fn quote(text: &str) -> String {
    text.chars().take(QUOTED).collect()
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
        return SERVED_TYPES
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
    fn resolve_manifest_type_table() {
        use ManifestError as E;
        let oci = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        let bare = r#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let bare_index = r#"{"schemaVersion":2,"manifests":[]}"#;
        let docker = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}"#;
        let list = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        let artifact =
            r#"{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[]}"#;
        let html = "<html><script>alert(1)</script></html>";
        let cases: &[(&str, Option<&str>, Result<&str, E>)] = &[
            (oci, Some(OCI_MANIFEST), Ok(OCI_MANIFEST)),
            (oci, Some("application/json"), Ok(OCI_MANIFEST)),
            (oci, Some("text/plain; charset=utf-8"), Ok(OCI_MANIFEST)),
            (oci, None, Ok(OCI_MANIFEST)),
            (
                oci,
                Some(&format!("{OCI_MANIFEST}; charset=utf-8")),
                Ok(OCI_MANIFEST),
            ),
            (
                oci,
                Some("Application/Vnd.Oci.Image.Manifest.v1+JSON"),
                Ok(OCI_MANIFEST),
            ),
            (docker, Some(DOCKER_MANIFEST), Ok(DOCKER_MANIFEST)),
            (list, None, Ok(DOCKER_LIST)),
            (artifact, Some(OCI_ARTIFACT), Ok(OCI_ARTIFACT)),
            // Without mediaType: decided by shape, as distribution does.
            (bare, Some(OCI_MANIFEST), Ok(OCI_MANIFEST)),
            (bare, None, Ok(OCI_MANIFEST)),
            (bare_index, Some("application/json"), Ok(OCI_INDEX)),
            (
                r#"{"schemaVersion":2,"t":"x"}"#,
                Some(OCI_MANIFEST),
                Ok(OCI_MANIFEST),
            ),
            (
                bare,
                Some(DOCKER_MANIFEST),
                Err(E::Mismatch {
                    announced: DOCKER_MANIFEST,
                    document: OCI_MANIFEST,
                }),
            ),
            (
                oci,
                Some(OCI_INDEX),
                Err(E::Mismatch {
                    announced: OCI_INDEX,
                    document: OCI_MANIFEST,
                }),
            ),
            (
                oci,
                Some("text/html"),
                Err(E::ContentType("text/html".into())),
            ),
            (
                html,
                Some("text/html"),
                Err(E::ContentType("text/html".into())),
            ),
            (html, Some("application/json"), Err(E::NotJson)),
            (html, None, Err(E::NotJson)),
            ("[1]", None, Err(E::NotJson)),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.config.v1+json"}"#,
                None,
                Err(E::MediaType(
                    "application/vnd.oci.image.config.v1+json".into(),
                )),
            ),
            (
                r#"{"schemaVersion":1,"fsLayers":[]}"#,
                None,
                Err(E::Shape {
                    kind: OCI_MANIFEST,
                    what: "its schemaVersion is not 2",
                }),
            ),
            (
                &format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":{{}}}}"#),
                None,
                Err(E::Shape {
                    kind: OCI_INDEX,
                    what: "it has no manifests list",
                }),
            ),
            (
                &format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"layers":[]}}"#
                ),
                None,
                Err(E::Shape {
                    kind: OCI_INDEX,
                    what: "it has config or layers, as an image manifest does",
                }),
            ),
            (
                &format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","manifests":[]}}"#),
                None,
                Err(E::Shape {
                    kind: DOCKER_MANIFEST,
                    what: "it has a manifests list, as an index does",
                }),
            ),
            (
                r#"{"schemaVersion":2,"layers":"x"}"#,
                None,
                Err(E::Shape {
                    kind: OCI_MANIFEST,
                    what: "one of its descriptor lists is not a list",
                }),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":7}"#,
                None,
                Err(E::Shape {
                    kind: "manifest",
                    what: "its mediaType is not a string",
                }),
            ),
        ];
        for (input, announced, want) in cases {
            assert_eq!(
                &resolve_manifest_type(input.as_bytes(), *announced),
                want,
                "{input} as {announced:?}"
            );
        }
        let long = format!(r#"{{"schemaVersion":2,"mediaType":"{}"}}"#, "x".repeat(500));
        let Err(E::MediaType(quoted)) = resolve_manifest_type(long.as_bytes(), None) else {
            panic!("a long unknown mediaType is refused");
        };
        assert_eq!(quoted.len(), QUOTED);
        let big = vec![b' '; crate::limits::MAX_MANIFEST + 1];
        assert_eq!(resolve_manifest_type(&big, None), Err(E::TooLarge));
    }

    #[test]
    fn media_type_table() {
        let long = format!("application/{}", "x".repeat(127));
        let too_long_part = format!("application/{}", "x".repeat(128));
        let cases: &[(&str, bool)] = &[
            ("application/spdx+json", true),
            ("application/vnd.dev.cosign.artifact.sig.v1+json", true),
            ("Application/X-Thing_1!#$&^", true),
            (&long, true),
            (&too_long_part, false),
            ("application", false),
            ("application/", false),
            ("/json", false),
            ("application/json/x", false),
            ("application/json; charset=utf-8", false),
            ("application/js on", false),
            ("application/json\0", false),
            ("application/json\n", false),
            ("application/%00", false),
            ("+x/json", false),
            ("application/jsön", false),
            ("", false),
        ];
        for (input, want) in cases {
            assert_eq!(is_media_type(input), *want, "{input:?}");
        }
        let huge = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        assert!(is_media_type(&huge) && huge.len() == 255);
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
