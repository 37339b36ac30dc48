//! The bundle format: an OCI image layout in a tar, plus wharf's checksum manifest.
//!
//! ```text
//! wharf-bundle.json          first, so an incremental export and an import read it before any blob
//! wharf-bundle.sig           only in a signed bundle: the Ed25519 signature of wharf-bundle.json
//!                            (see [`super::sign`]), second, so an import checks it before any blob
//! oci-layout                 {"imageLayoutVersion":"1.0.0"}
//! index.json                 one entry per image, org.opencontainers.image.ref.name = the full
//!                            source reference (docker.io/library/nginx:1.27)
//! blobs/ blobs/sha256/       directories
//! blobs/sha256/<hex>         every blob and manifest, in digest order
//! ```
//!
//! `wharf-bundle.json` ([`BundleManifest`]) names every other file with its sha256 and size, says
//! when and where the bundle was made, which platforms of an index were left out (and why), and,
//! for an incremental bundle, which base it builds on and which blobs it leaves out because that
//! base has them. An image's referrers (signatures, SBOMs, attestations) are images of the bundle
//! too, each naming the manifest it refers to (`referrerOf`): by a cosign or tag-schema tag
//! (`sha256-<hex>.sig`) or by digest. Every entry has the bundle's creation time as its mtime, and the entries come in
//! a fixed order, so the same cache content exported at the same second gives the same bytes.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::tar::{Kind, Reader};
use crate::oci::Digest;

/// The checksum manifest's path in a bundle.
pub const BUNDLE_JSON: &str = "wharf-bundle.json";
/// The OCI layout marker.
pub const OCI_LAYOUT: &str = "oci-layout";
/// The OCI layout's index.
pub const INDEX_JSON: &str = "index.json";
/// Where blobs live in the layout.
pub const BLOBS_DIR: &str = "blobs/sha256";
/// The content of `oci-layout`.
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The annotation naming an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The bundle format version this wharf writes and reads.
pub const VERSION: u32 = 1;
pub use crate::limits::MAX_BUNDLE_JSON;

/// `wharf-bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleManifest {
    /// The format version ([`VERSION`]).
    pub wharf_bundle_version: u32,
    /// When the bundle was made (RFC 3339, UTC, seconds).
    pub created: String,
    /// Who made it.
    pub source: Source,
    /// For an incremental bundle: the bundle it builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
    /// The platforms an export was limited to (`--platform`); absent for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<String>>,
    /// The images, in `index.json` order.
    pub images: Vec<BundleImage>,
    /// Every file of the bundle but this one, with its sha256 and size.
    pub files: Vec<BundleFile>,
    /// Blobs the images need that an incremental bundle leaves out, because its base has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Digest>,
}

/// Where a bundle was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `wharf <version>`.
    pub tool: String,
    /// The host name of the machine that made it.
    pub host: String,
    /// The storage directory it was exported from.
    pub storage: String,
}

/// The base of an incremental bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Since {
    /// The base bundle's file name, as given to `--since`.
    pub file: String,
    /// When the base was made.
    pub created: String,
}

/// One image of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleImage {
    /// The full source reference (`docker.io/library/nginx:1.27`).
    pub reference: String,
    /// The manifest (or index) it resolved to.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// For a tag, when the exporting wharf last had it confirmed by the upstream (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// Entries of an index (at any depth) that are not in the bundle: outside `--platform`, or
    /// never pulled by the exporting wharf. An import accepts exactly these as missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<Omitted>,
    /// The platforms of an index that are in the bundle (`linux/amd64`), for `import --list`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Bytes of the manifests and blobs it needs (shared ones counted for each image), for
    /// `import --list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// For a referrer (a signature, SBOM or attestation): the manifest it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_of: Option<Digest>,
    /// For a referrer: the image (its reference) it came with, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub belongs_to: Option<String>,
    /// For a referrer: its artifact type (or its config's media type), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// An index entry a bundle leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Omitted {
    /// The entry's manifest.
    pub digest: Digest,
    /// Its platform (`linux/arm64`), for people.
    pub platform: String,
    /// Why: `"platform"` (outside `--platform`) or `"not cached"`.
    pub reason: String,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Its path in the archive.
    pub path: String,
    /// The sha256 of its content.
    pub sha256: Digest,
    /// Its size in bytes.
    pub size: u64,
}

// === impl BundleManifest ===

impl BundleManifest {
    /// The blobs in the bundle (files under `blobs/sha256/`).
    pub fn blobs(&self) -> impl Iterator<Item = &BundleFile> {
        self.files.iter().filter(|f| blob_digest(&f.path).is_some())
    }

    /// What a wharf that imported this bundle (and its bases) holds: its blobs and the blobs it
    /// left out because its base had them. An export `--since` this bundle leaves all of them out.
    pub fn known_digests(&self) -> BTreeSet<Digest> {
        self.blobs()
            .map(|f| f.sha256)
            .chain(self.excluded.iter().copied())
            .collect()
    }

    /// Bytes of blob content in the bundle (saturating: the sizes are whatever the file says).
    pub fn blob_bytes(&self) -> u64 {
        self.blobs().fold(0u64, |n, f| n.saturating_add(f.size))
    }
}

/// The digest a blob path names (`blobs/sha256/<hex>`), if it is one.
pub fn blob_digest(path: &str) -> Option<Digest> {
    path.strip_prefix(BLOBS_DIR)?
        .strip_prefix('/')
        .and_then(|hex| Digest::from_hex(hex).ok())
}

/// The path of a blob in a bundle.
pub fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS_DIR}/{}", digest.hex())
}

/// Picks `wharf-bundle.json` out of the first bytes of a bundle as they stream past (the command
/// that receives a bundle from a running wharf prints its summary from it).
#[derive(Debug, Default)]
pub struct Head {
    buf: Vec<u8>,
    /// The first entry's size, once its header is in.
    size: Option<u64>,
}

// === impl Head ===

impl Head {
    /// Feeds the next bytes of the archive (only the first entry's are kept).
    pub fn feed(&mut self, mut bytes: &[u8]) {
        loop {
            let want = match self.size {
                Some(size) => super::tar::BLOCK + size.min(MAX_BUNDLE_JSON),
                None => super::tar::BLOCK,
            };
            let room = usize::try_from(want)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.buf.len());
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.size.is_some() || self.buf.len() < 512 {
                return;
            }
            let header = ::tar::Header::from_byte_slice(&self.buf[..512]);
            let named = header.path_bytes().as_ref() == BUNDLE_JSON.as_bytes();
            self.size = Some(if named {
                header.entry_size().unwrap_or(0)
            } else {
                0
            });
        }
    }

    /// The parsed `wharf-bundle.json`.
    ///
    /// # Errors
    /// When the archive did not start with a whole one.
    pub fn manifest(&self) -> Result<BundleManifest, String> {
        let size = self
            .size
            .filter(|s| *s > 0)
            .ok_or_else(|| format!("the bundle does not start with {BUNDLE_JSON}"))?;
        if size > MAX_BUNDLE_JSON {
            return Err(format!(
                "the bundle's {BUNDLE_JSON} is {size} bytes, more than wharf reads"
            ));
        }
        // At most MAX_BUNDLE_JSON, so this neither overflows nor truncates.
        let end = usize::try_from(512 + size).unwrap_or(usize::MAX);
        let bytes = self
            .buf
            .get(512..end)
            .ok_or_else(|| format!("the bundle's {BUNDLE_JSON} is cut short"))?;
        parse_manifest(bytes)
    }
}

/// The head of a bundle file: `wharf-bundle.json` (parsed, and its exact bytes) and, for a signed
/// bundle, `wharf-bundle.sig`.
#[derive(Debug, Clone)]
pub struct HeadEntries {
    /// The parsed `wharf-bundle.json`.
    pub manifest: BundleManifest,
    /// Its bytes, as signed.
    pub json: Vec<u8>,
    /// `wharf-bundle.sig`, when the bundle has one.
    pub sig: Option<Vec<u8>>,
}

/// Reads the `wharf-bundle.json` of a bundle file: its first entry (the blobs after it are not
/// read).
///
/// # Errors
/// A message naming the file and what is wrong: unreadable, not a tar, not a wharf bundle, a
/// version this wharf does not read.
pub async fn read_manifest(path: &Path) -> Result<BundleManifest, String> {
    read_head(path).await.map(|h| h.manifest)
}

/// Reads the first entries of a bundle file: `wharf-bundle.json` and, when it follows,
/// `wharf-bundle.sig` (nothing after them is read).
///
/// # Errors
/// As [`read_manifest`].
pub async fn read_head(path: &Path) -> Result<HeadEntries, String> {
    let shown = path.display();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{shown}: cannot open it: {e}"))?;
    let mut reader = Reader::new(file);
    let entry = next_file(&mut reader)
        .await
        .map_err(|e| format!("{shown}: {e}"))?
        .ok_or_else(|| format!("{shown}: the archive is empty"))?;
    if entry.path != BUNDLE_JSON {
        return Err(format!(
            "{shown}: not a wharf bundle (its first entry is {}, not {BUNDLE_JSON})",
            entry.path
        ));
    }
    if entry.size > MAX_BUNDLE_JSON {
        return Err(format!(
            "{shown}: {BUNDLE_JSON} is {} bytes, more than wharf reads",
            entry.size
        ));
    }
    let json = read_entry(&mut reader)
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    let manifest = parse_manifest(&json).map_err(|e| format!("{shown}: {BUNDLE_JSON}: {e}"))?;
    let sig = match next_file(&mut reader)
        .await
        .map_err(|e| format!("{shown}: {e}"))?
    {
        Some(e) if e.path == super::sign::BUNDLE_SIG => {
            if e.size > super::sign::MAX_SIG {
                return Err(format!(
                    "{shown}: {} is {} bytes, more than wharf reads",
                    e.path, e.size
                ));
            }
            Some(
                read_entry(&mut reader)
                    .await
                    .map_err(|e| format!("{shown}: {e}"))?,
            )
        }
        _ => None,
    };
    Ok(HeadEntries {
        manifest,
        json,
        sig,
    })
}

/// The next entry that is not a directory.
async fn next_file(
    reader: &mut Reader<tokio::fs::File>,
) -> Result<Option<super::tar::Entry>, super::tar::TarError> {
    loop {
        match reader.next().await? {
            Some(e) if e.kind == Kind::Dir => {}
            other => return Ok(other),
        }
    }
}

/// The rest of the current entry (its size was checked to be small).
async fn read_entry(reader: &mut Reader<tokio::fs::File>) -> Result<Vec<u8>, super::tar::TarError> {
    let mut bytes = Vec::new();
    loop {
        let chunk = reader.chunk(1 << 20).await?;
        if chunk.is_empty() {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&chunk);
    }
}

/// Parses `wharf-bundle.json`.
///
/// # Errors
/// Bad JSON or a version this wharf does not read.
pub fn parse_manifest(bytes: &[u8]) -> Result<BundleManifest, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Version {
        wharf_bundle_version: u32,
    }
    let version: Version =
        serde_json::from_slice(bytes).map_err(|e| format!("not a bundle manifest ({e})"))?;
    if version.wharf_bundle_version != VERSION {
        return Err(format!(
            "format version {} is not one this wharf reads (it reads {VERSION}); import it with a wharf at least as new as the one that made it",
            version.wharf_bundle_version
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("not a bundle manifest ({e})"))
}

/// Now as RFC 3339 (UTC, seconds), and as Unix seconds for tar mtimes.
pub fn now() -> (String, u64) {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (humantime::format_rfc3339_seconds(now).to_string(), secs)
}

/// The machine's host name, for [`Source`] (empty when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_versions() {
        let d = Digest::of(b"x");
        assert_eq!(blob_digest(&blob_path(&d)), Some(d));
        assert_eq!(blob_digest("blobs/sha256/xyz"), None);
        assert_eq!(blob_digest("index.json"), None);
        assert_eq!(blob_digest(&format!("blobs/sha512/{}", d.hex())), None);
        let e = parse_manifest(br#"{"wharfBundleVersion":2}"#).unwrap_err();
        assert!(e.contains("format version 2"), "{e}");
        let e = parse_manifest(b"[]").unwrap_err();
        assert!(e.contains("not a bundle manifest"), "{e}");
    }

    #[test]
    fn known_digests_are_the_blobs_and_what_the_base_had() {
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let m = BundleManifest {
            wharf_bundle_version: VERSION,
            created: "2024-01-01T00:00:00Z".into(),
            source: Source {
                tool: "wharf".into(),
                host: "h".into(),
                storage: "/s".into(),
            },
            since: None,
            platforms: None,
            images: vec![],
            files: vec![
                BundleFile {
                    path: INDEX_JSON.into(),
                    sha256: c,
                    size: 1,
                },
                BundleFile {
                    path: blob_path(&a),
                    sha256: a,
                    size: 10,
                },
            ],
            excluded: vec![b],
        };
        assert_eq!(m.known_digests(), BTreeSet::from([a, b]));
        assert_eq!(m.blob_bytes(), 10);
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(parse_manifest(&json).unwrap(), m);
    }

    #[tokio::test]
    async fn the_head_of_a_streamed_bundle_gives_its_manifest() {
        let m = BundleManifest {
            wharf_bundle_version: VERSION,
            created: "2024-01-01T00:00:00Z".into(),
            source: Source {
                tool: "wharf".into(),
                host: "h".into(),
                storage: "/s".into(),
            },
            since: None,
            platforms: None,
            images: vec![],
            files: vec![],
            excluded: vec![],
        };
        let json = serde_json::to_vec(&m).unwrap();
        let mut w = super::super::tar::Writer::new(Vec::new());
        w.small_file(BUNDLE_JSON, &json, 0).await.unwrap();
        w.small_file("other", &[1u8; 3000], 0).await.unwrap();
        let tar = w.finish().await.unwrap();
        for chunk in [1, 7, 512, 513, 4096, tar.len()] {
            let mut head = Head::default();
            for piece in tar.chunks(chunk) {
                head.feed(piece);
            }
            assert_eq!(head.manifest().unwrap(), m, "chunks of {chunk}");
        }
        let mut head = Head::default();
        head.feed(&tar[..600]);
        assert!(head.manifest().unwrap_err().contains("cut short"));
        let mut w = super::super::tar::Writer::new(Vec::new());
        w.small_file("other", b"x", 0).await.unwrap();
        let mut head = Head::default();
        head.feed(&w.finish().await.unwrap());
        assert!(head.manifest().unwrap_err().contains("does not start with"));
    }
}
