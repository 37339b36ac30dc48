//! The shared tier: wharf replicas, each with its own local cache, in front of one blob store they
//! share (here in memory; `tests/s3_replicas.rs` runs the same on a real S3 server). A blob one
//! replica fetched is served by the others without the upstream; a shared store that fails or holds
//! a bad copy costs only a trip to the upstream.

mod common;

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::fake::{random_bytes, Fake};
use common::pulls::{d, get};
use common::{client, Wharf};
use wharf::oci::Digest;
use wharf::store::{Blob, BlobStore, BlobWriter, MemoryBlobStore};

async fn layer(fake: &Fake, len: usize, seed: u64) -> (String, Bytes) {
    let bytes = random_bytes(len, seed);
    let digest = fake.add_blob(bytes.clone());
    (digest, bytes)
}

/// Waits until the shared store has `digest` (a fill commits it just after its last byte is sent).
async fn in_shared(shared: &MemoryBlobStore, digest: &str) {
    let digest = d(digest);
    common::pulls::wait_for("the blob in the shared store", || async {
        shared.size(&digest).await.unwrap().is_some()
    })
    .await;
}

#[tokio::test]
async fn a_blob_fetched_through_one_replica_is_served_by_the_others_without_the_upstream() {
    let fake = Fake::start().await;
    let shared = Arc::new(MemoryBlobStore::new());
    let a = Wharf::with_shared_store(&fake.url(), shared.clone()).await;
    let b = Wharf::with_shared_store(&fake.url(), shared.clone()).await;
    let (big, big_bytes) = layer(&fake, 5 * 1024 * 1024 + 17, 1).await;
    let (small, small_bytes) = layer(&fake, 300, 2).await;

    for (digest, bytes) in [(&big, &big_bytes), (&small, &small_bytes)] {
        let (status, _, body) = get(&a, &format!("/v2/org/app/blobs/{digest}")).await;
        assert_eq!(status, 200);
        assert!(body == *bytes);
    }
    a.settled().await;
    in_shared(&shared, &big).await;
    in_shared(&shared, &small).await;
    assert_eq!(fake.count("GET", "/blobs/"), 2);

    for (digest, bytes) in [(&big, &big_bytes), (&small, &small_bytes)] {
        let (status, _, body) = get(&b, &format!("/v2/org/app/blobs/{digest}")).await;
        assert_eq!(status, 200);
        assert!(body == *bytes, "byte-exact from the shared store");
    }
    b.settled().await;
    assert_eq!(fake.count("GET", "/blobs/"), 2, "no upstream GET from b");
    assert_eq!(b.cache().shared().unwrap().counts().reads, 2);
    assert_eq!(a.cache().shared().unwrap().counts().writes, 2);
    // B keeps a copy in its hot tier, and then serves it as a plain hit.
    assert!(b.stored(&big).await);
    let (_, cache, body) = get(&b, &format!("/v2/org/app/blobs/{big}")).await;
    assert_eq!(cache, "hit");
    assert!(body == big_bytes);

    // A range of a blob only the shared store has.
    let c = Wharf::with_shared_store(&fake.url(), shared.clone()).await;
    let res = client()
        .get(c.url(&format!("/v2/org/app/blobs/{big}")))
        .header("range", "bytes=1000-2999")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 206);
    assert_eq!(res.bytes().await.unwrap(), big_bytes.slice(1000..3000));
    c.settled().await;
    assert_eq!(fake.count("GET", "/blobs/"), 2);
}

#[tokio::test]
async fn a_bad_copy_in_the_shared_store_is_never_served_and_is_removed() {
    let fake = Fake::start().await;
    let shared = Arc::new(MemoryBlobStore::new());
    let (digest, bytes) = layer(&fake, 200_000, 3).await;
    // Someone wrote other bytes under the digest's key.
    let mut writer = shared.writer().await.unwrap();
    writer.write(&[random_bytes(200_000, 4)]).await.unwrap();
    writer
        .finish()
        .await
        .unwrap()
        .commit(&d(&digest))
        .await
        .unwrap();
    let w = Wharf::with_shared_store(&fake.url(), shared.clone()).await;

    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    // The bad bytes fail verification: the response is cut short, never completed.
    assert!(res.bytes().await.is_err());
    w.settled().await;
    assert!(!w.stored(&digest).await, "nothing bad kept locally");
    assert_eq!(
        shared.size(&d(&digest)).await.unwrap(),
        None,
        "the bad copy is removed"
    );

    let (status, _, body) = get(&w, &format!("/v2/org/app/blobs/{digest}")).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    assert_eq!(fake.count("GET", "/blobs/"), 1);
    w.settled().await;
    in_shared(&shared, &digest).await;
}

/// A shared store that is down: every call fails.
struct Down;

#[async_trait]
impl BlobStore for Down {
    async fn size(&self, _: &Digest) -> io::Result<Option<u64>> {
        Err(io::Error::other("connection refused"))
    }
    async fn open(&self, _: &Digest) -> io::Result<Option<Blob>> {
        Err(io::Error::other("connection refused"))
    }
    async fn writer(&self) -> io::Result<Box<dyn BlobWriter>> {
        Err(io::Error::other("connection refused"))
    }
    async fn remove(&self, _: &Digest) -> io::Result<()> {
        Err(io::Error::other("connection refused"))
    }
}

#[tokio::test]
async fn with_the_shared_store_down_misses_come_from_the_upstream_and_hits_from_the_hot_tier() {
    let fake = Fake::start().await;
    let w = Wharf::with_shared_store(&fake.url(), Arc::new(Down)).await;
    let (digest, bytes) = layer(&fake, 1_000_000, 5).await;
    for _ in 0..2 {
        let (status, _, body) = get(&w, &format!("/v2/org/app/blobs/{digest}")).await;
        assert_eq!(status, 200);
        assert!(body == bytes);
        w.settled().await;
    }
    assert_eq!(
        fake.count("GET", "/blobs/"),
        1,
        "the second is a hot-tier hit"
    );
    assert!(w.stored(&digest).await);
    assert!(w.cache().shared().unwrap().paused());
}

#[tokio::test]
async fn a_manifest_by_digest_one_replica_fetched_is_served_by_another_without_the_upstream() {
    let fake = Fake::start().await;
    let shared = Arc::new(MemoryBlobStore::new());
    let a = Wharf::with_shared_store(&fake.url(), shared.clone()).await;
    let b = Wharf::with_shared_store(&fake.url(), shared.clone()).await;
    let image = fake.add_image("org/app", "v1", 1, 1000, 7);
    let path = format!("/v2/org/app/manifests/{}", image.manifest_digest);
    let (status, _, body) = get(&a, &path).await;
    assert_eq!(status, 200);
    assert!(body == image.manifest);
    in_shared(&shared, &image.manifest_digest).await;
    assert_eq!(fake.count("GET", "/manifests/"), 1);

    let res = client().get(b.url(&path)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(res.bytes().await.unwrap(), image.manifest);
    assert_eq!(
        fake.count("GET", "/manifests/"),
        1,
        "no upstream GET from b"
    );
    // B keeps a copy in its hot tier.
    assert!(b.stored(&image.manifest_digest).await);
}

#[tokio::test]
async fn gc_sweeps_the_shared_store_of_what_no_kept_manifest_refers_to() {
    use std::time::{Duration, SystemTime};
    use wharf::cache::gc::GcOptions;

    let fake = Fake::start().await;
    let shared = Arc::new(MemoryBlobStore::new());
    let a = Wharf::with_shared_store(&fake.url(), shared.clone()).await;
    let image = fake.add_image("org/app", "v1", 2, 1000, 9);
    let (orphan, _) = layer(&fake, 500, 10).await;
    let mut all = vec![image.manifest_digest.clone(), image.config.clone()];
    all.extend(image.layers.iter().cloned());
    for digest in &all[1..] {
        assert_eq!(get(&a, &format!("/v2/org/app/blobs/{digest}")).await.0, 200);
    }
    let path = format!("/v2/org/app/manifests/{}", image.manifest_digest);
    assert_eq!(get(&a, &path).await.0, 200);
    assert_eq!(get(&a, &format!("/v2/org/app/blobs/{orphan}")).await.0, 200);
    a.settled().await;
    for digest in all.iter().chain([&orphan]) {
        in_shared(&shared, digest).await;
    }
    let retention = Duration::from_secs(90 * 86400);
    let options = GcOptions {
        retention,
        dry_run: false,
    };

    // Everything was stored just now: within the grace, nothing goes.
    let report = a.cache().gc(options).await.unwrap();
    assert!(report.shared.unwrap().removed.is_empty());

    // Two hours later: the orphan goes, the image (stored within the retention) stays.
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for digest in all.iter().chain([&orphan]) {
        shared.backdate(&d(digest), two_hours_ago);
    }
    let report = a.cache().gc(options).await.unwrap();
    let shared_report = report.shared.unwrap();
    let removed: Vec<String> = shared_report
        .removed
        .iter()
        .map(|i| i.digest.to_string())
        .collect();
    assert_eq!(removed, vec![orphan.clone()]);
    assert_eq!(shared.size(&d(&orphan)).await.unwrap(), None);

    // Stored 100 days ago: a replica that pulled it lately keeps it; one that never did removes
    // the manifest and everything it alone refers to.
    let long_ago = SystemTime::now() - Duration::from_secs(100 * 86400);
    for digest in &all {
        shared.backdate(&d(digest), long_ago);
    }
    let report = a.cache().gc(options).await.unwrap();
    assert!(report.shared.unwrap().removed.is_empty(), "a uses it");
    let c = Wharf::with_shared_store(&fake.url(), shared.clone()).await;
    let dry = c
        .cache()
        .gc(GcOptions {
            retention,
            dry_run: true,
        })
        .await
        .unwrap()
        .shared
        .unwrap();
    assert_eq!(dry.removed.len(), all.len());
    assert!(dry.removed.iter().any(|i| i.manifest));
    assert_eq!(shared.len(), all.len(), "a dry run removes nothing");
    let report = c.cache().gc(options).await.unwrap().shared.unwrap();
    assert_eq!(report.removed.len(), all.len());
    assert_eq!(shared.len(), 0);
}
