//! Files wharf reloads while running: the TLS certificate and the htpasswd file.
//!
//! Each is a [`Reloadable`]. A [`Reloader`] looks at their files' metadata (modification time,
//! size, inode: a certbot renewal that repoints a symlink changes the inode) every
//! [`POLL_INTERVAL`] and reloads what changed; SIGHUP reloads everything at once. A reload that
//! fails keeps what is in use and logs an error; the same files are not tried again until they
//! change once more (or SIGHUP), so a broken file does not flood the log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info};

use crate::metrics::Metrics;

/// How often the files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Something loaded from files that can be loaded again without a restart.
pub trait Reloadable: Send + Sync {
    /// What it is, for the log: `TLS certificate`, `htpasswd`.
    fn what(&self) -> &'static str;
    /// The files it is loaded from.
    fn files(&self) -> Vec<PathBuf>;
    /// Loads the files again and puts the result in use. On an error, what is in use stays.
    ///
    /// # Errors
    /// One line saying what is wrong with the files (never their secret contents).
    fn reload(&self) -> Result<(), String>;
}

/// The metadata that tells a file changed; `None` for a file that cannot be looked at.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

/// Watches [`Reloadable`]s' files.
pub struct Reloader {
    entries: Vec<Entry>,
    metrics: Arc<Metrics>,
}

struct Entry {
    item: Arc<dyn Reloadable>,
    seen: Stamp,
}

/// What a check did to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded again and in use.
    Reloaded(&'static str),
    /// Not loaded; the previous version stays in use.
    Failed(&'static str, String),
}

// === impl Reloader ===

impl Reloader {
    /// Watches `items`, taking their files as they are now as already loaded.
    pub fn new(items: Vec<Arc<dyn Reloadable>>, metrics: Arc<Metrics>) -> Self {
        let entries = items
            .into_iter()
            .map(|item| Entry {
                seen: stamp(&item.files()),
                item,
            })
            .collect();
        Self { entries, metrics }
    }

    /// Whether there is anything to watch.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reloads every item whose files changed since the last look, or every item when `force`
    /// (SIGHUP). Logs and counts each outcome, and returns them. Blocking file I/O: call it off the
    /// async workers.
    pub fn check(&mut self, force: bool) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for entry in &mut self.entries {
            let now = stamp(&entry.item.files());
            if !force && now == entry.seen {
                continue;
            }
            entry.seen = now;
            let what = entry.item.what();
            match entry.item.reload() {
                Ok(()) => {
                    info!(what, "reloaded");
                    self.metrics.reloaded(what, true);
                    outcomes.push(Outcome::Reloaded(what));
                }
                Err(problem) => {
                    error!(what, error = %problem, "reload failed; the previous version stays in use");
                    self.metrics.reloaded(what, false);
                    outcomes.push(Outcome::Failed(what, problem));
                }
            }
        }
        outcomes
    }
}

fn stamp(files: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    struct Counting {
        file: PathBuf,
        loads: Mutex<Vec<String>>,
    }

    impl Reloadable for Counting {
        fn what(&self) -> &'static str {
            "thing"
        }
        fn files(&self) -> Vec<PathBuf> {
            vec![self.file.clone()]
        }
        fn reload(&self) -> Result<(), String> {
            let text = std::fs::read_to_string(&self.file).map_err(|e| e.to_string())?;
            self.loads.lock().push(text.clone());
            if text.starts_with("bad") {
                Err("bad".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn reloads_on_change_once_and_on_force() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "one").unwrap();
        let item = Arc::new(Counting {
            file: file.clone(),
            loads: Mutex::new(Vec::new()),
        });
        let mut r = Reloader::new(vec![item.clone()], Arc::new(Metrics::new()));
        assert!(
            r.check(false).is_empty(),
            "unchanged files are not reloaded"
        );
        std::fs::write(&file, "two, longer").unwrap();
        assert_eq!(r.check(false), [Outcome::Reloaded("thing")]);
        assert!(r.check(false).is_empty());
        // A bad file fails once and is not retried until it changes again.
        std::fs::write(&file, "bad").unwrap();
        assert_eq!(r.check(false), [Outcome::Failed("thing", "bad".into())]);
        assert!(r.check(false).is_empty());
        // Forced (SIGHUP): reloaded whatever the files say.
        assert_eq!(r.check(true), [Outcome::Failed("thing", "bad".into())]);
        std::fs::write(&file, "three").unwrap();
        assert_eq!(r.check(false), [Outcome::Reloaded("thing")]);
        assert_eq!(item.loads.lock().len(), 4);
        // A file that disappears is a change too (and its reload fails).
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(r.check(false)[..], [Outcome::Failed(..)]));
    }
}
