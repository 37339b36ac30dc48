//! The sled index: what the blob store holds, which blobs are manifests (and of which media type),
//! and which digest each cached tag pointed to when it was last fetched.
//!
//! The index is a cache of the blob store, not the truth: sled makes no on-disk format promise before
//! 1.0, so everything in it but the tag mappings can be rebuilt from the stored blobs (manifest media
//! types are read back from the manifests themselves), and losing the tags only costs one upstream
//! request per tag.
//!
//! Layout, one sled tree per kind:
//! - `blobs`: digest (32 bytes) → size (u64, big-endian);
//! - `manifests`: digest → media type (UTF-8);
//! - `tags`: `<upstream>\0<repo>\0<tag>` → digest (32 bytes) ++ fetched-at (u64 Unix milliseconds, BE);
//! - `referrers`: `<upstream>\0<repo>\0<subject digest>\0<artifactType>` → the same, for the stored
//!   referrers response.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::oci::{Digest, RepoName, Tag};

/// The metadata index.
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    blobs: sled::Tree,
    manifests: sled::Tree,
    tags: sled::Tree,
    referrers: sled::Tree,
}

/// A cached tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagEntry {
    /// The manifest digest the tag pointed to.
    pub digest: Digest,
    /// When the upstream said so.
    pub fetched_at: SystemTime,
}

/// An index operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("index: {0}")]
pub struct IndexError(#[from] sled::Error);

// === impl Index ===

impl Index {
    /// Opens (creating if needed) the index in `dir`.
    ///
    /// # Errors
    /// When sled cannot open the directory, for example because another wharf holds it.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let config = sled::Config::new().path(dir).flush_every_ms(Some(500));
        // sled holds a file lock while any handle lives. A wharf restarted in the same process (the
        // tests do) may find the last handle of the previous one still being dropped: retry briefly.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::Other && attempts < 20 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Self {
            blobs: db.open_tree("blobs")?,
            manifests: db.open_tree("manifests")?,
            tags: db.open_tree("tags")?,
            referrers: db.open_tree("referrers")?,
            db,
        })
    }

    /// The size of a stored blob, if the index knows it.
    ///
    /// # Errors
    /// sled errors.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, IndexError> {
        Ok(self
            .blobs
            .get(digest.as_bytes())?
            .and_then(|v| decode_u64(&v)))
    }

    /// Records a committed blob.
    ///
    /// # Errors
    /// sled errors.
    pub fn insert_blob(&self, digest: &Digest, size: u64) -> Result<(), IndexError> {
        self.blobs.insert(digest.as_bytes(), &size.to_be_bytes())?;
        Ok(())
    }

    /// Forgets a blob (and its manifest record, if it was one).
    ///
    /// # Errors
    /// sled errors.
    pub fn remove_blob(&self, digest: &Digest) -> Result<(), IndexError> {
        self.blobs.remove(digest.as_bytes())?;
        self.manifests.remove(digest.as_bytes())?;
        Ok(())
    }

    /// The media type of a stored manifest.
    ///
    /// # Errors
    /// sled errors.
    pub fn manifest_type(&self, digest: &Digest) -> Result<Option<String>, IndexError> {
        Ok(self
            .manifests
            .get(digest.as_bytes())?
            .and_then(|v| String::from_utf8(v.to_vec()).ok()))
    }

    /// Records a committed manifest: its blob and its media type.
    ///
    /// # Errors
    /// sled errors.
    pub fn insert_manifest(
        &self,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<(), IndexError> {
        self.insert_blob(digest, size)?;
        self.manifests
            .insert(digest.as_bytes(), media_type.as_bytes())?;
        Ok(())
    }

    /// The cached mapping of a tag.
    ///
    /// # Errors
    /// sled errors.
    pub fn tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<TagEntry>, IndexError> {
        Ok(self
            .tags
            .get(key(upstream, repo, tag.as_str()))?
            .and_then(|v| decode_entry(&v)))
    }

    /// Records what a tag points to now.
    ///
    /// # Errors
    /// sled errors.
    pub fn set_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        entry: TagEntry,
    ) -> Result<(), IndexError> {
        self.tags
            .insert(key(upstream, repo, tag.as_str()), encode_entry(entry))?;
        Ok(())
    }

    /// The cached tags of a repository, sorted (for `tags/list` when the upstream cannot be asked).
    ///
    /// # Errors
    /// sled errors.
    pub fn tags_of(&self, upstream: &str, repo: &RepoName) -> Result<Vec<String>, IndexError> {
        let prefix = key(upstream, repo, "");
        let mut tags = Vec::new();
        for item in self.tags.scan_prefix(&prefix) {
            let (k, _) = item?;
            if let Ok(tag) = std::str::from_utf8(&k[prefix.len()..]) {
                tags.push(tag.to_owned());
            }
        }
        Ok(tags)
    }

    /// The cached referrers list of a subject (per `artifactType` filter): the digest of the stored
    /// response, and when it was fetched.
    ///
    /// # Errors
    /// sled errors.
    pub fn referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<TagEntry>, IndexError> {
        let k = key(upstream, repo, &referrers_key(subject, artifact_type));
        Ok(self.referrers.get(k)?.and_then(|v| decode_entry(&v)))
    }

    /// Records a subject's referrers list.
    ///
    /// # Errors
    /// sled errors.
    pub fn set_referrers(
        &self,
        upstream: &str,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        entry: TagEntry,
    ) -> Result<(), IndexError> {
        let k = key(upstream, repo, &referrers_key(subject, artifact_type));
        self.referrers.insert(k, encode_entry(entry))?;
        Ok(())
    }

    /// Writes everything to disk.
    ///
    /// # Errors
    /// sled errors.
    pub async fn flush(&self) -> Result<(), IndexError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// `<upstream>\0<repo>\0<last>`: NUL cannot occur in any of the parts.
fn key(upstream: &str, repo: &RepoName, last: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(upstream.len() + repo.as_str().len() + last.len() + 2);
    key.extend_from_slice(upstream.as_bytes());
    key.push(0);
    key.extend_from_slice(repo.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(last.as_bytes());
    key
}

fn referrers_key(subject: &Digest, artifact_type: Option<&str>) -> String {
    format!("{subject}\0{}", artifact_type.unwrap_or(""))
}

fn encode_entry(entry: TagEntry) -> Vec<u8> {
    let millis = entry
        .fetched_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(entry.digest.as_bytes());
    v.extend_from_slice(&millis.to_be_bytes());
    v
}

fn decode_entry(v: &[u8]) -> Option<TagEntry> {
    if v.len() != 40 {
        return None;
    }
    let digest: [u8; 32] = v[..32].try_into().ok()?;
    Some(TagEntry {
        digest: Digest::from_bytes(digest),
        fetched_at: UNIX_EPOCH + Duration::from_millis(decode_u64(&v[32..])?),
    })
}

fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"m");
        let repo: RepoName = "org/app".parse().unwrap();
        let tag: Tag = "1".parse().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        {
            let index = Index::open(dir.path()).unwrap();
            assert_eq!(index.blob_size(&d).unwrap(), None);
            index.insert_manifest(&d, 1, "application/x").unwrap();
            index
                .set_tag(
                    "up",
                    &repo,
                    &tag,
                    TagEntry {
                        digest: d,
                        fetched_at: at,
                    },
                )
                .unwrap();
            index.flush().await.unwrap();
        }
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.blob_size(&d).unwrap(), Some(1));
        assert_eq!(
            index.manifest_type(&d).unwrap().as_deref(),
            Some("application/x")
        );
        assert_eq!(
            index.tag("up", &repo, &tag).unwrap(),
            Some(TagEntry {
                digest: d,
                fetched_at: at
            })
        );
        assert_eq!(index.tag("other", &repo, &tag).unwrap(), None);
        index
            .set_tag(
                "up",
                &repo,
                &"2".parse().unwrap(),
                TagEntry {
                    digest: d,
                    fetched_at: at,
                },
            )
            .unwrap();
        let other: RepoName = "org/app2".parse().unwrap();
        index
            .set_tag(
                "up",
                &other,
                &"9".parse().unwrap(),
                TagEntry {
                    digest: d,
                    fetched_at: at,
                },
            )
            .unwrap();
        assert_eq!(index.tags_of("up", &repo).unwrap(), ["1", "2"]);
        let subject = Digest::of(b"subject");
        assert_eq!(index.referrers("up", &repo, &subject, None).unwrap(), None);
        index
            .set_referrers(
                "up",
                &repo,
                &subject,
                Some("x/y"),
                TagEntry {
                    digest: d,
                    fetched_at: at,
                },
            )
            .unwrap();
        assert_eq!(index.referrers("up", &repo, &subject, None).unwrap(), None);
        assert_eq!(
            index
                .referrers("up", &repo, &subject, Some("x/y"))
                .unwrap()
                .map(|e| e.digest),
            Some(d)
        );
        index.remove_blob(&d).unwrap();
        assert_eq!(index.blob_size(&d).unwrap(), None);
        assert_eq!(index.manifest_type(&d).unwrap(), None);
    }
}
