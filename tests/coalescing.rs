//! Concurrent pulls: one upstream fetch per blob, every client streams as bytes arrive, and every
//! failure mode leaves no task, file handle or partial file behind.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::fake::{random_bytes, Fake, Gate, OCI_MANIFEST};
use common::{client, files_under, Up, Wharf};
use futures_util::future::join_all;
use tokio::sync::mpsc;

/// File descriptors of this process that point into `dir` (deleted files included).
fn open_files_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            if target.starts_with(&dir) {
                out.push(target.display().to_string());
            }
        }
    }
    out
}

/// Waits until the fills are over and nothing under the storage is open or partial.
async fn assert_clean(w: &Wharf) {
    for _ in 0..200 {
        let running = w.running.as_ref().unwrap();
        let open: Vec<String> = open_files_under(w.dir.path())
            .into_iter()
            .filter(|p| !p.contains("/index/"))
            .collect();
        if running.fills_in_flight() == 0
            && open.is_empty()
            && files_under(w.dir.path(), ".partial").is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "left behind: fills {}, open {:?}, partial {:?}",
        w.running.as_ref().unwrap().fills_in_flight(),
        open_files_under(w.dir.path()),
        files_under(w.dir.path(), ".partial")
    );
}

enum Event {
    /// Client `i` has received this many bytes in total.
    Progress(usize, usize),
}

/// Streams a blob, comparing every chunk with `expected` as it arrives, reporting progress.
async fn pull(
    url: String,
    expected: Bytes,
    i: usize,
    events: mpsc::UnboundedSender<Event>,
) -> Result<String, String> {
    let mut res = client().get(url).send().await.map_err(|e| e.to_string())?;
    let cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
    let mut pos = 0usize;
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                if expected.get(pos..pos + chunk.len()) != Some(&chunk[..]) {
                    return Err(format!("client {i}: wrong bytes at {pos}"));
                }
                pos += chunk.len();
                let _ = events.send(Event::Progress(i, pos));
            }
            Ok(None) => break,
            Err(e) => return Err(format!("client {i}: aborted after {pos} bytes: {e}")),
        }
    }
    if pos != expected.len() {
        return Err(format!("client {i}: short body ({pos})"));
    }
    Ok(cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_one_upstream_get_all_stream_before_the_fill_ends() {
    const SIZE: usize = 64 * 1024 * 1024;
    const CLIENTS: usize = 50;
    let up = Fake::start().await;
    let data = random_bytes(SIZE, 1);
    let d = up.add_blob(data.clone());
    let gate = Gate::new();
    {
        let mut k = up.knobs();
        // Slow (1 MiB chunks with a pause), and held at the half way mark until every client has
        // bytes: so no client can have waited for the end of the fill.
        k.slow = Some((1024 * 1024, Duration::from_millis(5)));
        k.hold.insert(d.clone(), (SIZE / 2, gate.clone()));
    }
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(pull(url.clone(), data.clone(), i, tx.clone())))
        .collect();
    drop(tx);
    let mut progressed = vec![0usize; CLIENTS];
    while progressed.contains(&0) {
        let Some(Event::Progress(i, n)) = rx.recv().await else {
            panic!("a client ended early")
        };
        progressed[i] = n;
    }
    // Every client has bytes, and the upstream has not got past its half-way mark.
    assert!(progressed.iter().all(|&p| p > 0 && p < SIZE / 2 + 1));
    gate.open();
    let results = join_all(tasks).await;
    let mut outcomes = std::collections::HashMap::new();
    for r in results {
        let cache = r.unwrap().unwrap();
        *outcomes.entry(cache).or_insert(0) += 1;
    }
    assert_eq!(
        up.count("GET", "/blobs/"),
        1,
        "one upstream GET for {CLIENTS} clients"
    );
    assert_eq!(outcomes.get("miss"), Some(&1), "{outcomes:?}");
    assert_eq!(
        outcomes.get("coalesced"),
        Some(&(CLIENTS - 1)),
        "{outcomes:?}"
    );
    assert_clean(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_survives_its_leader_disconnecting() {
    let up = Fake::start().await;
    let data = random_bytes(4 * 1024 * 1024, 2);
    let d = up.add_blob(data.clone());
    let gate = Gate::new();
    up.knobs()
        .hold
        .insert(d.clone(), (data.len() / 2, gate.clone()));
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));

    let mut leader = client().get(&url).send().await.unwrap();
    assert_eq!(leader.headers()["x-cache"], "miss");
    leader.chunk().await.unwrap().unwrap();
    drop(leader); // the leader's client goes away mid-fill
                  // The fill goes on, held at the gate; a follower joins it before the gate opens (its headers
                  // come at once), so it cannot be served from the finished blob instead.
    let follower = client().get(&url).send().await.unwrap();
    assert_eq!(follower.headers()["x-cache"], "coalesced");
    gate.open();
    assert!(follower.bytes().await.unwrap() == data);
    w.settled().await;
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    assert!(res.bytes().await.unwrap() == data);
    assert_eq!(up.count("GET", "/blobs/"), 1);
    assert_clean(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upstream_aborts_every_client_and_the_next_request_starts_afresh() {
    let up = Fake::start().await;
    let data = random_bytes(2 * 1024 * 1024, 3);
    let d = up.add_blob(data.clone());
    let gate = Gate::new();
    {
        let mut k = up.knobs();
        // Cut the first GET and all three resumes at 1 MiB; hold the first GET until all attached.
        k.cut.insert(d.clone(), (1024 * 1024, 4));
        k.hold.insert(d.clone(), (512 * 1024, gate.clone()));
    }
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..5)
        .map(|i| tokio::spawn(pull(url.clone(), data.clone(), i, tx.clone())))
        .collect();
    let mut seen = [false; 5];
    while !seen.iter().all(|s| *s) {
        let Some(Event::Progress(i, _)) = rx.recv().await else {
            panic!()
        };
        seen[i] = true;
    }
    up.knobs().hold.clear();
    gate.open();
    for t in join_all(tasks).await {
        let err = t.unwrap().unwrap_err();
        assert!(err.contains("aborted"), "{err}");
    }
    assert_clean(&w).await;
    up.knobs().cut.clear();
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "miss");
    assert!(res.bytes().await.unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_aborts_every_attached_client() {
    let up = Fake::start().await;
    let data = random_bytes(1024 * 1024, 4);
    let d = up.add_blob(data.clone());
    let gate = Gate::new();
    {
        let mut k = up.knobs();
        k.corrupt.insert(d.clone());
        k.hold.insert(d.clone(), (100_000, gate.clone()));
    }
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The first 100 000 bytes are right (the corrupt byte is in the middle): every client gets them.
    let tasks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(pull(url.clone(), data.clone(), i, tx.clone())))
        .collect();
    let mut seen = [false; 8];
    while !seen.iter().all(|s| *s) {
        let Some(Event::Progress(i, _)) = rx.recv().await else {
            panic!()
        };
        seen[i] = true;
    }
    gate.open();
    for t in join_all(tasks).await {
        let err = t.unwrap().unwrap_err();
        assert!(
            err.contains("aborted") || err.contains("wrong bytes"),
            "{err}"
        );
    }
    assert_clean(&w).await;
    assert_eq!(up.count("GET", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_heads_are_answered_from_a_fill_in_flight() {
    let up = Fake::start().await;
    let data = random_bytes(1024 * 1024, 5);
    let d = up.add_blob(data.clone());
    let gate = Gate::new();
    up.knobs()
        .hold
        .insert(d.clone(), (512 * 1024, gate.clone()));
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));
    let mut leader = client().get(&url).send().await.unwrap();
    leader.chunk().await.unwrap();

    // HEAD while the fill runs: size and digest without asking the upstream again.
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(head.headers()["x-cache"], "coalesced");
    // A range already received is served while the upstream is still held, all but its last byte:
    // that one only once the whole blob is verified.
    let mut early = client()
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 206);
    assert_eq!(early.headers()["x-cache"], "coalesced");
    let mut got = Vec::new();
    while got.len() < 999 {
        got.extend_from_slice(&early.chunk().await.unwrap().unwrap());
    }
    assert_eq!(
        got.len(),
        999,
        "the range's last byte waits for verification"
    );
    // A range past the hold waits for its bytes.
    let late = tokio::spawn(
        client()
            .get(&url)
            .header("range", "bytes=900000-900099")
            .send(),
    );
    gate.open();
    while let Some(c) = early.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(got == data.slice(1000..2000));
    let late = late.await.unwrap().unwrap();
    assert_eq!(late.status(), 206);
    assert!(late.bytes().await.unwrap() == data.slice(900_000..900_100));
    assert!(leader_rest(leader).await > 0);
    assert_eq!(up.count("GET", "/blobs/"), 1);
    assert_eq!(up.count("HEAD", "/blobs/"), 0);
    assert_clean(&w).await;
}

async fn leader_rest(mut res: reqwest::Response) -> usize {
    let mut n = 0;
    while let Some(c) = res.chunk().await.unwrap() {
        n += c.len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_manifest_requests_share_one_upstream_request() {
    let up = Fake::start().await;
    up.add_manifest(
        "org/app",
        Some("1"),
        OCI_MANIFEST,
        r#"{"schemaVersion":2,"layers":[]}"#,
    );
    let gate = Gate::new();
    up.knobs().hold_manifests = Some(gate.clone());
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url("/v2/org/app/manifests/1");
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(client().get(url.clone()).send()))
        .collect();
    // Let the requests reach wharf and join the flight, then let the upstream answer. Any that
    // arrived later find the tag cached: either way the upstream is asked once.
    while up.count("GET", "/manifests/1") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    for t in join_all(tasks).await {
        assert_eq!(t.unwrap().unwrap().status(), 200);
    }
    assert_eq!(up.count("GET", "/manifests/1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_beyond_the_cap_wait_a_bounded_time() {
    let up = Fake::start().await;
    let a = random_bytes(300_000, 6);
    let b = random_bytes(300_000, 7);
    let da = up.add_blob(a.clone());
    let db = up.add_blob(b.clone());
    let gate = Gate::new();
    up.knobs().hold.insert(da.clone(), (100_000, gate.clone()));
    let w = Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: up.url(),
            default: true,
            extra: "max_fills = 1\nfill_wait = \"300ms\"",
        }],
    )
    .await;
    let mut first = client()
        .get(w.url(&format!("/v2/org/app/blobs/{da}")))
        .send()
        .await
        .unwrap();
    first.chunk().await.unwrap();
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{db}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        body.contains("TOOMANYREQUESTS") && body.contains("upstream.test"),
        "{body}"
    );
    assert_eq!(
        up.count("GET", &db),
        0,
        "no second upstream connection was opened"
    );
    gate.open();
    assert!(leader_rest(first).await > 0);
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{db}")))
        .send()
        .await
        .unwrap();
    assert!(res.bytes().await.unwrap() == b);
    assert_clean(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_fill_fails_after_the_timeout() {
    let up = Fake::start().await;
    let data = random_bytes(300_000, 8);
    let d = up.add_blob(data.clone());
    let gate = Gate::new(); // never opened: the upstream stalls half-way, every time
    up.knobs().hold.insert(d.clone(), (150_000, gate.clone()));
    let w = Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: up.url(),
            default: true,
            extra: "timeout = \"200ms\"",
        }],
    )
    .await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = pull(
        w.url(&format!("/v2/org/app/blobs/{d}")),
        data.clone(),
        0,
        tx,
    )
    .await
    .unwrap_err();
    assert!(err.contains("aborted"), "{err}");
    assert_clean(&w).await;
    assert_eq!(
        up.count("GET", "/blobs/"),
        4,
        "the first GET and three resumes"
    );
}
