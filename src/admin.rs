//! The operator's listener (`[metrics] listen`), apart from the public port: the status page (`/`
//! and `/status`, [`crate::status::html`]) and its data (`/status.json`, [`crate::status`]),
//! `/metrics` for Prometheus, `/healthz` (the process answers) and `/readyz` (the index answers,
//! the storage takes writes, and no shutdown has begun: 503 with the reason otherwise, so a load
//! balancer stops sending new pulls to a wharf that is draining or cannot cache).

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::metrics;
use crate::oci::Digest;
use crate::server::{App, Current};

/// What the admin listener reads.
pub struct AdminState {
    /// The mirror, as the configuration in use makes it.
    apps: Arc<Current>,
    /// The storage's staging directory, where `/readyz` tries a write.
    pub tmp: PathBuf,
    /// Set when a shutdown begins.
    pub draining: AtomicBool,
    probes: AtomicU64,
}

/// Values read at scrape time from the running mirror.
pub struct Live {
    app: Arc<App>,
}

// === impl AdminState ===

impl AdminState {
    /// The mirror as the configuration in use makes it.
    pub fn app(&self) -> Arc<App> {
        self.apps.load()
    }

    /// The state for `app`, whose storage is at `storage`.
    pub fn new(apps: Arc<Current>, storage: &std::path::Path) -> Self {
        Self {
            apps,
            // FsBlobStore's staging directory: the one place wharf writes new files.
            tmp: storage.join("tmp"),
            draining: AtomicBool::new(false),
            probes: AtomicU64::new(0),
        }
    }

    /// `Ok` when the mirror can serve and cache, else why not.
    pub async fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let any = Digest::from_bytes([0; 32]);
        self.app()
            .cache
            .index()
            .blob_size(&any)
            .map_err(|e| format!("index: {e}"))?;
        let probe = self.tmp.join(format!(
            ".readyz-{}-{}",
            std::process::id(),
            self.probes.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::task::spawn_blocking(move || {
            std::fs::write(&probe, b"ok")?;
            std::fs::remove_file(&probe)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("storage is not writable: {}: {e}", self.tmp.display()))
    }
}

/// Serves the admin endpoints on `listener` until the task is aborted.
pub fn spawn(listener: TcpListener, state: Arc<AdminState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    debug!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, &request).await) }
                });
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, %error, "admin connection ended with an error");
                }
            });
        }
    })
}

async fn answer<B>(state: &AdminState, request: &Request<B>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n".into());
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match request.uri().path() {
        "/metrics" => {
            let app = state.app();
            let body = app.metrics.encode(Live { app: app.clone() });
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        "/" | "/status" => {
            let page = crate::status::html::render(&crate::status::report(&state.app()).await);
            let mut r = text(StatusCode::OK, page);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        "/status.json" => {
            let report = crate::status::report(&state.app()).await;
            let mut r = text(
                StatusCode::OK,
                serde_json::to_string(&report).unwrap_or_default(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match state.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /status, /status.json, /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Binds the admin listener.
///
/// # Errors
/// The OS error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

// === impl Live ===

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Collector for Live {
    /// Values read from the mirror at scrape time (the cache keeps them as atomics).
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let cache = &self.app.cache;
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        let usage = cache.usage();
        let evictions = cache.evictions();
        let health = cache.health();
        let mut gauges = vec![
            (
                "fills_in_flight",
                "Blob downloads from upstreams running now",
                gauge(cache.inflight().len() as u64),
            ),
            (
                "cache_bytes",
                "Bytes of blobs and manifests stored",
                gauge(usage.bytes),
            ),
            (
                "cache_entries",
                "Blobs and manifests stored",
                gauge(usage.entries),
            ),
            (
                "storage_paused",
                "1 while caching is paused after a storage failure or with free space at storage.min_free (misses pass through), else 0",
                gauge(u64::from(health.paused())),
            ),
        ];
        if let Some(shared) = cache.shared() {
            gauges.push((
                "shared_store_paused",
                "1 while the shared object store is left alone after a failure (misses go to the upstream, fills write the local tier only), else 0",
                gauge(u64::from(shared.paused())),
            ));
        }
        if let Some(budget) = cache.budget() {
            gauges.push((
                "cache_max_bytes",
                "The size budget (storage.max_size)",
                gauge(budget.max),
            ));
        }
        if let Some(free) = health.free_space() {
            gauges.push((
                "storage_free_bytes",
                "Free space on the storage's filesystem",
                gauge(free),
            ));
        }
        for (name, help, value) in gauges {
            value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)?;
        }
        let mut counters = vec![
            (
                "evictions",
                "Blobs and manifests evicted to stay within storage.max_size",
                evictions.count,
            ),
            (
                "evicted_bytes",
                "Bytes evicted to stay within storage.max_size",
                evictions.bytes,
            ),
            (
                "storage_failures",
                "Storage writes that failed (disk full, I/O error, read-only filesystem) or found free space at storage.min_free",
                health.failures(),
            ),
        ];
        if let Some(shared) = cache.shared() {
            let counts = shared.counts();
            counters.extend([
                (
                    "shared_store_reads",
                    "Blob fills that read from the shared object store instead of the upstream",
                    counts.reads,
                ),
                (
                    "shared_store_writes",
                    "Blobs and manifests this replica committed to the shared object store",
                    counts.writes,
                ),
                (
                    "shared_store_failures",
                    "Shared object store operations that failed or timed out",
                    counts.failures,
                ),
            ]);
        }
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }

        let limits: Vec<_> = self
            .app
            .upstreams
            .iter()
            .filter_map(|u| u.rate_limit().map(|l| (u.name().to_owned(), l)))
            .collect();
        for (name, help, pick) in [
            (
                "upstream_rate_limit_remaining",
                "Requests left in the upstream's rate-limit window (its RateLimit-Remaining), as last seen",
                (|l: &crate::upstream::client::RateLimit| l.remaining) as fn(&_) -> u64,
            ),
            (
                "upstream_rate_limit_limit",
                "Requests allowed in the upstream's rate-limit window (its RateLimit-Limit), as last seen",
                |l: &crate::upstream::client::RateLimit| l.limit,
            ),
        ] {
            if limits.is_empty() {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (upstream, limit) in &limits {
                let labels = [("upstream", upstream.as_str())];
                let gauge = ConstGauge::new(i64::try_from(pick(limit)).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
