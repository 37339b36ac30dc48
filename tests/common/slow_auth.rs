//! A hostile upstream that answers every request just inside a read timeout, and always with an
//! authentication challenge: `401` with a Bearer challenge whose realm is its own `/token`, which
//! hands out a token that is then refused again. Each answer alone is prompt enough; a request
//! that goes through the challenge (401, token, retry) adds them up.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The running server; dropping it stops it and closes every connection.
pub struct SlowAuth {
    pub addr: SocketAddr,
    /// Requests answered or being answered.
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowAuth {
    /// Starts the server; every answer waits `delay` first.
    pub async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(answer(addr, &req))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn answer(me: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/token" {
        return Response::new(Full::new(Bytes::from_static(br#"{"token":"t"}"#)));
    }
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#,
    )));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        "www-authenticate",
        format!("Bearer realm=\"http://{me}/token\",service=\"slow\"")
            .parse()
            .unwrap(),
    );
    r
}

impl Drop for SlowAuth {
    fn drop(&mut self) {
        self.task.abort();
    }
}
