//! Who is using a committed blob right now, so that removing it (eviction, `wharf gc`, a corrupt
//! orphan) never pulls it from under a reader.
//!
//! Every path that reads or writes a committed digest takes a [`Hold`] first (a hit's response body
//! keeps it until its last byte is sent), and removal marks the digest as being removed only while
//! nobody holds it. While the mark is set, new holds wait for the removal to finish, and then find
//! the blob gone (a miss, refetched). So a reader either got its hold first, and the blob stays until
//! it is done, or came after, and sees a consistent miss; and no fill can start for a digest while it
//! is being removed, so a removal never deletes a blob committed after it decided.
//!
//! On Linux an unlinked file stays readable through an open descriptor anyway; the contract matters
//! for stores where it does not (an object store), and it keeps the accounting exact.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::oci::Digest;

/// Shards of the hold table: a hit locks one shard twice (hold and release), so requests for
/// different blobs rarely meet on a lock.
const SHARDS: usize = 32;

/// The table of holds and removals in progress.
pub struct Holds {
    shards: Box<[Mutex<HashMap<Digest, Entry>>]>,
    /// Woken whenever a removal ends.
    removed: Notify,
}

#[derive(Debug, Default)]
struct Entry {
    readers: u32,
    removing: bool,
}

/// A reader's (or writer's) claim on a committed digest; dropping it releases the claim.
pub struct Hold {
    holds: Arc<Holds>,
    digest: Digest,
}

// === impl Holds ===

impl Holds {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            removed: Notify::new(),
        })
    }

    fn shard(&self, digest: &Digest) -> &Mutex<HashMap<Digest, Entry>> {
        &self.shards[usize::from(digest.as_bytes()[0]) % SHARDS]
    }

    /// Takes a hold on `digest`, first waiting for a removal of it in progress to end.
    pub async fn hold(self: &Arc<Self>, digest: Digest) -> Hold {
        loop {
            let removed = self.removed.notified();
            tokio::pin!(removed);
            // Registered before checking, so the end of a removal between the check and the wait
            // still wakes this task.
            removed.as_mut().enable();
            if let Some(hold) = self.try_hold(digest) {
                return hold;
            }
            removed.await;
        }
    }

    /// Takes a hold unless `digest` is being removed.
    pub fn try_hold(self: &Arc<Self>, digest: Digest) -> Option<Hold> {
        let mut shard = self.shard(&digest).lock();
        let entry = shard.entry(digest).or_default();
        if entry.removing {
            return None;
        }
        entry.readers += 1;
        Some(Hold {
            holds: self.clone(),
            digest,
        })
    }

    /// Marks `digest` as being removed, if nobody holds it (and nobody is removing it already).
    /// The caller must call [`Holds::end_removal`] once the removal is over, whatever its outcome.
    pub fn begin_removal(&self, digest: Digest) -> bool {
        let mut shard = self.shard(&digest).lock();
        let entry = shard.entry(digest).or_default();
        if entry.readers > 0 || entry.removing {
            return false;
        }
        entry.removing = true;
        true
    }

    /// Ends a removal begun with [`Holds::begin_removal`], and wakes the holds waiting for it.
    pub fn end_removal(&self, digest: Digest) {
        {
            let mut shard = self.shard(&digest).lock();
            if let Some(entry) = shard.get_mut(&digest) {
                entry.removing = false;
                if entry.readers == 0 {
                    shard.remove(&digest);
                }
            }
        }
        self.removed.notify_waiters();
    }

    /// How many holds `digest` has.
    pub fn readers(&self, digest: &Digest) -> u32 {
        self.shard(digest)
            .lock()
            .get(digest)
            .map_or(0, |e| e.readers)
    }

    fn release(&self, digest: &Digest) {
        let mut shard = self.shard(digest).lock();
        if let Some(entry) = shard.get_mut(digest) {
            entry.readers = entry.readers.saturating_sub(1);
            if entry.readers == 0 && !entry.removing {
                shard.remove(digest);
            }
        }
    }
}

// === impl Hold ===

impl Hold {
    /// The digest held.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.holds.release(&self.digest);
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hold({})", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn removal_waits_for_readers_and_readers_wait_for_removal() {
        let holds = Holds::new();
        let d = Digest::of(b"x");
        let hold = holds.hold(d).await;
        let second = holds.try_hold(d).unwrap();
        assert_eq!(holds.readers(&d), 2);
        assert!(!holds.begin_removal(d), "held blobs are not removed");
        drop((hold, second));
        assert_eq!(holds.readers(&d), 0);
        assert!(holds.begin_removal(d));
        assert!(!holds.begin_removal(d), "one removal at a time");
        assert!(holds.try_hold(d).is_none());

        let waiter = tokio::spawn({
            let holds = holds.clone();
            async move { holds.hold(d).await.digest().to_owned() }
        });
        // The waiter cannot finish while the removal is in progress.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        holds.end_removal(d);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .unwrap()
                .unwrap(),
            d
        );
        assert!(holds.shards.iter().all(|s| s.lock().is_empty()));
    }
}
