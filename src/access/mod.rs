//! Client access control: who may use the mirror ([`htpasswd`] Basic auth) and what they may pull
//! through it ([`allow`] lists per upstream).
//!
//! Without `[auth] htpasswd` the mirror is open for reading, as a registry mirror usually is. With
//! it, every request needs HTTP Basic credentials from the file; anything else gets `401
//! UNAUTHORIZED` with `WWW-Authenticate: Basic realm="wharf"`, which is how `docker login` and
//! containerd's `hosts.toml` credentials are asked for.
//!
//! bcrypt is slow on purpose (milliseconds to a second of CPU per check), and a pull sends dozens of
//! requests with the same credentials, so a successful check is remembered for
//! [`VERIFIED_TTL`], keyed by an HMAC of user and password under a key made at start (the
//! password itself is never kept). Concurrent checks of the same credentials share one bcrypt run,
//! and checks run on the blocking pool, so a flood of bad passwords cannot take the runtime's
//! workers. [`throttle`] backs off addresses and user names after a few failed checks (`429
//! TOOMANYREQUESTS` with `Retry-After`, without running bcrypt) and picks the bcrypt workers a check
//! runs on: one per CPU for addresses where someone logged in lately, one per CPU for clean
//! addresses, and one for addresses and users that failed lately, so guesses cannot queue in front
//! of a real user's login. Failed attempts are logged at warn with the client's address
//! and the user name, never the password, at most once a minute per client and user (with the
//! number of attempts) and a few dozen lines a minute in all; `wharf_client_auth_failures_total`
//! counts every one. The start of each back-off is logged too.

pub mod allow;
pub mod htpasswd;
pub mod throttle;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use parking_lot::{Mutex, RwLock};
use throttle::{addr_key, Before, Pool, Throttle};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::reload::Reloadable;
use allow::AllowList;
use htpasswd::Htpasswd;

/// How long a successful credential check is remembered.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// The access rules of a running mirror.
pub struct Access {
    basic: Option<Arc<BasicAuth>>,
    /// By upstream index; `None` allows every repository.
    allow: Vec<Option<AllowList>>,
}

/// Why a request is turned away before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials (the usual first step of a client's login).
    Missing,
    /// Credentials that are malformed or wrong.
    Wrong,
    /// Too many failed attempts from the client's address or for the user: try again after
    /// `retry_after` (the credentials were not checked).
    Throttled {
        /// How long until the back-off ends.
        retry_after: Duration,
    },
}

/// HTTP Basic authentication against an htpasswd file.
pub struct BasicAuth {
    file: PathBuf,
    users: RwLock<Arc<Htpasswd>>,
    /// Bumped by every reload: a check that started before it cannot be remembered after it.
    generation: AtomicU64,
    verified: moka::future::Cache<(u64, [u8; 32]), ()>,
    key: ring::hmac::Key,
    /// bcrypt workers for clean addresses: one per CPU.
    slots: Arc<Semaphore>,
    /// bcrypt workers for trusted addresses (someone logged in there lately): one per CPU.
    trusted_slots: Arc<Semaphore>,
    /// bcrypt workers for addresses and users that failed lately.
    suspect_slots: Arc<Semaphore>,
    throttle: Arc<Throttle>,
    failures: FailureLog,
    metrics: Arc<Metrics>,
}

/// Rate-limits the log lines of failed attempts.
#[derive(Default)]
pub struct FailureLog {
    state: Mutex<FailureState>,
}

#[derive(Default)]
struct FailureState {
    window_start: Option<Instant>,
    lines: usize,
    told_suppressed: bool,
    by_client: HashMap<(Option<IpAddr>, String), Attempts>,
}

struct Attempts {
    /// When this client and user last got a line (`None`: never).
    last_line: Option<Instant>,
    /// Attempts since that line.
    unlogged: u64,
}

/// A failed attempt that is to be logged: how many attempts the line stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLine {
    /// Log one line for this client and user, counting `attempts` since its last line.
    Log {
        /// Attempts since the last line for this client and user, this one included.
        attempts: u64,
    },
    /// The first attempt over the global budget this minute: say that more are not logged.
    Suppressing,
    /// Nothing to log.
    Quiet,
}

/// How long one client-and-user pair stays quiet after a line.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Lines per [`FAILURE_WINDOW`] for all clients together.
const FAILURE_LINES: usize = 30;
/// Client-and-user pairs remembered; beyond that, attempts are only counted in the metric.
const FAILURE_KEYS: usize = 10_000;
/// The longest user name logged (it is whatever the client sent).
const MAX_LOGGED_USER: usize = crate::limits::AUTH_MAX_USER;

/// Why a credential check did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckFailed {
    Wrong,
    Throttled(Duration),
}

// === impl Access ===

impl Access {
    /// The rules in `config`, with the htpasswd file read again (it was checked when the
    /// configuration was loaded).
    ///
    /// # Errors
    /// When the htpasswd file can no longer be read or parsed.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        let basic = match &config.auth.htpasswd {
            Some(file) => Some(Arc::new(BasicAuth::open(file, metrics)?)),
            None => None,
        };
        Ok(Self {
            basic,
            allow: config.upstreams.iter().map(|u| u.allow.clone()).collect(),
        })
    }

    /// The rules in `config`, for a configuration reload: the allow lists are `config`'s; the
    /// htpasswd file's users, remembered checks and back-offs are kept when `config` names the
    /// same file (the file watch reloads its contents), and read afresh when it names another.
    ///
    /// # Errors
    /// When a newly named htpasswd file cannot be read or parsed.
    pub fn with_config(&self, config: &Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        let basic = match (&config.auth.htpasswd, &self.basic) {
            (None, _) => None,
            (Some(file), Some(basic)) if basic.file == *file => Some(basic.clone()),
            (Some(file), _) => Some(Arc::new(BasicAuth::open(file, metrics)?)),
        };
        Ok(Self {
            basic,
            allow: config.upstreams.iter().map(|u| u.allow.clone()).collect(),
        })
    }

    /// Whether requests need credentials.
    pub fn requires_auth(&self) -> bool {
        self.basic.is_some()
    }

    /// The htpasswd file, to reload with the TLS certificate.
    pub fn reloadable(&self) -> Option<Arc<dyn Reloadable>> {
        self.basic.clone().map(|b| b as Arc<dyn Reloadable>)
    }

    /// Checks the request's credentials, when the mirror requires them.
    ///
    /// # Errors
    /// The [`Refusal`], once the attempt is logged and counted.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Result<(), Refusal> {
        match &self.basic {
            None => Ok(()),
            Some(basic) => basic.authenticate(headers, client).await,
        }
    }

    /// Whether clients may pull `name` (the repository name at the upstream) from upstream
    /// number `upstream`.
    pub fn allows(&self, upstream: usize, name: &str) -> bool {
        self.allow
            .get(upstream)
            .and_then(Option::as_ref)
            .is_none_or(|list| list.allows(name))
    }
}

// === impl BasicAuth ===

impl BasicAuth {
    /// Reads `file`.
    ///
    /// # Errors
    /// When it cannot be read or parsed.
    pub fn open(file: &Path, metrics: Arc<Metrics>) -> Result<Self, String> {
        let users = read_htpasswd(file)?;
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| "cannot get random bytes for the credential cache key".to_owned())?;
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Self {
            file: file.to_owned(),
            users: RwLock::new(Arc::new(users)),
            generation: AtomicU64::new(0),
            verified: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
            key,
            slots: Arc::new(Semaphore::new(cpus)),
            trusted_slots: Arc::new(Semaphore::new(cpus)),
            suspect_slots: Arc::new(Semaphore::new(crate::limits::AUTH_SUSPECT_CHECKS)),
            throttle: Arc::new(Throttle::default()),
            failures: FailureLog::default(),
            metrics,
        })
    }

    async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Result<(), Refusal> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(Refusal::Missing);
        };
        let ip = client.map(|c| c.ip());
        let addr = addr_key(ip);
        let Some((user, password)) = basic_credentials(value.as_bytes()) else {
            let now = Instant::now();
            if let Some(retry_after) = self.throttle.addr_blocked(addr, now) {
                return Err(Refusal::Throttled { retry_after });
            }
            let started = self.throttle.failed_unchecked(addr, now);
            if let Some(wait) = started {
                warn!(
                    client = %client_text(ip),
                    retry_after_s = wait.as_secs(),
                    "client authentication backed off after repeated malformed credentials"
                );
            }
            self.failed(client, "-");
            return Err(Refusal::Wrong);
        };
        let generation = self.generation.load(Ordering::Acquire);
        let tag = {
            let mut ctx = ring::hmac::Context::with_key(&self.key);
            ctx.update(user.as_bytes());
            ctx.update(&[0]);
            ctx.update(&password);
            let mut tag = [0u8; 32];
            tag.copy_from_slice(ctx.sign().as_ref());
            tag
        };
        let remembered = self.verified.contains_key(&(generation, tag));
        match self
            .throttle
            .before(addr, &user, remembered, Instant::now())
        {
            Before::Pass => return Ok(()),
            Before::Wait(retry_after) => return Err(Refusal::Throttled { retry_after }),
            Before::Check => {}
        }
        let users = self.users.read().clone();
        let throttle = self.throttle.clone();
        let pools = [
            self.trusted_slots.clone(),
            self.slots.clone(),
            self.suspect_slots.clone(),
        ];
        let name = user.clone();
        let logged_user: String = user.chars().take(MAX_LOGGED_USER).collect();
        // Concurrent requests with the same credentials share this check (and its place among the
        // checks its address and user may run); only success is kept.
        let checked = self
            .verified
            .try_get_with((generation, tag), async move {
                let ticket = throttle
                    .admit(addr, &name, Instant::now())
                    .map_err(CheckFailed::Throttled)?;
                let [trusted, clean, suspect] = pools;
                let slots = match ticket.pool() {
                    Pool::Trusted => trusted,
                    Pool::Clean => clean,
                    Pool::Suspect => suspect,
                };
                let _slot = slots
                    .acquire_owned()
                    .await
                    .map_err(|_| CheckFailed::Wrong)?;
                let ok = tokio::task::spawn_blocking(move || users.verify(&name, &password))
                    .await
                    .unwrap_or(false);
                if ok {
                    ticket.finish(true, addr, Instant::now());
                    return Ok(());
                }
                if let Some(wait) = ticket.finish(false, addr, Instant::now()) {
                    warn!(
                        client = %client_text(ip),
                        user = ?logged_user,
                        retry_after_s = wait.as_secs(),
                        "client authentication backed off after repeated failures"
                    );
                }
                Err(CheckFailed::Wrong)
            })
            .await;
        match checked {
            Ok(()) => Ok(()),
            Err(e) => match *e {
                CheckFailed::Throttled(retry_after) => Err(Refusal::Throttled { retry_after }),
                CheckFailed::Wrong => {
                    self.failed(client, &user);
                    Err(Refusal::Wrong)
                }
            },
        }
    }

    fn failed(&self, client: Option<SocketAddr>, user: &str) {
        self.metrics.client_auth_failures.inc();
        let ip = client.map(|c| c.ip());
        let user: String = user.chars().take(MAX_LOGGED_USER).collect();
        match self.failures.record(ip, &user, Instant::now()) {
            FailureLine::Log { attempts } => {
                warn!(client = %client_text(ip), user = ?user, attempts, "client authentication failed");
            }
            FailureLine::Suppressing => warn!(
                "more failed client authentications this minute are counted in wharf_client_auth_failures_total but not logged"
            ),
            FailureLine::Quiet => {}
        }
    }
}

impl Reloadable for BasicAuth {
    fn what(&self) -> &'static str {
        "htpasswd"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.file.clone()]
    }

    fn reload(&self) -> Result<(), String> {
        let users = read_htpasswd(&self.file)?;
        *self.users.write() = Arc::new(users);
        self.generation.fetch_add(1, Ordering::AcqRel);
        // A removed user or changed password must not stay valid for the rest of the TTL.
        self.verified.invalidate_all();
        Ok(())
    }
}

/// A client address for the log (`-` when there is none).
fn client_text(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string())
}

fn read_htpasswd(file: &Path) -> Result<Htpasswd, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {} ({e})", file.display()))?;
    htpasswd::parse(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// `Basic base64(user:password)` → the user and the password bytes.
fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

// === impl FailureLog ===

impl FailureLog {
    /// Records a failed attempt by `user` from `ip` at `now`, and says what to log.
    pub fn record(&self, ip: Option<IpAddr>, user: &str, now: Instant) -> FailureLine {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        if s.window_start
            .is_none_or(|w| now.duration_since(w) >= FAILURE_WINDOW)
        {
            s.window_start = Some(now);
            s.lines = 0;
            s.told_suppressed = false;
        }
        let key = (ip, user.to_owned());
        if !s.by_client.contains_key(&key) && s.by_client.len() >= FAILURE_KEYS {
            s.by_client.retain(|_, a| {
                a.last_line
                    .is_some_and(|t| now.duration_since(t) < FAILURE_WINDOW)
            });
        }
        let over_budget = s.lines >= FAILURE_LINES;
        let room = s.by_client.len() < FAILURE_KEYS;
        let attempts = match s.by_client.get_mut(&key) {
            Some(a) => a,
            None if room => s.by_client.entry(key).or_insert(Attempts {
                last_line: None,
                unlogged: 0,
            }),
            // No room to remember it: the metric still counts it.
            None if over_budget => return FailureLine::Quiet,
            None => {
                s.lines += 1;
                return FailureLine::Log { attempts: 1 };
            }
        };
        let due = attempts
            .last_line
            .is_none_or(|t| now.duration_since(t) >= FAILURE_WINDOW);
        if !due || over_budget {
            attempts.unlogged += 1;
            if !due || s.told_suppressed {
                return FailureLine::Quiet;
            }
            s.told_suppressed = true;
            return FailureLine::Suppressing;
        }
        let n = attempts.unlogged + 1;
        attempts.unlogged = 0;
        attempts.last_line = Some(now);
        s.lines += 1;
        FailureLine::Log { attempts: n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        type Case = (String, Option<(&'static str, &'static [u8])>);
        let cases: Vec<Case> = vec![
            (format!("Basic {}", b64("alice:pw")), Some(("alice", b"pw"))),
            (
                format!("basic {}", b64("alice:p:w")),
                Some(("alice", b"p:w")),
            ),
            (format!("Basic {}", b64("alice:")), Some(("alice", b""))),
            (format!("Basic {}", b64("alice")), None),
            (format!("Bearer {}", b64("alice:pw")), None),
            ("Basic !!!".into(), None),
            ("Basic".into(), None),
        ];
        for (header, want) in cases {
            let got = basic_credentials(header.as_bytes());
            assert_eq!(
                got.as_ref().map(|(u, p)| (u.as_str(), p.as_slice())),
                want,
                "{header}"
            );
        }
    }

    #[test]
    fn failure_lines_are_rate_limited_per_client_and_overall() {
        let log = FailureLog::default();
        let t0 = Instant::now();
        let ip: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        assert_eq!(log.record(ip, "bob", t0), FailureLine::Log { attempts: 1 });
        for i in 1..=9 {
            assert_eq!(
                log.record(ip, "bob", t0 + Duration::from_secs(i)),
                FailureLine::Quiet
            );
        }
        // A minute after the last line: one line standing for the ten attempts since.
        assert_eq!(
            log.record(ip, "bob", t0 + FAILURE_WINDOW),
            FailureLine::Log { attempts: 10 }
        );
        // Another user from the same client is another line.
        assert_eq!(
            log.record(ip, "eve", t0 + FAILURE_WINDOW),
            FailureLine::Log { attempts: 1 }
        );

        // Many clients: FAILURE_LINES lines, one notice, then silence until the next window.
        let log = FailureLog::default();
        let mut lines = 0;
        let mut notices = 0;
        for i in 0..200u32 {
            let ip = Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]));
            match log.record(ip, "root", t0) {
                FailureLine::Log { .. } => lines += 1,
                FailureLine::Suppressing => notices += 1,
                FailureLine::Quiet => {}
            }
        }
        assert_eq!((lines, notices), (FAILURE_LINES, 1));
        let later = t0 + FAILURE_WINDOW;
        assert_eq!(
            log.record(Some(IpAddr::from([10, 0, 0, 199])), "root", later),
            FailureLine::Log { attempts: 2 },
            "an attempt that was not logged is counted in the client's next line"
        );
    }
}
