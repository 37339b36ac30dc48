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
pub mod activity;
pub mod admin;
pub mod airgap;
pub mod bucket;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod oci;
pub mod reload;
pub mod secret;
pub mod server;
pub mod size;
pub mod status;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

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
    let upstreams = upstream_clients(config, &metrics, None)?;
    let registries = registry_table(config);
    let peer_key = config.cluster.as_ref().map(|c| {
        let cluster = Arc::new(cluster::Cluster::new(c, &config.upstreams, metrics.clone()));
        let key = cluster.key().clone();
        cache.set_cluster(cluster);
        key
    });
    let manifests = cache::manifests::Manifests::new(cache.clone(), manifest_policy(config));
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

/// The files the reloader watches for `app`: the TLS certificate, the htpasswd file, and the
/// upstreams' credential files (password_file, auth_file), so a changed file is in use at the next
/// poll or SIGHUP without waiting for the registry to refuse the old credential.
fn watched_files(
    certs: Option<&Arc<tls::CertStore>>,
    app: &server::App,
) -> Vec<Arc<dyn reload::Reloadable>> {
    let mut watched: Vec<Arc<dyn reload::Reloadable>> = Vec::new();
    if let Some(certs) = certs {
        watched.push(certs.clone());
    }
    watched.extend(app.access.reloadable());
    watched.extend(
        app.upstreams
            .iter()
            .filter_map(|u| u.credentials_reloadable()),
    );
    watched
}

/// The app for `config`, a reload of `old`'s configuration (`old_config`): the cache, the hot
/// manifests and blobs, the metrics, the htpasswd state and the client of every upstream whose
/// settings did not change are `old`'s; only added and changed upstreams get a new client. The
/// peer key is `old`'s ([`reload::compare`] refuses a changed `[cluster]`).
///
/// # Errors
/// When a new upstream client or a newly named htpasswd file cannot be set up.
pub fn reloaded_app(
    old: &server::App,
    old_config: &Config,
    config: &Config,
) -> Result<server::App, Error> {
    let upstreams = upstream_clients(config, &old.metrics, Some((old_config, &old.upstreams)))?;
    Ok(server::App {
        registries: registry_table(config),
        upstreams,
        cache: old.cache.clone(),
        manifests: old.manifests.with_policy(manifest_policy(config)),
        hot_blobs: old.hot_blobs.clone(),
        access: old
            .access
            .with_config(config, old.metrics.clone())
            .map_err(Error::Htpasswd)?,
        metrics: old.metrics.clone(),
        // Keyed by the upstream's place in the list, which a reload may change.
        tag_lists: server::tags::tag_lists(config.cache.tag_ttl),
        peer_key: old.peer_key.clone(),
    })
}

/// One client per upstream in `config`, in order; with `reuse` (the previous configuration and
/// its clients), an upstream whose settings are unchanged keeps its client (and so its
/// connections, tokens and rate-limit state).
fn upstream_clients(
    config: &Config,
    metrics: &Arc<metrics::Metrics>,
    reuse: Option<(&Config, &[Arc<upstream::Upstream>])>,
) -> Result<Vec<Arc<upstream::Upstream>>, Error> {
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        let kept = reuse.and_then(|(old, clients)| {
            let n = old.upstreams.iter().position(|o| o == u)?;
            clients.get(n).cloned()
        });
        if let Some(client) = kept {
            upstreams.push(client);
            continue;
        }
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
    Ok(upstreams)
}

/// The upstream names requests are routed by.
fn registry_table(config: &Config) -> server::route::RegistryTable {
    server::route::RegistryTable::new(
        config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.is_docker_hub()))
            .collect(),
        config.upstreams.iter().position(|u| u.default),
    )
}

/// `[cache]`'s manifest policy.
fn manifest_policy(config: &Config) -> cache::manifests::ManifestPolicy {
    cache::manifests::ManifestPolicy {
        tag_ttl: config.cache.tag_ttl,
        serve_stale: config.cache.serve_stale,
        negative_ttl: config.cache.negative_ttl,
        hot_bytes: HOT_MANIFEST_BYTES,
    }
}

/// A wharf that is serving; see [`start`].
pub struct Running {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<server::Drained>,
    /// The app in use; a configuration reload swaps it.
    apps: Arc<server::Current>,
    cache: Arc<cache::Cache>,
    grace: Duration,
    admin: Option<(Arc<admin::AdminState>, JoinHandle<()>)>,
    reloader: Arc<Mutex<reload::Reloader>>,
    /// The listener's certificate, watched by `reloader`.
    certs: Option<Arc<tls::CertStore>>,
    poller: JoinHandle<()>,
    background: cache::Background,
    control: Option<airgap::control::Control>,
    /// The configuration in use and the `[[sync]]` tasks started from it; held through a whole
    /// reload, so two reloads never interleave.
    live: tokio::sync::Mutex<Live>,
    /// Started with `--offline`: every configuration reloaded is made offline too.
    offline: bool,
    /// Resolves `cluster.peers_dns` again and again.
    peers_dns: Option<JoinHandle<()>>,
}

/// The configuration a [`Running`] wharf uses, and what runs from it.
struct Live {
    config: Config,
    sync: Vec<JoinHandle<()>>,
}

/// How [`run_with`] runs wharf.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// `--offline`: every upstream offline, in the configuration at start and in every one
    /// reloaded.
    pub offline: bool,
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
    let app = Arc::new(app_with_cache(&config, cache.clone())?);
    let apps = Arc::new(server::Current::new(app.clone()));
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
            let state = Arc::new(admin::AdminState::new(apps.clone(), &config.storage.path));
            let task = admin::spawn(listener, state.clone());
            Some((local, state, task))
        }
        None => None,
    };
    let metrics_addr = admin.as_ref().map(|(a, _, _)| *a);

    let reloader = Arc::new(Mutex::new(reload::Reloader::new(
        watched_files(certs.as_ref(), &app),
        app.metrics.clone(),
    )));
    // Always running: a configuration reload may name an htpasswd file to watch.
    let poller = {
        let reloader = reloader.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(reload::POLL_INTERVAL).await;
                let r = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let mut r = r.lock();
                    if !r.is_empty() {
                        r.check(false);
                    }
                })
                .await;
            }
        })
    };

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
            apps.clone(),
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
    let task = tokio::spawn(server::serve(listener, apps.clone(), options, async {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        metrics_addr,
        stop,
        task,
        apps,
        cache,
        grace: config.server.shutdown_grace,
        admin: admin.map(|(_, state, task)| (state, task)),
        reloader,
        certs,
        poller,
        background,
        control,
        live: tokio::sync::Mutex::new(Live { config, sync }),
        offline: false,
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
        self.cache.settled().await;
    }

    /// How many blob fills are running.
    pub fn fills_in_flight(&self) -> usize {
        self.cache.inflight().len()
    }

    /// The cache (usage, evictions, pins, access times): for metrics, tests and embedders.
    pub fn cache(&self) -> &Arc<cache::Cache> {
        &self.cache
    }

    /// The app the requests that start now are answered by.
    pub fn app(&self) -> Arc<server::App> {
        self.apps.load()
    }

    /// Reads the configuration file again (the one wharf started with) and puts it in use, as
    /// [`Running::reload_config`] does. What SIGHUP does, with [`Running::reload`].
    ///
    /// # Errors
    /// As [`Running::reload_config`], and when the file does not load.
    pub async fn reload_file(&self) -> Result<reload::Changes, reload::ReloadError> {
        let file = self.live.lock().await.config.file.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&file))
            .await
            .map_err(|e| reload::ReloadError::Apply {
                file: PathBuf::new(),
                problem: format!("the reload task failed: {e}"),
            })?;
        match loaded {
            Ok(config) => self.reload_config(config).await,
            Err(error) => {
                let error = reload::ReloadError::from(error);
                self.apps.load().metrics.reloaded("configuration", false);
                error!(%error, "configuration reload refused");
                Err(error)
            }
        }
    }

    /// Puts `config` in use for the requests that start from now on: upstreams added, removed or
    /// changed, allow lists, `[cache]` TTLs, `[auth] htpasswd`, pins and `[[sync]]` entries.
    /// Connections, responses and blob fills in flight go on with what they started with (a fill
    /// from a removed upstream finishes). Logs one line naming what changed (never a value), or
    /// why the configuration was refused.
    ///
    /// # Errors
    /// [`reload::ReloadError::NotLive`] when a key that is bound at start changed (see
    /// [`reload::compare`]), [`reload::ReloadError::Apply`] when the new configuration cannot be
    /// put in use. Either way the configuration in use stays.
    pub async fn reload_config(
        &self,
        mut config: Config,
    ) -> Result<reload::Changes, reload::ReloadError> {
        if self.offline {
            config.set_offline();
        }
        let mut live = self.live.lock().await;
        let result = self.apply(&mut live, config).await;
        self.apps
            .load()
            .metrics
            .reloaded("configuration", result.is_ok());
        match &result {
            Ok(changes) => info!(changed = %changes, "configuration reloaded"),
            Err(error) => error!(%error, "configuration reload refused"),
        }
        result
    }

    async fn apply(
        &self,
        live: &mut Live,
        config: Config,
    ) -> Result<reload::Changes, reload::ReloadError> {
        let changes = reload::compare(&live.config, &config)?;
        let failed = |problem: String| reload::ReloadError::Apply {
            file: config.file.clone(),
            problem,
        };
        if changes.is_empty() {
            live.config = config;
            return Ok(changes);
        }
        // Building upstream clients reads the system's certificates and a new htpasswd file: off
        // the async workers.
        let (old, old_config, new_config) = (self.apps.load(), live.config.clone(), config.clone());
        let app = tokio::task::spawn_blocking(move || reloaded_app(&old, &old_config, &new_config))
            .await
            .map_err(|e| failed(format!("the reload task failed: {e}")))?
            .map_err(|e| failed(e.to_string()))?;
        let app = Arc::new(app);
        if changes.has("pin") {
            let (cache, pins) = (self.cache.clone(), config.pins.clone());
            tokio::task::spawn_blocking(move || cache.index().sync_config_pins(&pins))
                .await
                .map_err(|e| failed(format!("pin: {e}")))?
                .map_err(|e| failed(format!("pin: the index refused the pins: {e}")))?;
        }
        self.apps.store(app.clone());
        if changes.has("log.level") && !telemetry::set_level(config.log.filter.as_deref()) {
            info!("[log] level changed, but RUST_LOG decides the log filter: it stays as it is");
        }
        if changes.has("auth.htpasswd") || changes.upstreams() {
            let watched = watched_files(self.certs.as_ref(), &app);
            let reloader = self.reloader.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.lock().watch(watched)).await;
        }
        // Sync runs hold the app they started with: restart them on one that knows the new
        // upstreams and rules.
        if changes.has("sync")
            || changes.upstreams()
            || changes.keys.iter().any(|k| k.starts_with("cache."))
        {
            for task in live.sync.drain(..) {
                task.abort();
            }
            live.sync = airgap::sync::spawn(&app, &config.sync, &config.upstreams);
        }
        live.config = config;
        Ok(changes)
    }

    /// Loads the TLS certificate and the htpasswd file again (what SIGHUP does after
    /// [`Running::reload_file`]). What fails to load is logged and left as it was.
    pub async fn reload(&self) -> Vec<reload::Outcome> {
        let r = self.reloader.clone();
        tokio::task::spawn_blocking(move || r.lock().check(true))
            .await
            .unwrap_or_default()
    }

    /// Stops accepting, waits up to the shutdown grace for open responses and blob fills, stops the
    /// background tasks, and flushes access times and the index. The last line it logs is
    /// `stopped`, with how long all that took and what it waited for.
    ///
    /// # Errors
    /// When the index cannot be flushed.
    pub async fn shutdown(self) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.grace;
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
        for task in &self.live.lock().await.sync {
            task.abort();
        }
        let _ = self.stop.send(());
        let drained = self.task.await.unwrap_or_default();
        // Fills whose clients have gone still finish, so the cache keeps what was paid for.
        let fills = self.cache.inflight();
        let fills_waited_for = fills.len();
        if tokio::time::timeout_at(deadline, fills.idle())
            .await
            .is_err()
        {
            warn!(
                fills = fills.len(),
                "blob downloads still running at the end of the shutdown grace; abandoning them"
            );
        }
        if let Some(shared) = self.cache.shared() {
            if tokio::time::timeout_at(deadline, shared.uploads_idle())
                .await
                .is_err()
            {
                warn!("uploads to the shared object store still running at the end of the shutdown grace; abandoning them (the next fill of those blobs uploads them)");
            }
        }
        self.poller.abort();
        if let Some(task) = &self.peers_dns {
            task.abort();
        }
        if let Some((_, task)) = &self.admin {
            task.abort();
        }
        self.background.stop().await;
        if let Err(error) = self.cache.flush_access() {
            warn!(%error, "cannot write the last access times to the index");
        }
        self.cache.index().flush().await?;
        info!(
            drain_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            waited_for = drained.waited_for,
            abandoned = drained.abandoned,
            fills = fills_waited_for,
            "stopped"
        );
        Ok(())
    }
}

/// Runs wharf until SIGINT or SIGTERM, then shuts down gracefully. SIGHUP reloads the
/// configuration file ([`Running::reload_file`]), the TLS certificate and the htpasswd file. Under
/// systemd (`Type=notify`) it reports readiness, reloads and the shutdown.
///
/// # Errors
/// As [`start`] and [`Running::shutdown`].
pub async fn run(config: Config) -> Result<(), Error> {
    run_with(config, RunOptions::default()).await
}

/// As [`run`], with `options` from the command line.
///
/// # Errors
/// As [`start`] and [`Running::shutdown`].
pub async fn run_with(config: Config, options: RunOptions) -> Result<(), Error> {
    // Before READY: a SIGHUP that follows READY at once must find its handler, not the default
    // action (which ends the process).
    let mut signals = Signals::new();
    let mut running = start(config).await?;
    running.offline = options.offline;
    let status = format!("STATUS=serving on {}", running.local_addr());
    systemd::notify(&format!("READY=1\n{status}"));
    while let Signal::Reload = signals.next().await {
        info!(
            "SIGHUP: reloading the configuration file, the TLS certificate and the htpasswd file"
        );
        systemd::notify("RELOADING=1");
        // Refusals are logged; the files below are reloaded either way.
        let _ = running.reload_file().await;
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
