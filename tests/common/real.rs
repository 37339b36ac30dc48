//! Real software from Debian as test peers: the CNCF distribution registry (`docker-registry`) as
//! the upstream, with an optional Docker-Hub-style token server, and `skopeo` as the client. Each
//! runs on a free loopback port in its own temporary directory and is stopped when its handle drops
//! (no pid files, no `pkill`). A missing tool fails the test: the README's test command installs
//! them.
//!
//! Nothing here leaves the machine: every peer listens on 127.0.0.1, and a skopeo that skips its
//! registries.conf mirror lands on a [`Tripwire`] (a loopback listener that counts and drops every
//! connection) rather than on a name that DNS could resolve. That is why no `/etc/hosts` entry is
//! needed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use super::free_port;

/// Fails the test (never skips it) when `tool` is not on `PATH`.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: run the tests with ./scripts/test.sh, which installs it"
    );
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An HTTP client for loopback peers that ignores any `HTTP_PROXY` in the environment (and the
/// certificate of a test registry serving HTTPS: it is made by the test).
fn local_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

// === Registry ===

/// A running distribution registry (`docker-registry serve`), filesystem storage with deletes
/// enabled, on a free loopback port. Dropping it kills the process.
pub struct Registry {
    pub port: u16,
    /// Whether it serves HTTPS (`http.tls`).
    pub tls: bool,
    pub dir: TempDir,
    child: Child,
    log: PathBuf,
    syncs: AtomicUsize,
}

/// Token auth settings for the registry (`auth: token`); see [`TokenServer`].
pub struct TokenAuth<'a> {
    pub realm: String,
    pub cert_pem: &'a str,
}

/// One request from the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    pub status: u16,
}

impl Registry {
    /// Starts a registry; `token` switches on Docker-Hub-style Bearer auth. Returns once `/v2/`
    /// answers.
    pub async fn start(token: Option<TokenAuth<'_>>) -> Registry {
        Self::start_with(token, None).await
    }

    /// As [`Registry::start`]; `tls` = (certificate chain, key) PEM files to serve HTTPS with.
    pub async fn start_with(token: Option<TokenAuth<'_>>, tls: Option<(&Path, &Path)>) -> Registry {
        Self::start_inner(token, tls, None).await
    }

    /// A registry with HTTP Basic auth from the htpasswd file `htpasswd` (`auth.htpasswd`).
    pub async fn start_htpasswd(htpasswd: &Path) -> Registry {
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            htpasswd.display()
        );
        Self::start_inner(None, None, Some(auth)).await
    }

    async fn start_inner(
        token: Option<TokenAuth<'_>>,
        tls: Option<(&Path, &Path)>,
        other_auth: Option<String>,
    ) -> Registry {
        require("docker-registry");
        let tls_yaml = tls.map_or_else(String::new, |(cert, key)| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        });
        let mut dir = tempfile::tempdir().unwrap();
        let auth = match &token {
            Some(t) => {
                let cert = dir.path().join("token-ca.pem");
                std::fs::write(&cert, t.cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    t.realm,
                    cert.display()
                )
            }
            None => other_auth.unwrap_or_default(),
        };
        // The port is chosen before the registry binds it, so another process may take it in
        // between: then the registry exits and we try another.
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{auth}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = dir.path().join("registry.log");
            // The access log (combined format) and the application log share one file.
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("docker-registry starts");
            let mut registry = Registry {
                port,
                tls: tls.is_some(),
                dir,
                child,
                log,
                syncs: AtomicUsize::new(0),
            };
            if registry.wait_ready().await {
                return registry;
            }
            registry.kill();
            dir = std::mem::replace(&mut registry.dir, tempfile::tempdir().unwrap());
        }
        panic!("docker-registry did not start");
    }

    async fn wait_ready(&mut self) -> bool {
        let client = local_client();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited: port taken, or bad config
            }
            if let Ok(res) = client.get(format!("{}/v2/", self.url())).send().await {
                if res.status() == 200 || res.status() == 401 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's own log (application and access lines), for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every request in the access log, in the order logged.
    pub fn access(&self) -> Vec<Access> {
        self.log_text()
            .lines()
            .filter_map(|line| {
                // Combined log format: 127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 1234 "" "ua"
                let start = line.find("] \"")? + 3;
                let mut parts = line[start..].split(' ');
                let method = parts.next()?.to_owned();
                let path = parts.next()?.to_owned();
                let _proto = parts.next()?;
                let status = parts.next()?.parse().ok()?;
                Some(Access {
                    method,
                    path,
                    status,
                })
            })
            .collect()
    }

    /// Requests from the access log as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.access()
            .into_iter()
            .map(|a| (a.method, a.path))
            .collect()
    }

    /// Blob GETs the registry served (redirects included).
    pub fn blob_gets(&self) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == "GET" && p.contains("/blobs/sha256:"))
            .count()
    }

    /// Makes the access log current: the registry writes a line just after each response, so a
    /// count read right after a client finished can miss the last lines. This sends a marker
    /// request and waits until its line is in the log; lines of requests answered before it are
    /// then there too. Call it before taking a baseline count.
    pub async fn sync_log(&self) {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst);
        let marker = format!("/v2/?wharf-e2e-sync={n}");
        let _ = local_client()
            .get(format!("{}{marker}", self.url()))
            .send()
            .await
            .expect("the registry answers");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.requests().iter().any(|(_, p)| p == &marker) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the registry did not log {marker}");
    }

    /// Requests other than the [`Registry::sync_log`] markers, from index `from` on.
    pub fn requests_since(&self, from: usize) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .skip(from)
            .filter(|(_, p)| !p.starts_with("/v2/?wharf-e2e-sync="))
            .collect()
    }

    /// Stops the registry now (also done on drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

// === Tripwire ===

/// A loopback port that accepts every connection, counts it and closes it at once. Used as the
/// primary location of `upstream.test` in registries.conf: a skopeo that skips the mirror fails
/// within milliseconds and leaves a count, and no name is ever resolved through DNS.
pub struct Tripwire {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Tripwire {
    pub async fn start() -> Tripwire {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    h.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            }
        });
        Tripwire { addr, hits, task }
    }

    /// Connections seen so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Tripwire {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === TokenServer ===

/// The `service` the registry expects in a token's `aud`.
pub const SERVICE: &str = "e2e-registry";
/// The `iss` the registry expects.
pub const ISSUER: &str = "e2e-issuer";

/// A request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub authorization: Option<String>,
    /// The decoded `scope` parameters (`repository:e2e/multi:pull`).
    pub scopes: Vec<String>,
    /// The issued token, if any.
    pub token: Option<String>,
}

/// A Docker-style token server: checks HTTP Basic credentials and signs ES256 JWTs (libtrust
/// `kid`) that the registry trusts through the certificate in [`TokenServer::cert_pem`].
pub struct TokenServer {
    pub addr: SocketAddr,
    pub cert_pem: String,
    /// Whether it serves https (with a certificate from a throw-away CA, for 127.0.0.1).
    https: bool,
    /// Requests answered, in order.
    pub seen: Arc<Mutex<Vec<TokenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Signer {
    key: ring::signature::EcdsaKeyPair,
    kid: String,
    user: String,
    pass: String,
    anonymous: bool,
}

/// libtrust's key id: base32 of the first 240 bits of sha256(SPKI DER), in 12 groups of 4.
fn libtrust_kid(spki_der: &[u8]) -> String {
    let hash = Sha256::digest(spki_der);
    let b32 = base32(&hash[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer = 0u64;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

static JTI: AtomicUsize = AtomicUsize::new(0);

impl Signer {
    /// A token granting `scopes`; with `pull_only`, every action but `pull` is dropped.
    fn token(&self, sub: &str, scopes: &[String], pull_only: bool) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                // type:name:actions, where name may hold a port (`host:5000/x`): split from both ends.
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                let actions: Vec<&str> = actions
                    .split(',')
                    .filter(|a| !pull_only || *a == "pull")
                    .collect();
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": sub, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", JTI.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!("{signing_input}.{}", b64url(sig.as_ref()))
    }

    fn answer(&self, req: &hyper::Request<hyper::body::Incoming>) -> TokenRequest {
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let scopes: Vec<String> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .filter(|(k, _)| k == "scope")
                // A client may also pack several scopes into one parameter, space-separated.
                .flat_map(|(_, v)| {
                    v.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.user, self.pass))
        );
        let token = match authorization.as_deref() {
            Some(a) if a == want => Some(self.token(&self.user, &scopes, false)),
            None if self.anonymous => Some(self.token("", &scopes, true)),
            _ => None,
        };
        TokenRequest {
            authorization,
            scopes,
            token,
        }
    }
}

impl TokenServer {
    /// A token server that issues tokens only to `user:pass` (anything else gets 401).
    pub async fn start(user: &str, pass: &str) -> TokenServer {
        Self::start_with(user, pass, false).await
    }

    /// As [`TokenServer::start`]; with `anonymous`, a request without credentials gets a
    /// pull-only token, as Docker Hub does for public images. Wrong credentials still get 401.
    pub async fn start_with(user: &str, pass: &str, anonymous: bool) -> TokenServer {
        Self::spawn(user, pass, anonymous, false).await
    }

    /// As [`TokenServer::start`], over https: wharf sends credentials over plain http only to a
    /// plain-http upstream's own host and port, never to a token server on another port.
    pub async fn start_https(user: &str, pass: &str) -> TokenServer {
        Self::spawn(user, pass, false, true).await
    }

    async fn spawn(user: &str, pass: &str, anonymous: bool, https: bool) -> TokenServer {
        let tls = https.then(|| {
            let leaf = super::pki::Ca::new("e2e token CA").leaf();
            use rustls_pki_types::pem::PemObject as _;
            let key =
                rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            let cert = rustls_pki_types::CertificateDer::from(leaf.der);
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
        let cert = rcgen::CertificateParams::new(vec!["e2e-token".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let signer = Arc::new(Signer {
            key: ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &ring::rand::SystemRandom::new(),
            )
            .unwrap(),
            kid: libtrust_kid(&key.public_key_der()),
            user: user.to_owned(),
            pass: pass.to_owned(),
            anonymous,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (signer, log, tls) = (signer.clone(), log.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let answered = signer.answer(&req);
                        let response = match &answered.token {
                            Some(token) => hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(
                                    serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                                        .to_string(),
                                )))
                                .unwrap(),
                            None => hyper::Response::builder()
                                .status(401)
                                .header("content-type", "application/json")
                                .header("www-authenticate", "Basic realm=\"e2e-token\"")
                                .body(Full::new(Bytes::from_static(
                                    br#"{"details":"incorrect username or password"}"#,
                                )))
                                .unwrap(),
                        };
                        log.lock().push(answered);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        TokenServer {
            addr,
            cert_pem: cert.pem(),
            https,
            seen,
            task,
        }
    }

    pub fn realm(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/token", self.addr)
    }

    /// Token requests answered so far.
    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// The requests from index `from` on.
    pub fn since(&self, from: usize) -> Vec<TokenRequest> {
        self.seen.lock()[from..].to_vec()
    }
}

/// The `Authorization` value for HTTP Basic `user:pass`.
pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

// === skopeo ===

/// Runs skopeo with `args` in a private `HOME` (so only `home`'s registries.conf and auth files
/// count); returns stdout + stderr, or that text as the error when skopeo fails.
pub async fn try_skopeo(home: &Path, args: &[&str]) -> Result<String, String> {
    require("skopeo");
    let out = tokio::process::Command::new("skopeo")
        .args(args)
        .env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// As [`try_skopeo`]; panics with skopeo's output on failure.
pub async fn skopeo(home: &Path, args: &[&str]) -> String {
    match try_skopeo(home, args).await {
        Ok(text) => text,
        Err(text) => panic!("skopeo {args:?} failed:\n{text}"),
    }
}

/// Pushes an OCI layout (`oci:DIR:TAG`) or a `dir:` tree into a registry, keeping digests.
pub async fn push(home: &Path, src: &str, dest: &str, all: bool) {
    push_with(home, src, dest, all, None).await;
}

/// As [`push`], with `user:pass` for the destination.
pub async fn push_with(home: &Path, src: &str, dest: &str, all: bool, creds: Option<&str>) {
    let creds = creds.map(|c| format!("--dest-creds={c}"));
    let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    if let Some(c) = &creds {
        args.push(c);
    }
    args.extend([src, dest]);
    skopeo(home, &args).await;
}

/// The digest of the manifest `reference` (`docker://...`) names, from `skopeo inspect --raw`:
/// for an index, the index itself.
pub async fn inspect_digest(home: &Path, reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    args.extend(extra);
    args.push(reference);
    let raw = skopeo(home, &args).await;
    sha(raw.as_bytes())
}

/// What a skopeo `dir:` copy holds: the top manifest's digest and every file named by a digest
/// (`<hex>` for blobs, `<hex>.manifest.json` for the instances of an index), sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub manifest_digest: String,
    pub blobs: Vec<String>,
}

/// Copies `src` into a fresh `dir:OUT` with `extra` flags and reads what arrived; the error is
/// skopeo's output.
pub async fn try_pull(
    home: &Path,
    src: &str,
    out: &Path,
    extra: &[&str],
) -> Result<Pulled, String> {
    let _ = std::fs::remove_dir_all(out);
    let dest = format!("dir:{}", out.display());
    let mut args = vec!["copy"];
    args.extend(extra);
    args.extend([src, dest.as_str()]);
    try_skopeo(home, &args).await?;
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    let mut blobs: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 || n.ends_with(".manifest.json"))
        .collect();
    blobs.sort();
    for name in &blobs {
        // skopeo verifies what it fetched; check again that each file is what its name says.
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(
            sha(&bytes),
            format!("sha256:{}", name.trim_end_matches(".manifest.json")),
            "{src}: {name}"
        );
    }
    Ok(Pulled {
        manifest_digest: sha(&manifest),
        blobs,
    })
}

/// As [`try_pull`]; panics with skopeo's output on failure.
pub async fn pull(home: &Path, src: &str, out: &Path, extra: &[&str]) -> Pulled {
    match try_pull(home, src, out, extra).await {
        Ok(p) => p,
        Err(text) => panic!("pulling {src} failed:\n{text}"),
    }
}

/// Writes `home/.config/containers/registries.conf` (skopeo 1.9 reads only that one when `HOME`
/// is private; it ignores `CONTAINERS_REGISTRIES_CONF`): `upstream.test` is mirrored at
/// `mirror` (e.g. `127.0.0.1:PORT/upstream.test`, a path prefix), and its own location is the
/// `tripwire`, so a pull that skipped the mirror fails at once and never leaves the machine.
pub fn mirror_home(home: &Path, mirror: &str, tripwire: &Tripwire) {
    let dir = home.join(".config/containers");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("registries.conf"),
        format!(
            "unqualified-search-registries = []\n\n\
             [[registry]]\nprefix = \"upstream.test\"\nlocation = \"{}\"\ninsecure = true\n\n\
             [[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n",
            tripwire.addr
        ),
    )
    .unwrap();
}

// === wharf's logs ===

struct Capture;

static CAPTURED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(c) = CAPTURED.get() {
            c.lock().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every tracing event of this test process, at trace level, to a buffer that
/// [`captured_logs`] returns: the in-process wharf's logs, which tests search for secrets. The
/// first call installs the global subscriber; later calls do nothing. Events of every test running
/// in the process end up in the one buffer, so a search covers more than one test's lines.
pub fn capture_logs() {
    CAPTURED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
        Arc::new(Mutex::new(Vec::new()))
    });
}

/// Everything logged since [`capture_logs`].
pub fn captured_logs() -> String {
    CAPTURED
        .get()
        .map(|c| String::from_utf8_lossy(&c.lock()).into_owned())
        .unwrap_or_default()
}
