//! `wharf import`: reads a bundle into the cache, so that nothing of it is visible until all of it
//! has been checked.
//!
//! 0. **Verify.** With trusted keys ([`Options::trusted`]), the signature of `wharf-bundle.json`
//!    (the first entry; `wharf-bundle.sig` the second, see [`super::sign`]) is checked before the
//!    first blob is staged: an unsigned bundle, another signer or a changed `wharf-bundle.json` is
//!    refused there. Since that file names every other one with its sha256 and size, anything
//!    changed after signing is then refused by the checks below.
//! 1. **Stage.** The tar is streamed entry by entry. Each blob is hashed while it is written to a
//!    staging file in `tmp/` (closed right after, so a bundle of many blobs does not exhaust file
//!    descriptors); a blob the store already has is hashed but not written. A blob whose bytes do
//!    not hash to its name, an entry of the wrong size, a path that is not part of a bundle, a
//!    link or a device, a truncated archive: the import stops, naming the entry. Only
//!    `wharf-bundle.json`, `oci-layout` and `index.json` are read into memory, each bounded.
//! 2. **Check.** Every file `wharf-bundle.json` lists is there with its sha256 and size, and
//!    nothing else is; every image of `index.json` names a configured upstream; every manifest
//!    (read back from staging or the store, at most 4 MiB) parses, and everything it refers to
//!    (config, layers, index entries, subject) is in the bundle or already in the store, except
//!    index entries the bundle lists as left out. Blobs already in the store are held, so eviction
//!    cannot remove them before the import is done.
//!    Manifests with a `subject` are noted, to record them as referrers of it (per upstream and
//!    repository) when committed.
//! 3. **Commit.** Only then: blobs are committed (fsync, rename, index record), manifests after
//!    everything they refer to, then tags are set (last, so a tag never points at anything
//!    incomplete), then the images are pinned.
//!
//! A failed or interrupted import leaves nothing visible: staging files are removed (by the import,
//! or by the next start of wharf), and a re-run starts over. Importing the same bundle twice changes
//! nothing the second time. A tag the store already maps with a more recent confirmation from the
//! upstream than the bundle's is left as it is, so an old bundle never rolls a tag back. A bundle's
//! `fetchedAt` in the future counts as the time of the import.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use super::bundle::{
    self, blob_digest, blob_path, BundleManifest, Since, Source, BUNDLE_JSON, INDEX_JSON,
    MAX_BUNDLE_JSON, OCI_LAYOUT, REF_NAME,
};
use super::export::parse_image;
use super::manifest::{self, EntryPlatform};
use super::sign::{self, TrustedKey, Verdict, BUNDLE_SIG, MAX_SIG};
use super::tar::{Kind, Reader, TarError};
use crate::cache::holds::Hold;
use crate::cache::{IndexError, TagEntry, ToCommit};
use crate::oci::referrer::{self, Referrer};
use crate::oci::{media, Digest, ImageRef, Reference, RepoName, Verifier};
use crate::server::App;
use crate::store::{BlobWriter, StagedBlob};
use tracing::warn;

use crate::limits::MAX_OCI_LAYOUT;
pub use crate::limits::{MAX_BUNDLE_ENTRIES as MAX_ENTRIES, MAX_INDEX_JSON};
/// The largest manifest read back for checking (as `u64`, for entry sizes).
const MAX_MANIFEST: u64 = crate::limits::MAX_MANIFEST as u64;
/// How much of an entry is read (and hashed, and written) at a time.
const CHUNK: usize = 1 << 20;
/// Blobs committed at once.
const COMMITS: usize = 16;

/// What an import does besides storing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Options {
    /// Pin the imported images.
    pub pin: bool,
    /// Keys whose signature the bundle must carry (`[import] trusted_keys`, `--trusted-key`);
    /// empty: any bundle is imported, unverified.
    #[serde(default)]
    pub trusted: Vec<TrustedKey>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// When and where the bundle was made.
    pub created: String,
    /// Who made it.
    pub source: Option<Source>,
    /// The base of an incremental bundle.
    pub since: Option<Since>,
    /// The images, in `index.json` order.
    pub images: Vec<Imported>,
    /// Blobs (manifests included) stored by this import.
    pub blobs_new: u64,
    /// Their bytes.
    pub bytes_new: u64,
    /// Blobs of the bundle the store already had.
    pub blobs_present: u64,
    /// Their bytes.
    pub bytes_present: u64,
    /// Images pinned.
    pub pinned: u64,
    /// What checking the bundle's signature found.
    #[serde(default)]
    pub signature: Option<Verdict>,
}

/// One imported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// Its reference.
    pub reference: String,
    /// The manifest it names.
    pub digest: Digest,
    /// What happened to its tag (`None` for a digest reference).
    pub tag: Option<TagOutcome>,
    /// Index entries the bundle left out.
    pub omitted: u64,
}

/// What an import did with a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagOutcome {
    /// The tag now points at the bundle's digest (it was absent or older).
    Set,
    /// It already pointed there.
    Unchanged,
    /// The store's mapping was confirmed more recently than the bundle's: kept.
    KeptNewer,
}

/// Why an import failed; nothing of the bundle is visible.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle is bad (the message names the entry).
    #[error("{0}")]
    Bundle(String),
    /// The storage failed (or has no room).
    #[error("storage: {0}")]
    Storage(io::Error),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A blob of the bundle, as staged.
struct Staging {
    /// `None` when the store already had it.
    parked: Option<Box<dyn StagedBlob>>,
    size: u64,
}

/// What the check phase found, for the commit.
struct Checked {
    /// Manifests in commit order (everything a manifest refers to comes before it) with their
    /// media types.
    manifests: Vec<(Digest, String)>,
    holds: Vec<Hold>,
    /// Manifests with a `subject`, by the upstream and repository of the image that has them.
    subjects: Vec<(String, RepoName, Referrer, Digest)>,
}

// === impl ImportError ===

impl ImportError {
    /// Whether the bundle (not the storage) is at fault.
    pub fn is_bad_bundle(&self) -> bool {
        matches!(self, Self::Bundle(_))
    }
}

fn bad(message: impl Into<String>) -> ImportError {
    ImportError::Bundle(message.into())
}

fn from_tar(e: TarError) -> ImportError {
    match e {
        TarError::Io(e) => bad(format!("reading the archive failed: {e}")),
        other => bad(other.to_string()),
    }
}

/// Imports the bundle read from `input` into the cache of `app` (wrap `input` to watch its
/// progress).
///
/// # Errors
/// A bad bundle (naming the entry), or a storage or index failure; either way nothing of the
/// bundle is visible.
pub async fn run<R: AsyncRead + Unpin>(
    app: &App,
    input: R,
    options: Options,
) -> Result<Report, ImportError> {
    let mut reader = Reader::new(input);
    let mut blobs: BTreeMap<Digest, Staging> = BTreeMap::new();
    let mut small: HashMap<&'static str, Bytes> = HashMap::new();
    let mut bundle_manifest: Option<BundleManifest> = None;
    // The sizes wharf-bundle.json gives, by path, once it has been read.
    let mut declared: HashMap<String, u64> = HashMap::new();
    let mut entries = 0u64;
    // The signature is checked once, before the first blob is staged.
    let mut verdict: Option<Verdict> = None;

    // 1. Stage.
    while let Some(entry) = reader.next().await.map_err(from_tar)? {
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(bad(format!(
                "the archive has more than {MAX_ENTRIES} entries, more than wharf imports"
            )));
        }
        let path = entry.path.clone();
        match entry.kind {
            Kind::Dir => continue,
            Kind::Other(flag) => {
                let kind = char::from(flag);
                return Err(bad(format!(
                    "{path}: entry type {kind:?} is not allowed in a bundle (only files and directories)"
                )));
            }
            Kind::File => {}
        }
        let known = [BUNDLE_JSON, BUNDLE_SIG, OCI_LAYOUT, INDEX_JSON]
            .into_iter()
            .find(|k| *k == path);
        if let Some(name) = known {
            if small.contains_key(name) {
                return Err(bad(format!("{path} appears twice in the archive")));
            }
            if name == BUNDLE_SIG && verdict.is_some() {
                return Err(bad(format!(
                    "{path} comes after a blob; a signed bundle has it right after {BUNDLE_JSON}"
                )));
            }
            let max = match name {
                BUNDLE_JSON => MAX_BUNDLE_JSON,
                BUNDLE_SIG => MAX_SIG,
                INDEX_JSON => MAX_INDEX_JSON,
                _ => MAX_OCI_LAYOUT,
            };
            if entry.size > max {
                return Err(bad(format!(
                    "{path}: {} bytes, more than wharf reads ({max})",
                    entry.size
                )));
            }
            let bytes = read_small(&mut reader, entry.size).await?;
            if name == BUNDLE_JSON {
                let m = bundle::parse_manifest(&bytes).map_err(|e| bad(format!("{path}: {e}")))?;
                if m.files.len() as u64 > MAX_ENTRIES {
                    return Err(bad(format!("{path} lists more than {MAX_ENTRIES} files")));
                }
                declared = m.files.iter().map(|f| (f.path.clone(), f.size)).collect();
                bundle_manifest = Some(m);
            }
            small.insert(name, bytes);
            continue;
        }
        let Some(digest) = blob_digest(&path) else {
            return Err(bad(format!(
                "{path}: not part of a wharf bundle (expected {BUNDLE_JSON}, {OCI_LAYOUT}, {INDEX_JSON} and blobs/sha256/<hex>)"
            )));
        };
        if verdict.is_none() {
            verdict = Some(check_signature(&options.trusted, &small)?);
        }
        if blobs.contains_key(&digest) {
            return Err(bad(format!("{path} appears twice in the archive")));
        }
        if let Some(size) = declared.get(&path).filter(|s| **s != entry.size) {
            return Err(bad(format!(
                "{path}: {} bytes, but {BUNDLE_JSON} says {size}",
                entry.size
            )));
        }
        let staging = stage(app, &mut reader, &path, digest, entry.size).await?;
        blobs.insert(digest, staging);
    }

    let verdict = match verdict {
        Some(v) => v,
        None => check_signature(&options.trusted, &small)?,
    };

    // 2. Check.
    let manifest = bundle_manifest.ok_or_else(|| {
        bad(format!(
            "not a wharf bundle: it has no {BUNDLE_JSON} (export bundles with `wharf export`)"
        ))
    })?;
    check_files(&manifest, &small, &blobs)?;
    let layout: serde_json::Value = serde_json::from_slice(&small[OCI_LAYOUT])
        .map_err(|e| bad(format!("{OCI_LAYOUT}: not valid JSON ({e})")))?;
    if layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(bad(format!("{OCI_LAYOUT}: no imageLayoutVersion")));
    }
    let images = read_index(app, &small[INDEX_JSON], &manifest)?;
    let checked = check_images(app, &manifest, &images, &blobs).await?;

    // 3. Commit.
    let mut report = Report {
        created: manifest.created.clone(),
        source: Some(manifest.source.clone()),
        since: manifest.since.clone(),
        signature: Some(verdict),
        ..Report::default()
    };
    // Blobs first, several at a time (each commit waits for two fsyncs, which the filesystem
    // batches); then manifests one by one, each after everything it refers to.
    let mut first: Vec<(Digest, Staging)> = Vec::new();
    let mut manifests: Vec<(Digest, Staging, &str)> = Vec::new();
    for (d, t) in &checked.manifests {
        if let Some(staging) = blobs.remove(d) {
            manifests.push((*d, staging, t.as_str()));
        }
    }
    first.extend(std::mem::take(&mut blobs));
    let mut committed: Vec<Result<(bool, u64), ImportError>> = futures_util::stream::iter(first)
        .map(|(digest, staging)| async move {
            let size = staging.size;
            commit(app, digest, staging, None)
                .await
                .map(|new| (new, size))
        })
        .buffer_unordered(COMMITS)
        .collect()
        .await;
    for (digest, staging, media_type) in manifests {
        let size = staging.size;
        committed.push(
            commit(app, digest, staging, Some(media_type))
                .await
                .map(|new| (new, size)),
        );
    }
    for result in committed {
        let (new, size) = result?;
        if new {
            report.blobs_new += 1;
            report.bytes_new += size;
        } else {
            report.blobs_present += 1;
            report.bytes_present += size;
        }
    }
    let index = app.cache.index();
    let imported_at = SystemTime::now();
    for (image, bundled) in &images {
        let tag = match &image.reference {
            Reference::Digest(_) => None,
            Reference::Tag(tag) => {
                // A time in the future (a wrong clock at the exporting site, or a crafted bundle)
                // is clamped to now: it would keep the tag fresh for ever and every later bundle
                // out as older.
                let fetched_at = bundled
                    .fetched_at
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .unwrap_or(UNIX_EPOCH)
                    .min(imported_at);
                let current = index.tag(&image.registry, &image.repo, tag)?;
                let outcome = match current {
                    Some(c) if c.digest == bundled.digest => {
                        if c.fetched_at < fetched_at {
                            index.set_tag(
                                &image.registry,
                                &image.repo,
                                tag,
                                TagEntry {
                                    digest: bundled.digest,
                                    fetched_at,
                                },
                            )?;
                        }
                        TagOutcome::Unchanged
                    }
                    Some(c) if c.fetched_at > fetched_at => TagOutcome::KeptNewer,
                    _ => {
                        index.set_tag(
                            &image.registry,
                            &image.repo,
                            tag,
                            TagEntry {
                                digest: bundled.digest,
                                fetched_at,
                            },
                        )?;
                        TagOutcome::Set
                    }
                };
                Some(outcome)
            }
        };
        report.images.push(Imported {
            reference: image.to_string(),
            digest: bundled.digest,
            tag,
            omitted: bundled.omitted.len() as u64,
        });
    }
    if options.pin {
        for (image, _) in &images {
            app.cache.pin(image)?;
            report.pinned += 1;
        }
    }
    // Referrers, by the subject they name, in the repository of the image that brought them: the
    // referrers API of an offline wharf answers from these.
    for (registry, repo, r, digest) in &checked.subjects {
        index.add_referrer(registry, repo, &r.subject, digest, &r.descriptor)?;
    }
    index.flush().await?;
    drop(checked.holds);
    if options.trusted.is_empty() {
        warn!(
            signer = report
                .signature
                .as_ref()
                .and_then(Verdict::signer)
                .unwrap_or("none"),
            images = report.images.len(),
            "imported a bundle whose signature was not checked: no [import] trusted_keys or --trusted-key"
        );
    }
    Ok(report)
}

/// Checks the bundle's signature (before any blob is staged). With trusted keys, anything but a
/// verified signature refuses the bundle; without, the import goes on and the log says the bundle
/// was not verified.
fn check_signature(
    trusted: &[TrustedKey],
    small: &HashMap<&'static str, Bytes>,
) -> Result<Verdict, ImportError> {
    let Some(json) = small.get(BUNDLE_JSON) else {
        if trusted.is_empty() {
            return Ok(Verdict::Unsigned);
        }
        return Err(bad(format!(
            "the archive does not start with {BUNDLE_JSON}, so it cannot be verified; export bundles with `wharf export --sign KEY`"
        )));
    };
    let verdict = sign::verify(json, small.get(BUNDLE_SIG).map(|b| &b[..]), trusted);
    if trusted.is_empty() {
        // Said once the import is done (a refused bundle gets its one line, nothing more).
        return Ok(verdict);
    }
    match verdict.refusal(trusted) {
        Some(why) => Err(bad(why)),
        None => Ok(verdict),
    }
}

/// Reads a small entry whole.
async fn read_small<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    size: u64,
) -> Result<Bytes, ImportError> {
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    loop {
        let chunk = reader.chunk(CHUNK).await.map_err(from_tar)?;
        if chunk.is_empty() {
            return Ok(Bytes::from(out));
        }
        out.extend_from_slice(&chunk);
    }
}

/// Stages one blob entry, hashing it on the way; a blob the store has is only hashed.
async fn stage<R: AsyncRead + Unpin>(
    app: &App,
    reader: &mut Reader<R>,
    path: &str,
    digest: Digest,
    size: u64,
) -> Result<Staging, ImportError> {
    let present = app.cache.index().blob_size(&digest)?.is_some();
    let mut writer: Option<Box<dyn BlobWriter>> = if present {
        None
    } else {
        app.cache
            .health()
            .check_room(size)
            .map_err(ImportError::Storage)?;
        Some(app.cache.writer(true).await.map_err(ImportError::Storage)?)
    };
    // Hashing (on the blocking pool) and writing a chunk overlap with reading the next one.
    type Job = (Verifier, Option<Box<dyn BlobWriter>>, io::Result<()>);
    let mut verifier = Some(Verifier::new());
    let mut pending: Option<tokio::task::JoinHandle<Job>> = None;
    loop {
        let chunk = match reader.chunk(CHUNK).await {
            Ok(chunk) => chunk,
            Err(e) => {
                // The job owns the writer: let it end, so its staging file is gone when this
                // returns.
                if let Some(job) = pending.take() {
                    drop(job.await);
                }
                return Err(from_tar(e));
            }
        };
        if let Some(job) = pending.take() {
            let (v, w, written) = job
                .await
                .map_err(|e| ImportError::Storage(io::Error::other(e)))?;
            written.map_err(ImportError::Storage)?;
            verifier = Some(v);
            writer = w;
        }
        if chunk.is_empty() {
            break;
        }
        let mut v = verifier.take().unwrap_or_default();
        let mut w = writer.take();
        pending = Some(tokio::spawn(async move {
            let c = chunk.clone();
            let hashed = tokio::task::spawn_blocking(move || {
                v.update(&c);
                v
            });
            let written = match w.as_mut() {
                Some(w) => w.write(&[chunk]).await,
                None => Ok(()),
            };
            match hashed.await {
                Ok(v) => (v, w, written),
                Err(e) => (Verifier::new(), w, Err(io::Error::other(e))),
            }
        }));
    }
    let verifier = verifier.unwrap_or_default();
    if let Err(mismatch) = verifier.finish(&digest, Some(size)) {
        return Err(bad(format!(
            "{path}: {mismatch}, not to its name: the bundle is corrupt"
        )));
    }
    // Finished: durable and closed, so thousands of staged blobs hold no file descriptors.
    let parked = match writer {
        Some(w) => Some(w.finish().await.map_err(ImportError::Storage)?),
        None => None,
    };
    Ok(Staging { parked, size })
}

/// Every listed file is there, with its sha256 and size, and nothing else is.
fn check_files(
    manifest: &BundleManifest,
    small: &HashMap<&'static str, Bytes>,
    blobs: &BTreeMap<Digest, Staging>,
) -> Result<(), ImportError> {
    let mut listed = HashSet::new();
    for f in &manifest.files {
        if !listed.insert(f.path.as_str()) {
            return Err(bad(format!("{BUNDLE_JSON} lists {} twice", f.path)));
        }
        let (sha, size) = if let Some(d) = blob_digest(&f.path) {
            match blobs.get(&d) {
                Some(s) => (d, s.size),
                None => {
                    return Err(bad(format!(
                        "{}: listed in {BUNDLE_JSON} but not in the archive (truncated or incomplete bundle)",
                        f.path
                    )))
                }
            }
        } else if let Some(bytes) = [OCI_LAYOUT, INDEX_JSON]
            .into_iter()
            .find(|k| *k == f.path)
            .and_then(|k| small.get(k))
        {
            (Digest::of(bytes), bytes.len() as u64)
        } else {
            return Err(bad(format!(
                "{}: listed in {BUNDLE_JSON} but not in the archive (truncated or incomplete bundle)",
                f.path
            )));
        };
        if sha != f.sha256 || size != f.size {
            return Err(bad(format!(
                "{}: {size} bytes with sha256 {sha}, but {BUNDLE_JSON} says {} bytes with {}",
                f.path, f.size, f.sha256
            )));
        }
    }
    for name in [OCI_LAYOUT, INDEX_JSON] {
        if !small.contains_key(name) {
            return Err(bad(format!(
                "{name} is missing from the archive (truncated or incomplete bundle)"
            )));
        }
        if !listed.contains(name) {
            return Err(bad(format!(
                "{name}: in the archive but not listed in {BUNDLE_JSON}"
            )));
        }
    }
    for d in blobs.keys() {
        let path = blob_path(d);
        if !listed.contains(path.as_str()) {
            return Err(bad(format!(
                "{path}: in the archive but not listed in {BUNDLE_JSON}"
            )));
        }
    }
    Ok(())
}

/// The images of `index.json`, each with its entry in `wharf-bundle.json`.
fn read_index<'m>(
    app: &App,
    bytes: &[u8],
    manifest: &'m BundleManifest,
) -> Result<Vec<(ImageRef, &'m bundle::BundleImage)>, ImportError> {
    let index: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("{INDEX_JSON}: not valid JSON ({e})")))?;
    let entries = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .ok_or_else(|| bad(format!("{INDEX_JSON}: no manifests list")))?;
    let by_reference: HashMap<(&str, Digest), &bundle::BundleImage> = manifest
        .images
        .iter()
        .map(|b| ((b.reference.as_str(), b.digest), b))
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{INDEX_JSON}: manifests[{i}]");
        let name = entry
            .get("annotations")
            .and_then(|a| a.get(REF_NAME))
            .and_then(|n| n.as_str())
            .ok_or_else(|| bad(format!("{at} has no {REF_NAME} annotation")))?;
        let image = parse_image(app, name).map_err(|e| {
            bad(format!(
                "{at}: {e}; add that upstream to this wharf's configuration (with offline = true on an air-gapped site)"
            ))
        })?;
        let digest: Digest = entry
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad(format!("{at} ({name}) has no sha256 digest")))?;
        let bundled = by_reference.get(&(name, digest)).copied().ok_or_else(|| {
            bad(format!(
                "{at}: {name}@{digest} is not among the images of {BUNDLE_JSON}"
            ))
        })?;
        if let Reference::Digest(d) = &image.reference {
            if *d != digest {
                return Err(bad(format!(
                    "{at}: {name} names another digest than {digest}"
                )));
            }
        }
        out.push((image, bundled));
    }
    if out.len() != manifest.images.len() {
        return Err(bad(format!(
            "{INDEX_JSON} has {} images, {BUNDLE_JSON} lists {}",
            out.len(),
            manifest.images.len()
        )));
    }
    Ok(out)
}

/// Reads every manifest of every image (from staging or the store) and checks that everything it
/// refers to is available.
async fn check_images(
    app: &App,
    manifest: &BundleManifest,
    images: &[(ImageRef, &bundle::BundleImage)],
    blobs: &BTreeMap<Digest, Staging>,
) -> Result<Checked, ImportError> {
    let mut available = Availability {
        app,
        blobs,
        holds: Vec::new(),
        held: HashSet::new(),
    };
    let mut types: HashMap<Digest, String> = HashMap::new();
    let mut edges: HashMap<Digest, Vec<Digest>> = HashMap::new();
    let mut subjects = Vec::new();
    let mut roots = Vec::new();
    let incremental = manifest.since.as_ref().map_or_else(String::new, |s| {
        format!(
            "; this bundle is incremental on {} (made {}): import that one first",
            s.file, s.created
        )
    });
    for (image, bundled) in images {
        roots.push(bundled.digest);
        let omitted: HashSet<Digest> = bundled.omitted.iter().map(|o| o.digest).collect();
        // The last field: reached through a referrer's `subject`. That manifest belongs to another
        // image of the bundle (or of the store), which answers for its index entries.
        let mut queue = vec![(
            bundled.digest,
            Some(bundled.media_type.clone()),
            Some(bundled.size),
            format!("{image}"),
            false,
        )];
        let mut seen = HashSet::new();
        while let Some((digest, hint, expected_size, context, via_subject)) = queue.pop() {
            if !seen.insert(digest) {
                continue;
            }
            let missing = |what: &str| {
                bad(format!(
                    "{context}: {what} is neither in the bundle nor in this wharf's store{incremental}"
                ))
            };
            let size = available
                .size(digest)
                .await?
                .ok_or_else(|| missing(&format!("manifest {digest}")))?;
            if let Some(expected) = expected_size {
                if expected != size {
                    return Err(bad(format!(
                        "{context}: manifest {digest} is {size} bytes, but its descriptor says {expected}"
                    )));
                }
            }
            if size > MAX_MANIFEST {
                return Err(bad(format!(
                    "{}: manifest of {context} is {size} bytes, more than wharf reads ({MAX_MANIFEST})",
                    blob_path(&digest)
                )));
            }
            let bytes = read_manifest(app, blobs.get(&digest), digest).await?;
            let refs = manifest::parse(&bytes).map_err(|e| {
                bad(format!(
                    "{} (manifest of {context}): not a valid manifest: {e}",
                    blob_path(&digest)
                ))
            })?;
            let media_type = hint
                .or_else(|| refs.media_type.clone())
                .or_else(|| media::sniff_manifest_type(&bytes))
                .unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
            types.entry(digest).or_insert(media_type);
            if let Some(r) = referrer::of_manifest(&bytes) {
                subjects.push((image.registry.clone(), image.repo.clone(), r, digest));
            }
            let mut next = Vec::new();
            for child in &refs.children {
                let platform = EntryPlatform::describe(child.platform.as_ref());
                if available.size(child.digest).await?.is_none() {
                    if omitted.contains(&child.digest) || via_subject {
                        continue;
                    }
                    return Err(bad(format!(
                        "{context}: index entry {platform} ({}) is neither in the bundle nor in this wharf's store, and {BUNDLE_JSON} does not list it as left out{incremental}",
                        child.digest
                    )));
                }
                next.push(child.digest);
                queue.push((
                    child.digest,
                    child.media_type.clone(),
                    child.size,
                    format!("{context} ({platform})"),
                    via_subject,
                ));
            }
            if let Some(subject) = &refs.subject {
                next.push(subject.digest);
                queue.push((
                    subject.digest,
                    subject.media_type.clone(),
                    subject.size,
                    format!("{context} (subject)"),
                    true,
                ));
            }
            for b in &refs.blobs {
                let size = available
                    .size(b.digest)
                    .await?
                    .ok_or_else(|| missing(&format!("{} {}", b.field, b.digest)))?;
                if let Some(expected) = b.size {
                    if expected != size {
                        return Err(bad(format!(
                            "{context}: {} {} is {size} bytes, but the manifest says {expected}",
                            b.field, b.digest
                        )));
                    }
                }
            }
            edges.insert(digest, next);
        }
    }
    // Post-order: a manifest after everything it refers to.
    let mut order = Vec::new();
    let mut done = HashSet::new();
    for root in roots {
        let mut stack = vec![(root, false)];
        while let Some((d, expanded)) = stack.pop() {
            if expanded {
                order.push(d);
                continue;
            }
            if !done.insert(d) {
                continue;
            }
            stack.push((d, true));
            for child in edges.get(&d).into_iter().flatten() {
                if !done.contains(child) {
                    stack.push((*child, false));
                }
            }
        }
    }
    let manifests = order
        .into_iter()
        .filter_map(|d| types.remove(&d).map(|t| (d, t)))
        .collect();
    Ok(Checked {
        manifests,
        holds: available.holds,
        subjects,
    })
}

/// Whether digests are in the bundle or the store; a stored one is held from the first question
/// on, so eviction leaves it until the import is done.
struct Availability<'a> {
    app: &'a App,
    blobs: &'a BTreeMap<Digest, Staging>,
    holds: Vec<Hold>,
    held: HashSet<Digest>,
}

impl Availability<'_> {
    /// The size of `digest` if the bundle or the store has it.
    async fn size(&mut self, digest: Digest) -> Result<Option<u64>, ImportError> {
        if let Some(s) = self.blobs.get(&digest) {
            if s.parked.is_some() {
                return Ok(Some(s.size));
            }
        }
        if self.held.insert(digest) {
            self.holds.push(self.app.cache.hold(digest).await);
        }
        Ok(self.app.cache.index().blob_size(&digest)?)
    }
}

/// A manifest's bytes, from its staging file or the store.
async fn read_manifest(
    app: &App,
    staging: Option<&Staging>,
    digest: Digest,
) -> Result<Bytes, ImportError> {
    if let Some(parked) = staging.and_then(|s| s.parked.as_ref()) {
        return parked.read_all().await.map_err(ImportError::Storage);
    }
    app.cache
        .read_small(&digest)
        .await
        .map_err(|e| ImportError::Storage(io::Error::other(e.to_string())))?
        .ok_or_else(|| {
            bad(format!(
                "{}: vanished from this wharf's store during the import; run it again",
                blob_path(&digest)
            ))
        })
}

/// Commits one staged blob (as a manifest of `media_type`, when given). Returns whether it was
/// stored now (`false`: the store had it).
async fn commit(
    app: &App,
    digest: Digest,
    staging: Staging,
    media_type: Option<&str>,
) -> Result<bool, ImportError> {
    let _hold = app.cache.hold(digest).await;
    let index = app.cache.index();
    if index.blob_size(&digest)?.is_some() {
        // Stored already (before, or by a client's pull meanwhile); make sure a manifest is known
        // as one.
        if let Some(t) = media_type {
            if index.manifest_type(&digest)?.is_none() {
                index.insert_manifest(&digest, staging.size, t)?;
            }
        }
        return Ok(false);
    }
    let Some(parked) = staging.parked else {
        // The store had it when the import began and it is gone: it is no image's (those are
        // held since the check), so nothing needs it.
        return Ok(false);
    };
    app.cache
        .commit_staged(
            ToCommit::Staged(parked),
            &digest,
            staging.size,
            media_type,
            None,
        )
        .await
        .map_err(|e| match e {
            crate::cache::FillError::Index(e) => ImportError::Index(e),
            other => ImportError::Storage(io::Error::other(other.to_string())),
        })?;
    Ok(true)
}
