//! The control socket: how `wharf prefetch`, `export`, `import`, `pin` and `status` reach a wharf that is
//! serving from the storage they were pointed at.
//!
//! sled lets one process open the index, so while `wharf serve` runs, these commands cannot open
//! the storage themselves; opening it fails with [`crate::cache::OpenError::Locked`], which is the
//! precise signal to ask the server instead. The server listens on a Unix socket in its storage
//! directory, `<storage>/admin.sock`, which the commands find from the same configuration file: no
//! extra port, nothing reachable from the network (these requests change what clients are served),
//! mode 0600 and a check of the peer's user id (the server's own user, or root). The socket is
//! created in a private directory and renamed into place, so it is never reachable with looser
//! permissions; a stale one left by a crash is replaced at start (the index lock proves no other
//! wharf owns it), and it is removed at shutdown.
//!
//! The protocol is HTTP/1.1 (hyper on both ends), JSON in, and out:
//! - `POST /prefetch`: `{"images":[...],"options":{...}}`, answered with one [`prefetch::Event`]
//!   per line (NDJSON) as the prefetch goes;
//! - `POST /export`: an [`export::Request`], answered with the tar (exact `Content-Length`), or an
//!   error before the first byte when something is not cached;
//! - `POST /import?pin=true|false`: the tar as the body, with one `x-wharf-trusted-key` header per
//!   key the bundle must be signed with, answered with an [`import::Report`];
//! - `POST /pin`: `{"images":[...],"pin":true|false}`, and `GET /pins`: [`pins::Output`];
//! - `GET /status`: the [`crate::status::StatusReport`] (what `/status.json` serves), for
//!   `wharf status`.
//!
//! Errors are `{"error":"..."}` with a 4xx (the request or bundle is wrong) or 5xx status.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::io::{ReaderStream, StreamReader};
use tracing::{debug, error, info, warn};

use super::{export, import, pins, prefetch, sign};
use crate::server::response::Body;
use crate::server::{App, Current};

/// The socket's name in the storage directory.
pub const SOCKET: &str = "admin.sock";

use crate::limits::MAX_CONTROL_REQUEST as MAX_REQUEST;

/// Carries an export's warnings (one per value) before the tar; a last value that is a bare number
/// says how many more were left out.
pub const WARNING_HEADER: header::HeaderName = header::HeaderName::from_static("x-wharf-warning");

/// Carries, on `POST /import`, a key the bundle must be signed with (repeated for several).
pub const TRUSTED_KEY_HEADER: header::HeaderName =
    header::HeaderName::from_static("x-wharf-trusted-key");

/// The most warnings sent in headers.
const MAX_WARNINGS: usize = 50;

/// The socket of the storage at `storage`.
pub fn socket_path(storage: &Path) -> PathBuf {
    storage.join(SOCKET)
}

/// A prefetch request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefetchRequest {
    /// Canonical references.
    pub images: Vec<String>,
    /// How.
    pub options: prefetch::Options,
}

/// A pin or unpin request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRequest {
    /// Canonical references.
    pub images: Vec<String>,
    /// Pin (`true`) or unpin.
    pub pin: bool,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, one line.
    pub error: String,
}

/// The running control socket; [`Control::stop`] ends it.
pub struct Control {
    path: PathBuf,
    accept: JoinHandle<()>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

struct State {
    apps: Arc<Current>,
    storage: PathBuf,
    config_file: String,
    /// The user the socket belongs to: peers must be this user or root.
    owner: u32,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

/// Binds `<storage>/admin.sock`, mode 0600, replacing a stale one.
///
/// # Errors
/// When the socket cannot be created.
pub fn bind(storage: &Path) -> io::Result<(UnixListener, PathBuf)> {
    let path = socket_path(storage);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            return Err(io::Error::other(format!(
                "{} is a directory, not a socket",
                path.display()
            )))
        }
        // Stale: this process holds the index lock, so no other wharf is serving this storage.
        Ok(_) => std::fs::remove_file(&path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bound in a private directory, made 0600 there, then renamed into place: the socket is never
    // reachable with the umask's permissions.
    let private = storage.join(format!(".admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let result = (|| -> io::Result<UnixListener> {
        let tmp = private.join("s");
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    Ok((result?, path))
}

/// Serves the control socket for `app` until [`Control::stop`].
pub fn spawn(
    listener: UnixListener,
    path: PathBuf,
    apps: Arc<Current>,
    storage: &Path,
    config_file: &Path,
) -> Control {
    let tasks = Arc::new(Mutex::new(JoinSet::new()));
    let owner = std::fs::metadata(&path).map_or(0, |m| m.uid());
    let state = Arc::new(State {
        apps,
        storage: storage.to_owned(),
        config_file: config_file.display().to_string(),
        owner,
        tasks: tasks.clone(),
    });
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    debug!(%error, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = stream.peer_cred().map(|c| c.uid()).ok();
            if peer.is_none_or(|uid| uid != state.owner && uid != 0) {
                warn!(
                    peer_uid = ?peer,
                    owner = state.owner,
                    "control socket: refused a connection from another user"
                );
                continue;
            }
            let state = state.clone();
            spawn_task(&state.tasks.clone(), async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, request).await) }
                });
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%error, "control connection ended with an error");
                }
            });
        }
    });
    Control {
        path,
        accept,
        tasks,
    }
}

fn spawn_task(
    tasks: &Mutex<JoinSet<()>>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut set = tasks.lock();
    // Reap what finished, so the set does not grow with every connection.
    while set.try_join_next().is_some() {}
    set.spawn(task);
}

// === impl State ===

impl State {
    /// The mirror as the configuration in use makes it (a reload may have changed it).
    fn app(&self) -> Arc<App> {
        self.apps.load()
    }
}

// === impl Control ===

impl Control {
    /// Stops accepting, ends the requests in progress (a prefetch stops, an import is abandoned
    /// with nothing visible) and removes the socket.
    pub fn stop(self) {
        self.accept.abort();
        self.tasks.lock().abort_all();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(crate::server::response::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

async fn read_json<T: serde::de::DeserializeOwned>(body: Incoming) -> Result<T, Response<Body>> {
    let limited = http_body_util::Limited::new(body, MAX_REQUEST);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading the request: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad request: {e}")))
}

async fn answer(state: &Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/prefetch") => match read_json::<PrefetchRequest>(body).await {
            Ok(req) => prefetch_stream(state, req),
            Err(r) => r,
        },
        (&Method::POST, "/export") => match read_json::<export::Request>(body).await {
            Ok(req) => export_stream(state, req).await,
            Err(r) => r,
        },
        (&Method::POST, "/import") => {
            let pin = !parts.uri.query().is_some_and(|q| q.contains("pin=false"));
            match trusted_keys(&parts.headers) {
                Ok(trusted) => import_body(state, body, import::Options { pin, trusted }).await,
                Err(why) => error(StatusCode::BAD_REQUEST, why),
            }
        }
        (&Method::POST, "/pin") => match read_json::<PinRequest>(body).await {
            Ok(req) => {
                let mut images = Vec::with_capacity(req.images.len());
                for text in &req.images {
                    match export::parse_image(&state.app(), text) {
                        Ok(image) => images.push(image),
                        Err(e) => return error(StatusCode::BAD_REQUEST, e),
                    }
                }
                let out = pins::pin(&state.app().cache, &images, req.pin, &state.config_file).await;
                json(StatusCode::OK, &out)
            }
            Err(r) => r,
        },
        (&Method::GET, "/pins") => json(StatusCode::OK, &pins::list(&state.app().cache).await),
        (&Method::GET, "/status") => json(
            StatusCode::OK,
            &crate::status::report(&state.app()).await,
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "no such request; this wharf knows POST /prefetch, /export, /import, /pin and GET /pins, /status",
        ),
    }
}

fn prefetch_stream(state: &Arc<State>, req: PrefetchRequest) -> Response<Body> {
    let mut images = Vec::with_capacity(req.images.len());
    for text in &req.images {
        match export::parse_image(&state.app(), text) {
            Ok(image) => images.push(image),
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    }
    let (events, mut rx) = prefetch::Events::channel(256);
    let (lines_tx, lines_rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(256);
    let app = state.app();
    info!(images = images.len(), "control socket: prefetch");
    spawn_task(&state.tasks, async move {
        let run = prefetch::run(app, images, req.options, events);
        tokio::pin!(run);
        let mut running = true;
        loop {
            tokio::select! {
                _ = &mut run, if running => running = false,
                event = rx.recv() => match event {
                    Some(event) => {
                        let mut line = serde_json::to_vec(&event).unwrap_or_default();
                        line.push(b'\n');
                        if lines_tx.send(Ok(Bytes::from(line))).await.is_err() {
                            // The client went away: stop the prefetch (its downloads finish).
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    });
    let stream = tokio_stream_from(lines_rx).map_ok(Frame::data);
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// A stream of what a channel receives.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn export_stream(state: &Arc<State>, req: export::Request) -> Response<Body> {
    let plan = match export::plan(&state.app(), &req, &state.storage).await {
        Ok(plan) => plan,
        Err(e @ (export::ExportError::Request(_) | export::ExportError::NotCached(_))) => {
            return error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => {
            error!(error = %e, "control socket: export failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    let len = plan.len();
    let warnings = plan.warnings.clone();
    for warning in &warnings {
        warn!(%warning, "control socket: export");
    }
    info!(
        images = plan.manifest.images.len(),
        bytes = len,
        "control socket: export"
    );
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let app = state.app();
    spawn_task(&state.tasks, async move {
        let result = export::write(&app, &plan, writer, |_| {}).await;
        match &result {
            Ok(_) => {}
            Err(export::ExportError::Write(_)) => {
                info!("control socket: export stopped: the command went away");
            }
            Err(e) => {
                error!(error = %e, "control socket: export failed mid-way; the command removes what it got");
            }
        }
        let _ = done_tx.send(result.map(|_| ()).map_err(|e| e.to_string()));
    });
    let tail = futures_util::stream::once(done_rx).filter_map(|r| async move {
        match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(io::Error::other(e))),
            Err(_) => Some(Err(io::Error::other("the export stopped"))),
        }
    });
    let stream = ReaderStream::with_capacity(reader, 256 * 1024)
        .chain(tail)
        .map_ok(Frame::data);
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-tar"),
    );
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    for warning in warnings.iter().take(MAX_WARNINGS) {
        if let Ok(v) = header::HeaderValue::from_str(warning) {
            h.append(WARNING_HEADER, v);
        }
    }
    if warnings.len() > MAX_WARNINGS {
        h.append(
            WARNING_HEADER,
            header::HeaderValue::from(warnings.len() - MAX_WARNINGS),
        );
    }
    r
}

/// The keys an import must find the bundle signed with: one [`TRUSTED_KEY_HEADER`] each, the 32
/// public key bytes in base64 (the command reads `[import] trusted_keys` and `--trusted-key`).
fn trusted_keys(headers: &http::HeaderMap) -> Result<Vec<sign::TrustedKey>, String> {
    use base64::Engine as _;
    headers
        .get_all(TRUSTED_KEY_HEADER)
        .iter()
        .map(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .map(|key| sign::TrustedKey {
                    key,
                    source: "the command".into(),
                })
                .ok_or_else(|| {
                    format!("a {TRUSTED_KEY_HEADER} header that is not a base64 Ed25519 public key")
                })
        })
        .collect()
}

async fn import_body(
    state: &Arc<State>,
    body: Incoming,
    options: import::Options,
) -> Response<Body> {
    info!(
        trusted_keys = options.trusted.len(),
        "control socket: import"
    );
    let stream = body.into_data_stream().map_err(io::Error::other);
    let mut reader = StreamReader::new(stream);
    let result = import::run(&state.app(), &mut reader, options).await;
    match result {
        Ok(report) => {
            info!(
                images = report.images.len(),
                blobs_new = report.blobs_new,
                bytes_new = report.bytes_new,
                "control socket: import done"
            );
            json(StatusCode::OK, &report)
        }
        Err(e) => {
            // Read the rest, so the client gets this answer rather than a broken pipe.
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
            if e.is_bad_bundle() {
                warn!(error = %e, "control socket: import refused; nothing was stored");
                error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            } else {
                error!(error = %e, "control socket: import failed; nothing was made visible");
                error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_the_new_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        std::fs::write(&path, b"left by a crash").unwrap();
        let (_listener, bound) = bind(dir.path()).unwrap();
        assert_eq!(bound, path);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Nothing else is left in the storage directory.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [SOCKET]);
        tokio::net::UnixStream::connect(&path).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(
            bind(dir.path()).is_err(),
            "a directory in the way is not removed"
        );
    }
}
