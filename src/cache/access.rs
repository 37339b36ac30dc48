//! When each blob was last used, for least-recently-used eviction and `wharf gc`'s retention.
//!
//! A hit must not cost a write to the index, so [`AccessLog::touch`] only records the time in a
//! sharded in-memory map; the cache flushes the map to the index's `access` tree in one batch every
//! [`FLUSH_INTERVAL`], before each eviction pass and at shutdown. A crash loses at most one interval
//! of access times, which only makes eviction slightly less exact.
//!
//! Times are Unix microseconds from a clock that never repeats a value within a process, so blobs
//! used in quick succession still have a strict order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::oci::Digest;

/// How often the background task writes access times to the index.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(15);

const SHARDS: usize = 16;

/// Access times not yet written to the index.
pub struct AccessLog {
    shards: Box<[Mutex<HashMap<Digest, u64>>]>,
    clock: AtomicU64,
}

// === impl AccessLog ===

impl AccessLog {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            clock: AtomicU64::new(0),
        }
    }

    fn shard(&self, digest: &Digest) -> &Mutex<HashMap<Digest, u64>> {
        &self.shards[usize::from(digest.as_bytes()[1]) % SHARDS]
    }

    /// Records that `digest` was used now.
    pub fn touch(&self, digest: Digest) {
        let at = self.now();
        self.shard(&digest).lock().insert(digest, at);
    }

    /// The current time in Unix microseconds, later than every value returned before.
    pub fn now(&self) -> u64 {
        let wall = unix_micros(SystemTime::now());
        match self
            .clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(wall.max(last + 1))
            }) {
            Ok(last) | Err(last) => wall.max(last + 1),
        }
    }

    /// The time recorded for `digest` since the last flush.
    pub fn pending(&self, digest: &Digest) -> Option<u64> {
        self.shard(digest).lock().get(digest).copied()
    }

    /// Takes every recorded time, leaving the log empty.
    pub fn drain(&self) -> Vec<(Digest, u64)> {
        let mut out = Vec::new();
        for shard in &*self.shards {
            out.extend(shard.lock().drain());
        }
        out
    }

    /// Puts back times that could not be written, unless a newer time was recorded meanwhile.
    pub fn restore(&self, times: Vec<(Digest, u64)>) {
        for (digest, at) in times {
            let mut shard = self.shard(&digest).lock();
            let slot = shard.entry(digest).or_insert(at);
            *slot = (*slot).max(at);
        }
    }

    /// How many digests have a time not yet written.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for AccessLog {
    fn default() -> Self {
        Self::new()
    }
}

/// A time as Unix microseconds (0 before 1970).
pub fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Unix microseconds as a time.
pub fn from_unix_micros(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_strictly_increasing_and_drain_empties() {
        let log = AccessLog::new();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        log.touch(a);
        log.touch(b);
        log.touch(a);
        let (ta, tb) = (log.pending(&a).unwrap(), log.pending(&b).unwrap());
        assert!(ta > tb, "a was used after b");
        let now = unix_micros(SystemTime::now());
        assert!(
            ta <= now + 10 && ta + 60_000_000 > now,
            "{ta} is about now ({now})"
        );
        assert_eq!(log.len(), 2);
        let mut drained = log.drain();
        drained.sort_by_key(|(_, t)| *t);
        assert_eq!(drained, [(b, tb), (a, ta)]);
        assert!(log.is_empty());
        log.touch(a);
        let newer = log.pending(&a).unwrap();
        log.restore(drained);
        assert_eq!(
            log.pending(&a),
            Some(newer),
            "a restore keeps the newer time"
        );
        assert_eq!(log.pending(&b), Some(tb));
        let mut last = 0;
        for _ in 0..10_000 {
            let t = log.now();
            assert!(t > last);
            last = t;
        }
    }
}
