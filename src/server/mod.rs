//! The downstream side: the hyper service that answers `/v2/`, its accept loop and graceful drain.
//!
//! Each connection runs in its own task (HTTP/1.1, or HTTP/2 with prior knowledge, through
//! hyper-util's auto builder). Requests are routed by [`route::parse`] and answered by one handler per
//! API area ([`blobs`], [`manifests`], [`tags`]); every error becomes an OCI error response in
//! [`response`], and every request is logged once by [`log`].

pub mod blobs;
pub mod log;
pub mod manifests;
pub mod referrers;
pub mod response;
pub mod route;
pub mod tags;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::Cache;
use crate::upstream::Upstream;
use response::{header, ApiError, Body};
use route::{Endpoint, Parsed, RegistryTable};

/// How long a shutdown waits for open responses (and then for fills) to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// Upstream names for routing, in configuration order.
    pub registries: RegistryTable,
    /// One client per upstream, in configuration order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The cache.
    pub cache: Arc<Cache>,
    /// How long a tag's digest is trusted before the upstream is asked again.
    pub tag_ttl: Duration,
    /// Manifest fetches in flight, shared by concurrent requests.
    pub manifest_flights: manifests::ManifestFlights,
    /// Whether a cached tag is served when the upstream cannot be asked.
    pub serve_stale: bool,
    /// How long an upstream 404 for a tag is remembered (zero: not at all).
    pub negative_ttl: Duration,
    /// The remembered 404s.
    pub negative_tags: manifests::NegativeTags,
    /// Hot manifests in memory.
    pub hot_manifests: manifests::HotManifests,
    /// Hot small blobs in memory.
    pub hot_blobs: blobs::HotBlobs,
}

// === impl App ===

impl App {
    /// Answers one request. Never fails: errors become OCI error responses.
    /// The request body is never read: every endpoint wharf serves is a GET or HEAD.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let head = method == Method::HEAD;
        let parsed = route::parse(&method, uri.path(), uri.query(), &self.registries);
        let result = match parsed {
            Err(e) => Err(ApiError::from(e)),
            Ok(Parsed::Base) => {
                let mut base = Response::new(if head {
                    response::empty()
                } else {
                    response::full(&b"{}"[..])
                });
                base.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(base)
            }
            Ok(Parsed::Api(route)) => match &route.endpoint {
                Endpoint::Manifest(reference) => {
                    manifests::get(self, &route, reference, &method, request.headers()).await
                }
                Endpoint::Blob(digest) => {
                    blobs::get(self, &route, *digest, &method, request.headers()).await
                }
                Endpoint::Referrers {
                    digest,
                    artifact_type,
                } => referrers::get(self, &route, *digest, artifact_type.as_deref(), &method).await,
                Endpoint::TagsList { n, last } => {
                    let ns = uri.query().and_then(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == "ns")
                            .map(|(_, v)| v.into_owned())
                    });
                    let query = tags::Query {
                        n: *n,
                        last: last.as_deref(),
                        ns: ns.as_deref(),
                    };
                    tags::list(self, &route, &query, &method).await
                }
            },
        };
        let mut response = result.unwrap_or_else(|e| e.into_response(head));
        response.headers_mut().insert(
            header::API_VERSION,
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }
}

/// Serves connections from `listener` until `shutdown` resolves, then stops accepting and waits (up
/// to 30 s) for open responses to finish.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let app = app.clone();
            async move {
                let started = Instant::now();
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = request.uri().query().map(str::to_owned);
                let response = app.handle(request).await;
                Ok::<_, Infallible>(log::Logged::wrap(method, path, query, started, response))
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!("shutting down: no new connections; waiting for open responses");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            warn!("responses still open after {} s; closing them", DRAIN_TIMEOUT.as_secs());
        }
    }
}
