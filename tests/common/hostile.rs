//! A hostile upstream on 127.0.0.1:0, written on raw TCP so it can do what no well-behaved HTTP
//! server library lets it: trickle a body a byte at a time, announce and stream a body far larger
//! than anything sensible, redirect anywhere. Each test gives it a handler that maps a request to a
//! [`Reply`]; it records the requests it saw, the connections it accepted, and whether a reply's
//! body was cut off by the peer before it was all written.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the hostile server read.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path with its query, as sent.
    pub target: String,
    /// The `Host` header (`127.0.0.1:<port>`).
    pub host: String,
    pub authorization: Option<String>,
}

/// What to answer.
pub enum Reply {
    /// A whole response at once.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The headers (with a `Content-Length` for the whole body) at once, then the body one byte
    /// per `every`.
    Trickle {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        every: Duration,
    },
    /// `reply`, after a silence of `after`.
    Late { after: Duration, reply: Box<Reply> },
    /// `len` bytes of `x` in 64 KiB writes, with a `Content-Length` when `announce`, else
    /// delimited by closing the connection.
    Huge {
        status: u16,
        headers: Vec<(String, String)>,
        len: u64,
        announce: bool,
    },
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    pub requests: Mutex<Vec<Request>>,
    pub connections: AtomicUsize,
    /// Body bytes written, over all replies.
    pub body_written: AtomicU64,
    /// A reply's body could not be written to the end: the peer closed the connection.
    pub cut: AtomicBool,
    /// Replies whose writing finished (completely or cut).
    pub finished: AtomicUsize,
}

/// A running hostile server; dropping it stops it.
pub struct Hostile {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// Starts a server on 127.0.0.1:0 that answers with `handler`.
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    seen.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, handler.clone(), seen.clone()));
                }
            })
        };
        Hostile { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.seen.requests.lock().clone()
    }

    pub fn cut(&self) -> bool {
        self.seen.cut.load(Ordering::SeqCst)
    }

    pub fn body_written(&self) -> u64 {
        self.seen.body_written.load(Ordering::SeqCst)
    }

    /// Waits (up to `limit`) until `n` replies finished writing.
    pub async fn finished(&self, n: usize, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.seen.finished.load(Ordering::SeqCst) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// A redirect.
pub fn redirect(location: &str) -> Reply {
    Reply::Full {
        status: 302,
        headers: vec![("Location".into(), location.into())],
        body: Vec::new(),
    }
}

/// A 200 with this content type and body.
pub fn ok(content_type: &str, body: &[u8]) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![("Content-Type".into(), content_type.into())],
        body: body.to_vec(),
    }
}

/// A 404 with an OCI error body.
pub fn not_found() -> Reply {
    Reply::Full {
        status: 404,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: br#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#.to_vec(),
    }
}

/// Serves one request on a connection, then closes it.
async fn serve(mut stream: TcpStream, handler: Arc<Handler>, seen: Arc<Seen>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let request = Request {
        method,
        target,
        host: header("host").unwrap_or_default(),
        authorization: header("authorization"),
    };
    seen.requests.lock().push(request.clone());
    let reply = handler(&request);
    let head_only = request.method == "HEAD";
    let complete = write_reply(&mut stream, reply, head_only, &seen).await;
    if !complete {
        seen.cut.store(true, Ordering::SeqCst);
    }
    seen.finished.fetch_add(1, Ordering::SeqCst);
    let _ = stream.shutdown().await;
}

fn head_text(status: u16, headers: &[(String, String)], length: Option<u64>) -> String {
    let mut text = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(length) = length {
        text.push_str(&format!("Content-Length: {length}\r\n"));
    }
    text.push_str("\r\n");
    text
}

/// Writes a reply; false when the peer cut it off before the end.
async fn write_reply(stream: &mut TcpStream, reply: Reply, head_only: bool, seen: &Seen) -> bool {
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut out = head_text(status, &headers, Some(body.len() as u64)).into_bytes();
            if !head_only {
                out.extend_from_slice(&body);
            }
            stream.write_all(&out).await.is_ok()
        }
        Reply::Trickle {
            status,
            headers,
            body,
            every,
        } => {
            let head = head_text(status, &headers, Some(body.len() as u64));
            if stream.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            if head_only {
                return true;
            }
            for byte in body {
                tokio::time::sleep(every).await;
                if stream.write_all(&[byte]).await.is_err() {
                    return false;
                }
                seen.body_written.fetch_add(1, Ordering::SeqCst);
            }
            true
        }
        Reply::Late { after, reply } => {
            tokio::time::sleep(after).await;
            Box::pin(write_reply(stream, *reply, head_only, seen)).await
        }
        Reply::Huge {
            status,
            headers,
            len,
            announce,
        } => {
            let head = head_text(status, &headers, announce.then_some(len));
            if stream.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return false;
                }
                seen.body_written.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
            true
        }
    }
}
