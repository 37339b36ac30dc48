//! `wharf export`: writes cached images into a bundle (see [`super::bundle`]), streamed from the
//! blob store into the tar.
//!
//! Exporting is planned first: the images are resolved (a tag as the index maps it now), every
//! manifest is read, and every blob they need is checked to be in the store and held, so eviction
//! cannot remove it while the tar is written, and a missing piece is an error before the first byte
//! (naming the image, the platform and the blob). The plan knows every entry's size, so it knows
//! the archive's exact length (sent as `Content-Length` over the control socket) and writes
//! `wharf-bundle.json` before any blob. Then each blob is read from its file and hashed on the way
//! into the tar: a blob that rotted on disk stops the export instead of reaching the bundle.
//!
//! With `--since PREV.tar`, blobs PREV holds (or left out because its own base held them) are left
//! out and listed as such; only PREV's `wharf-bundle.json` is read, never its blobs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::bundle::{
    self, blob_path, BundleFile, BundleImage, BundleManifest, Omitted, Since, Source, BLOBS_DIR,
    BUNDLE_JSON, INDEX_JSON, OCI_LAYOUT, OCI_LAYOUT_CONTENT, REF_NAME,
};
use super::manifest::{self, EntryPlatform};
use super::referrers::{self, MAX_DEPTH, MAX_REFERRERS};
use super::refs::Platform;
use super::sign::{Signature, SigningKey, BUNDLE_SIG};
use super::tar::{self, Writer};
use crate::cache::holds::Hold;
use crate::cache::IndexError;
use crate::oci::{media, referrer, Digest, ImageRef, Reference, Verifier};
use crate::server::App;

/// How much of a blob is read (and hashed) at a time.
const CHUNK: u64 = 1 << 20;

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// These images (canonical references: `docker.io/library/nginx:1.27`).
    Images(Vec<String>),
    /// Every pinned image.
    Pinned,
    /// Every cached tag and every pinned image.
    All,
}

/// An export request (as the CLI sends it over the control socket, too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The images.
    pub selection: Selection,
    /// Only these platforms of an index (`None`: all).
    pub platforms: Option<Vec<Platform>>,
    /// The base bundle, for an incremental export.
    pub since: Option<Base>,
    /// Which referrers (signatures, SBOMs, attestations) go along.
    #[serde(default)]
    pub referrers: referrers::Options,
    /// Sign `wharf-bundle.json` with this key (`--sign`).
    #[serde(default)]
    pub sign: Option<SigningKey>,
}

/// What a base bundle holds, from its `wharf-bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Base {
    /// The base's file name and creation time.
    pub since: Since,
    /// Blobs a wharf that imported the base has.
    pub known: BTreeSet<Digest>,
}

/// A planned export: what goes into the bundle, with the blobs held until it is written.
pub struct Plan {
    /// The bundle's `wharf-bundle.json`.
    pub manifest: BundleManifest,
    manifest_json: Vec<u8>,
    /// `wharf-bundle.sig`, when signed.
    sig_json: Option<Vec<u8>>,
    /// The signer's key id, when signed.
    pub signer: Option<String>,
    index_json: Vec<u8>,
    blobs: Vec<(Digest, u64)>,
    mtime: u64,
    /// Things the operator should know (index entries left out because they are not cached).
    pub warnings: Vec<String>,
    _holds: Vec<Hold>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The request is wrong (an image that cannot be parsed, nothing to export).
    #[error("{0}")]
    Request(String),
    /// Something the bundle needs is not cached.
    #[error("{0}")]
    NotCached(String),
    /// A stored blob does not hash to its digest.
    #[error("stored blob {digest} is corrupt ({problem}); stop wharf and run `wharf check --verify --repair`, then prefetch the image again")]
    Corrupt {
        /// The blob.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// Reading the store failed.
    #[error("reading the storage: {0}")]
    Storage(io::Error),
    /// Writing the bundle failed.
    #[error("writing the bundle: {0}")]
    Write(io::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What one image needs, as found while planning.
struct Walked {
    manifests: BTreeMap<Digest, u64>,
    blobs: BTreeMap<Digest, u64>,
    holds: Vec<Hold>,
    held: HashSet<Digest>,
    /// The platforms of an index that are exported, for `import --list`.
    platforms: Vec<String>,
}

/// An image to export, as planning finds it.
struct Root {
    image: ImageRef,
    digest: Digest,
    /// When the tag was last confirmed.
    fetched_at: Option<std::time::SystemTime>,
    /// Lenient about what is not cached (left out with a warning).
    lenient: bool,
    /// For a referrer: what it refers to.
    referrer: Option<ReferrerOf>,
}

/// What a referrer being exported refers to.
struct ReferrerOf {
    subject: Digest,
    /// The image (by its index in the bundle's images) whose referrer it is, at any depth.
    owner: usize,
    /// How many levels below that image.
    depth: usize,
}

// === impl Plan ===

impl Plan {
    /// The exact length of the archive.
    pub fn len(&self) -> u64 {
        // Sizes of files in the store, far from 2^64: saturating only guards the arithmetic.
        let len = |size: usize| tar::entry_len(size as u64).unwrap_or(u64::MAX);
        let mut n = len(self.manifest_json.len())
            .saturating_add(self.sig_json.as_ref().map_or(0, |s| len(s.len())))
            .saturating_add(len(OCI_LAYOUT_CONTENT.len()))
            .saturating_add(len(self.index_json.len()))
            .saturating_add(2 * tar::BLOCK);
        for (_, size) in &self.blobs {
            n = n.saturating_add(tar::entry_len(*size).unwrap_or(u64::MAX));
        }
        n.saturating_add(tar::END)
    }

    /// Whether the bundle holds no image (never: planning refuses that).
    pub fn is_empty(&self) -> bool {
        self.manifest.images.is_empty()
    }
}

/// Parses a full reference (`docker.io/library/nginx:1.27`) against the upstreams `app` has,
/// with Docker Hub's `library/` for one-segment names on `docker.io`.
///
/// # Errors
/// A message naming the reference.
pub fn parse_image(app: &App, text: &str) -> Result<ImageRef, String> {
    let mut image: ImageRef = text
        .parse()
        .map_err(|e| format!("{text:?} is not an image reference ({e})"))?;
    if image.registry == "docker.io" {
        image = image.with_library_prefix();
    }
    if !app.upstreams.iter().any(|u| u.name() == image.registry) {
        let names: Vec<&str> = app.upstreams.iter().map(|u| u.name()).collect();
        return Err(format!(
            "{text:?} names registry {:?}, which is not an [[upstream]] name; configured: {}",
            image.registry,
            names.join(", ")
        ));
    }
    Ok(image)
}

/// Resolves the request into a plan: images, manifests and blobs, all checked to be cached.
///
/// # Errors
/// A bad request, or something the bundle needs that is not cached.
pub async fn plan(app: &App, request: &Request, storage: &Path) -> Result<Plan, ExportError> {
    let index = app.cache.index();
    // (image, root manifest, when the tag was last confirmed, lenient about uncached platforms)
    let mut roots: Vec<(ImageRef, Digest, Option<std::time::SystemTime>, bool)> = Vec::new();
    // Scheme tags (`sha256-<hex>.sig`) go along with their images as referrers, not on their own.
    let own = |image: &ImageRef| !matches!(&image.reference, Reference::Tag(t) if referrer::is_scheme_tag(t.as_str()));
    let mut warnings = Vec::new();
    let not_cached = |image: &ImageRef| {
        ExportError::NotCached(format!(
            "{image} is not cached; prefetch it first (wharf prefetch {image})"
        ))
    };
    let root_of =
        |image: &ImageRef| -> Result<Option<(Digest, Option<std::time::SystemTime>)>, ExportError> {
            Ok(match &image.reference {
                Reference::Digest(d) => index.manifest_type(d)?.map(|_| (*d, None)),
                Reference::Tag(tag) => index
                    .tag(&image.registry, &image.repo, tag)?
                    .filter(|e| index.manifest_type(&e.digest).ok().flatten().is_some())
                    .map(|e| (e.digest, Some(e.fetched_at))),
            })
        };
    match &request.selection {
        Selection::Images(texts) => {
            for text in texts {
                let image = parse_image(app, text).map_err(ExportError::Request)?;
                if let Reference::Digest(d) = &image.reference {
                    // Another replica may have stored it in the shared object store.
                    app.cache.promote(d, true).await.map_err(cache_error)?;
                }
                let (root, at) = root_of(&image)?.ok_or_else(|| not_cached(&image))?;
                roots.push((image, root, at, false));
            }
        }
        Selection::Pinned => {
            for (image, _) in index.pins()?.into_iter().filter(|(i, _)| own(i)) {
                if !app.upstreams.iter().any(|u| u.name() == image.registry) {
                    warnings.push(format!(
                        "{image}: pinned, but its registry is no [[upstream]] any more; left out"
                    ));
                    continue;
                }
                let (root, at) = root_of(&image)?.ok_or_else(|| not_cached(&image))?;
                roots.push((image, root, at, false));
            }
        }
        Selection::All => {
            let known: HashSet<&str> = app.upstreams.iter().map(|u| u.name()).collect();
            let mut images: Vec<ImageRef> = index
                .all_tags()?
                .into_iter()
                .filter(|(up, ..)| known.contains(up.as_str()))
                .filter(|(_, _, tag, _)| !referrer::is_scheme_tag(tag.as_str()))
                .map(|(registry, repo, tag, _)| ImageRef {
                    registry,
                    repo,
                    reference: Reference::Tag(tag),
                })
                .collect();
            images.extend(
                index
                    .pins()?
                    .into_iter()
                    .map(|(image, _)| image)
                    .filter(|image| known.contains(image.registry.as_str()) && own(image)),
            );
            for image in images {
                match root_of(&image)? {
                    Some((root, at)) => roots.push((image, root, at, true)),
                    None => warnings.push(format!("{image}: not cached; left out")),
                }
            }
        }
    }
    // Pinned by digest because a prefetch found it as a referrer: it goes along with its image.
    if request.referrers.enabled && !matches!(request.selection, Selection::Images(_)) {
        let mut kept = Vec::with_capacity(roots.len());
        for root in roots {
            let referrer = match &root.0.reference {
                Reference::Digest(d) => app
                    .cache
                    .read_small(d)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|b| referrer::of_manifest(&b).is_some()),
                Reference::Tag(_) => false,
            };
            if !referrer {
                kept.push(root);
            }
        }
        roots = kept;
    }
    let mut seen = HashSet::new();
    roots.retain(|(image, ..)| seen.insert(image.to_string()));
    if !matches!(request.selection, Selection::Images(_)) {
        roots.sort_by_key(|(image, ..)| image.to_string());
    }
    if roots.is_empty() {
        return Err(ExportError::Request(match request.selection {
            Selection::Pinned => "no image is pinned: nothing to export".into(),
            _ => "nothing is cached: nothing to export".into(),
        }));
    }

    let mut walked = Walked {
        manifests: BTreeMap::new(),
        blobs: BTreeMap::new(),
        holds: Vec::new(),
        held: HashSet::new(),
        platforms: Vec::new(),
    };
    let platforms = request.platforms.as_deref();
    let mut images = Vec::new();
    let mut index_entries = Vec::new();
    let mut queue: std::collections::VecDeque<Root> = roots
        .into_iter()
        .map(|(image, digest, fetched_at, lenient)| Root {
            image,
            digest,
            fetched_at,
            lenient,
            referrer: None,
        })
        .collect();
    let mut exported: HashSet<String> = HashSet::new();
    // Referrers taken along per image (by the image's index in `images`).
    let mut taken: HashMap<usize, usize> = HashMap::new();
    while let Some(Root {
        image,
        digest: root,
        fetched_at,
        lenient,
        referrer,
    }) = queue.pop_front()
    {
        let reference = image.to_string();
        if !exported.insert(reference.clone()) {
            continue;
        }
        // A referrer's type is judged first, so one left out holds nothing.
        let mut artifact_type = None;
        if referrer.is_some() {
            let Ok(Some(bytes)) = app.cache.read_small(&root).await else {
                continue;
            };
            let is_index = manifest::parse(&bytes).is_ok_and(|r| r.is_index());
            if !request.referrers.wants(&bytes, is_index) {
                continue;
            }
            artifact_type = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|doc| referrer::artifact_type(&doc).map(str::to_owned));
        }
        // Each image is walked on its own, so one that cannot be exported adds nothing.
        let mut scratch = Walked {
            manifests: BTreeMap::new(),
            blobs: BTreeMap::new(),
            holds: std::mem::take(&mut walked.holds),
            held: std::mem::take(&mut walked.held),
            platforms: Vec::new(),
        };
        let mut said = Vec::new();
        let result = walk(
            app,
            &image,
            root,
            if referrer.is_some() { None } else { platforms },
            lenient,
            referrer.is_none(),
            &mut scratch,
            &mut said,
        )
        .await;
        walked.holds = std::mem::take(&mut scratch.holds);
        walked.held = std::mem::take(&mut scratch.held);
        let omitted = match result {
            Ok(omitted) => omitted,
            // --all exports what is cached: an image missing a blob is left out, and said so.
            Err(ExportError::NotCached(why)) if lenient => {
                warnings.push(format!("{why}; left out"));
                continue;
            }
            Err(e) => return Err(e),
        };
        warnings.extend(said);
        let size = scratch.manifests.get(&root).copied().unwrap_or(0);
        let bytes = scratch
            .manifests
            .values()
            .chain(scratch.blobs.values())
            .fold(0u64, |n, s| n.saturating_add(*s));
        let subjects: Vec<Digest> = scratch.manifests.keys().copied().collect();
        let exported_platforms = std::mem::take(&mut scratch.platforms);
        walked.manifests.append(&mut scratch.manifests);
        walked.blobs.append(&mut scratch.blobs);
        let recorded = index
            .manifest_type(&root)?
            .ok_or_else(|| not_cached(&image))?;
        // An older wharf recorded whatever Content-Type the upstream sent; the document decides.
        let media_type = match app.cache.read_small(&root).await {
            Ok(Some(bytes)) => {
                media::resolve_manifest_type(&bytes, None).map_or(recorded, str::to_owned)
            }
            _ => recorded,
        };
        index_entries.push(serde_json::json!({
            "mediaType": media_type,
            "digest": root,
            "size": size,
            "annotations": { REF_NAME: reference },
        }));
        let (owner, depth) = match &referrer {
            Some(r) => (r.owner, r.depth),
            None => (images.len(), 0),
        };
        images.push(BundleImage {
            reference,
            digest: root,
            media_type,
            size,
            fetched_at: fetched_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            omitted,
            platforms: exported_platforms,
            bytes: Some(bytes),
            belongs_to: referrer.as_ref().and_then(|r| {
                images
                    .get(r.owner)
                    .map(|i: &BundleImage| i.reference.clone())
            }),
            referrer_of: referrer.map(|r| r.subject),
            artifact_type,
        });
        // Its referrers, found among what is held, follow it.
        if !request.referrers.enabled || depth >= MAX_DEPTH {
            continue;
        }
        for subject in subjects {
            for found in referrers::held(app, &image, &subject)? {
                let count = taken.entry(owner).or_default();
                if *count >= MAX_REFERRERS {
                    break;
                }
                let r = ImageRef {
                    registry: image.registry.clone(),
                    repo: image.repo.clone(),
                    reference: found.reference,
                };
                if exported.contains(&r.to_string()) {
                    continue;
                }
                *count += 1;
                let fetched_at = match &r.reference {
                    Reference::Tag(t) => index.tag(&r.registry, &r.repo, t)?.map(|e| e.fetched_at),
                    Reference::Digest(_) => None,
                };
                queue.push_back(Root {
                    image: r,
                    digest: found.digest,
                    fetched_at,
                    lenient: true,
                    referrer: Some(ReferrerOf {
                        subject,
                        owner,
                        depth: depth + 1,
                    }),
                });
            }
        }
    }
    warnings.dedup();

    if images.is_empty() {
        return Err(ExportError::NotCached(format!(
            "no image is wholly cached: nothing to export ({})",
            warnings.join("; ")
        )));
    }
    let known = request.since.as_ref().map(|b| &b.known);
    let mut blobs: BTreeMap<Digest, u64> = walked.blobs.clone();
    blobs.extend(walked.manifests.iter().map(|(d, s)| (*d, *s)));
    let mut excluded = Vec::new();
    blobs.retain(|d, _| {
        let keep = !known.is_some_and(|k| k.contains(d));
        if !keep {
            excluded.push(*d);
        }
        keep
    });
    let index_json = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::media::OCI_INDEX,
        "manifests": index_entries,
    }))
    .map_err(|e| ExportError::Request(e.to_string()))?;
    let mut files = vec![
        BundleFile {
            path: OCI_LAYOUT.into(),
            sha256: Digest::of(OCI_LAYOUT_CONTENT),
            size: OCI_LAYOUT_CONTENT.len() as u64,
        },
        BundleFile {
            path: INDEX_JSON.into(),
            sha256: Digest::of(&index_json),
            size: index_json.len() as u64,
        },
    ];
    files.extend(blobs.iter().map(|(d, size)| BundleFile {
        path: blob_path(d),
        sha256: *d,
        size: *size,
    }));
    let (created, mtime) = bundle::now();
    let manifest = BundleManifest {
        wharf_bundle_version: bundle::VERSION,
        created,
        source: Source {
            tool: format!("wharf {}", env!("CARGO_PKG_VERSION")),
            host: bundle::host_name(),
            storage: std::path::absolute(storage)
                .unwrap_or_else(|_| storage.to_owned())
                .display()
                .to_string(),
        },
        since: request.since.as_ref().map(|b| b.since.clone()),
        platforms: request
            .platforms
            .as_ref()
            .map(|p| p.iter().map(ToString::to_string).collect()),
        images,
        files,
        excluded,
    };
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ExportError::Request(e.to_string()))?;
    let signature = match &request.sign {
        Some(key) => Some(key.sign(&manifest_json).map_err(ExportError::Request)?),
        None => None,
    };
    Ok(Plan {
        manifest,
        manifest_json,
        sig_json: signature.as_ref().map(Signature::to_json),
        signer: signature.map(|s| s.key_id),
        index_json,
        blobs: blobs.into_iter().collect(),
        mtime,
        warnings,
        _holds: walked.holds,
    })
}

/// A cache failure while reading what the bundle needs.
fn cache_error(error: crate::cache::FillError) -> ExportError {
    ExportError::Storage(io::Error::other(error.to_string()))
}

/// Holds `digest` (so eviction leaves it until the export is written) and returns its stored size.
/// A blob (or, when `manifest`, a manifest) that only the shared object store has is copied into
/// the local tier first.
async fn hold(
    app: &App,
    walked: &mut Walked,
    digest: Digest,
    manifest: bool,
) -> Result<Option<u64>, ExportError> {
    if walked.held.insert(digest) {
        walked.holds.push(app.cache.hold(digest).await);
    }
    match app.cache.index().blob_size(&digest)? {
        Some(size) => Ok(Some(size)),
        None => app
            .cache
            .promote(&digest, manifest)
            .await
            .map_err(cache_error),
    }
}

/// Reads an image's manifests from the store and records what it needs; returns the index entries
/// it leaves out.
#[allow(clippy::too_many_arguments)]
async fn walk(
    app: &App,
    image: &ImageRef,
    root: Digest,
    platforms: Option<&[Platform]>,
    lenient: bool,
    follow_subject: bool,
    walked: &mut Walked,
    warnings: &mut Vec<String>,
) -> Result<Vec<Omitted>, ExportError> {
    let mut omitted = Vec::new();
    let mut queue = vec![(root, String::new())];
    let mut seen = HashSet::new();
    let missing = |context: &str, what: &str| {
        ExportError::NotCached(format!(
            "{image}: {context}{what} is not cached; prefetch the image first (wharf prefetch {image})"
        ))
    };
    while let Some((digest, context)) = queue.pop() {
        if !seen.insert(digest) {
            continue;
        }
        let size = hold(app, walked, digest, true)
            .await?
            .ok_or_else(|| missing(&context, &format!("manifest {digest}")))?;
        let bytes = app
            .cache
            .read_small(&digest)
            .await
            .map_err(cache_error)?
            .ok_or_else(|| missing(&context, &format!("manifest {digest}")))?;
        if Digest::of(&bytes) != digest {
            return Err(ExportError::Corrupt {
                digest,
                problem: format!("it hashes to {}", Digest::of(&bytes)),
            });
        }
        walked.manifests.insert(digest, size);
        let refs = manifest::parse(&bytes).map_err(|e| {
            ExportError::NotCached(format!(
                "{image}: {context}manifest {digest} cannot be exported: {e}"
            ))
        })?;
        for child in refs.children.iter().rev() {
            let platform = EntryPlatform::describe(child.platform.as_ref());
            if !EntryPlatform::passes(child.platform.as_ref(), platforms) {
                omitted.push(Omitted {
                    digest: child.digest,
                    platform,
                    reason: "platform".into(),
                });
                continue;
            }
            let cached = app.cache.index().manifest_type(&child.digest)?.is_some()
                || app
                    .cache
                    .promote(&child.digest, true)
                    .await
                    .map_err(cache_error)?
                    .is_some();
            if cached {
                if child.platform.is_some() && !walked.platforms.contains(&platform) {
                    walked.platforms.push(platform.clone());
                }
                queue.push((child.digest, format!("{platform}: ")));
            } else if lenient {
                warnings.push(format!(
                    "{image}: platform {platform} ({}) is not cached; left out",
                    child.digest
                ));
                omitted.push(Omitted {
                    digest: child.digest,
                    platform,
                    reason: "not cached".into(),
                });
            } else {
                return Err(ExportError::NotCached(format!(
                    "{image}: platform {platform} ({}) is not cached; prefetch the image (wharf prefetch {image}), or leave platforms out with --platform",
                    child.digest
                )));
            }
        }
        // A referrer's subject is its image's, exported (with its platforms) on its own.
        if let Some(subject) = refs.subject.as_ref().filter(|_| follow_subject) {
            queue.push((subject.digest, format!("{context}subject: ")));
        }
        for b in &refs.blobs {
            let size = hold(app, walked, b.digest, false)
                .await?
                .ok_or_else(|| missing(&context, &format!("{} {}", b.field, b.digest)))?;
            walked.blobs.insert(b.digest, size);
        }
    }
    omitted.sort_by_key(|o| o.digest);
    omitted.dedup_by_key(|o| o.digest);
    Ok(omitted)
}

/// Writes the planned bundle to `out`, calling `progress` with the bytes of each write. Returns the
/// output once the end-of-archive marker is written and flushed.
///
/// # Errors
/// A blob that is missing or corrupt in the store, or a failed write.
pub async fn write<W: AsyncWrite + Unpin>(
    app: &App,
    plan: &Plan,
    out: W,
    mut progress: impl FnMut(u64),
) -> Result<W, ExportError> {
    let mut w = Writer::new(tokio::io::BufWriter::with_capacity(1 << 20, out));
    let mut reported = 0;
    let mut report = |w: &Writer<_>, progress: &mut dyn FnMut(u64)| {
        let now = w.written();
        progress(now - reported);
        reported = now;
    };
    w.small_file(BUNDLE_JSON, &plan.manifest_json, plan.mtime)
        .await
        .map_err(ExportError::Write)?;
    if let Some(sig) = &plan.sig_json {
        w.small_file(BUNDLE_SIG, sig, plan.mtime)
            .await
            .map_err(ExportError::Write)?;
    }
    w.small_file(OCI_LAYOUT, OCI_LAYOUT_CONTENT, plan.mtime)
        .await
        .map_err(ExportError::Write)?;
    w.small_file(INDEX_JSON, &plan.index_json, plan.mtime)
        .await
        .map_err(ExportError::Write)?;
    w.dir("blobs", plan.mtime)
        .await
        .map_err(ExportError::Write)?;
    w.dir(BLOBS_DIR, plan.mtime)
        .await
        .map_err(ExportError::Write)?;
    report(&w, &mut progress);
    for (digest, size) in &plan.blobs {
        let blob = app
            .cache
            .store()
            .open(digest)
            .await
            .map_err(ExportError::Storage)?
            .ok_or(ExportError::NotCached(format!(
                "stored blob {digest} vanished from the storage during the export; prefetch the image again"
            )))?;
        if blob.size() != *size {
            return Err(ExportError::Corrupt {
                digest: *digest,
                problem: format!("it is {} bytes, the index says {size}", blob.size()),
            });
        }
        w.file(&blob_path(digest), *size, plan.mtime)
            .await
            .map_err(ExportError::Write)?;
        // Reading and hashing the next chunk overlaps with writing this one.
        let mut pos = 0;
        let mut next = (*size > 0).then(|| {
            let end = (*size).min(CHUNK);
            tokio::spawn(read_hashing(blob.clone(), 0, end, Verifier::new()))
        });
        let mut verifier = Verifier::new();
        while let Some(reading) = next.take() {
            let (v, bytes) = reading
                .await
                .map_err(|e| ExportError::Storage(io::Error::other(e)))?
                .map_err(ExportError::Storage)?;
            pos += bytes.len() as u64;
            if pos < *size {
                let end = (*size).min(pos + CHUNK);
                next = Some(tokio::spawn(read_hashing(blob.clone(), pos, end, v)));
            } else {
                verifier = v;
            }
            w.data(&bytes).await.map_err(ExportError::Write)?;
            report(&w, &mut progress);
        }
        if let Err(mismatch) = verifier.finish(digest, Some(*size)) {
            return Err(ExportError::Corrupt {
                digest: *digest,
                problem: mismatch.to_string(),
            });
        }
        w.pad(*size).await.map_err(ExportError::Write)?;
    }
    let mut out = w.finish().await.map_err(ExportError::Write)?;
    progress(tar::END);
    out.flush().await.map_err(ExportError::Write)?;
    Ok(out.into_inner())
}

/// Reads `[start, end)` of a stored blob and hashes it (on the blocking pool).
async fn read_hashing(
    blob: crate::cache::Blob,
    start: u64,
    end: u64,
    mut verifier: Verifier,
) -> io::Result<(Verifier, Bytes)> {
    let bytes = blob.read_range(start, end).await?;
    if blob.contents().is_some() {
        // Small and in memory already: not worth a trip to the blocking pool.
        verifier.update(&bytes);
        return Ok((verifier, bytes));
    }
    tokio::task::spawn_blocking(move || {
        verifier.update(&bytes);
        (verifier, bytes)
    })
    .await
    .map_err(io::Error::other)
}

/// A bundle being written to a file: `FILE.partial` until [`OutFile::commit`] renames it, removed
/// if dropped before, so an interrupted export never leaves a file that looks complete.
pub struct OutFile {
    partial: PathBuf,
    path: PathBuf,
    done: bool,
}

// === impl OutFile ===

impl OutFile {
    /// Creates `path.partial` (replacing one an earlier interrupted export left).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub async fn create(path: &Path) -> io::Result<(Self, tokio::fs::File)> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        // A bundle holds what the cache holds: 0600, as the cache's own files are.
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::store::FILE_MODE)
            .open(&partial)
            .await?;
        Ok((
            Self {
                partial,
                path: path.to_owned(),
                done: false,
            },
            file,
        ))
    }

    /// Makes the written file durable and gives it its name.
    ///
    /// # Errors
    /// When syncing or renaming fails (the partial file is removed).
    pub async fn commit(mut self, file: tokio::fs::File) -> io::Result<()> {
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&self.partial, &self.path).await?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
