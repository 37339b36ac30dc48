//! Eviction with an in-process wharf: the size budget and LRU order, pins, eviction while a response
//! streams. These run on the disk and again on the in-memory stores (`tests/memory_backend.rs`), so
//! blobs are looked up through the store, not as files.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::fake::{digest_of, random_bytes, Fake};
use common::pulls::{d, get, pull, wait_for};
use common::{client, Wharf};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn config(dir: &Path, upstream: &str, storage: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n{storage}\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n{extra}\n",
        dir.display()
    )
}

async fn start(up: &Fake, storage: &str, extra: &str) -> Wharf {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &up.url(), storage, extra);
    Wharf::start_text(dir, &text).await
}

fn indexed(w: &Wharf, digest: &str) -> bool {
    w.cache().index().blob_size(&d(digest)).unwrap().is_some()
}

/// Whether a blob is stored; index and store must agree (call it when no eviction is running: one
/// in progress removes the blob, then the record).
async fn stored(w: &Wharf, digest: &str) -> bool {
    let indexed = indexed(w, digest);
    let in_store = w.stored(digest).await;
    assert_eq!(indexed, in_store, "{digest}: index and store disagree");
    indexed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_budget_and_removes_least_recently_used_first() {
    let up = Fake::start().await;
    let blobs: Vec<(String, Bytes)> = (0..8)
        .map(|i| {
            let b = random_bytes(512 * KIB, 100 + i);
            (up.add_blob(b.clone()), b)
        })
        .collect();
    // 4 MiB budget: eviction above 3 MiB (six blobs), down to 2 MiB (four blobs).
    let w = start(
        &up,
        "max_size = \"4MiB\"\nhigh_watermark = 75\nlow_watermark = 50",
        "",
    )
    .await;
    for (digest, bytes) in &blobs[..6] {
        assert_eq!(pull(&w, digest, bytes).await, "miss");
    }
    assert_eq!(w.cache().usage().bytes, 3 * MIB as u64);
    assert_eq!(
        w.cache().evictions().count,
        0,
        "not above the high watermark yet"
    );
    // Used again: blobs 0 and 1 are now more recent than 2 to 5.
    for (digest, bytes) in &blobs[..2] {
        assert_eq!(pull(&w, digest, bytes).await, "hit");
    }
    // The seventh goes over the high watermark: the three least recently used go.
    pull(&w, &blobs[6].0, &blobs[6].1).await;
    wait_for("three evictions", || async {
        w.cache().evictions().count >= 3
    })
    .await;
    let mut kept = Vec::new();
    for (i, (digest, _)) in blobs.iter().enumerate().take(7) {
        if stored(&w, digest).await {
            kept.push(i);
        }
    }
    assert_eq!(kept, [0, 1, 5, 6], "least recently used first");
    assert_eq!(w.cache().evictions().count, 3);
    assert_eq!(w.cache().evictions().bytes, 3 * 512 * KIB as u64);
    assert_eq!(w.cache().usage().bytes, 2 * MIB as u64);
    assert_eq!(w.cache().usage().entries, 4);

    // Filling on and on never leaves more than the budget on disk, and evicted blobs come back.
    for round in 0..3 {
        for (digest, bytes) in &blobs {
            pull(&w, digest, bytes).await;
            wait_for("eviction to settle", || async {
                w.cache().committed_and_reserved() <= 3 * MIB as u64
            })
            .await;
            assert!(w.cache().usage().bytes <= 4 * MIB as u64, "round {round}");
        }
    }
    // The accounting matches what the store holds (once a pass in progress has dropped its last
    // record).
    let in_store = || async {
        let mut bytes = 0;
        for (digest, _) in &blobs {
            let size = w.cache().store().size(&d(digest)).await.unwrap();
            bytes += size.unwrap_or(0);
        }
        bytes
    };
    wait_for("the accounting to match the store", || async {
        in_store().await == w.cache().usage().bytes
    })
    .await;
    assert!(in_store().await <= 4 * MIB as u64);
    assert!(
        up.count("GET", &blobs[2].0) >= 2,
        "an evicted blob is fetched again"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_images_survive_eviction() {
    let up = Fake::start().await;
    let pinned = up.add_image("org/pinned", "1", 2, 400 * KIB, 1);
    let amd = up.add_image("org/multi", "amd64", 1, 400 * KIB, 2);
    let arm = up.add_image("org/multi", "arm64", 1, 400 * KIB, 3);
    let (_, index) = up.add_index("org/multi", "1", &[&amd, &arm]);
    let loose: Vec<(String, Bytes)> = (0..6)
        .map(|i| {
            let b = random_bytes(512 * KIB, 200 + i);
            (up.add_blob(b.clone()), b)
        })
        .collect();
    // A 3 MiB budget evicting above 2.1 MiB; the pinned content alone is about 1.6 MiB.
    let w = start(
        &up,
        "max_size = \"3MiB\"\nhigh_watermark = 70\nlow_watermark = 40",
        "[[pin]]\nimage = \"upstream.test/org/pinned:1\"",
    )
    .await;
    let mut keep = vec![pinned.manifest_digest.clone(), index.clone()];
    let (status, _, _) = get(&w, "/v2/org/pinned/manifests/1").await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&w, "/v2/org/multi/manifests/1").await;
    assert_eq!(status, 200);
    for (repo, img) in [
        ("org/pinned", &pinned),
        ("org/multi", &amd),
        ("org/multi", &arm),
    ] {
        let path = format!("/v2/{repo}/manifests/{}", img.manifest_digest);
        assert_eq!(get(&w, &path).await.0, 200);
        for blob in std::iter::once(&img.config).chain(&img.layers) {
            let (status, _, _) = get(&w, &format!("/v2/org/app/blobs/{blob}")).await;
            assert_eq!(status, 200);
            keep.push(blob.clone());
        }
        keep.push(img.manifest_digest.clone());
    }
    w.settled().await;
    // The multi-arch image is pinned through the library API (as `wharf pin` and prefetch do).
    let image: wharf::oci::ImageRef = "upstream.test/org/multi:1".parse().unwrap();
    assert!(w.cache().pin(&image).unwrap());
    assert!(!w.cache().pin(&image).unwrap(), "pinning twice is harmless");
    let status = w.cache().pin_status(&image).await.unwrap();
    assert_eq!(status.root, Some(d(&index)));
    assert_eq!(
        status.blobs, 7,
        "index, two manifests, two configs, two layers"
    );

    for (digest, bytes) in &loose {
        pull(&w, digest, bytes).await;
    }
    // The pinned content alone is above the low watermark, so each pass removes all it can: the
    // earlier loose blobs surely go (the last may too, if it was stored before a pass looked).
    wait_for("the earlier unpinned blobs to go", || async {
        loose[..5].iter().all(|(digest, _)| !indexed(&w, digest))
    })
    .await;
    for digest in &keep {
        assert!(indexed(&w, digest), "pinned {digest} was evicted");
        assert!(w.stored(digest).await, "pinned {digest} lost its blob");
    }
    assert!(w.cache().usage().bytes <= 3 * MIB as u64);
    // Pinned content is served from the cache.
    let (status, cache, _) = get(&w, &format!("/v2/org/app/blobs/{}", pinned.layers[0])).await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    assert_eq!(up.count("GET", &pinned.layers[0]), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_while_a_blob_is_served_does_not_break_that_response() {
    let up = Fake::start().await;
    let big = random_bytes(24 * MIB, 7);
    let big_digest = up.add_blob(big.clone());
    let small: Vec<(String, Bytes)> = (0..3)
        .map(|i| {
            let b = random_bytes(MIB, 300 + i);
            (up.add_blob(b.clone()), b)
        })
        .collect();
    // Eviction above 25.6 MiB, down to 16 MiB.
    let w = start(
        &up,
        "max_size = \"32MiB\"\nhigh_watermark = 80\nlow_watermark = 50",
        "",
    )
    .await;
    assert_eq!(pull(&w, &big_digest, &big).await, "miss");
    // A hit that stays open: the client reads one chunk, then stops reading.
    let mut res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{big_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    let mut got = res.chunk().await.unwrap().unwrap().to_vec();
    wait_for("the response to hold the blob", || async {
        w.cache().holds().readers(&d(&big_digest)) == 1
    })
    .await;

    // The big blob is the least recently used and would go first: it is skipped while served.
    pull(&w, &small[0].0, &small[0].1).await;
    pull(&w, &small[1].0, &small[1].1).await;
    wait_for("an eviction", || async { w.cache().evictions().count >= 1 }).await;
    assert!(
        stored(&w, &big_digest).await,
        "a blob being served was evicted"
    );
    assert!(!indexed(&w, &small[0].0));

    while let Some(chunk) = res.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), big.len());
    assert_eq!(digest_of(&got), big_digest, "the response completed intact");
    wait_for("the hold to be released", || async {
        w.cache().holds().readers(&d(&big_digest)) == 0
    })
    .await;

    // Once the response is over, the next pass evicts it.
    pull(&w, &small[2].0, &small[2].1).await;
    wait_for("the big blob to go", || async { !indexed(&w, &big_digest) }).await;
    assert!(!stored(&w, &big_digest).await);
    assert!(w.cache().usage().bytes <= 16 * MIB as u64);
    w.stop().await;
}
