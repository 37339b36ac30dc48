//! The cache's background work while wharf serves: eviction when usage crosses the high watermark,
//! periodic flushes of access times, and the verification of files start-up found without an index
//! record. The tasks hold the cache weakly, so a cache nobody uses any more is not kept alive.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::access::FLUSH_INTERVAL;
use super::Cache;

/// How often eviction checks usage when nothing woke it (after a commit over the high watermark it
/// is woken at once).
const EVICT_CHECK: Duration = Duration::from_secs(30);

/// The running background tasks; [`Background::stop`] ends them.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl Cache ===

impl Cache {
    /// Starts the background tasks: eviction (at once if usage is already over the high
    /// watermark, then when woken or every 30 s), access-time flushes every 15 s, and the
    /// verification of orphan files.
    pub fn spawn_background(self: &Arc<Self>) -> Background {
        let (stop, stopped) = watch::channel(false);
        let weak = Arc::downgrade(self);
        let mut tasks = Vec::new();

        let (cache, mut rx) = (weak.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(c) = cache.upgrade() else { break };
                if let Err(error) = c.evict_if_needed().await {
                    warn!(%error, "eviction pass failed; trying again later");
                }
                // A wake during the pass left a permit: this returns at once then.
                let stop = tokio::select! {
                    () = c.evict_wake.notified() => false,
                    () = tokio::time::sleep(EVICT_CHECK) => false,
                    _ = rx.changed() => true,
                };
                if stop {
                    break;
                }
            }
        }));

        let (cache, mut rx) = (weak.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FLUSH_INTERVAL) => {}
                    _ = rx.changed() => break,
                }
                let Some(c) = cache.upgrade() else { break };
                flush(&c).await;
            }
        }));

        let (cache, mut rx) = (weak, stopped);
        tasks.push(tokio::spawn(async move {
            let Some(c) = cache.upgrade() else { return };
            tokio::select! {
                _ = c.verify_orphans() => {}
                _ = rx.changed() => {}
            }
        }));
        Background { stop, tasks }
    }
}

async fn flush(cache: &Arc<Cache>) {
    let c = cache.clone();
    match tokio::task::spawn_blocking(move || c.flush_access()).await {
        Ok(Ok(_)) | Err(_) => {}
        Ok(Err(error)) => {
            warn!(%error, "cannot write access times to the index; keeping them for the next flush")
        }
    }
}

// === impl Background ===

impl Background {
    /// Stops the tasks and waits for them (an eviction pass in progress finishes first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
