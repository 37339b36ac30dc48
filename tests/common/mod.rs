//! Shared test support: an in-process wharf on 127.0.0.1:0 with a temporary storage directory, and
//! the fake upstream in [`fake`].
#![allow(dead_code)]

pub mod bundle;
pub mod dockerd;
pub mod fake;
pub mod garage;
pub mod hostile;
pub mod images;
pub mod pki;
pub mod pulls;
pub mod real;
pub mod replicas;
pub mod served;
pub mod slow_auth;

use std::path::Path;
use std::sync::Arc;

use tempfile::TempDir;
use wharf::cache::{Cache, Options, Stores};
use wharf::store::{MemoryBlobStore, MemoryMeta};

/// The stores a test wharf keeps its blobs and records in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The disk store and the sled index, as wharf runs.
    Disk,
    /// The in-memory stores ([`MemoryBlobStore`], [`MemoryMeta`]).
    Memory,
}

/// The backend of this test binary: `tests/memory_backend.rs` includes whole suites (coalescing,
/// verification, fills, eviction, air-gap) as its modules, so the same tests run a second time on
/// the in-memory stores; every other binary runs on the disk.
pub fn backend() -> Backend {
    if module_path!().starts_with("memory_backend::") {
        Backend::Memory
    } else {
        Backend::Disk
    }
}

/// One upstream entry for a test config.
pub struct Up<'a> {
    pub name: &'a str,
    pub url: String,
    pub default: bool,
    pub extra: &'a str,
}

/// A running wharf and its storage.
pub struct Wharf {
    pub running: Option<wharf::Running>,
    pub base: String,
    pub dir: TempDir,
}

/// The TOML for a test wharf.
pub fn config_text(storage: &Path, tag_ttl: &str, ups: &[Up<'_>]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[cache]\ntag_ttl = \"{tag_ttl}\"\n",
        storage.display()
    );
    for u in ups {
        // The fake upstreams and the test registries speak plain HTTP on loopback.
        let insecure = if u.url.starts_with("http://") && !u.extra.contains("insecure") {
            "insecure = true\n"
        } else {
            ""
        };
        text.push_str(&format!(
            "[[upstream]]\nname = \"{}\"\nurl = \"{}\"\ndefault = {}\n{insecure}{}\n",
            u.name, u.url, u.default, u.extra
        ));
    }
    text
}

impl Wharf {
    /// Starts wharf with one default upstream named `upstream.test`.
    pub async fn with_upstream(url: &str) -> Wharf {
        Self::start(
            "5m",
            &[Up {
                name: "upstream.test",
                url: url.to_owned(),
                default: true,
                extra: "",
            }],
        )
        .await
    }

    pub async fn start(tag_ttl: &str, ups: &[Up<'_>]) -> Wharf {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tag_ttl, ups).await
    }

    pub async fn start_in(dir: TempDir, tag_ttl: &str, ups: &[Up<'_>]) -> Wharf {
        let text = config_text(dir.path(), tag_ttl, ups);
        Self::start_text(dir, &text).await
    }

    /// Starts wharf with this configuration text (storage in `dir`); `base` is https:// when the
    /// text configures TLS.
    pub async fn start_text(dir: TempDir, text: &str) -> Wharf {
        let config = wharf::Config::from_toml(text, Path::new("test.toml")).unwrap();
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let running = match backend() {
            Backend::Disk => wharf::start(config).await.unwrap(),
            Backend::Memory => {
                let stores = Stores {
                    blobs: Arc::new(MemoryBlobStore::new()),
                    meta: Arc::new(MemoryMeta::new()),
                };
                let options = Options::from_config(&config);
                let cache = Cache::open_with_stores(&config.storage.path, &options, stores);
                wharf::start_with_cache(config, Arc::new(cache.unwrap()))
                    .await
                    .unwrap()
            }
        };
        let base = format!("{scheme}://{}", running.local_addr());
        Wharf {
            running: Some(running),
            base,
            dir,
        }
    }

    /// Starts wharf with one default upstream named `upstream.test` at `url`, its cache on the
    /// disk in front of `shared`, a blob store shared with other test wharfs (replicas).
    pub async fn with_shared_store(url: &str, shared: Arc<dyn wharf::store::BlobStore>) -> Wharf {
        let dir = tempfile::tempdir().unwrap();
        let up = Up {
            name: "upstream.test",
            url: url.to_owned(),
            default: true,
            extra: "",
        };
        let text = config_text(dir.path(), "5m", &[up]);
        let config = wharf::Config::from_toml(&text, Path::new("test.toml")).unwrap();
        let options = Options::from_config(&config);
        let cache = Cache::open_with(&config.storage.path, &options)
            .unwrap()
            .with_shared_store(shared, std::time::Duration::from_secs(30));
        let running = wharf::start_with_cache(config, Arc::new(cache))
            .await
            .unwrap();
        let base = format!("http://{}", running.local_addr());
        Wharf {
            running: Some(running),
            base,
            dir,
        }
    }

    /// The running wharf's cache.
    pub fn cache(&self) -> &std::sync::Arc<wharf::cache::Cache> {
        self.running.as_ref().unwrap().cache()
    }

    /// Whether the blob store holds `digest` (asked through the store, so on either backend: on
    /// the disk, whether its file is there).
    pub async fn stored(&self, digest: &str) -> bool {
        let digest: wharf::oci::Digest = digest.parse().unwrap();
        self.cache().store().size(&digest).await.unwrap().is_some()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until no blob fill is running: a client has every byte once the blob is verified, and
    /// committing it to the store (fsync, rename, index) finishes just after.
    pub async fn settled(&self) {
        self.running.as_ref().unwrap().fills_settled().await;
    }

    /// Stops wharf and hands back its storage directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
        self.dir
    }
}

/// A port free on loopback (bound and released: the caller binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Regular files under `dir` whose path contains `part`, recursively (not the control socket a
/// running wharf keeps in its storage).
pub fn files_under(dir: &Path, part: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() && p.to_string_lossy().contains(part) {
                out.push(p);
            }
        }
    }
    out
}
