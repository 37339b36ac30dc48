//! wharf: a pull-through caching proxy and mirror for OCI / Docker container registries.
//!
//! Clients (the Docker daemon, containerd, Podman, skopeo) point at wharf instead of the upstream
//! registry. wharf serves the read side of the OCI Distribution API from its own disk cache, fetches
//! what it lacks from the configured upstream with that upstream's credentials, and keeps a blob only
//! after its sha256 and size have been verified.
//!
//! The crate is split by boundary, and modules call down, never up (README "Architecture"):
//! [`server`] (the downstream HTTP API: routes and error mapping only) calls [`cache`] (policy:
//! manifests and tags, fills and their coalescing, verification, the size budget and eviction, pins,
//! crash repair, `wharf check` and `wharf gc`), which keeps bytes and records in [`store`] (the
//! `BlobStore` and `MetaStore` traits: disk and sled, or memory) and fetches through [`upstream`]
//! (the typed registry client: paths, auth, redirects, resume). [`config`] (the operator's file),
//! [`bucket`] (where an object store is) and [`oci`] (pure protocol types) are at the bottom. [`airgap`] fills a wharf ahead of time and
//! carries its content to an air-gapped one in a bundle, through the cache's API. `main.rs` only
//! wires these together.

pub mod access;
pub mod admin;
pub mod airgap;
pub mod bucket;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod oci;
pub mod reload;
pub mod secret;
pub mod server;
pub mod size;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

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
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The configuration key it comes from.
        key: &'static str,
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
    /// The listener's certificate could not be loaded (it changed since the configuration was
    /// checked).
    #[error("server.{0}")]
    Tls(#[from] tls::LoadError),
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// The htpasswd file could not be loaded (it changed since the configuration was checked).
    #[error("auth.htpasswd: {0}")]
    Htpasswd(String),
    /// The index could not be written at shutdown.
    #[error(transparent)]
    Index(#[from] cache::IndexError),
}

/// Opens the cache and builds the upstream clients: everything a request needs, without a listener
/// (benches and tests drive [`server::App::handle`] directly).
///
/// # Errors
/// When the storage, the index, an upstream client or the htpasswd file cannot be set up.
pub fn app(config: &Config) -> Result<server::App, Error> {
    let cache = Arc::new(cache::Cache::open_for(config)?);
    app_with_cache(config, cache)
}

/// As [`app`], with a cache the caller opened (`wharf prefetch`, `export` and `import` open it
/// first, to learn whether a running wharf holds it).
///
/// # Errors
/// When an upstream client or the htpasswd file cannot be set up.
pub fn app_with_cache(config: &Config, cache: Arc<cache::Cache>) -> Result<server::App, Error> {
    let metrics = Arc::new(metrics::Metrics::new());
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        // An offline upstream is never contacted, so how it would be is not worth a warning.
        if u.insecure && !u.offline {
            warn!(
                upstream = %u.name,
                url = %u.url,
                "insecure = true: this upstream's certificate is not checked (and plain HTTP is allowed), so anyone on the path can read or change what wharf pulls from it"
            );
        }
        let client =
            upstream::Upstream::new(u, metrics.clone()).map_err(|source| Error::Upstream {
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
    let peer_key = config.cluster.as_ref().map(|c| {
        let cluster = Arc::new(cluster::Cluster::new(c, &config.upstreams, metrics.clone()));
        let key = cluster.key().clone();
        cache.set_cluster(cluster);
        key
    });
    let manifests = cache::manifests::Manifests::new(
        cache.clone(),
        cache::manifests::ManifestPolicy {
            tag_ttl: config.cache.tag_ttl,
            serve_stale: config.cache.serve_stale,
            negative_ttl: config.cache.negative_ttl,
            hot_bytes: HOT_MANIFEST_BYTES,
        },
    );
    Ok(server::App {
        registries,
        upstreams,
        cache,
        manifests,
        hot_blobs: server::blobs::hot_blobs(HOT_BLOB_BYTES),
        access: access::Access::new(config, metrics.clone()).map_err(Error::Htpasswd)?,
        metrics,
        tag_lists: server::tags::tag_lists(config.cache.tag_ttl),
        peer_key,
    })
}

/// A wharf that is serving; see [`start`].
pub struct Running {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    app: Arc<server::App>,
    grace: Duration,
    admin: Option<(Arc<admin::AdminState>, JoinHandle<()>)>,
    reloader: Arc<Mutex<reload::Reloader>>,
    poller: Option<JoinHandle<()>>,
    background: cache::Background,
    control: Option<airgap::control::Control>,
    sync: Vec<JoinHandle<()>>,
    /// Resolves `cluster.peers_dns` again and again.
    peers_dns: Option<JoinHandle<()>>,
}

/// Opens the cache, builds the upstream clients, binds the listeners and starts serving. Returns
/// once the listeners are bound, so callers (tests, the binary) know the addresses.
///
/// # Errors
/// When the storage, the index, an upstream client, the certificate, the htpasswd file or a
/// listener cannot be set up.
pub async fn start(config: Config) -> Result<Running, Error> {
    let cache = Arc::new(cache::Cache::open_for(&config)?);
    start_with_cache(config, cache).await
}

/// As [`start`], on a cache the caller opened: on stores of its choosing
/// ([`cache::Cache::open_with_stores`]; the tests run their suites on the in-memory stores too).
///
/// # Errors
/// As [`start`], but for opening the cache.
pub async fn start_with_cache(config: Config, cache: Arc<cache::Cache>) -> Result<Running, Error> {
    let app = Arc::new(app_with_cache(&config, cache)?);
    let certs = match &config.server.tls {
        Some(files) => Some(Arc::new(tls::CertStore::open(files)?)),
        None => None,
    };
    let tls_config = certs
        .as_ref()
        .map(tls::CertStore::server_config)
        .transpose()?;
    let bind = |addr: SocketAddr, key: &'static str| async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, key, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, key, source })?;
        Ok::<_, Error>((listener, local))
    };
    let (listener, addr) = bind(config.server.listen, "server.listen").await?;
    let admin = match config.metrics.listen {
        Some(at) => {
            let (listener, local) = bind(at, "metrics.listen").await?;
            let state = Arc::new(admin::AdminState::new(app.clone(), &config.storage.path));
            let task = admin::spawn(listener, state.clone());
            Some((local, state, task))
        }
        None => None,
    };
    let metrics_addr = admin.as_ref().map(|(a, _, _)| *a);

    let mut watched: Vec<Arc<dyn reload::Reloadable>> = Vec::new();
    if let Some(certs) = &certs {
        watched.push(certs.clone());
    }
    if let Some(htpasswd) = app.access.reloadable() {
        watched.push(htpasswd);
    }
    // Upstream credentials from files (password_file, auth_file): a changed file is in use at
    // the next poll or SIGHUP, without waiting for the registry to refuse the old credential.
    watched.extend(
        app.upstreams
            .iter()
            .filter_map(|u| u.credentials_reloadable()),
    );
    let reloader = Arc::new(Mutex::new(reload::Reloader::new(
        watched,
        app.metrics.clone(),
    )));
    let poller = (!reloader.lock().is_empty()).then(|| {
        let reloader = reloader.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(reload::POLL_INTERVAL).await;
                let r = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || r.lock().check(false)).await;
            }
        })
    });

    info!(
        %addr,
        tls = certs.is_some(),
        auth = app.access.requires_auth(),
        metrics = %metrics_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        storage = %config.storage.path.display(),
        upstreams = config.upstreams.len(),
        "wharf is listening"
    );
    let background = app.cache.spawn_background();
    let peers_dns = match app.cache.cluster() {
        Some(cluster) => {
            // The first answer before serving, so the first misses already know the owners.
            cluster.refresh().await;
            info!(own = %cluster.own().origin(), peers = cluster.peers().len(), "one of several replicas: blobs owned by another are fetched through it");
            cluster.spawn_refresh()
        }
        None => None,
    };
    let control = match airgap::control::bind(&config.storage.path) {
        Ok((listener, path)) => Some(airgap::control::spawn(
            listener,
            path,
            app.clone(),
            &config.storage.path,
            &config.file,
        )),
        Err(error) => {
            warn!(
                %error,
                socket = %airgap::control::socket_path(&config.storage.path).display(),
                "cannot create the control socket: wharf prefetch, export, import and pin cannot reach this wharf while it runs"
            );
            None
        }
    };
    let sync = airgap::sync::spawn(&app, &config.sync, &config.upstreams);
    let (stop, stopped) = oneshot::channel::<()>();
    let file_limit = server::conn::raise_file_limit();
    let max_connections = server::conn::connections_for(file_limit, config.server.max_connections);
    if max_connections < config.server.max_connections {
        warn!(
            configured = config.server.max_connections,
            allowed = max_connections,
            file_limit = file_limit.unwrap_or(0),
            "server.max_connections is more than the open-file limit allows (two descriptors a connection); raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or lower max_connections"
        );
    }
    let options = server::ServeOptions {
        tls: tls_config,
        grace: config.server.shutdown_grace,
        limits: server::conn::Limits::new(
            max_connections,
            config.server.max_connections_per_ip,
            server::conn::Timeouts {
                header_read: config.server.header_read_timeout,
                idle: config.server.idle_timeout,
            },
        ),
    };
    let task = tokio::spawn(server::serve(listener, app.clone(), options, async {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        metrics_addr,
        stop,
        task,
        app,
        grace: config.server.shutdown_grace,
        admin: admin.map(|(_, state, task)| (state, task)),
        reloader,
        poller,
        background,
        control,
        sync,
        peers_dns,
    })
}

// === impl Running ===

impl Running {
    /// The address wharf listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of `/metrics`, `/healthz` and `/readyz`, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Resolves once no blob fill is running (every verified blob is committed or dropped).
    pub async fn fills_settled(&self) {
        self.app.cache.inflight().idle().await;
    }

    /// How many blob fills are running.
    pub fn fills_in_flight(&self) -> usize {
        self.app.cache.inflight().len()
    }

    /// The cache (usage, evictions, pins, access times): for metrics, tests and embedders.
    pub fn cache(&self) -> &Arc<cache::Cache> {
        &self.app.cache
    }

    /// Loads the TLS certificate and the htpasswd file again (what SIGHUP does). What fails to load
    /// is logged and left as it was.
    pub async fn reload(&self) -> Vec<reload::Outcome> {
        let r = self.reloader.clone();
        tokio::task::spawn_blocking(move || r.lock().check(true))
            .await
            .unwrap_or_default()
    }

    /// Stops accepting, waits up to the shutdown grace for open responses and blob fills, stops the
    /// background tasks, and flushes access times and the index.
    ///
    /// # Errors
    /// When the index cannot be flushed.
    pub async fn shutdown(self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.grace;
        if let Some((state, _)) = &self.admin {
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
        }
        // Air-gap requests and sync runs stop first: nothing new is fetched or imported once a
        // shutdown has begun (downloads already started finish within the grace).
        if let Some(control) = self.control {
            control.stop();
        }
        for task in &self.sync {
            task.abort();
        }
        let _ = self.stop.send(());
        let _ = self.task.await;
        // Fills whose clients have gone still finish, so the cache keeps what was paid for.
        let fills = self.app.cache.inflight();
        if tokio::time::timeout_at(deadline, fills.idle())
            .await
            .is_err()
        {
            warn!(
                fills = fills.len(),
                "blob downloads still running at the end of the shutdown grace; abandoning them"
            );
        }
        if let Some(poller) = &self.poller {
            poller.abort();
        }
        if let Some(task) = &self.peers_dns {
            task.abort();
        }
        if let Some((_, task)) = &self.admin {
            task.abort();
        }
        self.background.stop().await;
        if let Err(error) = self.app.cache.flush_access() {
            warn!(%error, "cannot write the last access times to the index");
        }
        self.app.cache.index().flush().await?;
        Ok(())
    }
}

/// Runs wharf until SIGINT or SIGTERM, then shuts down gracefully. SIGHUP reloads the TLS
/// certificate and the htpasswd file. Under systemd (`Type=notify`) it reports readiness, reloads
/// and the shutdown.
///
/// # Errors
/// As [`start`] and [`Running::shutdown`].
pub async fn run(config: Config) -> Result<(), Error> {
    // Before READY: a SIGHUP that follows READY at once must find its handler, not the default
    // action (which ends the process).
    let mut signals = Signals::new();
    let running = start(config).await?;
    let status = format!("STATUS=serving on {}", running.local_addr());
    systemd::notify(&format!("READY=1\n{status}"));
    while let Signal::Reload = signals.next().await {
        info!("SIGHUP: reloading the TLS certificate and the htpasswd file");
        systemd::notify("RELOADING=1");
        running.reload().await;
        systemd::notify(&format!("READY=1\n{status}"));
    }
    info!("signal received; shutting down");
    systemd::notify("STOPPING=1\nSTATUS=shutting down: finishing open responses and downloads");
    running.shutdown().await
}

enum Signal {
    Reload,
    Stop,
}

/// The signals wharf acts on, registered once so none is missed between two waits.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
                hangup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.term) => Signal::Stop,
                () = recv(&mut self.interrupt) => Signal::Stop,
                () = recv(&mut self.hangup) => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}
