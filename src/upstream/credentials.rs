//! Where an upstream's credentials come from, and when they are fetched again: fixed
//! (`password_env`), a `password_file` read again when it changes, a Docker credential helper run
//! again when its credential is `credential_ttl` old or refused, or Docker's `config.json` /
//! Podman's `auth.json` (`auth_file`), read again when it changes and resolving to one of those.
//!
//! The state lives in the upstream's client (one [`CredentialStore`] per [`super::Upstream`]), never
//! in a global, so an upstream rebuilt with the same configuration can be handed the same store.
//!
//! A credential helper speaks the `docker-credential-helpers` protocol
//! (<https://github.com/docker/docker-credential-helpers>, `client/client.go`): `get` as the only
//! argument, the server on standard input, and on success `{"ServerURL","Username","Secret"}` on
//! standard output; on failure a non-zero exit with the message on standard output, where
//! `credentials not found in native keychain` means "no credentials: pull anonymously", as Docker
//! treats it. The helper runs with wharf's environment (the ECR helper needs `AWS_*`, the ACR one
//! `AZURE_*`), at most `credential_timeout` (then it is killed, as it is when the request that ran
//! it goes away), with its output capped at [`MAX_HELPER_OUTPUT`]. Its standard error is logged as
//! one bounded line; what it prints on standard output never is.
//!
//! Runs of one upstream's helper never overlap: callers queue on one lock and those that waited
//! take the result of the run before them (single flight). A run that fails is not repeated for
//! [`RETRY_AFTER_FAILURE`]: the requests in between get its error (or, when the credential in hand
//! is only older than the TTL, that credential), so a broken helper is not run in a loop. A
//! credential the registry refuses is fetched again at once when it had worked before (it
//! rotated), but a fresh one that never worked is not fetched again until
//! [`RETRY_AFTER_FAILURE`] has passed since the last run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{
    resolve_docker_auth, CredentialHelper, CredentialSource, DockerAuth, UpstreamConfig,
};
use crate::limits::MAX_CREDENTIAL_FILE;
use crate::reload::Reloadable;
use crate::secret::{Credentials, Secret};

/// How long after a failed helper run (or a refused credential that never worked) the helper is
/// not run again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The most a helper may print on standard output or standard error.
pub const MAX_HELPER_OUTPUT: usize = 64 * 1024;

/// The most of a helper's standard error (or failure message) kept for the log and the error.
const MAX_MESSAGE: usize = 300;

/// What the Docker helpers print when they hold nothing for the server
/// (`credentials.ErrCredentialsNotFound`).
const NOT_FOUND_MESSAGE: &str = "credentials not found";

/// A credential as fetched: the credentials (none: anonymous, from a helper that holds nothing for
/// the registry), when, and whether the registry ever accepted them.
#[derive(Debug)]
pub struct Held {
    /// The credentials; `None` for anonymous.
    pub creds: Option<Credentials>,
    fetched: Instant,
    proven: AtomicBool,
}

/// Why no credential could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The helper's program does not exist.
    #[error("credential helper {helper} was not found (install docker-credential-{helper} on wharf's PATH, or give credential_helper as an absolute path)")]
    NotFound {
        /// The helper as configured.
        helper: String,
    },
    /// The helper ran past `credential_timeout` and was killed.
    #[error("credential helper {helper} did not answer within {secs} s and was stopped")]
    TimedOut {
        /// The helper as configured.
        helper: String,
        /// The timeout.
        secs: u64,
    },
    /// The helper could not be started, or exited with an error.
    #[error("credential helper {helper} failed: {reason}")]
    Failed {
        /// The helper as configured.
        helper: String,
        /// Its exit status and first line of output (the protocol's error message).
        reason: String,
    },
    /// The helper exited successfully but printed no usable credential.
    #[error("credential helper {helper} printed no usable credential: {reason}")]
    BadOutput {
        /// The helper as configured.
        helper: String,
        /// What is wrong with the output (never the output itself).
        reason: &'static str,
    },
    /// A credential file (`password_file`, `auth_file`) cannot be used.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong (never its contents).
        reason: String,
    },
}

// === impl CredentialError ===

impl CredentialError {
    /// The error in words for a client of the mirror: the helper or file and what happened, but
    /// not what the helper printed (that goes to the log only).
    pub fn public_message(&self) -> String {
        match self {
            Self::Failed { helper, .. } => {
                format!("credential helper {helper} failed; the mirror's log says why")
            }
            Self::File { path, .. } => {
                format!("credential file {path} cannot be used; the mirror's log says why")
            }
            other => other.to_string(),
        }
    }
}

/// Runs a helper once.
type Run =
    Box<dyn Fn() -> BoxFuture<'static, Result<Option<Credentials>, CredentialError>> + Send + Sync>;

/// One upstream's credentials.
pub struct CredentialStore {
    upstream: String,
    kind: Kind,
}

enum Kind {
    Fixed(Option<Arc<Held>>),
    File(FileSource),
    Helper(HelperSource),
    AuthFile(AuthFileSource),
}

struct FileSource {
    username: String,
    path: PathBuf,
    held: RwLock<Arc<Held>>,
}

/// A helper and the credential it last handed out.
pub struct HelperSource {
    upstream: String,
    helper: String,
    ttl: Duration,
    run: Run,
    state: Mutex<HelperState>,
    flight: tokio::sync::Mutex<()>,
    runs: AtomicU64,
}

#[derive(Default)]
struct HelperState {
    held: Option<Arc<Held>>,
    failure: Option<(Instant, CredentialError)>,
    last_run: Option<Instant>,
}

struct AuthFileSource {
    path: PathBuf,
    host: String,
    ttl: Duration,
    timeout: Duration,
    upstream: String,
    current: RwLock<(Option<DockerAuth>, AuthFrom)>,
}

#[derive(Clone)]
enum AuthFrom {
    Held(Arc<Held>),
    Helper(Arc<HelperSource>),
}

// === impl Held ===

impl Held {
    /// A credential fetched now.
    pub fn new(creds: Option<Credentials>) -> Self {
        Self {
            creds,
            fetched: Instant::now(),
            proven: AtomicBool::new(false),
        }
    }

    /// Records that the registry (or its token realm) accepted it.
    pub fn worked(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }
}

// === impl CredentialStore ===

impl CredentialStore {
    /// The credentials of `config`, as its `credentials` and `credential_source` say.
    pub fn new(config: &UpstreamConfig) -> Self {
        let upstream = config.name.clone();
        let fixed = || {
            Kind::Fixed(
                config
                    .credentials
                    .clone()
                    .map(|c| Arc::new(Held::new(Some(c)))),
            )
        };
        let kind = match &config.credential_source {
            None => fixed(),
            Some(CredentialSource::PasswordFile { username, path }) => match &config.credentials {
                Some(c) => Kind::File(FileSource {
                    username: username.clone(),
                    path: path.clone(),
                    held: RwLock::new(Arc::new(Held::new(Some(c.clone())))),
                }),
                None => fixed(),
            },
            Some(CredentialSource::Helper(helper)) => Kind::Helper(HelperSource::new(
                &upstream,
                helper,
                config.credential_ttl,
                config.credential_timeout,
            )),
            Some(CredentialSource::AuthFile { path, host, entry }) => {
                let source = AuthFileSource {
                    path: path.clone(),
                    host: host.clone(),
                    ttl: config.credential_ttl,
                    timeout: config.credential_timeout,
                    upstream: upstream.clone(),
                    current: RwLock::new((None, AuthFrom::Held(Arc::new(Held::new(None))))),
                };
                if let Some(entry) = entry {
                    source.install(entry.clone());
                }
                Kind::AuthFile(source)
            }
        };
        Self { upstream, kind }
    }

    /// Whether there may be credentials at all (a token realm's policy depends on it).
    pub fn configured(&self) -> bool {
        !matches!(self.kind, Kind::Fixed(None))
    }

    /// The credential to use now: fetched first when there is none yet or it is older than the
    /// TTL (a helper). `None` for an upstream without credentials.
    ///
    /// # Errors
    /// When a helper fails (or failed less than [`RETRY_AFTER_FAILURE`] ago) and no credential is
    /// in hand.
    pub async fn current(&self) -> Result<Option<Arc<Held>>, CredentialError> {
        match &self.kind {
            Kind::Fixed(held) => Ok(held.clone()),
            Kind::File(f) => Ok(Some(f.held.read().clone())),
            Kind::Helper(h) => h.current().await.map(Some),
            Kind::AuthFile(a) => match a.from() {
                AuthFrom::Held(h) => Ok(Some(h)),
                AuthFrom::Helper(h) => h.current().await.map(Some),
            },
        }
    }

    /// `held` was refused (a 401 from the registry or its token realm): a newer credential to
    /// retry with, or `None` when there is none (the refusal stands). A file is read again; a
    /// helper is run again (see the module docs for when it is not).
    ///
    /// # Errors
    /// When the helper fails, or a changed file cannot be used.
    pub async fn refused(&self, held: &Arc<Held>) -> Result<Option<Arc<Held>>, CredentialError> {
        match &self.kind {
            Kind::Fixed(_) => Ok(None),
            Kind::File(f) => {
                let path = f.path.clone();
                let read = tokio::task::spawn_blocking(move || read_password_file(&path))
                    .await
                    .unwrap_or_else(|_| {
                        Err(CredentialError::File {
                            path: f.path.display().to_string(),
                            reason: "the read was cancelled".into(),
                        })
                    })?;
                Ok(f.replace(read, &self.upstream)
                    .filter(|h| !Arc::ptr_eq(h, held)))
            }
            Kind::Helper(h) => h.refresh(Some(held)).await,
            Kind::AuthFile(a) => {
                let path = a.path.clone();
                let host = a.host.clone();
                let read = tokio::task::spawn_blocking(move || read_auth_file(&path, &host))
                    .await
                    .unwrap_or_else(|_| {
                        Err(CredentialError::File {
                            path: a.path.display().to_string(),
                            reason: "the read was cancelled".into(),
                        })
                    })?;
                a.install(read);
                match a.from() {
                    AuthFrom::Held(h) => Ok((!Arc::ptr_eq(&h, held)).then_some(h)),
                    AuthFrom::Helper(h) => h.refresh(Some(held)).await,
                }
            }
        }
    }

    /// How many times the helper was run (the one of `auth_file` included).
    pub fn helper_runs(&self) -> u64 {
        match &self.kind {
            Kind::Helper(h) => h.runs.load(Ordering::Relaxed),
            Kind::AuthFile(a) => match a.from() {
                AuthFrom::Helper(h) => h.runs.load(Ordering::Relaxed),
                AuthFrom::Held(_) => 0,
            },
            _ => 0,
        }
    }

    /// Whether the store watches a file (`password_file`, `auth_file`): then it is a
    /// [`Reloadable`] for the reloader.
    pub fn watches_files(&self) -> bool {
        matches!(self.kind, Kind::File(_) | Kind::AuthFile(_))
    }
}

impl Reloadable for CredentialStore {
    fn what(&self) -> &'static str {
        match self.kind {
            Kind::AuthFile(_) => "upstream auth_file",
            _ => "upstream password_file",
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        match &self.kind {
            Kind::File(f) => vec![f.path.clone()],
            Kind::AuthFile(a) => vec![a.path.clone()],
            _ => Vec::new(),
        }
    }

    fn reload(&self) -> Result<(), String> {
        let named = |e: CredentialError| format!("upstream {}: {e}", self.upstream);
        match &self.kind {
            Kind::File(f) => {
                f.replace(read_password_file(&f.path).map_err(named)?, &self.upstream);
            }
            Kind::AuthFile(a) => a.install(read_auth_file(&a.path, &a.host).map_err(named)?),
            _ => {}
        }
        Ok(())
    }
}

// === impl FileSource ===

impl FileSource {
    /// Puts `password` in use when it differs from the one in use; returns what is in use.
    fn replace(&self, password: Secret, upstream: &str) -> Option<Arc<Held>> {
        let mut held = self.held.write();
        let same = held.creds.as_ref().is_some_and(|c| c.password == password);
        if !same {
            info!(upstream = %upstream, file = %self.path.display(), "password_file changed; the new password is in use");
            *held = Arc::new(Held::new(Some(Credentials {
                username: self.username.clone(),
                password,
            })));
        }
        Some(held.clone())
    }
}

/// A credential file's text, at most [`MAX_CREDENTIAL_FILE`] bytes; the reason when it cannot be
/// read, is larger or is not UTF-8.
fn read_credential_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;

    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it ({e})"))?;
    let mut text = String::new();
    file.take(MAX_CREDENTIAL_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it ({e})"))?;
    if text.len() as u64 > MAX_CREDENTIAL_FILE {
        return Err(format!(
            "it is larger than {MAX_CREDENTIAL_FILE} bytes; point the key at the credential file itself"
        ));
    }
    Ok(text)
}

/// A password file's password: one line, a trailing line ending dropped, not empty.
fn read_password_file(path: &Path) -> Result<Secret, CredentialError> {
    let file = |reason: String| CredentialError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = read_credential_file(path).map_err(file)?;
    Secret::from_file_text(&text)
        .ok_or_else(|| file("it is empty; the previous password stays in use".into()))
}

/// What a Docker config file says for `host`.
fn read_auth_file(path: &Path, host: &str) -> Result<DockerAuth, CredentialError> {
    let file = |reason: String| CredentialError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = read_credential_file(path).map_err(file)?;
    resolve_docker_auth(&text, host)
        .map_err(file)?
        .ok_or_else(|| file(format!("it has no entry for {host} any more")))
}

// === impl AuthFileSource ===

impl AuthFileSource {
    fn from(&self) -> AuthFrom {
        self.current.read().1.clone()
    }

    /// Puts what the file says in use, unless it says what it said before (a helper keeps its
    /// state, credentials their identity).
    fn install(&self, entry: DockerAuth) {
        let mut current = self.current.write();
        if current.0.as_ref() == Some(&entry) {
            return;
        }
        let from = match &entry {
            DockerAuth::Credentials(c) => AuthFrom::Held(Arc::new(Held::new(Some(c.clone())))),
            DockerAuth::Helper(name) => AuthFrom::Helper(Arc::new(HelperSource::new(
                &self.upstream,
                &CredentialHelper {
                    name: name.clone(),
                    program: PathBuf::from(format!("docker-credential-{name}")),
                    server: self.host.clone(),
                },
                self.ttl,
                self.timeout,
            ))),
        };
        if current.0.is_some() {
            info!(upstream = %self.upstream, file = %self.path.display(), "auth_file changed; its entry for the registry is in use");
        }
        *current = (Some(entry), from);
    }
}

// === impl HelperSource ===

impl HelperSource {
    /// The source that runs `helper` for `upstream`.
    pub fn new(
        upstream: &str,
        helper: &CredentialHelper,
        ttl: Duration,
        timeout: Duration,
    ) -> Self {
        let program = helper.program.clone();
        let server = helper.server.clone();
        let name = helper.name.clone();
        let up = upstream.to_owned();
        let run: Run = Box::new(move || {
            let (program, server, name, up) =
                (program.clone(), server.clone(), name.clone(), up.clone());
            Box::pin(async move { run_helper(&program, &server, timeout, &name, &up).await })
        });
        Self::with_run(upstream, &helper.name, ttl, run)
    }

    /// A source whose runs are `run` (tests drive the state machine with it).
    pub fn with_run(upstream: &str, helper: &str, ttl: Duration, run: Run) -> Self {
        Self {
            upstream: upstream.to_owned(),
            helper: helper.to_owned(),
            ttl,
            run,
            state: Mutex::new(HelperState::default()),
            flight: tokio::sync::Mutex::new(()),
            runs: AtomicU64::new(0),
        }
    }

    /// How many times the helper was run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// The credential in hand when it is younger than the TTL, else a fresh one.
    ///
    /// # Errors
    /// As [`HelperSource::refresh`].
    pub async fn current(&self) -> Result<Arc<Held>, CredentialError> {
        {
            let state = self.state.lock();
            if let Some(held) = state
                .held
                .as_ref()
                .filter(|h| h.fetched.elapsed() < self.ttl)
            {
                return Ok(held.clone());
            }
        }
        match self.refresh(None).await? {
            Some(held) => Ok(held),
            // Not reached: an unforced refresh always has a credential or an error.
            None => Ok(Arc::new(Held::new(None))),
        }
    }

    /// Runs the helper, once for all who ask at the same time. Unforced (`refused` is `None`):
    /// only when the credential in hand is older than the TTL. Forced by a refusal of `refused`:
    /// only when no newer credential is in hand, and (for one that never worked) the last run is
    /// [`RETRY_AFTER_FAILURE`] old; `None` when it is not run.
    ///
    /// # Errors
    /// The run's failure, or a failure less than [`RETRY_AFTER_FAILURE`] old, when there is no
    /// credential to fall back on (an unforced refresh keeps using the credential in hand).
    pub async fn refresh(
        &self,
        refused: Option<&Arc<Held>>,
    ) -> Result<Option<Arc<Held>>, CredentialError> {
        let _flight = self.flight.lock().await;
        {
            let state = self.state.lock();
            let now = Instant::now();
            match (refused, &state.held) {
                (None, Some(held)) if held.fetched.elapsed() < self.ttl => {
                    return Ok(Some(held.clone()))
                }
                (Some(refused), Some(held)) if !Arc::ptr_eq(refused, held) => {
                    return Ok(Some(held.clone()))
                }
                _ => {}
            }
            if let Some((at, error)) = &state.failure {
                if now < *at + RETRY_AFTER_FAILURE {
                    return match (refused, &state.held) {
                        (None, Some(held)) => Ok(Some(held.clone())),
                        _ => Err(error.clone()),
                    };
                }
            }
            if let Some(refused) = refused {
                let recent = state
                    .last_run
                    .is_some_and(|at| now < at + RETRY_AFTER_FAILURE);
                if !refused.proven.load(Ordering::Relaxed) && recent {
                    warn!(upstream = %self.upstream, helper = %self.helper, "the credential the helper just handed out was refused; not running it again yet");
                    return Ok(None);
                }
            }
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        let forced = refused.is_some();
        let result = (self.run)().await;
        let mut state = self.state.lock();
        let now = Instant::now();
        state.last_run = Some(now);
        match result {
            Ok(creds) => {
                info!(upstream = %self.upstream, helper = %self.helper, forced, anonymous = creds.is_none(), "credential helper handed out a credential");
                let held = Arc::new(Held::new(creds));
                state.held = Some(held.clone());
                state.failure = None;
                Ok(Some(held))
            }
            Err(error) => {
                warn!(upstream = %self.upstream, helper = %self.helper, %error, "credential helper failed; not running it again for 30 s");
                state.failure = Some((now, error.clone()));
                match (refused, &state.held) {
                    (None, Some(held)) => Ok(Some(held.clone())),
                    _ => Err(error),
                }
            }
        }
    }
}

/// Runs `program get` with `server` on standard input, at most `timeout`, and reads its answer.
/// `Ok(None)` when the helper holds no credentials for the server.
///
/// # Errors
/// [`CredentialError`] naming `helper`: not found, timed out (the helper is killed), failed
/// (exit status and its message), or an answer that is not the protocol's JSON.
pub async fn run_helper(
    program: &Path,
    server: &str,
    timeout: Duration,
    helper: &str,
    upstream: &str,
) -> Result<Option<Credentials>, CredentialError> {
    let failed = |reason: String| CredentialError::Failed {
        helper: helper.to_owned(),
        reason,
    };
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CredentialError::NotFound {
                helper: helper.to_owned(),
            },
            _ => failed(format!("cannot start {} ({e})", program.display())),
        })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        if let Some(mut stdin) = stdin {
            // A helper that does not read its input is its own business: ignore a broken pipe.
            let _ = stdin.write_all(server.as_bytes()).await;
        }
        let (out, err) = tokio::join!(read_capped(stdout), read_capped(stderr));
        let status = child.wait().await;
        (out, err, status)
    };
    let Ok((out, err, status)) = tokio::time::timeout(timeout, work).await else {
        let _ = child.start_kill();
        warn!(upstream = %upstream, %helper, timeout_s = timeout.as_secs(), "credential helper timed out; killed");
        return Err(CredentialError::TimedOut {
            helper: helper.to_owned(),
            secs: timeout.as_secs(),
        });
    };
    if let Some(line) = err.as_deref().map(one_line).filter(|l| !l.is_empty()) {
        // Standard error is for people; standard output may hold the secret and is never logged.
        info!(upstream = %upstream, %helper, stderr = %line, "credential helper said");
    }
    let status = status.map_err(|e| failed(format!("cannot wait for it ({e})")))?;
    let out = out.ok_or_else(|| CredentialError::BadOutput {
        helper: helper.to_owned(),
        reason: "more than 64 KiB on standard output",
    })?;
    if !status.success() {
        let message = one_line(&out);
        if message.contains(NOT_FOUND_MESSAGE) {
            warn!(upstream = %upstream, %helper, %server, "the credential helper has no credentials for this registry; pulling anonymously");
            return Ok(None);
        }
        return Err(failed(format!("{status}: {message}")));
    }
    parse_helper_output(&out).map_err(|reason| CredentialError::BadOutput {
        helper: helper.to_owned(),
        reason,
    })
}

/// Reads a pipe to its end, at most [`MAX_HELPER_OUTPUT`] bytes; `None` when there was more.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Option<Vec<u8>> {
    let Some(pipe) = pipe else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    let limit = MAX_HELPER_OUTPUT as u64 + 1;
    pipe.take(limit).read_to_end(&mut out).await.ok()?;
    (out.len() <= MAX_HELPER_OUTPUT).then_some(out)
}

/// The first line of some output, printable characters only, at most [`MAX_MESSAGE`] of them.
fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim().lines().next().unwrap_or_default();
    line.chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE)
        .collect()
}

/// A helper's success answer: `{"ServerURL","Username","Secret"}`.
///
/// # Errors
/// What is wrong with it, never its contents.
pub fn parse_helper_output(out: &[u8]) -> Result<Option<Credentials>, &'static str> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let wire: Wire = serde_json::from_slice(out)
        .map_err(|_| "it is not a JSON object with Username and Secret")?;
    if wire.secret.is_empty() {
        return Err("its Secret is empty");
    }
    if wire.username.is_empty() {
        return Err("its Username is empty");
    }
    Ok(Some(Credentials {
        username: wire.username,
        password: Secret::new(wire.secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn credential_files_are_read_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("pw");
        std::fs::write(&small, "hunter2\n").unwrap();
        assert_eq!(read_password_file(&small).unwrap().expose(), "hunter2");
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'x'; MAX_CREDENTIAL_FILE as usize + 1]).unwrap();
        let error = read_password_file(&huge).unwrap_err().to_string();
        assert!(error.contains("larger than"), "{error}");
        assert!(!error.contains("xxxx"), "{error}");
    }

    fn counting(fail: Arc<AtomicBool>) -> (Run, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let run: Run = Box::new(move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let fail = fail.load(Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if fail {
                    return Err(CredentialError::Failed {
                        helper: "fake".into(),
                        reason: "exit status: 1: boom".into(),
                    });
                }
                Ok(Some(Credentials {
                    username: "AWS".into(),
                    password: Secret::new(format!("pw-{n}")),
                }))
            })
        });
        (run, calls)
    }

    fn password(held: &Held) -> String {
        held.creds.as_ref().unwrap().password.expose().to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_ttl_and_refusals() {
        let fail = Arc::new(AtomicBool::new(false));
        let (run, calls) = counting(fail.clone());
        let h = Arc::new(HelperSource::with_run(
            "u",
            "fake",
            Duration::from_secs(600),
            run,
        ));
        // Concurrent first requests share one run.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.current().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(password(&t.await.unwrap()), "pw-0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Within the TTL: no run.
        tokio::time::advance(Duration::from_secs(599)).await;
        let first = h.current().await.unwrap();
        assert_eq!(password(&first), "pw-0");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Past it: one run.
        tokio::time::advance(Duration::from_secs(2)).await;
        let second = h.current().await.unwrap();
        assert_eq!(password(&second), "pw-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A refusal of an older credential takes the newer one without a run.
        assert_eq!(
            password(&h.refresh(Some(&first)).await.unwrap().unwrap()),
            "pw-1"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A fresh credential that never worked and is refused at once: not run again yet.
        assert!(h.refresh(Some(&second)).await.unwrap().is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // One that worked, then refused (it rotated): run at once.
        second.worked();
        let third = h.refresh(Some(&second)).await.unwrap().unwrap();
        assert_eq!(password(&third), "pw-2");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Concurrent refusals of the same credential: one run.
        third.worked();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (h, third) = (h.clone(), third.clone());
                tokio::spawn(async move { h.refresh(Some(&third)).await.unwrap().unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(password(&t.await.unwrap()), "pw-3");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_helper_is_not_run_in_a_loop() {
        let fail = Arc::new(AtomicBool::new(true));
        let (run, calls) = counting(fail.clone());
        let h = HelperSource::with_run("u", "fake", Duration::from_secs(600), run);
        for _ in 0..5 {
            let e = h.current().await.unwrap_err();
            assert!(
                e.to_string().contains("credential helper fake failed"),
                "{e}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "failures are remembered");
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        fail.store(false, Ordering::SeqCst);
        let held = h.current().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Past the TTL with a failing helper: the credential in hand is kept.
        fail.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(601)).await;
        let kept = h.current().await.unwrap();
        assert!(Arc::ptr_eq(&held, &kept));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // ...but a refusal of it is the helper's error.
        held.worked();
        assert!(h.refresh(Some(&held)).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn helper_output_table() {
        let ok = br#"{"ServerURL":"a.io","Username":"AWS","Secret":"hunter2"}"#;
        let c = parse_helper_output(ok).unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("AWS", "hunter2")
        );
        for (bad, want) in [
            (&b"garbage hunter2"[..], "not a JSON object"),
            (br#"{"Username":"AWS","Secret":""}"#, "Secret is empty"),
            (
                br#"{"Username":"","Secret":"hunter2"}"#,
                "Username is empty",
            ),
            (br#""hunter2""#, "not a JSON object"),
        ] {
            let got = parse_helper_output(bad).unwrap_err();
            assert!(
                got.contains(want),
                "{} -> {got}",
                String::from_utf8_lossy(bad)
            );
            assert!(!got.contains("hunter2"));
        }
    }

    #[test]
    fn one_line_is_bounded() {
        assert_eq!(one_line(b"  first\x1b[31m\nsecond"), "first[31m");
        assert_eq!(one_line(&[b'x'; 5000]).len(), MAX_MESSAGE);
    }
}
