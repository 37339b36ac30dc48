//! The downstream side: the hyper service that answers `/v2/`, its accept loop and graceful drain.
//!
//! Each connection runs in its own task (HTTP/1.1, or HTTP/2 by ALPN over TLS or with prior
//! knowledge, through hyper-util's auto builder); over TLS the handshake runs in that task too,
//! bounded by [`crate::tls::HANDSHAKE_TIMEOUT`]. A request from another replica (a valid
//! `X-Wharf-Peer` header, see [`crate::cluster::auth`]) skips client authentication and is never
//! forwarded to a third; an invalid one is refused with 401. Requests are checked by
//! [`crate::access`] (credentials, then the upstream's allow list), routed by [`route::parse`] and answered by one
//! handler per API area ([`blobs`], [`manifests`], [`tags`]); every error becomes an OCI error
//! response in [`response`], and every request is logged (and counted) once by [`log`], with its
//! [`request_id`].

pub mod blobs;
pub mod conn;
pub mod log;
pub mod manifests;
pub mod referrers;
pub mod request_id;
pub mod response;
pub mod route;
pub mod tags;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::access::{Access, Refusal};
use crate::cache::manifests::Manifests;
use crate::cache::Cache;
use crate::cluster::{PeerKey, PEER_HEADER};
use crate::metrics::Metrics;
use crate::oci::ErrorCode;
use crate::upstream::Upstream;
use request_id::RequestId;
use response::{header, ApiError, Body};
use route::{Endpoint, Parsed, RegistryTable};

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// Upstream names for routing, in configuration order.
    pub registries: RegistryTable,
    /// One client per upstream, in configuration order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The cache.
    pub cache: Arc<Cache>,
    /// The manifest cache and its policy (tag TTL, stale serving, negative tags, hot manifests).
    pub manifests: Manifests,
    /// Hot small blobs in memory.
    pub hot_blobs: blobs::HotBlobs,
    /// Who may pull what.
    pub access: Access,
    /// The Prometheus families.
    pub metrics: Arc<Metrics>,
    /// Tag lists fetched from upstreams, shared and kept briefly.
    pub tag_lists: tags::TagLists,
    /// The key that checks other replicas' requests (`[cluster]`); `None` when wharf runs alone.
    pub peer_key: Option<Arc<PeerKey>>,
}

/// The [`App`] in use. A configuration reload builds a new one and swaps it in whole; each request
/// loads it once (a few nanoseconds, no lock), so it sees one configuration from start to end, and
/// what it holds (its upstream client, the fill it started) lives until it is done.
pub struct Current(arc_swap::ArcSwap<App>);

/// The client's address, put in each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

// === impl Current ===

impl Current {
    /// `app` in use.
    pub fn new(app: Arc<App>) -> Self {
        Self(arc_swap::ArcSwap::new(app))
    }

    /// The app in use now.
    pub fn load(&self) -> Arc<App> {
        self.0.load_full()
    }

    /// Puts `app` in use for the requests that start from now on.
    pub fn store(&self, app: Arc<App>) {
        self.0.store(app);
    }
}

// === impl App ===

impl App {
    /// Answers one request. Never fails: errors become OCI error responses.
    /// The request body is never read: every endpoint wharf serves is a GET or HEAD.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        self.handle_pull(request).await.0
    }

    /// As [`App::handle`], with what a manifest or blob `GET` that routed asked for (for the
    /// status page's top lists: moved out of the route, so nothing is copied).
    pub async fn handle_pull<B>(&self, request: Request<B>) -> (Response<Body>, Option<log::Pull>) {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let head = method == Method::HEAD;
        let parsed = route::parse(&method, uri.path(), uri.query(), &self.registries);
        let from_peer = match self.peer(&method, &uri, request.headers()) {
            Ok(from_peer) => from_peer,
            Err(refused) => {
                let mut response = refused.into_response(head);
                response.headers_mut().insert(
                    header::API_VERSION,
                    HeaderValue::from_static("registry/2.0"),
                );
                return (response, None);
            }
        };
        let authenticated = if from_peer {
            Ok(())
        } else {
            let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
            self.access.authenticate(request.headers(), client).await
        };
        let mut pull = None;
        let result = match authenticated {
            Err(refusal) => Err(unauthorized(refusal)),
            Ok(()) => match parsed {
                Ok(Parsed::Api(route))
                    if !self.access.allows(route.upstream, route.name.as_str()) =>
                {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        ErrorCode::Denied,
                        format!(
                            "repository {} is not allowed on this mirror",
                            route.client_name
                        ),
                    ))
                }
                parsed => {
                    let result = self
                        .route(&parsed, &method, &uri, request.headers(), from_peer)
                        .await;
                    if method == Method::GET {
                        if let Ok(Parsed::Api(route)) = parsed {
                            pull = log::Pull::of(self, route);
                        }
                    }
                    result
                }
            },
        };
        let mut response = result.unwrap_or_else(|e| e.into_response(head));
        if response.status() == StatusCode::UNAUTHORIZED && self.access.requires_auth() {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wharf\""),
            );
        }
        response.headers_mut().insert(
            header::API_VERSION,
            HeaderValue::from_static("registry/2.0"),
        );
        (response, pull)
    }

    async fn route(
        &self,
        parsed: &Result<Parsed, route::RouteError>,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        from_peer: bool,
    ) -> Result<Response<Body>, ApiError> {
        let head = *method == Method::HEAD;
        match parsed {
            Err(e) => Err(ApiError::from(e.clone())),
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
                    manifests::get(self, route, reference, method, headers).await
                }
                Endpoint::Blob(digest) => {
                    blobs::get(self, route, *digest, method, headers, from_peer).await
                }
                Endpoint::Referrers {
                    digest,
                    artifact_type,
                } => {
                    // Boxed, as tags::list: large futures that would make every hit's as large.
                    Box::pin(referrers::get(
                        self,
                        route,
                        *digest,
                        artifact_type.as_deref(),
                        method,
                    ))
                    .await
                }
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
                    // Boxed: the upstream exchange makes this future tens of KiB, and inline it
                    // would make every request's future as large (copied whole on every move; by
                    // hyper's HTTP/2 server, at every stream it spawns).
                    Box::pin(tags::list(self, route, &query, method)).await
                }
            },
        }
    }
}

// === impl App: peers ===

impl App {
    /// Whether the request comes from another replica: its `X-Wharf-Peer` header is valid. A
    /// request without the header (or any request when wharf runs alone) is an ordinary client's.
    ///
    /// # Errors
    /// A 401 when the header is there and not valid.
    fn peer(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Result<bool, ApiError> {
        // Without [cluster], not even a header lookup.
        let Some(key) = &self.peer_key else {
            return Ok(false);
        };
        let Some(value) = headers.get(PEER_HEADER) else {
            return Ok(false);
        };
        let checked = match uri.query() {
            Some(q) => key.verify(value, method, &format!("{}?{q}", uri.path())),
            None => key.verify(value, method, uri.path()),
        };
        match checked {
            Ok(()) => Ok(true),
            Err(error) => {
                info!(%error, path = %uri.path(), "refused a request with a bad peer header");
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "peer authentication failed",
                ))
            }
        }
    }
}

/// The 401 for a request without acceptable credentials (429 while its client is backed off).
fn unauthorized(refusal: Refusal) -> ApiError {
    let message = match refusal {
        Refusal::Missing => "authentication required: this mirror needs a user name and password",
        Refusal::Wrong => "authentication failed: wrong user name or password",
        Refusal::Throttled { retry_after } => {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "too many failed authentication attempts; retry later",
            )
            .retry_after_secs(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
        }
    };
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
}

/// How the listener is served.
pub struct ServeOptions {
    /// TLS, when configured: every connection does a handshake first.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a shutdown waits for open responses.
    pub grace: Duration,
    /// How many connections may be open, and how long each may take.
    pub limits: Arc<conn::Limits>,
}

/// What the drain at shutdown waited for; [`serve`] returns it once the drain is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Responses in progress when wharf stopped accepting connections.
    pub waited_for: usize,
    /// Responses still open when the shutdown grace ran out, left unfinished.
    pub abandoned: usize,
}

/// Accept failures (usually EMFILE or ENFILE: the file table is full) in a row: logged once when
/// they start and once when accepting works again, with a growing pause in between so the loop
/// neither spins nor floods the log, while open connections go on being served by their tasks.
#[derive(Debug, Default)]
struct AcceptFailures {
    since: Option<Instant>,
    count: u64,
}

// === impl AcceptFailures ===

impl AcceptFailures {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    /// Records a failure; returns how long to pause before accepting again.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.since.is_none() {
            warn!(%error, "accept failed; pausing the accept loop until it works again (open connections are still served)");
            self.since = Some(Instant::now());
        }
        self.count += 1;
        let doublings = u32::try_from(self.count.saturating_sub(1).min(7)).unwrap_or(7);
        (Self::FIRST_PAUSE * 2u32.pow(doublings)).min(Self::MAX_PAUSE)
    }

    /// Records a success, logging the end of an episode of failures.
    fn accepted(&mut self) {
        if let Some(since) = self.since.take() {
            info!(
                failures = self.count,
                elapsed_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "accepting connections again"
            );
            self.count = 0;
        }
    }
}

/// Serves connections from `listener` until `shutdown` resolves, then stops accepting and waits (up
/// to `options.grace`) for open responses to finish; returns how many it waited for.
pub async fn serve(
    listener: TcpListener,
    app: Arc<Current>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // conn::Guarded bounds reading a request and idling; hyper's header timer would also cut
    // keep-alive connections at the header timeout (see conn's module docs).
    // The write buffer bound: a response body waits in hyper's queue up to this much before hyper
    // stops polling it and flushes (see limits::HTTP1_MAX_BUF).
    builder
        .http1()
        .keep_alive(true)
        .header_read_timeout(None)
        .max_buf_size(crate::limits::HTTP1_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(crate::limits::H2_PING_INTERVAL))
        .keep_alive_timeout(crate::limits::H2_PING_TIMEOUT)
        .max_send_buf_size(crate::limits::H2_MAX_SEND_BUF);
    let builder = Arc::new(builder);
    let tls = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let limits = options.limits;
    let mut failures = AcceptFailures::default();
    let mut open = conn::OpenConns::default();
    tokio::pin!(shutdown);
    loop {
        // At max_connections, wait here: new clients queue in the kernel's listen backlog.
        let slot = tokio::select! {
            slot = limits.slot() => slot,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    failures.accepted();
                    conn
                }
                Err(error) => {
                    let pause = failures.failed(&error);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let Some(ip_slot) = limits.admit(conn::client_ip(peer)) else {
            debug!(%peer, "connection refused: this address holds server.max_connections_per_ip");
            app.load().metrics.connection_refused();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let timeouts = limits.timeouts();
        // Watched from now on, so a shutdown also waits for (bounded) handshakes in progress.
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let state = conn::ConnState::new();
        open.push(&state);
        tokio::spawn(async move {
            let _places = (slot, ip_slot);
            let metrics = app.load().metrics.clone();
            metrics.connections_open.inc();
            match tls {
                None => {
                    let io = conn::Guarded::new(stream, state.clone(), timeouts);
                    connection(&builder, io, peer, state, app, watcher).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(
                        crate::tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => {
                            let io = conn::Guarded::new(stream, state.clone(), timeouts);
                            // hyper flushes after every batch of writes, so nothing waits here.
                            let io = tokio::io::BufWriter::with_capacity(
                                crate::limits::TLS_WRITE_BUF,
                                io,
                            );
                            connection(&builder, io, peer, state, app, watcher).await;
                        }
                        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            metrics.connections_open.dec();
        });
    }
    drop(listener);
    let waited_for = open.requests();
    info!(
        waiting_for = waited_for,
        "shutting down: no new connections; waiting for open responses"
    );
    let mut abandoned = 0;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(options.grace) => {
            abandoned = open.requests();
            warn!(abandoned, "responses still open after the {} s shutdown grace; closing them", options.grace.as_secs());
        }
    }
    Drained {
        waited_for,
        abandoned,
    }
}

/// Serves one connection (plain TCP or TLS) until it closes or a graceful shutdown ends it.
async fn connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    state: Arc<conn::ConnState>,
    app: Arc<Current>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut request: Request<Incoming>| {
        let app = app.load();
        let active = state.begin();
        async move {
            let started = Instant::now();
            let id = RequestId::for_request(request.headers());
            let line = log::RequestLine {
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
                query: request.uri().query().map(str::to_owned),
                version: request.version(),
                client: peer,
                id: id.clone(),
                started,
            };
            if app.access.requires_auth() {
                // For the log of failed attempts.
                request.extensions_mut().insert(ClientAddr(peer));
            }
            let span = tracing::info_span!("request", id = %id);
            let (mut response, pull) = app.handle_pull(request).instrument(span).await;
            response
                .headers_mut()
                .insert(request_id::X_REQUEST_ID, id.header_value());
            let response = log::Logged::wrap(line, app.metrics.clone(), response, pull);
            Ok::<_, Infallible>(response.map(|body| conn::Tracked::new(body, active)))
        }
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(error) = watcher.watch(connection).await {
        debug!(%peer, %error, "connection ended with an error");
    }
}
