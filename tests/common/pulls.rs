//! Pulling blobs through a test wharf and waiting on its state: shared by the lifecycle and
//! eviction suites.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use wharf::oci::Digest;

use super::{client, Wharf};

/// GETs a path; returns the status, `X-Cache`, and the body.
pub async fn get(w: &Wharf, path: &str) -> (u16, String, Bytes) {
    let res = client().get(w.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cache, res.bytes().await.unwrap())
}

/// Pulls a blob, checks its bytes, and waits for its fill to settle. Returns `X-Cache`.
pub async fn pull(w: &Wharf, digest: &str, want: &Bytes) -> String {
    let (status, cache, body) = get(w, &format!("/v2/org/app/blobs/{digest}")).await;
    assert_eq!(status, 200, "{digest}");
    assert!(body == *want, "{digest}: wrong bytes");
    w.settled().await;
    cache
}

/// Polls `cond` every 10 ms until it holds, failing after a generous deadline.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A digest from its text.
pub fn d(s: &str) -> Digest {
    s.parse().unwrap()
}
