//! Real software from Debian as test peers: the CNCF distribution registry (`docker-registry`) as
//! the upstream, with an optional Docker-Hub-style token server, and `skopeo` as the client. Each
//! runs on a free loopback port in its own temporary directory and is stopped when its handle drops.
//! A missing tool fails the test: the README's test command installs them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tempfile::TempDir;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(tool: &str) {
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

/// A running distribution registry.
pub struct Registry {
    pub port: u16,
    pub dir: TempDir,
    child: Child,
    log: PathBuf,
}

/// Token auth settings for the registry.
pub struct TokenAuth<'a> {
    pub realm: String,
    pub cert_pem: &'a str,
}

impl Registry {
    pub async fn start(token: Option<TokenAuth<'_>>) -> Registry {
        require("docker-registry");
        let mut dir = tempfile::tempdir().unwrap();
        let auth = match &token {
            Some(t) => {
                let cert = dir.path().join("token-ca.pem");
                std::fs::write(&cert, t.cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: e2e-registry\n    issuer: e2e-issuer\n    rootcertbundle: {}\n",
                    t.realm,
                    cert.display()
                )
            }
            None => String::new(),
        };
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = dir.path().join("registry.log");
            // The access log (combined format) goes to stdout, the rest to stderr: keep both.
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("docker-registry starts");
            let mut registry = Registry {
                port,
                dir,
                child,
                log,
            };
            if registry.wait_ready().await {
                return registry;
            }
            let _ = registry.child.kill();
            let _ = registry.child.wait();
            dir = registry.take_dir();
        }
        panic!("docker-registry did not start");
    }

    fn take_dir(&mut self) -> TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited: port taken, or bad config
            }
            if let Ok(res) = reqwest::get(format!("http://127.0.0.1:{}/v2/", self.port)).await {
                if res.status() == 200 || res.status() == 401 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests from the access log as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                // Combined log format: ... "GET /v2/... HTTP/1.1" 200 ...
                let start = line.find("] \"")? + 3;
                let mut parts = line[start..].split(' ');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
            .collect()
    }

    /// Blob GETs the registry served (redirects included).
    pub fn blob_gets(&self) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == "GET" && p.contains("/blobs/sha256:"))
            .count()
    }

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

/// A Docker-style token server: checks Basic credentials and signs ES256 JWTs the registry trusts.
pub struct TokenServer {
    pub addr: SocketAddr,
    pub cert_pem: String,
    pub requests: Arc<AtomicUsize>,
    pub authorizations: Arc<Mutex<Vec<Option<String>>>>,
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
}

/// libtrust's key id: base32 of the first 240 bits of sha256(SPKI DER), in 12 groups of 4.
fn libtrust_kid(spki_der: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(spki_der);
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

impl Signer {
    fn token(&self, scope: Option<&str>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<serde_json::Value> = scope
            .into_iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": "e2e-issuer", "sub": self.user, "aud": "e2e-registry",
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_suffix()),
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
}

fn rand_suffix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

impl TokenServer {
    pub async fn start(user: &str, pass: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate().unwrap();
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
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let (r, a) = (requests.clone(), authorizations.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (signer, r, a) = (signer.clone(), r.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (signer, r, a) = (signer.clone(), r.clone(), a.clone());
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            a.lock().push(auth.clone());
                            let want = format!(
                                "Basic {}",
                                base64::engine::general_purpose::STANDARD
                                    .encode(format!("{}:{}", signer.user, signer.pass))
                            );
                            let response = if auth.as_deref() == Some(want.as_str()) {
                                let scope = url::form_urlencoded::parse(
                                    req.uri().query().unwrap_or("").as_bytes(),
                                )
                                .find(|(k, _)| k == "scope")
                                .map(|(_, v)| v.into_owned());
                                let token = signer.token(scope.as_deref());
                                hyper::Response::new(Full::new(Bytes::from(
                                    serde_json::json!({"token": token, "expires_in": 300})
                                        .to_string(),
                                )))
                            } else {
                                let mut r =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                                *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                                r
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TokenServer {
            addr,
            cert_pem: cert.pem(),
            requests,
            authorizations,
            task,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

/// Runs skopeo with `args`, in a private HOME; panics with its output on failure.
pub async fn skopeo(home: &Path, args: &[&str]) -> String {
    require("skopeo");
    let out = tokio::process::Command::new("skopeo")
        .args(args)
        .env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "skopeo {args:?} failed:\n{text}");
    text
}

/// Pushes an OCI layout (or a `dir:` tree) into a registry, keeping digests.
pub async fn push(home: &Path, src: &str, dest: &str, all: bool) {
    let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    args.extend([src, dest]);
    skopeo(home, &args).await;
}

/// What a skopeo `dir:` copy holds: the top manifest's digest and every file named by a digest.
pub struct Pulled {
    pub manifest_digest: String,
    pub blobs: Vec<String>,
}

/// Copies `src` into a fresh `dir:` under `out` and reads what arrived.
pub async fn pull(home: &Path, src: &str, out: &Path, extra: &[&str]) -> Pulled {
    let _ = std::fs::remove_dir_all(out);
    let dest = format!("dir:{}", out.display());
    let mut args = vec!["copy"];
    args.extend(extra);
    args.extend([src, dest.as_str()]);
    skopeo(home, &args).await;
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    let mut blobs: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 || n.ends_with(".manifest.json"))
        .collect();
    blobs.sort();
    Pulled {
        manifest_digest: super::fake::digest_of(&manifest),
        blobs,
    }
}
