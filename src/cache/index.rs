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
//! - `tags`: `<upstream>\0<repo>\0<tag>` → digest (32 bytes) ++ fetched-at (u64 Unix seconds, BE).

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
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(500))
            .open()?;
        Ok(Self {
            blobs: db.open_tree("blobs")?,
            manifests: db.open_tree("manifests")?,
            tags: db.open_tree("tags")?,
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
        let Some(v) = self.tags.get(tag_key(upstream, repo, tag))? else {
            return Ok(None);
        };
        if v.len() != 40 {
            return Ok(None);
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&v[..32]);
        let secs = decode_u64(&v[32..]).unwrap_or(0);
        Ok(Some(TagEntry {
            digest: Digest::from_bytes(digest),
            fetched_at: UNIX_EPOCH + Duration::from_secs(secs),
        }))
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
        let secs = entry
            .fetched_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(entry.digest.as_bytes());
        v.extend_from_slice(&secs.to_be_bytes());
        self.tags.insert(tag_key(upstream, repo, tag), v)?;
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

fn tag_key(upstream: &str, repo: &RepoName, tag: &Tag) -> Vec<u8> {
    let mut key = Vec::with_capacity(upstream.len() + repo.as_str().len() + tag.as_str().len() + 2);
    key.extend_from_slice(upstream.as_bytes());
    key.push(0);
    key.extend_from_slice(repo.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(tag.as_str().as_bytes());
    key
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
        index.remove_blob(&d).unwrap();
        assert_eq!(index.blob_size(&d).unwrap(), None);
        assert_eq!(index.manifest_type(&d).unwrap(), None);
    }
}
