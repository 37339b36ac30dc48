//! wharf: a pull-through caching proxy and mirror for OCI / Docker container registries.
//!
//! Clients (the Docker daemon, containerd, Podman, skopeo) point at wharf instead of the upstream
//! registry. wharf serves the read side of the OCI Distribution API from its own disk cache, fetches
//! what it lacks from the configured upstream with that upstream's credentials, and keeps a blob only
//! after its sha256 and size have been verified.
//!
//! The crate is split by boundary: [`config`] (the operator's file), [`oci`] (pure protocol types),
//! [`server`] (the downstream HTTP API), [`upstream`] (the registry client) and [`cache`] (blob store,
//! index and in-flight fills, and the cache's lifecycle: size budget, eviction, pins, crash repair,
//! `wharf check` and `wharf gc`). `main.rs` only wires these together.

pub mod cache;
pub mod config;
pub mod oci;
pub mod secret;
pub mod server;
pub mod size;
pub mod telemetry;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::Config;

/// Memory for hot manifests (a typical manifest is 1-10 KiB: thousands of them).
const HOT_MANIFEST_BYTES: u64 = 32 * 1024 * 1024;

/// Memory for hot small blobs (image configs are a few KiB; blobs over 256 KiB are never kept).
const HOT_BLOB_BYTES: u64 = 32 * 1024 * 1024;

/// A failure to start or run wharf.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache could not be opened.
    #[error(transparent)]
    Cache(#[from] cache::OpenError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// An upstream client could not be built.
    #[error("upstream {name}: cannot build the HTTP client: {source}")]
    Upstream {
        /// The upstream's name.
        name: String,
        /// The error.
        source: reqwest::Error,
    },
    /// The index could not be written at shutdown.
    #[error(transparent)]
    Index(#[from] cache::IndexError),
}

/// Opens the cache and builds the upstream clients: everything a request needs, without a listener
/// (benches and tests drive [`server::App::handle`] directly).
///
/// # Errors
/// When the storage, the index or an upstream client cannot be set up.
pub fn app(config: &Config) -> Result<server::App, Error> {
    let cache = Arc::new(cache::Cache::open_with(
        &config.storage.path,
        &cache::Options::from_config(config),
    )?);
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        let client = upstream::Upstream::new(u).map_err(|source| Error::Upstream {
            name: u.name.clone(),
            source,
        })?;
        upstreams.push(Arc::new(client));
    }
    let registries = server::route::RegistryTable::new(
        config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.is_docker_hub()))
            .collect(),
        config.upstreams.iter().position(|u| u.default),
    );
    Ok(server::App {
        registries,
        upstreams,
        cache,
        tag_ttl: config.cache.tag_ttl,
        manifest_flights: moka::future::Cache::builder().max_capacity(10_000).build(),
        serve_stale: config.cache.serve_stale,
        negative_ttl: config.cache.negative_ttl,
        negative_tags: moka::future::Cache::builder()
            .max_capacity(100_000)
            // moka refuses a zero TTL; with negative_ttl = 0 nothing is inserted anyway.
            .time_to_live(
                config
                    .cache
                    .negative_ttl
                    .max(std::time::Duration::from_millis(1)),
            )
            .build(),
        hot_manifests: server::manifests::hot_manifests(HOT_MANIFEST_BYTES),
        hot_blobs: server::blobs::hot_blobs(HOT_BLOB_BYTES),
    })
}

/// A wharf that is serving; see [`start`].
pub struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    cache: Arc<cache::Cache>,
    background: cache::Background,
}

/// Opens the cache, builds the upstream clients, binds the listener and starts serving. Returns once
/// the listener is bound, so callers (tests, the binary) know the address.
///
/// # Errors
/// When the storage, the index, an upstream client or the listener cannot be set up.
pub async fn start(config: Config) -> Result<Running, Error> {
    let app = Arc::new(app(&config)?);
    let cache = app.cache.clone();
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.server.listen,
        source,
    })?;
    info!(%addr, storage = %config.storage.path.display(), upstreams = config.upstreams.len(), "wharf is listening");
    let background = cache.spawn_background();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, app, async {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        stop,
        task,
        cache,
        background,
    })
}

// === impl Running ===

impl Running {
    /// The address wharf listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves once no blob fill is running (every verified blob is committed or dropped).
    pub async fn fills_settled(&self) {
        self.cache.inflight().idle().await;
    }

    /// How many blob fills are running.
    pub fn fills_in_flight(&self) -> usize {
        self.cache.inflight().len()
    }

    /// The cache (usage, evictions, pins, access times): for metrics, tests and embedders.
    pub fn cache(&self) -> &Arc<cache::Cache> {
        &self.cache
    }

    /// Stops accepting, waits for open responses, stops the background tasks, and flushes access
    /// times and the index.
    ///
    /// # Errors
    /// When the index cannot be flushed.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.stop.send(());
        let _ = self.task.await;
        // Fills whose clients have gone still finish, so the cache keeps what was paid for.
        if tokio::time::timeout(server::DRAIN_TIMEOUT, self.cache.inflight().idle())
            .await
            .is_err()
        {
            tracing::warn!(
                fills = self.cache.inflight().len(),
                "blob downloads still running after the drain timeout; abandoning them"
            );
        }
        self.background.stop().await;
        if let Err(error) = self.cache.flush_access() {
            tracing::warn!(%error, "cannot write the last access times to the index");
        }
        self.cache.index().flush().await?;
        Ok(())
    }
}

/// Runs wharf until SIGINT or SIGTERM, then shuts down gracefully.
///
/// # Errors
/// As [`start`] and [`Running::shutdown`].
pub async fn run(config: Config) -> Result<(), Error> {
    let running = start(config).await?;
    shutdown_signal().await;
    info!("signal received; shutting down");
    running.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
