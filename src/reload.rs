//! What wharf reloads while running: the whole configuration file on SIGHUP, and the TLS
//! certificate and the htpasswd file whenever they change.
//!
//! **The configuration file.** [`compare`] sets the file as it is now against the configuration
//! in use and says what changed ([`Changes`]), or which key cannot change while wharf runs: the
//! listener (`server.*`: address, certificate paths, timeouts, connection caps), the storage
//! (`storage.*`), `metrics.listen`, `log.format` and `[cluster]` are bound when wharf starts (a
//! socket, an open index and store, the log's writer, the replicas' shared key), so a change
//! there is refused with one line naming the key ([`ReloadError::NotLive`]), and so is a file that
//! does not load ([`ReloadError::Invalid`], the same line `wharf serve` prints). Either way the
//! configuration in use stays. Everything else applies to the requests that start after the
//! reload: upstreams added, removed or changed (credentials, URL, timeouts, fill limits, allow
//! lists), `[cache]` TTLs, `[auth] htpasswd`, `[[pin]]`, `[[sync]]`, `[log] level` (unless
//! `RUST_LOG` decides the filter). The caller (`crate::Running`)
//! builds the new [`crate::server::App`] and swaps it in; requests and fills in flight keep the
//! one they started with.
//!
//! **Files.** Each is a [`Reloadable`]. A [`Reloader`] looks at their files' metadata (modification
//! time, size, inode: a certbot renewal that repoints a symlink changes the inode) every
//! [`POLL_INTERVAL`] and reloads what changed; SIGHUP reloads everything at once. A reload that
//! fails keeps what is in use and logs an error; the same files are not tried again until they
//! change once more (or SIGHUP), so a broken file does not flood the log.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{error, info};

use crate::config::{Config, ConfigError};
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

/// What a configuration reload changed. Names and keys only: never a value (a changed password
/// shows as its upstream's name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Upstreams in the new file only, by name.
    pub added: Vec<String>,
    /// Upstreams in the old file only, by name.
    pub removed: Vec<String>,
    /// Upstreams in both whose settings differ (URL, credentials, allow list, limits, ...).
    pub changed: Vec<String>,
    /// Other keys that changed: `cache.tag_ttl`, `auth.htpasswd`, `pin`, `sync`, ...
    pub keys: Vec<&'static str>,
}

/// Why a configuration reload was refused. wharf goes on with the configuration in use.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load: the same one line `wharf serve` and `wharf check-config` print.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A key that is bound at start changed.
    #[error("{file}: {key} changed, and it cannot change while wharf runs; restart wharf to apply it (the running configuration stays in use)", file = file.display())]
    NotLive {
        /// The configuration file.
        file: PathBuf,
        /// The key, as written in the file (`server.listen`).
        key: &'static str,
    },
    /// The new configuration is valid but could not be put in use (an upstream's HTTP client,
    /// a new htpasswd file that changed since it was checked, the index refusing the pins).
    #[error("{file}: {problem} (the running configuration stays in use)", file = file.display())]
    Apply {
        /// The configuration file.
        file: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

// === impl Changes ===

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.keys.is_empty()
    }

    /// Whether anything about the upstreams changed.
    pub fn upstreams(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }

    /// Whether `key` is among [`Changes::keys`].
    pub fn has(&self, key: &str) -> bool {
        self.keys.contains(&key)
    }
}

impl fmt::Display for Changes {
    /// `upstreams added [a], removed [b], changed [c]; keys [cache.tag_ttl, pin]`, or `nothing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        let mut parts = Vec::new();
        for (what, names) in [
            ("upstreams added", &self.added),
            ("upstreams removed", &self.removed),
            ("upstreams changed", &self.changed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what} [{}]", names.join(", ")));
            }
        }
        if !self.keys.is_empty() {
            parts.push(format!("keys [{}]", self.keys.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Compares the configuration in use (`old`) with the file as it is now (`new`).
///
/// # Errors
/// [`ReloadError::NotLive`] naming the first key that cannot change while wharf runs.
pub fn compare(old: &Config, new: &Config) -> Result<Changes, ReloadError> {
    let refuse = |key| ReloadError::NotLive {
        file: new.file.clone(),
        key,
    };
    let (a, b) = (&old.server, &new.server);
    let server: [(&'static str, bool); 7] = [
        ("server.listen", a.listen == b.listen),
        ("server.tls_cert", a.tls == b.tls),
        (
            "server.shutdown_grace",
            a.shutdown_grace == b.shutdown_grace,
        ),
        (
            "server.header_read_timeout",
            a.header_read_timeout == b.header_read_timeout,
        ),
        ("server.idle_timeout", a.idle_timeout == b.idle_timeout),
        (
            "server.max_connections",
            a.max_connections == b.max_connections,
        ),
        (
            "server.max_connections_per_ip",
            a.max_connections_per_ip == b.max_connections_per_ip,
        ),
    ];
    let (a, b) = (&old.storage, &new.storage);
    let storage: [(&'static str, bool); 7] = [
        ("storage.path", a.path == b.path),
        ("storage.backend", a.backend == b.backend),
        ("storage.max_size", a.max_size == b.max_size),
        (
            "storage.high_watermark",
            a.high_watermark == b.high_watermark,
        ),
        ("storage.low_watermark", a.low_watermark == b.low_watermark),
        ("storage.min_free", a.min_free == b.min_free),
        (
            "storage.write_error_pause",
            a.write_error_pause == b.write_error_pause,
        ),
    ];
    let others: [(&'static str, bool); 3] = [
        ("metrics.listen", old.metrics == new.metrics),
        ("log.format", old.log.format == new.log.format),
        ("cluster", old.cluster == new.cluster),
    ];
    if let Some((key, _)) = server
        .iter()
        .chain(&storage)
        .chain(&others)
        .find(|(_, same)| !same)
    {
        return Err(refuse(key));
    }

    let mut changes = Changes::default();
    for u in &new.upstreams {
        match old.upstream(&u.name) {
            None => changes.added.push(u.name.clone()),
            Some(o) if o != u => changes.changed.push(u.name.clone()),
            Some(_) => {}
        }
    }
    for o in &old.upstreams {
        if new.upstream(&o.name).is_none() {
            changes.removed.push(o.name.clone());
        }
    }
    let (a, b) = (&old.cache, &new.cache);
    for (key, same) in [
        ("cache.tag_ttl", a.tag_ttl == b.tag_ttl),
        ("cache.serve_stale", a.serve_stale == b.serve_stale),
        ("cache.negative_ttl", a.negative_ttl == b.negative_ttl),
        ("auth.htpasswd", old.auth == new.auth),
        ("gc.manifest_retention", old.gc == new.gc),
        ("log.level", old.log.filter == new.log.filter),
        ("pin", old.pins == new.pins),
        ("sync", old.sync == new.sync),
    ] {
        if !same {
            changes.keys.push(key);
        }
    }
    Ok(changes)
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

    /// Watches `items` from now on instead (a configuration reload named another htpasswd file,
    /// or none). An item already watched, the same object, keeps what was seen of its files.
    pub fn watch(&mut self, items: Vec<Arc<dyn Reloadable>>) {
        let mut old = std::mem::take(&mut self.entries);
        self.entries = items
            .into_iter()
            .map(|item| {
                match old
                    .iter()
                    .position(|e| std::ptr::addr_eq(Arc::as_ptr(&e.item), Arc::as_ptr(&item)))
                {
                    Some(n) => old.swap_remove(n),
                    None => Entry {
                        seen: stamp(&item.files()),
                        item,
                    },
                }
            })
            .collect();
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
    use std::path::Path;

    /// `extra` appended to a config with two upstreams, `a.test` (default) and `b.test`.
    fn config(server: &str, upstreams: &str, extra: &str) -> Config {
        let text = format!(
            "[server]\n{server}\n[storage]\npath = \"/tmp/wharf-reload-unit\"\n{upstreams}{extra}"
        );
        Config::from_toml(&text, Path::new("wharf.toml")).unwrap()
    }

    const TWO: &str = "[[upstream]]\nname = \"a.test\"\nurl = \"https://a.test\"\ndefault = true\n\
                       [[upstream]]\nname = \"b.test\"\nurl = \"https://b.test\"\n";

    #[test]
    fn compare_names_what_changed_and_nothing_else() {
        let old = config("", TWO, "");
        assert_eq!(compare(&old, &old.clone()).unwrap(), Changes::default());
        assert_eq!(Changes::default().to_string(), "nothing");

        let new = config(
            "",
            "[[upstream]]\nname = \"c.test\"\nurl = \"https://c.test\"\n\
                 [[upstream]]\nname = \"a.test\"\nurl = \"https://a.test\"\ndefault = true\n\
                 allow = [\"org/*\"]\n",
            "[cache]\ntag_ttl = \"1m\"\n[[pin]]\nimage = \"a.test/org/app:1\"\n",
        );
        let changes = compare(&old, &new).unwrap();
        assert_eq!(changes.added, ["c.test"]);
        assert_eq!(changes.removed, ["b.test"]);
        assert_eq!(changes.changed, ["a.test"]);
        assert_eq!(changes.keys, ["cache.tag_ttl", "pin"]);
        assert!(changes.upstreams() && changes.has("pin") && !changes.has("sync"));
        assert_eq!(
            changes.to_string(),
            "upstreams added [c.test]; upstreams removed [b.test]; upstreams changed [a.test]; keys [cache.tag_ttl, pin]"
        );

        // A new place in the list alone is no change: routing is rebuilt on every reload.
        let swapped = config(
            "",
            "[[upstream]]\nname = \"b.test\"\nurl = \"https://b.test\"\n\
             [[upstream]]\nname = \"a.test\"\nurl = \"https://a.test\"\ndefault = true\n",
            "",
        );
        assert!(compare(&old, &swapped).unwrap().is_empty());
    }

    #[test]
    fn keys_bound_at_start_are_refused_by_name() {
        let old = config("", TWO, "");
        for (server, extra, key) in [
            ("listen = \"127.0.0.1:5001\"", "", "server.listen"),
            ("idle_timeout = \"5s\"", "", "server.idle_timeout"),
            ("max_connections = 5000", "", "server.max_connections"),
            ("", "max_size = \"1GiB\"\n", "storage.max_size"),
            (
                "",
                "[metrics]\nlisten = \"127.0.0.1:9100\"\n",
                "metrics.listen",
            ),
            ("", "[log]\nformat = \"json\"\n", "log.format"),
        ] {
            // [storage] keys go in the [storage] table.
            let new = if extra.starts_with("max_size") {
                let text =
                    format!("[server]\n[storage]\npath = \"/tmp/wharf-reload-unit\"\n{extra}{TWO}");
                Config::from_toml(&text, Path::new("wharf.toml")).unwrap()
            } else {
                config(server, TWO, extra)
            };
            let error = compare(&old, &new).unwrap_err();
            assert!(
                matches!(&error, ReloadError::NotLive { key: k, .. } if *k == key),
                "{key}: {error}"
            );
            let line = error.to_string();
            assert!(
                line.starts_with("wharf.toml: ") && line.contains(key) && !line.contains('\n'),
                "{line}"
            );
        }
        let mut moved = old.clone();
        moved.storage.path = "/elsewhere".into();
        assert!(matches!(
            compare(&old, &moved),
            Err(ReloadError::NotLive {
                key: "storage.path",
                ..
            })
        ));
    }

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
