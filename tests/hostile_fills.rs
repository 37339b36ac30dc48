//! Slow upstreams cost only their own clients: a blob trickled below the upstream's `min_rate` is
//! cut, resumed and finally failed (nothing committed), the wait for a blob response's headers is
//! bounded, a healthy download is never cut, and a client of a healthy upstream never waits on
//! another upstream's stalled fill of the same digest.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fake::{random_bytes, Fake, Gate};
use common::slow_auth::SlowAuth;
use common::{client, config_text, files_under, Up, Wharf};

/// Reads a response body to its end; `Err` with the bytes received when it is cut short.
async fn body(mut res: reqwest::Response) -> Result<Bytes, usize> {
    let mut got = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => return Ok(Bytes::from(got)),
            Err(_) => return Err(got.len()),
        }
    }
}

/// GETs of `digest` the fake saw with a `Range` header (resumes).
fn resumes(fake: &Fake, digest: &str) -> usize {
    fake.seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.ends_with(digest) && s.range.is_some())
        .count()
}

/// Staged or committed files of `digest` under the storage.
fn stored(w: &Wharf, digest: &str) -> usize {
    let hex = digest.trim_start_matches("sha256:");
    files_under(w.dir.path(), hex).len() + files_under(w.dir.path(), ".partial").len()
}

async fn start_one(fake: &Fake, extra: &str, storage: &str) -> Wharf {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        dir.path(),
        "5m",
        &[Up {
            name: "upstream.test",
            url: fake.url(),
            default: true,
            extra,
        }],
    )
    .replace("[storage]\n", &format!("[storage]\n{storage}"));
    Wharf::start_text(dir, &text).await
}

/// A trickle of about 2.5 KB/s against a minimum of 16 KiB/s over 2 s: each attempt is cut after
/// one window, resumed 3 times, then the fill fails; the client's body ends early and nothing is
/// kept. Without a minimum rate the 256 KiB would take over 100 s.
#[tokio::test]
async fn trickled_fill_is_cut_resumed_and_failed_in_bounded_time() {
    let fake = Fake::start().await;
    let blob = random_bytes(256 * 1024, 1);
    let d = fake.add_blob(blob.clone());
    fake.knobs().slow = Some((256, Duration::from_millis(100)));
    let w = start_one(
        &fake,
        "min_rate = \"16KiB\"\nmin_rate_window = \"2s\"\ntimeout = \"5s\"\n",
        "",
    )
    .await;

    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let res = client()
            .get(w.url(&format!("/v2/org/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        body(res).await
    })
    .await
    .expect("a trickled fill must fail within a bounded time");
    let elapsed = started.elapsed();
    let received = outcome.expect_err("the body must be cut short");
    assert!(received < blob.len(), "{received}");
    // Four windows of 2 s and pauses of 0.4 + 0.8 + 1.6 s: about 11 s.
    assert!(elapsed >= Duration::from_secs(7), "{elapsed:?}");
    assert_eq!(resumes(&fake, &d), 3, "{:?}", fake.seen());

    w.settled().await;
    assert_eq!(w.cache().usage().entries, 0);
    assert_eq!(stored(&w, &d), 0);
    // The next request starts afresh (and is not served a half-written blob).
    fake.knobs().slow = None;
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "miss");
    assert_eq!(body(res).await.unwrap(), blob);
}

/// The same trickle where the storage cannot take the blob (larger than `max_size`): the readers go
/// on from the upstream by themselves, and that pass-through is cut, resumed and failed too.
#[tokio::test]
async fn trickled_pass_through_is_cut_resumed_and_failed() {
    let fake = Fake::start().await;
    let blob = random_bytes(2 * 1024 * 1024, 2);
    let d = fake.add_blob(blob.clone());
    fake.knobs().slow = Some((256, Duration::from_millis(100)));
    let w = start_one(
        &fake,
        "min_rate = \"16KiB\"\nmin_rate_window = \"1s\"\ntimeout = \"5s\"\n",
        "max_size = \"1MiB\"\n",
    )
    .await;

    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let res = client()
            .get(w.url(&format!("/v2/org/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        body(res).await
    })
    .await
    .expect("a trickled pass-through must fail within a bounded time");
    let received = outcome.expect_err("the body must be cut short");
    assert!(received < blob.len(), "{received}");
    // The handoff asks from byte 0 with Range, then 3 resumes.
    assert_eq!(resumes(&fake, &d), 4, "{:?}", fake.seen());
    w.settled().await;
    assert_eq!(w.cache().usage().entries, 0);
}

/// Each answer comes just inside the read timeout, but a blob request that goes through the
/// upstream's challenge (401, token, retry) adds them up: the wait for a blob response's headers
/// is bounded as a whole by the upstream's `timeout`.
#[tokio::test]
async fn blob_headers_are_awaited_at_most_timeout_in_all() {
    let hostile = SlowAuth::start(Duration::from_millis(1500)).await;
    let w = Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: hostile.url(),
            default: true,
            extra: "timeout = \"2s\"\n",
        }],
    )
    .await;
    let d = format!("sha256:{}", "ab".repeat(32));
    let started = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        client()
            .get(w.url(&format!("/v2/org/app/blobs/{d}")))
            .send(),
    )
    .await
    .expect("the blob request must be answered")
    .unwrap();
    assert_eq!(res.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(20));
    let text = res.text().await.unwrap();
    assert!(text.contains("upstream.test"), "{text}");
}

/// A big blob at a healthy speed, with a minimum rate on, arrives whole without a single resume.
/// (A guard against cutting honest upstreams: wharf before the minimum rate passed it too.)
#[tokio::test]
async fn healthy_big_blob_is_not_cut() {
    let fake = Fake::start().await;
    let blob = random_bytes(4 * 1024 * 1024, 3);
    let d = fake.add_blob(blob.clone());
    // About 3 MB/s, across several windows, against 256 KiB/s.
    fake.knobs().slow = Some((64 * 1024, Duration::from_millis(20)));
    let w = start_one(
        &fake,
        "min_rate = \"256KiB\"\nmin_rate_window = \"1s\"\n",
        "",
    )
    .await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(body(res).await.unwrap(), blob);
    assert_eq!(resumes(&fake, &d), 0);
    w.settled().await;
    assert_eq!(w.cache().usage().bytes, blob.len() as u64);
}

/// A client pulling a digest through a healthy upstream is not attached to another upstream's
/// stalled fill of it: it gets the whole blob promptly. When the stalled fill finishes later, its
/// identical copy is dropped: the blob is stored and counted once.
#[tokio::test]
async fn slow_upstream_costs_only_its_own_clients() {
    let slow = Fake::start().await;
    let healthy = Fake::start().await;
    let blob = random_bytes(1024 * 1024, 4);
    let d = slow.add_blob(blob.clone());
    healthy.add_blob(blob.clone());
    let gate = Gate::new();
    slow.knobs().hold.insert(d.clone(), (1000, gate.clone()));
    let w = Wharf::start(
        "5m",
        &[
            Up {
                name: "slow.test",
                url: slow.url(),
                default: true,
                // No minimum: the fill stays stalled until the test opens the gate.
                extra: "min_rate = \"0\"\n",
            },
            Up {
                name: "healthy.test",
                url: healthy.url(),
                default: false,
                extra: "",
            },
        ],
    )
    .await;

    let url = w.url(&format!("/v2/org/app/blobs/{d}?ns=slow.test"));
    let first = tokio::spawn(async move {
        let res = client().get(url).send().await.unwrap();
        let cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
        (cache, body(res).await)
    });
    // Wait until the slow fill is under way.
    for _ in 0..500 {
        if slow.count("GET", &d) == 1 && w.running.as_ref().unwrap().fills_in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.count("GET", &d), 1);

    let second = tokio::time::timeout(Duration::from_secs(10), async {
        let res = client()
            .get(w.url(&format!("/v2/org/app/blobs/{d}?ns=healthy.test")))
            .send()
            .await
            .unwrap();
        let cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
        (cache, body(res).await)
    })
    .await
    .expect("the healthy upstream's client must not wait on the stalled fill");
    assert_eq!(second.0, "miss");
    assert_eq!(second.1.unwrap(), blob);
    assert_eq!(healthy.count("GET", &d), 1);
    assert!(!first.is_finished(), "the slow fill is still stalled");

    // The healthy fill has committed; the stalled one finishes now with the same content.
    gate.open();
    let (cache, got) = first.await.unwrap();
    assert_eq!(cache, "miss");
    assert_eq!(got.unwrap(), blob);
    w.settled().await;
    let usage = w.cache().usage();
    assert_eq!(
        (usage.entries, usage.bytes),
        (1, blob.len() as u64),
        "stored and counted once"
    );
    assert!(files_under(w.dir.path(), ".partial").is_empty());
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}?ns=slow.test")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    assert_eq!(body(res).await.unwrap(), blob);
}
