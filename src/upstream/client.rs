//! The HTTP client for one upstream registry: authentication, redirects and error classification.
//!
//! Every request goes through `Upstream::send` (under the typed operations of [`super::registry`]),
//! which
//! 1. adds `?ns=<name>` to the URL when the upstream is another wharf (`mirror_of_mirror`), so it
//!    answers from its upstream of that name (redirect targets and token realms are left as sent),
//! 2. attaches a cached token for the request's scope (or Basic credentials once the upstream has
//!    asked for them),
//! 3. follows redirects itself, at most [`MAX_REDIRECTS`] hops and only where the upstream's
//!    [`redirect::Policy`] allows (never down from https, never to an internal address other than
//!    the upstream's own or a listed one, checked on the resolved addresses), sending
//!    `Authorization` only to the upstream's own origin, so a blob served from a CDN never sees
//!    the upstream's credentials or token,
//! 4. on a `401` answers the upstream's challenge once: a Bearer token from the realm (checked by
//!    [`auth::check_realm`] before anything is sent there) or Basic credentials, then retries.
//!    Credentials come from the upstream's [`CredentialStore`]: when the registry (Basic) or the
//!    realm refuses the one in hand, a newer one is fetched once (a re-read `password_file` or
//!    `auth_file`, a credential helper run again) and the request retried with it. An identity
//!    token (user `<token>`) is exchanged with the realm by an OAuth2 refresh-token POST.
//!
//! With `urls`, an upstream has several URLs (`Origin`s, each with its own tokens, Basic flag and
//! redirect policy). A request goes to the first that is not backed off; one that gives no
//! connection, no headers within `timeout` or a 5xx is backed off for `url_backoff` and the next is
//! tried (a 404 from one that is not the last is asked of the next too). Content is verified by
//! digest by the cache whichever URL served it.
//!
//! Tokens are cached per scope in moka until shortly before they expire; concurrent requests for the
//! same scope share one token request.
//!
//! Nothing an upstream sends is waited for or read without a bound. reqwest's `read_timeout` (the
//! upstream's `timeout`) cuts a response that goes silent; on top of that every request has an
//! overall deadline of `timeout` until its response headers arrive (redirects and the token
//! exchange included), and the small documents read whole (`Upstream::get_small`, token
//! responses, error bodies) have the same deadline including their body, so an upstream that
//! trickles a byte a second cannot hold a request for ever. Blob bodies are streamed, and bounded
//! by the fill's minimum rate instead. Bodies read whole are also bounded in size
//! ([`MAX_TOKEN_BODY`], the caller's limit, [`MAX_ERROR_BODY`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use http::header::{AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};
use url::Url;

use super::auth::{self, AuthError, Challenge, Token};
use super::credentials::{CredentialError, CredentialStore, Held};
use super::rate::Pace;
use super::redirect::{self, CheckedResolver, Hop};
use crate::config::{UpstreamConfig, IDENTITY_TOKEN_USER};
use crate::limits::{MAX_ERROR_BODY, MAX_REDIRECTS, MAX_TOKEN_BODY};
use crate::metrics::{Metrics, UpstreamStatus};
use crate::oci::{ErrorCode, ErrorEnvelope};

/// A token is dropped this long before it expires, so it is not sent just as it lapses.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// One configured upstream registry.
pub struct Upstream {
    name: String,
    /// The upstream's URLs in the order they are tried (`url`, or `urls`), each with its own
    /// redirect policy, tokens and health.
    origins: Vec<Origin>,
    /// How long a URL that failed is skipped (`url_backoff`).
    url_backoff: Duration,
    /// The `?ns=` every request carries when the upstream is another wharf (`mirror_of_mirror`).
    forward_ns: Option<String>,
    /// The client for the upstream's own origin, its token realms and the `redirect_hosts`.
    http: reqwest::Client,
    /// The client for every other redirect target: its resolver refuses internal addresses.
    checked: reqwest::Client,
    /// Whether an HTTP proxy may resolve redirect targets (so their names are checked here first).
    proxied: bool,
    /// The overall deadline of a request until its headers, and of a small document whole.
    timeout: Duration,
    /// Where the credentials come from, and the one in hand.
    credentials: Arc<CredentialStore>,
    token_realms: Vec<String>,
    /// Slots for blob fills, so a burst of misses opens a bounded number of upstream connections.
    fill_slots: Arc<Semaphore>,
    /// How long a fill waits for a slot before giving up.
    fill_wait: Duration,
    /// Never contact the upstream.
    offline: bool,
    /// After a 429, no request goes out until this passes.
    backoff: Backoff,
    /// The upstream's last `RateLimit-Limit` / `RateLimit-Remaining` (Docker Hub sends them).
    rate_limit: Mutex<Option<RateLimit>>,
    /// How its requests went lately, for the status page.
    health: Health,
    /// Where every request sent is counted.
    metrics: Arc<Metrics>,
    /// How fast blob bodies must arrive (`min_rate` over `min_rate_window`).
    pace: Pace,
    /// Adds a signed header to every request sent to the upstream's own origin (a wharf peer).
    signer: Option<Arc<dyn Signer>>,
}

/// One URL of an upstream, with what is kept per URL: where its redirects may lead, its tokens
/// (each URL may have its own token realm), whether it asked for Basic, and until when it is
/// skipped after a failure.
struct Origin {
    base: Url,
    /// Where redirects may lead.
    redirects: redirect::Policy,
    tokens: moka::future::Cache<String, Arc<Token>>,
    /// Set once the URL has answered with a Basic challenge: later requests send credentials
    /// up front instead of taking a 401 each time.
    wants_basic: AtomicBool,
    /// After a failure (with `urls`), the URL is tried after the others until this passes.
    down_until: Mutex<Option<Instant>>,
}

/// Signs each request to an upstream with one extra header: how a wharf replica proves to
/// another that it is a peer (see `crate::cluster`). The header goes only to the upstream's own
/// origin, never along a redirect to another host.
pub trait Signer: Send + Sync {
    /// The header for a request of `method` to `path_and_query` (`/v2/...`, `?query` included
    /// when there is one), made when the request is sent.
    fn sign(&self, method: &Method, path_and_query: &str) -> (HeaderName, HeaderValue);
}

/// The upstream's rate-limit headers, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in the window.
    pub limit: u64,
    /// Requests left in the window.
    pub remaining: u64,
}

/// When an upstream that answered 429 may be asked again.
#[derive(Debug, Default)]
pub struct Backoff {
    until: Mutex<Option<Instant>>,
}

/// How an upstream's requests went lately: recorded at each request sent (a miss, never a hit),
/// read by the status page.
#[derive(Debug, Default)]
pub struct Health {
    /// 0 before the first request, 1 when the last one got a response, 2 when it did not.
    reachable: AtomicU8,
    /// When the last response came (Unix seconds; 0 for never).
    last_ok: AtomicU64,
    /// The last failure (no response, a 5xx or a 429) and when (Unix seconds).
    last_error: Mutex<Option<(String, u64)>>,
}

/// What [`Health`] holds, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// Whether the last request got a response; `None` before the first.
    pub reachable: Option<bool>,
    /// When the last response came.
    pub last_ok: Option<u64>,
    /// The last failure, one line with no secrets (no URL, no header).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<u64>,
}

/// A request to an upstream that did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made, or it broke before a response.
    #[error("upstream {upstream} is unreachable")]
    Unreachable {
        /// The upstream's configured name.
        upstream: String,
        /// The transport error, for the log only.
        #[source]
        source: reqwest::Error,
    },
    /// The upstream did not answer in time.
    #[error("upstream {upstream} did not answer in time")]
    Timeout {
        /// The upstream's configured name.
        upstream: String,
    },
    /// The upstream answered with an error status.
    #[error("upstream {upstream} answered {status}")]
    Status {
        /// The upstream's configured name.
        upstream: String,
        /// The status it sent.
        status: StatusCode,
        /// The OCI error code in its body, if any.
        code: Option<ErrorCode>,
        /// Its `Retry-After`, kept for 429 and 503.
        retry_after: Option<HeaderValue>,
    },
    /// Authentication with the upstream failed or was refused by policy.
    #[error("upstream {upstream}: {source}")]
    Auth {
        /// The upstream's configured name.
        upstream: String,
        /// What went wrong.
        #[source]
        source: AuthError,
    },
    /// The upstream is configured offline: nothing is sent.
    #[error("the mirror is offline for upstream {upstream} and does not have this content")]
    Offline {
        /// The upstream's configured name.
        upstream: String,
    },
    /// All fill slots stayed taken for the whole bounded wait.
    #[error("upstream {upstream}: too many blob downloads in flight; try again shortly")]
    Busy {
        /// The upstream's configured name.
        upstream: String,
    },
    /// No credential could be had: a credential helper failed or timed out, a credential file
    /// cannot be used.
    #[error("upstream {upstream}: {source}")]
    Credentials {
        /// The upstream's configured name.
        upstream: String,
        /// What went wrong, naming the helper or the file.
        #[source]
        source: CredentialError,
    },
    /// A protocol problem: bad redirect, unreadable token response, a body cut short.
    #[error("upstream {upstream}: {reason}")]
    Protocol {
        /// The upstream's configured name.
        upstream: String,
        /// What went wrong, in words safe to show a client.
        reason: String,
    },
}

// === impl Upstream ===

impl Upstream {
    /// Builds the client for one configured upstream. Its TLS trusts the system's roots plus the
    /// upstream's `ca_file`, or any certificate when it is `insecure`.
    ///
    /// # Errors
    /// When the TLS client cannot be built.
    pub fn new(config: &UpstreamConfig, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let builder = || -> Result<reqwest::ClientBuilder, reqwest::Error> {
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.timeout)
                .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
                .pool_idle_timeout(Duration::from_secs(90));
            if let Some(pem) = &config.ca_pem {
                for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if config.insecure {
                builder = builder.danger_accept_invalid_certs(true);
            }
            Ok(builder)
        };
        let http = builder()?.build()?;
        let resolver = CheckedResolver::from_env();
        let proxied = resolver.proxied();
        let checked = builder()?.dns_resolver(Arc::new(resolver)).build()?;
        let origins = config
            .urls()
            .map(|url| Origin {
                base: url.clone(),
                redirects: redirect::Policy::new(
                    url.clone(),
                    config.insecure,
                    config.redirect_hosts.clone(),
                ),
                tokens: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .expire_after(TokenExpiry)
                    .build(),
                wants_basic: AtomicBool::new(false),
                down_until: Mutex::new(None),
            })
            .collect();
        Ok(Self {
            name: config.name.clone(),
            origins,
            url_backoff: config.url_backoff,
            forward_ns: config.forward_ns().map(str::to_owned),
            http,
            checked,
            timeout: config.timeout,
            proxied,
            credentials: Arc::new(CredentialStore::new(config)),
            token_realms: config.token_realms.clone(),
            fill_slots: Arc::new(Semaphore::new(config.max_fills)),
            fill_wait: config.fill_wait,
            offline: config.offline,
            backoff: Backoff::default(),
            rate_limit: Mutex::new(None),
            health: Health::default(),
            metrics,
            pace: Pace::from_config(config),
            signer: None,
        })
    }

    /// The same client, signing every request to its own origin with `signer`.
    #[must_use]
    pub fn with_signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The same client with another overall deadline until a response's headers (and for a small
    /// document whole); how long a blob body may stay silent is still the configured `timeout`.
    /// A wharf peer must answer within `owner_timeout`, but then streams at its upstream's pace.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.timeout = deadline;
        self
    }

    /// Where the upstream is (its configured `url`, or the first of `urls`).
    pub fn url(&self) -> &Url {
        &self.origins[0].base
    }

    /// The URL tag lookups go to now: the first of the upstream's URLs that is not backed off
    /// after a failure (the first when all are).
    pub fn current_url(&self) -> &Url {
        let now = Instant::now();
        self.origins
            .iter()
            .find(|o| !o.backed_off(now))
            .map_or(&self.origins[0].base, |o| &o.base)
    }

    /// The upstream's credentials, to be watched by the reloader when they come from a file
    /// (`password_file`, `auth_file`): a change is then in use without waiting for a refusal.
    pub fn credentials_reloadable(&self) -> Option<Arc<dyn crate::reload::Reloadable>> {
        self.credentials
            .watches_files()
            .then(|| self.credentials.clone() as Arc<dyn crate::reload::Reloadable>)
    }

    /// How many times this upstream's credential helper has run.
    pub fn helper_runs(&self) -> u64 {
        self.credentials.helper_runs()
    }

    /// Sends one request, counting it (and its time to headers) in the metrics.
    async fn counted(
        &self,
        request: reqwest::RequestBuilder,
        method: &Method,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let started = Instant::now();
        let result = request.send().await;
        let status = match &result {
            Ok(response) => UpstreamStatus::Code(response.status().as_u16()),
            Err(_) => UpstreamStatus::Error,
        };
        self.metrics
            .upstream(&self.name, method, status, started.elapsed());
        self.health.record(&result, crate::activity::unix_now());
        result
    }

    /// How its requests went lately.
    pub fn health(&self) -> HealthReport {
        self.health.report()
    }

    /// How long wharf still waits before asking again, after a 429.
    pub fn backoff_remaining(&self) -> Option<Duration> {
        self.backoff.remaining(Instant::now())
    }

    /// Waits (for the configured bounded time) for a slot to run one blob fill in.
    ///
    /// # Errors
    /// [`UpstreamError::Busy`] when no slot freed up in time.
    pub async fn fill_slot(&self) -> Result<OwnedSemaphorePermit, UpstreamError> {
        let busy = || UpstreamError::Busy {
            upstream: self.name.clone(),
        };
        match tokio::time::timeout(self.fill_wait, self.fill_slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether wharf must never contact this upstream.
    pub fn offline(&self) -> bool {
        self.offline
    }

    /// The upstream's rate-limit headers, as last seen.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        *self.rate_limit.lock()
    }

    /// How fast this upstream must deliver blob bodies.
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Sends a request for `path` (`/v2/...`, with an optional query) under the pull `scope`
    /// (`repository:<name>:pull`), authenticating as the upstream asks. Returns the upstream's
    /// response whatever its status; [`Upstream::status_error`] classifies error statuses. The
    /// response's headers must arrive (through every redirect and the token exchange) within the
    /// upstream's `timeout`; its body is the caller's to bound.
    ///
    /// # Errors
    /// Transport failures, timeouts, refused or failed authentication, refused redirects.
    pub(super) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.deadline(self.send_unbounded(method, path_and_query, headers, scope))
            .await
    }

    /// Runs `work` under the upstream's overall deadline: `timeout`, once for each of its URLs
    /// (each URL's attempt has `timeout` of its own).
    async fn deadline<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let limit = self.timeout * u32::try_from(self.origins.len()).unwrap_or(1);
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                warn!(upstream = %self.name, timeout_ms = limit.as_millis() as u64, "upstream request passed its deadline");
                Err(UpstreamError::Timeout {
                    upstream: self.name.clone(),
                })
            }
        }
    }

    /// [`Upstream::send`] without the deadline: to the upstream's URL, or with `urls`, to the first
    /// one not backed off that answers (see [`Upstream::send_to_any`]).
    async fn send_unbounded(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        if self.offline {
            return Err(UpstreamError::Offline {
                upstream: self.name.clone(),
            });
        }
        if let Some(wait) = self.backoff.remaining(Instant::now()) {
            // Asking now would only earn another 429 (and count against the limit).
            return Err(UpstreamError::Status {
                upstream: self.name.clone(),
                status: StatusCode::TOO_MANY_REQUESTS,
                code: Some(ErrorCode::TooManyRequests),
                retry_after: Some(HeaderValue::from(wait.as_secs().max(1))),
            });
        }
        match &self.origins[..] {
            [only] => {
                self.send_to(only, &method, path_and_query, &headers, scope)
                    .await
            }
            _ => {
                self.send_to_any(&method, path_and_query, &headers, scope)
                    .await
            }
        }
    }

    /// Tries the URLs in order, those backed off last: a URL that gives no connection, no answer
    /// within `timeout` or a 5xx is backed off for `url_backoff` and the next is tried; a 404 from
    /// one that is not the last is asked of the next too (a mirror such as mirror.gcr.io holds only
    /// part of the registry). The last URL's answer is returned, whatever it is.
    async fn send_to_any(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let now = Instant::now();
        let (mut order, backed_off): (Vec<&Origin>, Vec<&Origin>) =
            self.origins.iter().partition(|o| !o.backed_off(now));
        order.extend(backed_off);
        let mut last = None;
        let count = order.len();
        for (i, origin) in order.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let attempt = tokio::time::timeout(
                self.timeout,
                self.send_to(origin, method, path_and_query, headers, scope),
            )
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Timeout {
                    upstream: self.name.clone(),
                })
            });
            let (failed, next) = match &attempt {
                Err(UpstreamError::Unreachable { .. } | UpstreamError::Timeout { .. }) => {
                    (true, true)
                }
                Err(_) => (false, false),
                Ok(r) if r.status().is_server_error() => (true, true),
                Ok(r) => (false, r.status() == StatusCode::NOT_FOUND),
            };
            if failed {
                origin.back_off(&self.name, self.url_backoff);
            } else if attempt.is_ok() {
                origin.answered(&self.name);
            }
            if !next || is_last {
                return attempt;
            }
            debug!(upstream = %self.name, url = %origin.base, failed, "trying the upstream's next URL");
            last = Some(attempt);
        }
        last.unwrap_or_else(|| Err(self.protocol("the upstream has no URL".into())))
    }

    /// Sends one request to one of the upstream's URLs, answering a 401 once.
    async fn send_to(
        &self,
        origin: &Origin,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = request_url(&origin.base, path_and_query, self.forward_ns.as_deref())
            .map_err(|e| self.protocol(format!("bad request path: {e}")))?;
        let started = Instant::now();
        let (auth, sent) = self.cached_auth(origin, scope).await?;
        let had_token = auth.is_some() && sent.is_none();
        let response = self
            .send_following(origin, method, url.clone(), headers, auth)
            .await?;
        let response = if response.status() == StatusCode::UNAUTHORIZED {
            let challenges = response
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_challenges)
                .collect::<Vec<_>>();
            if had_token {
                origin.tokens.invalidate(scope).await;
            }
            match self.answer(origin, &challenges, scope, sent).await? {
                Some((auth, held)) => {
                    let retried = self
                        .send_following(origin, method, url, headers, Some(auth))
                        .await?;
                    if let Some(held) =
                        held.filter(|_| retried.status() != StatusCode::UNAUTHORIZED)
                    {
                        held.worked();
                    }
                    retried
                }
                None => response,
            }
        } else {
            if let Some(held) = sent {
                held.worked();
            }
            response
        };
        debug!(
            upstream = %self.name,
            %method,
            path = %path_and_query,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "upstream request"
        );
        self.observe(&response);
        Ok(response)
    }

    /// Records rate-limit headers, and starts a back-off on 429.
    fn observe(&self, response: &reqwest::Response) {
        let headers = response.headers();
        if let (Some(limit), Some(remaining)) = (
            rate_limit_value(headers.get("ratelimit-limit")),
            rate_limit_value(headers.get("ratelimit-remaining")),
        ) {
            let now = RateLimit { limit, remaining };
            let before = self.rate_limit.lock().replace(now);
            if remaining <= limit / 10 && before != Some(now) {
                warn!(upstream = %self.name, limit, remaining, "upstream rate limit nearly used up");
            }
        }
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(headers.get(RETRY_AFTER), SystemTime::now());
            self.backoff.start(Instant::now(), wait);
            warn!(upstream = %self.name, retry_after_s = wait.as_secs(), "upstream answered 429; not asking it again until then");
        }
    }

    /// The `Authorization` to send before any challenge: a cached token, or Basic credentials when
    /// this URL uses Basic (with the credential sent, to tell whether it was refused).
    ///
    /// # Errors
    /// [`UpstreamError::Credentials`] when Basic credentials are due and cannot be had.
    async fn cached_auth(
        &self,
        origin: &Origin,
        scope: &str,
    ) -> Result<(Option<HeaderValue>, Option<Arc<Held>>), UpstreamError> {
        if origin.wants_basic.load(Ordering::Relaxed) {
            let held = self
                .credentials
                .current()
                .await
                .map_err(|e| self.credential_error(e))?;
            return Ok(basic_from(held));
        }
        let Some(token) = origin.tokens.get(scope).await else {
            return Ok((None, None));
        };
        Ok((auth::bearer_header(&token).ok(), None))
    }

    /// Works out the `Authorization` that answers a 401's challenges (with the credential it
    /// carries, for Basic), or `None` when there is no challenge wharf can answer (the 401 then
    /// goes back to the caller). `sent` is the Basic credential the 401 refused, if one was sent:
    /// a newer one is fetched (once) instead of sending it again.
    async fn answer(
        &self,
        origin: &Origin,
        challenges: &[Challenge],
        scope: &str,
        sent: Option<Arc<Held>>,
    ) -> Result<Option<(HeaderValue, Option<Arc<Held>>)>, UpstreamError> {
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer(b) => Some(b),
            Challenge::Basic { .. } => None,
        });
        if let Some(challenge) = bearer {
            let token = origin
                .tokens
                .try_get_with(scope.to_owned(), self.fetch_token(origin, challenge, scope))
                .await
                .map_err(|e: Arc<UpstreamError>| self.shared_error(&e))?;
            return Ok(Some((
                auth::bearer_header(&token).map_err(|source| self.auth_error(source))?,
                None,
            )));
        }
        let basic = challenges
            .iter()
            .any(|c| matches!(c, Challenge::Basic { .. }));
        if !basic || !self.credentials.configured() {
            return Ok(None);
        }
        let held = match &sent {
            Some(refused) => self.credentials.refused(refused).await,
            None => self.credentials.current().await,
        }
        .map_err(|e| self.credential_error(e))?;
        match basic_from(held) {
            (Some(header), held) => {
                origin.wants_basic.store(true, Ordering::Relaxed);
                Ok(Some((header, held)))
            }
            (None, _) => Ok(None),
        }
    }

    /// Asks the challenge's realm for a token for `scope`, within the upstream's `timeout` and
    /// reading at most [`MAX_TOKEN_BODY`] of its answer.
    async fn fetch_token(
        &self,
        origin: &Origin,
        challenge: &auth::BearerChallenge,
        scope: &str,
    ) -> Result<Arc<Token>, UpstreamError> {
        tokio::time::timeout(
            self.timeout,
            self.fetch_token_unbounded(origin, challenge, scope),
        )
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::Timeout {
                upstream: self.name.clone(),
            })
        })
    }

    /// Asks the realm with the credential in hand; when the realm refuses it (401 or 403), once
    /// more with a newer one if there is one (a rotated password, a helper's new credential).
    async fn fetch_token_unbounded(
        &self,
        origin: &Origin,
        challenge: &auth::BearerChallenge,
        scope: &str,
    ) -> Result<Arc<Token>, UpstreamError> {
        let url = auth::token_url(challenge, scope).map_err(|e| self.auth_error(e))?;
        let mut held = self
            .credentials
            .current()
            .await
            .map_err(|e| self.credential_error(e))?;
        let mut retried = false;
        loop {
            let creds = held.as_ref().and_then(|h| h.creds.as_ref());
            auth::check_realm(
                &self.name,
                &origin.base,
                &url,
                &self.token_realms,
                creds.is_some(),
            )
            .map_err(|e| self.auth_error(e))?;
            let request = match creds {
                // An identity token (Docker's `identitytoken`, a helper's `<token>` user) is an
                // OAuth2 refresh token: exchanged by a POST, as Docker does, never sent as Basic.
                Some(creds) if creds.username == IDENTITY_TOKEN_USER => {
                    let (post_url, form) = refresh_token_form(&url, creds.password.expose());
                    self.http
                        .post(post_url)
                        .header(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/x-www-form-urlencoded"),
                        )
                        .body(form)
                }
                Some(creds) => self
                    .http
                    .get(url.clone())
                    .header(AUTHORIZATION, auth::basic_header(creds)),
                None => self.http.get(url.clone()),
            };
            let response = self
                .counted(request, &Method::GET)
                .await
                .map_err(|e| self.transport(e))?;
            let status = response.status();
            let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            if refused && !retried {
                if let Some(sent) = &held {
                    let newer = self
                        .credentials
                        .refused(sent)
                        .await
                        .map_err(|e| self.credential_error(e))?;
                    if let Some(newer) = newer {
                        debug!(upstream = %self.name, "token realm refused the credential; asking again with a newer one");
                        held = Some(newer);
                        retried = true;
                        continue;
                    }
                }
            }
            if !status.is_success() {
                warn!(upstream = %self.name, realm = %url.host_str().unwrap_or(""), status = status.as_u16(), "token request refused");
                return Err(UpstreamError::Auth {
                    upstream: self.name.clone(),
                    source: AuthError::TokenRefused {
                        realm: url.host_str().unwrap_or_default().to_owned(),
                        status: status.as_u16(),
                    },
                });
            }
            let body = self
                .read_whole(response, MAX_TOKEN_BODY)
                .await
                .map_err(|e| match e {
                    ReadError::TooLarge => {
                        warn!(upstream = %self.name, realm = %url.host_str().unwrap_or(""), limit = MAX_TOKEN_BODY, "token response too large; refused");
                        self.auth_error(AuthError::BadTokenResponse {
                            reason: "it is larger than 1 MiB",
                        })
                    }
                    ReadError::Transport(e) => self.transport(e),
                })?;
            let token = auth::parse_token_response(&body).map_err(|e| self.auth_error(e))?;
            if let Some(held) = &held {
                held.worked();
            }
            debug!(upstream = %self.name, %scope, expires_in = token.expires_in.as_secs(), "new upstream token");
            return Ok(Arc::new(token));
        }
    }

    /// Sends one request, following at most [`MAX_REDIRECTS`] redirects where the URL's
    /// [`redirect::Policy`] allows; `Authorization` goes only to the URL's origin.
    async fn send_following(
        &self,
        origin: &Origin,
        method: &Method,
        mut url: Url,
        headers: &HeaderMap,
        auth: Option<HeaderValue>,
    ) -> Result<reqwest::Response, UpstreamError> {
        // The first request goes to the upstream itself.
        let mut hop = Hop::Trusted;
        for _ in 0..=MAX_REDIRECTS {
            let client = match hop {
                Hop::Trusted => &self.http,
                Hop::Checked => &self.checked,
            };
            let mut request = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if url.origin() == origin.base.origin() {
                if let Some(auth) = &auth {
                    request = request.header(AUTHORIZATION, auth.clone());
                }
                if let Some(signer) = &self.signer {
                    let (name, value) = match url.query() {
                        Some(q) => signer.sign(method, &format!("{}?{q}", url.path())),
                        None => signer.sign(method, url.path()),
                    };
                    request = request.header(name, value);
                }
            }
            let response = self.counted(request, method).await.map_err(|e| {
                match redirect::refused_in(&e) {
                    Some(refused) => self.refused_redirect(&refused),
                    None => self.transport(e),
                }
            })?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.protocol("redirect without a Location".into()))?;
            let next = url
                .join(location)
                .map_err(|_| self.protocol("redirect to an invalid Location".into()))?;
            hop = origin
                .redirects
                .check(&next)
                .map_err(|refused| self.refused_redirect(&refused))?;
            if let (Hop::Checked, true, Some(url::Host::Domain(name))) =
                (hop, self.proxied, next.host())
            {
                redirect::check_name(name)
                    .await
                    .map_err(|refused| self.refused_redirect(&refused))?;
            }
            debug!(upstream = %self.name, to = %next.host_str().unwrap_or(""), ?hop, "following redirect");
            url = next;
        }
        warn!(upstream = %self.name, limit = MAX_REDIRECTS, "too many redirects; refused");
        Err(self.protocol(format!("more than {MAX_REDIRECTS} redirects")))
    }
    /// Logs a refused redirect and turns it into the error the client sees.
    fn refused_redirect(&self, refused: &redirect::Refused) -> UpstreamError {
        warn!(upstream = %self.name, reason = %refused, "redirect refused");
        self.protocol(refused.to_string())
    }

    /// `GET`s a small document (a manifest, a tag list, a referrers list) whole: the response's
    /// headers and body, at most `limit` bytes of it, all within the upstream's `timeout`.
    ///
    /// # Errors
    /// As [`Upstream::send`]; an error status as [`Upstream::status_error`] classifies it; a body
    /// that breaks off, or is longer than `limit`, as [`UpstreamError::Protocol`] or a transport
    /// error; a document not whole by the deadline as [`UpstreamError::Timeout`].
    pub(super) async fn get_small(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
        scope: &str,
        limit: usize,
    ) -> Result<(HeaderMap, Bytes), UpstreamError> {
        self.deadline(async {
            let mut response = self
                .send_unbounded(Method::GET, path_and_query, headers, scope)
                .await?;
            if !response.status().is_success() {
                return Err(self.status_error(response).await);
            }
            let headers = std::mem::take(response.headers_mut());
            let body = self
                .read_whole(response, limit)
                .await
                .map_err(|e| match e {
                    ReadError::TooLarge => {
                        self.protocol(format!("sent a response larger than {limit} bytes"))
                    }
                    ReadError::Transport(e) => self.transport(e),
                })?;
            Ok((headers, body))
        })
        .await
    }

    /// Reads a body whole, refusing it (without reading further) as soon as it is known to be
    /// longer than `limit`: up front by its `Content-Length`, or once the bytes read pass it.
    async fn read_whole(
        &self,
        mut response: reqwest::Response,
        limit: usize,
    ) -> Result<Bytes, ReadError> {
        let announced = response.content_length();
        if announced.is_some_and(|length| length > limit as u64) {
            return Err(ReadError::TooLarge);
        }
        // Never trust the announced length for more than the limit.
        let capacity = announced.map_or(0, |length| length as usize);
        let mut body = BytesMut::with_capacity(capacity);
        while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
            if body.len() + chunk.len() > limit {
                return Err(ReadError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Classifies a non-success response, reading (a bounded part of) its body for the OCI code,
    /// for at most the upstream's `timeout`.
    ///
    /// From another wharf (`mirror_of_mirror`), a `404` saying it has no registry of this
    /// upstream's name is a [`UpstreamError::Protocol`]: a configuration mismatch between the two,
    /// not an answer about the content, so it must not be remembered as "no such tag".
    pub(super) async fn status_error(&self, response: reqwest::Response) -> UpstreamError {
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        let body = tokio::time::timeout(self.timeout, read_bounded(response, MAX_ERROR_BODY))
            .await
            .unwrap_or_default();
        if let Some(ns) = &self.forward_ns {
            if status == StatusCode::NOT_FOUND && names_unknown_registry(&body, ns) {
                warn!(upstream = %self.name, ns = %ns, "the upstream wharf has no registry of this name");
                return self.protocol(format!(
                    "the upstream wharf has no registry named {ns:?}; give it an [[upstream]] of that name, or rename this one"
                ));
            }
        }
        UpstreamError::Status {
            upstream: self.name.clone(),
            status,
            code: ErrorEnvelope::first_code(&body),
            retry_after,
        }
    }

    /// Whether this upstream is another wharf, asked with `?ns=` (`mirror_of_mirror`).
    pub(super) fn forwards(&self) -> bool {
        self.forward_ns.is_some()
    }

    /// Maps a transport error (connect, timeout, broken body) to an [`UpstreamError`].
    fn transport(&self, e: reqwest::Error) -> UpstreamError {
        if e.is_timeout() {
            UpstreamError::Timeout {
                upstream: self.name.clone(),
            }
        } else {
            UpstreamError::Unreachable {
                upstream: self.name.clone(),
                source: e,
            }
        }
    }

    fn protocol(&self, reason: String) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            reason,
        }
    }

    fn auth_error(&self, source: AuthError) -> UpstreamError {
        UpstreamError::Auth {
            upstream: self.name.clone(),
            source,
        }
    }

    /// Turns a shared (coalesced) token error back into an owned one.
    fn shared_error(&self, e: &UpstreamError) -> UpstreamError {
        match e {
            UpstreamError::Unreachable { upstream, .. } => UpstreamError::Protocol {
                upstream: upstream.clone(),
                reason: "token realm is unreachable".into(),
            },
            UpstreamError::Timeout { upstream } => UpstreamError::Timeout {
                upstream: upstream.clone(),
            },
            UpstreamError::Status {
                upstream,
                status,
                code,
                retry_after,
            } => UpstreamError::Status {
                upstream: upstream.clone(),
                status: *status,
                code: *code,
                retry_after: retry_after.clone(),
            },
            UpstreamError::Auth { upstream, source } => UpstreamError::Auth {
                upstream: upstream.clone(),
                source: source.clone(),
            },
            UpstreamError::Offline { upstream } => UpstreamError::Offline {
                upstream: upstream.clone(),
            },
            UpstreamError::Busy { upstream } => UpstreamError::Busy {
                upstream: upstream.clone(),
            },
            UpstreamError::Protocol { upstream, reason } => UpstreamError::Protocol {
                upstream: upstream.clone(),
                reason: reason.clone(),
            },
            UpstreamError::Credentials { upstream, source } => UpstreamError::Credentials {
                upstream: upstream.clone(),
                source: source.clone(),
            },
        }
    }

    fn credential_error(&self, source: CredentialError) -> UpstreamError {
        UpstreamError::Credentials {
            upstream: self.name.clone(),
            source,
        }
    }
}

/// Why a body could not be read whole.
enum ReadError {
    /// It is longer than the limit.
    TooLarge,
    /// The transport failed (or timed out) under it.
    Transport(reqwest::Error),
}

/// The OAuth2 refresh-token grant Docker sends to a token realm for an identity token
/// (distribution `docs/spec/auth/oauth.md`): a POST to the realm without its query, whose form
/// carries the query's `service` and `scope`s, `grant_type=refresh_token`, `client_id` and the
/// token.
fn refresh_token_form(token_url: &Url, refresh_token: &str) -> (Url, String) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in token_url.query_pairs() {
        if k == "service" || k == "scope" {
            form.append_pair(&k, &v);
        }
    }
    form.append_pair("grant_type", "refresh_token");
    form.append_pair("client_id", "wharf");
    form.append_pair("refresh_token", refresh_token);
    let mut realm = token_url.clone();
    realm.set_query(None);
    (realm, form.finish())
}

/// The Basic `Authorization` for a credential, with the credential; nothing when it is none or
/// anonymous.
fn basic_from(held: Option<Arc<Held>>) -> (Option<HeaderValue>, Option<Arc<Held>>) {
    match held {
        Some(h) => match &h.creds {
            Some(creds) => (Some(auth::basic_header(creds)), Some(h.clone())),
            None => (None, None),
        },
        None => (None, None),
    }
}

// === impl Origin ===

impl Origin {
    /// Whether the URL is skipped at `now` after a failure.
    fn backed_off(&self, now: Instant) -> bool {
        self.down_until.lock().is_some_and(|until| until > now)
    }

    /// Skips the URL for `wait` after a failure.
    fn back_off(&self, upstream: &str, wait: Duration) {
        let mut until = self.down_until.lock();
        let now = Instant::now();
        if until.is_none_or(|u| u <= now) {
            warn!(upstream = %upstream, url = %self.base, backoff_s = wait.as_secs(), "upstream URL failed; trying the next ones first until the back-off passes");
        }
        *until = Some(now + wait);
    }

    /// The URL answered: it is tried in its place again.
    fn answered(&self, upstream: &str) {
        let mut until = self.down_until.lock();
        if until.take().is_some() {
            debug!(upstream = %upstream, url = %self.base, "upstream URL answers again");
        }
    }
}

/// The URL of `path_and_query` (`/v2/...`, with an optional query) at `base`, with `ns=<ns>`
/// (form-encoded) added to whatever query the path already has when the upstream is another
/// wharf.
fn request_url(base: &Url, path_and_query: &str, ns: Option<&str>) -> Result<Url, url::ParseError> {
    let mut url = base.join(path_and_query)?;
    if let Some(ns) = ns {
        url.query_pairs_mut().append_pair("ns", ns);
    }
    Ok(url)
}

/// Whether an error body is another wharf's refusal of `?ns=<ns>` as a registry it does not have
/// (`NAME_UNKNOWN`, `registry "<ns>" is not configured on this mirror`, as its router words it),
/// rather than a registry's "no such repository" relayed.
fn names_unknown_registry(body: &[u8], ns: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Wire {
        errors: Vec<WireInfo>,
    }
    #[derive(serde::Deserialize)]
    struct WireInfo {
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(wire) = serde_json::from_slice::<Wire>(body) else {
        return false;
    };
    let refusal = format!("registry {ns:?} is not configured");
    wire.errors
        .first()
        .is_some_and(|e| e.code == "NAME_UNKNOWN" && e.message.starts_with(&refusal))
}

async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            break;
        }
    }
    body
}

/// The leading number of a `RateLimit-*` value (`100;w=21600` → 100).
fn rate_limit_value(value: Option<&HeaderValue>) -> Option<u64> {
    let text = value?.to_str().ok()?;
    text.split(';').next()?.trim().parse().ok()
}

/// The longest back-off a `Retry-After` can impose, whatever it says.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The back-off after a 429 without a usable `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// How long a `Retry-After` (seconds, or an HTTP date) asks to wait.
pub fn retry_after(value: Option<&HeaderValue>, now: SystemTime) -> Duration {
    let Some(text) = value.and_then(|v| v.to_str().ok()).map(str::trim) else {
        return DEFAULT_BACKOFF;
    };
    let wait = if let Ok(secs) = text.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(at) = httpdate::parse_http_date(text) {
        at.duration_since(now).unwrap_or_default()
    } else {
        DEFAULT_BACKOFF
    };
    wait.min(MAX_BACKOFF)
}

// === impl Health ===

impl Health {
    /// Records the outcome of a request sent at `now` (Unix seconds).
    pub fn record(&self, result: &Result<reqwest::Response, reqwest::Error>, now: u64) {
        let failure = match result {
            Ok(response) => {
                self.reachable.store(1, Ordering::Relaxed);
                self.last_ok.store(now, Ordering::Relaxed);
                let status = response.status();
                (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                    .then(|| format!("answered {status}"))
            }
            Err(error) => {
                self.reachable.store(2, Ordering::Relaxed);
                // Never the error's text: it carries the URL.
                Some(if error.is_timeout() {
                    "no response: timed out".to_owned()
                } else if error.is_connect() {
                    "no response: cannot connect".to_owned()
                } else {
                    "no response: the connection failed".to_owned()
                })
            }
        };
        if let Some(failure) = failure {
            *self.last_error.lock() = Some((failure, now));
        }
    }

    /// What it holds now.
    pub fn report(&self) -> HealthReport {
        let (last_error, last_error_at) = self
            .last_error
            .lock()
            .clone()
            .map_or((None, None), |(e, at)| (Some(e), Some(at)));
        HealthReport {
            reachable: match self.reachable.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n == 1),
            },
            last_ok: Some(self.last_ok.load(Ordering::Relaxed)).filter(|t| *t > 0),
            last_error,
            last_error_at,
        }
    }
}

// === impl Backoff ===

impl Backoff {
    /// Starts (or extends) a back-off of `wait` from `now`.
    pub fn start(&self, now: Instant, wait: Duration) {
        let until = now + wait;
        let mut current = self.until.lock();
        if current.is_none_or(|u| u < until) {
            *current = Some(until);
        }
    }

    /// How much of the back-off is left at `now`, if any.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let mut current = self.until.lock();
        match *current {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                *current = None;
                None
            }
            None => None,
        }
    }
}

struct TokenExpiry;

impl moka::Expiry<String, Arc<Token>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        token: &Arc<Token>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            token
                .expires_in
                .saturating_sub(TOKEN_MARGIN)
                .max(Duration::from_secs(1)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_holds_until_it_passes() {
        let b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.remaining(t0), None);
        b.start(t0, Duration::from_secs(7));
        assert_eq!(b.remaining(t0), Some(Duration::from_secs(7)));
        assert_eq!(
            b.remaining(t0 + Duration::from_secs(5)),
            Some(Duration::from_secs(2))
        );
        // A shorter back-off does not shorten a longer one.
        b.start(t0, Duration::from_secs(1));
        assert_eq!(
            b.remaining(t0 + Duration::from_secs(5)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(b.remaining(t0 + Duration::from_secs(7)), None);
        assert_eq!(b.remaining(t0 + Duration::from_secs(8)), None);
    }

    #[test]
    fn retry_after_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let cases: Vec<(Option<&str>, Duration)> = vec![
            (Some("7"), Duration::from_secs(7)),
            (Some(" 0 "), Duration::ZERO),
            (Some(&date), Duration::from_secs(90)),
            (Some("99999999"), MAX_BACKOFF),
            (Some("soon"), DEFAULT_BACKOFF),
            (None, DEFAULT_BACKOFF),
        ];
        for (value, want) in cases {
            let header = value.map(|v| HeaderValue::from_str(v).unwrap());
            assert_eq!(retry_after(header.as_ref(), now), want, "{value:?}");
        }
    }

    #[test]
    fn request_urls_carry_ns_when_forwarding() {
        let base: Url = "https://regional.example:5000".parse().unwrap();
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let manifest = "/v2/org/app/manifests/1.0";
        let blob = format!("/v2/library/nginx/blobs/{d}");
        let referrers = format!("/v2/org/app/referrers/{d}");
        let cases: Vec<(&str, Option<&str>, String)> = vec![
            (
                manifest,
                None,
                format!("https://regional.example:5000{manifest}"),
            ),
            (
                manifest,
                Some("reg-b"),
                format!("https://regional.example:5000{manifest}?ns=reg-b"),
            ),
            (
                &blob,
                Some("localhost:5001"),
                format!("https://regional.example:5000{blob}?ns=localhost%3A5001"),
            ),
            (
                "/v2/org/app/tags/list?n=2&last=b",
                Some("docker.io"),
                "https://regional.example:5000/v2/org/app/tags/list?n=2&last=b&ns=docker.io".into(),
            ),
            (
                "/v2/org/app/tags/list?n=2",
                None,
                "https://regional.example:5000/v2/org/app/tags/list?n=2".into(),
            ),
            (
                &referrers,
                Some("ghcr.io"),
                format!("https://regional.example:5000/v2/org/app/referrers/{d}?ns=ghcr.io"),
            ),
        ];
        for (path, ns, want) in cases {
            let url = request_url(&base, path, ns).unwrap();
            assert_eq!(url.as_str(), want, "{path} {ns:?}");
        }
        // The other wharf reads back exactly the name sent.
        let url = request_url(&base, manifest, Some("a-b.io:5001")).unwrap();
        let ns: Vec<_> = url.query_pairs().filter(|(k, _)| k == "ns").collect();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].1, "a-b.io:5001");
    }

    #[test]
    fn unknown_registry_refusals() {
        let refusal =
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"registry \"reg-b\" is not configured on this mirror"}]}"#;
        assert!(names_unknown_registry(refusal, "reg-b"));
        assert!(!names_unknown_registry(refusal, "reg-a"));
        for body in [
            &br#"{"errors":[{"code":"NAME_UNKNOWN","message":"not found at upstream reg-b"}]}"#[..],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"registry \"reg-b\" is not configured on this mirror"}]}"#,
            br#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#,
            br#"{"errors":[]}"#,
            b"",
            b"<html>",
        ] {
            assert!(
                !names_unknown_registry(body, "reg-b"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn identity_tokens_are_exchanged_by_a_refresh_token_grant() {
        let url: Url = "https://auth.example/token?service=reg&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull"
            .parse()
            .unwrap();
        let (realm, form) = refresh_token_form(&url, "rt/+=");
        assert_eq!(realm.as_str(), "https://auth.example/token");
        assert_eq!(
            form,
            "service=reg&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull&grant_type=refresh_token&client_id=wharf&refresh_token=rt%2F%2B%3D"
        );
    }

    #[test]
    fn rate_limit_values() {
        for (value, want) in [("100;w=21600", Some(100)), ("76", Some(76)), ("x", None)] {
            assert_eq!(
                rate_limit_value(Some(&HeaderValue::from_static(value))),
                want,
                "{value}"
            );
        }
    }
}
