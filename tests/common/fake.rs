//! An in-process fake upstream registry that counts what it is asked and can misbehave on demand:
//! demand a Bearer token or Basic credentials, redirect blobs to a "CDN", send wrong bytes, cut a
//! body short, hold a body half-way until the test releases it, or answer with any status.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

/// A gate a fake response waits at until the test opens it (for good).
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Self {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One request the fake saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

/// How the fake authenticates.
#[derive(Debug, Clone, Default)]
pub enum AuthMode {
    #[default]
    None,
    /// 401 with a Bearer challenge unless a token from /token is sent. `creds` = required Basic
    /// credentials at /token (None: anonymous tokens).
    Bearer {
        creds: Option<(String, String)>,
        realm: Option<String>,
    },
    /// 401 with a Basic challenge unless these credentials are sent.
    Basic { user: String, pass: String },
}

/// Misbehaviour switches.
#[derive(Default)]
pub struct Knobs {
    pub auth: AuthMode,
    /// Redirect blob GETs to this base URL (`<base>/cdn/<digest>`).
    pub redirect_blobs_to: Option<String>,
    /// Digests served with one byte flipped.
    pub corrupt: HashSet<String>,
    /// Digests served with other bytes (of another length).
    pub substitute: HashMap<String, Bytes>,
    /// Digest → offset: send that many bytes, then break the connection (the next `cut_times` GETs).
    pub cut: HashMap<String, (usize, usize)>,
    /// Digest → (offset, gate): send up to offset, then wait for the gate before the rest.
    pub hold: HashMap<String, (usize, Gate)>,
    /// Manifest responses wait for this gate.
    pub hold_manifests: Option<Gate>,
    /// Sleep between chunks of this size.
    pub slow: Option<(usize, Duration)>,
    /// Path → status (and Retry-After) to answer instead.
    pub status: HashMap<String, (u16, Option<String>)>,
    /// Ignore Range headers.
    pub ignore_range: bool,
    /// Send Docker Hub's `RateLimit-Limit` and `RateLimit-Remaining` (limit, remaining).
    pub rate_limit: Option<(u64, u64)>,
    /// Repository → the raw `tags/list` body to send (any size), instead of the tags it has.
    pub tags_body: HashMap<String, Bytes>,
    /// Tag list responses wait for this gate.
    pub hold_tags: Option<Gate>,
}

pub struct State {
    pub blobs: Mutex<HashMap<String, Bytes>>,
    pub manifests: Mutex<HashMap<(String, String), (String, Bytes)>>,
    pub log: Mutex<Vec<Seen>>,
    pub knobs: Mutex<Knobs>,
    pub token_requests: AtomicUsize,
    pub token_auth: Mutex<Vec<Option<String>>>,
    /// (repo, subject digest) → the referrers index to answer.
    pub referrers: Mutex<HashMap<(String, String), serde_json::Value>>,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
}

pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for Fake {
    /// Like a registry going down: the listener and every open connection close.
    fn drop(&mut self) {
        self.task.abort();
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A small image: config + layers + manifest.
pub struct Image {
    pub manifest: Bytes,
    pub manifest_digest: String,
    pub config: String,
    pub layers: Vec<String>,
}

impl Fake {
    pub async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            blobs: Mutex::default(),
            manifests: Mutex::default(),
            log: Mutex::default(),
            knobs: Mutex::default(),
            token_requests: AtomicUsize::new(0),
            token_auth: Mutex::default(),
            referrers: Mutex::default(),
            connections: AtomicUsize::new(0),
        });
        let st = state.clone();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let conns_in_task = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, addr, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                conns_in_task.lock().push(conn.abort_handle());
            }
        });
        Fake {
            addr,
            state,
            task,
            conns,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_blob(&self, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let d = digest_of(&bytes);
        self.state.blobs.lock().insert(d.clone(), bytes);
        d
    }

    pub fn add_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> String {
        let bytes = bytes.into();
        let d = digest_of(&bytes);
        let mut m = self.state.manifests.lock();
        m.insert((repo.into(), d.clone()), (media_type.into(), bytes.clone()));
        if let Some(tag) = tag {
            m.insert((repo.into(), tag.into()), (media_type.into(), bytes));
        }
        d
    }

    /// An OCI image with `layers` random layers of `layer_size` bytes, tagged `tag` in `repo`.
    pub fn add_image(
        &self,
        repo: &str,
        tag: &str,
        layers: usize,
        layer_size: usize,
        seed: u64,
    ) -> Image {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#
        ));
        let config_digest = self.add_blob(config.clone());
        let mut layer_digests = Vec::new();
        let mut descs = Vec::new();
        for i in 0..layers {
            let data = random_bytes(layer_size, seed * 1000 + i as u64);
            let d = self.add_blob(data.clone());
            descs.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
                data.len()
            ));
            layer_digests.push(d);
        }
        let manifest = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            descs.join(",")
        ));
        let manifest_digest = self.add_manifest(repo, Some(tag), OCI_MANIFEST, manifest.clone());
        Image {
            manifest,
            manifest_digest,
            config: config_digest,
            layers: layer_digests,
        }
    }

    /// An OCI image index over `images` (linux/amd64, linux/arm64, ... in order), tagged `tag` in
    /// `repo`. Returns the index bytes and digest.
    pub fn add_index(&self, repo: &str, tag: &str, images: &[&Image]) -> (Bytes, String) {
        const ARCHES: [&str; 4] = ["amd64", "arm64", "ppc64le", "s390x"];
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .zip(ARCHES.iter().cycle())
            .map(|(img, arch)| {
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": img.manifest_digest,
                    "size": img.manifest.len(),
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        let index = Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": manifests,
            })
            .to_string(),
        );
        let digest = self.add_manifest(repo, Some(tag), OCI_INDEX, index.clone());
        (index, digest)
    }

    pub fn knobs(&self) -> parking_lot::MutexGuard<'_, Knobs> {
        self.state.knobs.lock()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.log.lock().clone()
    }

    /// How many requests with this method had a path containing `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.state
            .log
            .lock()
            .iter()
            .filter(|s| s.method == method && s.path.contains(needle))
            .count()
    }

    pub fn total(&self) -> usize {
        self.state.log.lock().len()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn tokens(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

fn oci_error(status: StatusCode, code: &str) -> Response<Body> {
    let mut r = full(
        status,
        format!(r#"{{"errors":[{{"code":"{code}","message":"fake"}}]}}"#),
    );
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

const TOKEN: &str = "fake-token-0123456789";

async fn handle(st: Arc<State>, me: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let rate_limit = st.knobs.lock().rate_limit;
    let mut response = answer(st, me, req).await;
    if let Some((limit, remaining)) = rate_limit {
        let h = response.headers_mut();
        h.insert(
            "ratelimit-limit",
            format!("{limit};w=21600").parse().unwrap(),
        );
        h.insert(
            "ratelimit-remaining",
            format!("{remaining};w=21600").parse().unwrap(),
        );
    }
    response
}

async fn answer(st: Arc<State>, me: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = req.method().as_str().to_owned();
    let head = method == "HEAD";

    if path == "/token" {
        st.token_requests.fetch_add(1, Ordering::SeqCst);
        st.token_auth.lock().push(authorization.clone());
        let needed = match &st.knobs.lock().auth {
            AuthMode::Bearer { creds, .. } => creds.clone(),
            _ => None,
        };
        if let Some((u, p)) = needed {
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            );
            if authorization.as_deref() != Some(want.as_str()) {
                return full(StatusCode::UNAUTHORIZED, "bad credentials");
            }
        }
        return full(
            StatusCode::OK,
            format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#),
        );
    }

    st.log.lock().push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        authorization: authorization.clone(),
        range: range.clone(),
    });

    if let Some(digest) = path.strip_prefix("/cdn/") {
        let blob = st.blobs.lock().get(digest).cloned();
        return match blob {
            Some(b) => send_blob(&st, digest, b, None, head).await,
            None => oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        };
    }

    // Auth.
    let auth = st.knobs.lock().auth.clone();
    match auth {
        AuthMode::None => {}
        AuthMode::Bearer { realm, .. } => {
            if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                let name = path
                    .trim_start_matches("/v2/")
                    .split("/manifests/")
                    .next()
                    .unwrap_or("");
                let name = name
                    .split("/blobs/")
                    .next()
                    .unwrap_or("")
                    .trim_end_matches("/tags/list");
                let realm = realm.unwrap_or_else(|| format!("http://{me}/token"));
                let mut r = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
                r.headers_mut().insert(
                    "www-authenticate",
                    format!(
                        r#"Bearer realm="{realm}",service="fake",scope="repository:{name}:pull""#
                    )
                    .parse()
                    .unwrap(),
                );
                return r;
            }
        }
        AuthMode::Basic { user, pass } => {
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            if authorization.as_deref() != Some(want.as_str()) {
                let mut r = oci_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
                r.headers_mut()
                    .insert("www-authenticate", r#"Basic realm="fake""#.parse().unwrap());
                return r;
            }
        }
    }

    if let Some((status, retry_after)) = st.knobs.lock().status.get(&path).cloned() {
        let mut r = oci_error(StatusCode::from_u16(status).unwrap(), "UNKNOWN");
        if let Some(ra) = retry_after {
            r.headers_mut().insert("retry-after", ra.parse().unwrap());
        }
        return r;
    }

    if path == "/v2/" || path == "/v2" {
        return full(StatusCode::OK, "{}");
    }
    let rest = path.trim_start_matches("/v2/");
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let gate = st.knobs.lock().hold_tags.clone();
        if let Some(gate) = gate {
            gate.wait().await;
        }
        if let Some(body) = st.knobs.lock().tags_body.get(name).cloned() {
            let mut r = full(StatusCode::OK, body);
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            return r;
        }
        let m = st.manifests.lock();
        let mut tags: Vec<String> = m
            .keys()
            .filter(|(r, t)| r == name && !t.contains(':'))
            .map(|(_, t)| t.clone())
            .collect();
        if tags.is_empty() {
            return oci_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
        }
        tags.sort();
        let params: HashMap<String, String> =
            url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        if let Some(last) = params.get("last") {
            tags.retain(|t| t > last);
        }
        let mut more = false;
        if let Some(n) = params.get("n").and_then(|n| n.parse::<usize>().ok()) {
            more = tags.len() > n;
            tags.truncate(n);
        }
        let body = serde_json::json!({"name": name, "tags": tags}).to_string();
        let mut r = full(StatusCode::OK, body);
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        if more {
            let link = format!(
                "</v2/{name}/tags/list?n={}&last={}>; rel=\"next\"",
                params["n"],
                tags.last().unwrap()
            );
            r.headers_mut().insert("link", link.parse().unwrap());
        }
        return r;
    }
    if let Some((name, subject)) = rest.rsplit_once("/referrers/") {
        let found = st
            .referrers
            .lock()
            .get(&(name.to_owned(), subject.to_owned()))
            .cloned();
        return match found {
            Some(list) => {
                let mut r = full(StatusCode::OK, list.to_string());
                r.headers_mut()
                    .insert("content-type", OCI_INDEX.parse().unwrap());
                r
            }
            None => oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        };
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let gate = st.knobs.lock().hold_manifests.clone();
        if let Some(gate) = gate {
            gate.wait().await;
        }
        let found = st
            .manifests
            .lock()
            .get(&(name.to_owned(), reference.to_owned()))
            .cloned();
        return match found {
            Some((media_type, bytes)) => {
                let mut r = full(
                    StatusCode::OK,
                    if head { Bytes::new() } else { bytes.clone() },
                );
                r.headers_mut()
                    .insert("content-type", media_type.parse().unwrap());
                r.headers_mut()
                    .insert("docker-content-digest", digest_of(&bytes).parse().unwrap());
                r.headers_mut().insert("content-length", bytes.len().into());
                r
            }
            None => oci_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_name, digest)) = rest.rsplit_once("/blobs/") {
        let blob = st.blobs.lock().get(digest).cloned();
        let Some(blob) = blob else {
            return oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
        };
        if !head {
            if let Some(base) = st.knobs.lock().redirect_blobs_to.clone() {
                let mut r = full(StatusCode::TEMPORARY_REDIRECT, "");
                r.headers_mut()
                    .insert("location", format!("{base}/cdn/{digest}").parse().unwrap());
                return r;
            }
        }
        let range = if st.knobs.lock().ignore_range {
            None
        } else {
            range
        };
        return send_blob(&st, digest, blob, range, head).await;
    }
    oci_error(StatusCode::NOT_FOUND, "UNSUPPORTED")
}

async fn send_blob(
    st: &Arc<State>,
    digest: &str,
    blob: Bytes,
    range: Option<String>,
    head: bool,
) -> Response<Body> {
    let total = blob.len();
    let blob = st
        .knobs
        .lock()
        .substitute
        .get(digest)
        .cloned()
        .unwrap_or(blob);
    let total = if blob.len() != total {
        blob.len()
    } else {
        total
    };
    let (mut data, status, start) = match range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
    {
        Some(start) => {
            let start: usize = start.parse().unwrap();
            (blob.slice(start..), StatusCode::PARTIAL_CONTENT, start)
        }
        None => (blob.clone(), StatusCode::OK, 0),
    };
    let announced = data.len();
    let knobs = st.knobs.lock();
    if knobs.corrupt.contains(digest) {
        let mut v = data.to_vec();
        let i = v.len() / 2;
        v[i] ^= 0xff;
        data = Bytes::from(v);
    }
    let cut = knobs.cut.get(digest).copied();
    let hold = knobs.hold.get(digest).cloned();
    let slow = knobs.slow;
    drop(knobs);
    let cut_at = match cut {
        Some((at, times)) if times > 0 => {
            let mut k = st.knobs.lock();
            k.cut.insert(digest.to_owned(), (at, times - 1));
            Some(at.saturating_sub(start))
        }
        _ => None,
    };
    let response_len = announced;
    let body: Body = if head {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        let stream = futures_util::stream::unfold(
            (data, 0usize, cut_at, hold, slow, false),
            move |(data, pos, cut_at, hold, slow, released)| async move {
                if pos >= data.len() {
                    return None;
                }
                let chunk = slow.map_or(64 * 1024, |(n, _)| n);
                let mut end = (pos + chunk).min(data.len());
                if let Some(at) = cut_at {
                    if pos >= at {
                        // Let hyper flush what was sent before the connection breaks.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return Some((
                            Err(std::io::Error::other("cut")),
                            (data, usize::MAX, cut_at, hold, slow, released),
                        ));
                    }
                    end = end.min(at);
                }
                let mut released = released;
                if let Some((at, gate)) = &hold {
                    if !released && pos >= at.saturating_sub(start) {
                        gate.wait().await;
                        released = true;
                    } else if !released {
                        end = end.min(at.saturating_sub(start));
                    }
                }
                if let Some((_, delay)) = slow {
                    tokio::time::sleep(delay).await;
                }
                let bytes = data.slice(pos..end);
                Some((
                    Ok(Frame::data(bytes)),
                    (data, end, cut_at, hold, slow, released),
                ))
            },
        );
        StreamBody::new(stream).boxed_unsync()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-length", response_len.into());
    r.headers_mut()
        .insert("content-type", "application/octet-stream".parse().unwrap());
    r.headers_mut()
        .insert("docker-content-digest", digest.parse().unwrap());
    if status == StatusCode::PARTIAL_CONTENT {
        r.headers_mut().insert(
            "content-range",
            format!("bytes {start}-{}/{total}", total - 1)
                .parse()
                .unwrap(),
        );
    }
    r
}
