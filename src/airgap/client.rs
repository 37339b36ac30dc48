//! The command side of the control socket ([`super::control`]): what `wharf prefetch`, `export`,
//! `import` and `pin` send to a running wharf, over hyper's HTTP/1.1 client on a `UnixStream`.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;
use tokio::net::UnixStream;
use tokio_util::io::ReaderStream;

use super::control::{self, ErrorBody, PinRequest, PrefetchRequest};
use super::{export, import, pins, prefetch};

/// A request body: bytes or a stream.
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// An export the running wharf streams.
pub struct Export<S> {
    /// The tar's length.
    pub len: Option<u64>,
    /// What the export left out, and why.
    pub warnings: Vec<String>,
    /// The tar.
    pub body: S,
}

/// Talks to the wharf serving a storage.
pub struct Client {
    path: PathBuf,
}

/// Why a request to the running wharf failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket does not answer.
    #[error("the storage is in use by a running wharf, but its control socket {path} does not answer ({source}); is that wharf older than this command, or was the socket removed? Stop that wharf or restart it")]
    Connect {
        /// The socket.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The server refused or failed the request; its message.
    #[error("{0}")]
    Server(String),
    /// The exchange broke off.
    #[error("the connection to the running wharf broke off ({0}); see its log")]
    Broken(String),
}

// === impl Client ===

impl Client {
    /// A client for the wharf serving `storage`.
    pub fn new(storage: &Path) -> Self {
        Self {
            path: control::socket_path(storage),
        }
    }

    async fn send(&self, request: Request<Body>) -> Result<http::Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.path.display().to_string(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Broken(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Broken(e.to_string()))?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        Err(ClientError::Server(
            serde_json::from_slice::<ErrorBody>(&bytes).map_or_else(
                |_| format!("the running wharf answered {status}"),
                |e| e.error,
            ),
        ))
    }

    async fn post_json<T: serde::Serialize>(
        &self,
        path: &str,
        value: &T,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let body = serde_json::to_vec(value).map_err(|e| ClientError::Server(e.to_string()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, "wharf")
            .header(header::CONTENT_TYPE, "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| ClientError::Server(e.to_string()))?;
        self.send(request).await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        response: http::Response<Incoming>,
    ) -> Result<T, ClientError> {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Broken(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Broken(e.to_string()))
    }

    /// Starts a prefetch; its events, as the running wharf sends them.
    ///
    /// # Errors
    /// When the request is refused; a stream item when the connection breaks.
    pub async fn prefetch(
        &self,
        images: Vec<String>,
        options: prefetch::Options,
    ) -> Result<impl Stream<Item = Result<prefetch::Event, ClientError>>, ClientError> {
        let response = self
            .post_json("/prefetch", &PrefetchRequest { images, options })
            .await?;
        let body = response
            .into_body()
            .into_data_stream()
            .map_err(|e| ClientError::Broken(e.to_string()));
        Ok(lines(body).map(|line| {
            line.and_then(|l| {
                serde_json::from_slice(&l).map_err(|e| ClientError::Broken(e.to_string()))
            })
        }))
    }

    /// Starts an export: the tar's length, the export's warnings and the tar.
    ///
    /// # Errors
    /// When the request is refused (something is not cached); a stream item when the connection
    /// breaks.
    pub async fn export(
        &self,
        request: &export::Request,
    ) -> Result<Export<impl Stream<Item = Result<Bytes, ClientError>>>, ClientError> {
        let response = self.post_json("/export", request).await?;
        let len = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let warnings = response
            .headers()
            .get_all(control::WARNING_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| match v.parse::<u64>() {
                Ok(n) => format!("and {n} more warnings (see the running wharf's log)"),
                Err(_) => v.to_owned(),
            })
            .collect();
        let body = response
            .into_body()
            .into_data_stream()
            .map_err(|e| ClientError::Broken(e.to_string()));
        Ok(Export {
            len,
            warnings,
            body,
        })
    }

    /// Sends a bundle to import.
    ///
    /// # Errors
    /// The import's error (naming the bad entry), or a broken connection.
    pub async fn import<R: AsyncRead + Send + 'static>(
        &self,
        bundle: R,
        pin: bool,
        trusted: &[super::sign::TrustedKey],
    ) -> Result<import::Report, ClientError> {
        use base64::Engine as _;
        let stream = ReaderStream::with_capacity(bundle, 256 * 1024).map_ok(Frame::data);
        let mut request = Request::builder();
        for key in trusted {
            request = request.header(
                super::control::TRUSTED_KEY_HEADER,
                base64::engine::general_purpose::STANDARD.encode(key.key),
            );
        }
        let request = request
            .method(Method::POST)
            .uri(if pin {
                "/import?pin=true"
            } else {
                "/import?pin=false"
            })
            .header(header::HOST, "wharf")
            .header(header::CONTENT_TYPE, "application/x-tar")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .map_err(|e| ClientError::Server(e.to_string()))?;
        let response = self.send(request).await?;
        Self::json(response).await
    }

    /// Pins or unpins images.
    ///
    /// # Errors
    /// When the request is refused or the connection breaks.
    pub async fn pin(&self, images: Vec<String>, pin: bool) -> Result<pins::Output, ClientError> {
        let response = self.post_json("/pin", &PinRequest { images, pin }).await?;
        Self::json(response).await
    }

    /// Lists the pins.
    ///
    /// # Errors
    /// When the request is refused or the connection breaks.
    pub async fn pins(&self) -> Result<pins::Output, ClientError> {
        self.get_json("/pins").await
    }

    /// The running wharf's status report (what `/status.json` serves).
    ///
    /// # Errors
    /// When the request is refused or the connection breaks.
    pub async fn status(&self) -> Result<crate::status::StatusReport, ClientError> {
        self.get_json("/status").await
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.path
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, "wharf")
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| ClientError::Server(e.to_string()))?;
        let response = self.send(request).await?;
        Self::json(response).await
    }
}

/// Splits a byte stream into lines (without the `\n`).
fn lines(
    body: impl Stream<Item = Result<Bytes, ClientError>> + Unpin,
) -> impl Stream<Item = Result<Bytes, ClientError>> {
    futures_util::stream::unfold(
        (body, Vec::<u8>::new(), false),
        |(mut body, mut buf, mut ended)| async move {
            loop {
                if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    return Some((
                        Ok(Bytes::copy_from_slice(&line[..line.len() - 1])),
                        (body, buf, ended),
                    ));
                }
                if ended {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (body, buf, true))),
                    None => {
                        ended = true;
                        if !buf.is_empty() {
                            buf.push(b'\n');
                        }
                    }
                }
            }
        },
    )
}
