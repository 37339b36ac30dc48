//! The cache's fills run the same code on every blob store: each test here runs once on the disk
//! store and once on the in-memory one ([`wharf::store::MemoryBlobStore`]), through
//! [`Cache::open_with_stores`]. A fill is followed from memory and read back from its spool (the
//! disk store's staging file, or the fill's own spool file for the memory store), verified,
//! committed, and then served as a hit.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::fake::{random_bytes, Fake, Gate};
use futures_util::StreamExt;
use wharf::cache::{BlobSource, Cache, Options, Stores};
use wharf::oci::{Digest, RepoName};
use wharf::store::{BlobStore, FsBlobStore, MemoryBlobStore, MemoryMeta, SledMeta};
use wharf::upstream::Upstream;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Disk,
    Memory,
}

fn stores(backend: Backend, root: &Path) -> Stores {
    match backend {
        Backend::Disk => Stores {
            blobs: Arc::new(FsBlobStore::create(root).unwrap()),
            meta: Arc::new(SledMeta::open(&root.join("index")).unwrap()),
        },
        Backend::Memory => Stores {
            blobs: Arc::new(MemoryBlobStore::new()),
            meta: Arc::new(MemoryMeta::new()),
        },
    }
}

fn upstream(url: &str) -> Arc<Upstream> {
    let text =
        format!("[[upstream]]\nname = \"upstream.test\"\nurl = \"{url}\"\ninsecure = true\n");
    let config = wharf::Config::from_toml(&text, Path::new("t.toml")).unwrap();
    Arc::new(
        Upstream::new(
            &config.upstreams[0],
            Arc::new(wharf::metrics::Metrics::new()),
        )
        .unwrap(),
    )
}

/// Collects a stream of bytes.
async fn collect(mut s: wharf::cache::ByteStream) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Files under `dir` (recursively), by path.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// A fill with a leader that keeps up and a follower that joins late (reading back what the
/// spool's memory has dropped), both verified; then a hit.
async fn fill_follow_commit_hit(backend: Backend) {
    const SIZE: usize = 16 * 1024 * 1024;
    let up = Fake::start().await;
    let data = random_bytes(SIZE, 7);
    let d = up.add_blob(data.clone());
    let gate = Gate::new();
    {
        let mut k = up.knobs();
        k.slow = Some((256 * 1024, Duration::from_millis(1)));
        k.hold.insert(d.clone(), (SIZE * 3 / 4, gate.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(
        Cache::open_with_stores(dir.path(), &Options::default(), stores(backend, dir.path()))
            .unwrap(),
    );
    let upstream = upstream(&up.url());
    let repo: RepoName = "org/app".parse().unwrap();
    let digest: Digest = d.parse().unwrap();

    let BlobSource::Fill { fill, leader: true } =
        cache.blob(&upstream, &repo, digest).await.unwrap()
    else {
        panic!("{backend:?}: expected a new fill");
    };
    assert_eq!(fill.started().await.unwrap(), Some(SIZE as u64));
    let mut lead = fill.clone().follow(0, None);
    let mut led = Vec::new();
    // Past what the spool keeps in memory: a reader from 0 must read back from the spool file.
    while led.len() < SIZE / 2 {
        led.extend_from_slice(&lead.next().await.unwrap().unwrap());
    }
    let BlobSource::Fill {
        fill: same,
        leader: false,
    } = cache.blob(&upstream, &repo, digest).await.unwrap()
    else {
        panic!("{backend:?}: expected to join the fill");
    };
    let late = tokio::spawn(collect(same.follow(0, None)));
    let ranged = tokio::spawn(collect(fill.clone().follow(1000, Some(5000))));
    gate.open();
    led.extend_from_slice(&collect(lead).await.unwrap());
    assert!(led == data, "{backend:?}: the leader's bytes");
    assert!(
        late.await.unwrap().unwrap() == data,
        "{backend:?}: the late follower's bytes"
    );
    assert_eq!(ranged.await.unwrap().unwrap(), &data[1000..5000]);
    fill.ended().await;
    assert_eq!(
        up.count("GET", "/blobs/"),
        1,
        "{backend:?}: one upstream GET"
    );

    let BlobSource::Hit(blob) = cache.blob(&upstream, &repo, digest).await.unwrap() else {
        panic!("{backend:?}: expected a hit");
    };
    assert_eq!(blob.size(), SIZE as u64);
    assert!(
        collect(blob.clone().stream_range(0, SIZE as u64))
            .await
            .unwrap()
            == data
    );
    assert_eq!(blob.read_range(10, 20).await.unwrap(), data.slice(10..20));
    assert_eq!(
        cache.store().size(&digest).await.unwrap(),
        Some(SIZE as u64)
    );
    assert_eq!(cache.usage().entries, 1);
    // Nothing staged or spooled is left on disk.
    assert!(files(&dir.path().join("tmp")).is_empty(), "{backend:?}");
}

/// A body that does not match its digest is not kept, on either store.
async fn a_mismatch_keeps_nothing(backend: Backend) {
    let up = Fake::start().await;
    let data = random_bytes(2 * 1024 * 1024, 8);
    let d = up.add_blob(data.clone());
    up.knobs().corrupt.insert(d.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(
        Cache::open_with_stores(dir.path(), &Options::default(), stores(backend, dir.path()))
            .unwrap(),
    );
    let upstream = upstream(&up.url());
    let repo: RepoName = "org/app".parse().unwrap();
    let digest: Digest = d.parse().unwrap();
    let BlobSource::Fill { fill, .. } = cache.blob(&upstream, &repo, digest).await.unwrap() else {
        panic!("{backend:?}: expected a fill");
    };
    assert!(collect(fill.clone().follow(0, None)).await.is_err());
    fill.ended().await;
    assert_eq!(
        cache.store().size(&digest).await.unwrap(),
        None,
        "{backend:?}"
    );
    assert_eq!(cache.usage().entries, 0);
    assert!(files(&dir.path().join("tmp")).is_empty(), "{backend:?}");
}

/// A manifest stored through the cache reads back, on either store.
async fn manifests_round_trip(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cache =
        Cache::open_with_stores(dir.path(), &Options::default(), stores(backend, dir.path()))
            .unwrap();
    let bytes = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let digest = Digest::of(&bytes);
    let stored = cache
        .put_manifest(
            &digest,
            bytes.clone(),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await
        .unwrap();
    assert!(stored, "{backend:?}");
    assert_eq!(cache.read_small(&digest).await.unwrap(), Some(bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_on_the_disk_store() {
    fill_follow_commit_hit(Backend::Disk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_on_the_memory_store() {
    fill_follow_commit_hit(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_on_the_disk_store() {
    a_mismatch_keeps_nothing(Backend::Disk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_on_the_memory_store() {
    a_mismatch_keeps_nothing(Backend::Memory).await;
}

#[tokio::test]
async fn manifests_on_the_disk_store() {
    manifests_round_trip(Backend::Disk).await;
}

#[tokio::test]
async fn manifests_on_the_memory_store() {
    manifests_round_trip(Backend::Memory).await;
}

/// A store whose writers fail once they hold `limit` bytes (a disk that fills up), over any store.
struct FailingStore {
    inner: Arc<dyn BlobStore>,
    limit: u64,
}

struct FailingWriter {
    inner: Box<dyn wharf::store::BlobWriter>,
    limit: u64,
}

#[async_trait::async_trait]
impl BlobStore for FailingStore {
    async fn size(&self, d: &Digest) -> std::io::Result<Option<u64>> {
        self.inner.size(d).await
    }
    async fn open(&self, d: &Digest) -> std::io::Result<Option<wharf::store::Blob>> {
        self.inner.open(d).await
    }
    async fn writer(&self) -> std::io::Result<Box<dyn wharf::store::BlobWriter>> {
        Ok(Box::new(FailingWriter {
            inner: self.inner.writer().await?,
            limit: self.limit,
        }))
    }
    async fn remove(&self, d: &Digest) -> std::io::Result<()> {
        self.inner.remove(d).await
    }
}

#[async_trait::async_trait]
impl wharf::store::BlobWriter for FailingWriter {
    async fn write(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        for chunk in chunks {
            if self.inner.written() + chunk.len() as u64 > self.limit {
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            self.inner.write(std::slice::from_ref(chunk)).await?;
        }
        Ok(())
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
    async fn finish(self: Box<Self>) -> std::io::Result<Box<dyn wharf::store::StagedBlob>> {
        self.inner.finish().await
    }
    fn local_file(&self) -> Option<Arc<std::fs::File>> {
        self.inner.local_file()
    }
}

/// The storage fills up mid-fill: every reader goes on from the upstream (reading what it still
/// needs below the failure from the spool), verified, and nothing is kept.
async fn a_full_store_hands_off(backend: Backend) {
    const SIZE: usize = 12 * 1024 * 1024;
    let up = Fake::start().await;
    let data = random_bytes(SIZE, 9);
    let d = up.add_blob(data.clone());
    let gate = Gate::new();
    {
        let mut k = up.knobs();
        k.slow = Some((256 * 1024, Duration::from_millis(1)));
        k.hold.insert(d.clone(), (SIZE / 2, gate.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let Stores { blobs, meta } = stores(backend, dir.path());
    let blobs = Arc::new(FailingStore {
        inner: blobs,
        limit: SIZE as u64 / 3,
    });
    let cache = Arc::new(
        Cache::open_with_stores(dir.path(), &Options::default(), Stores { blobs, meta }).unwrap(),
    );
    let upstream = upstream(&up.url());
    let repo: RepoName = "org/app".parse().unwrap();
    let digest: Digest = d.parse().unwrap();
    let BlobSource::Fill { fill, .. } = cache.blob(&upstream, &repo, digest).await.unwrap() else {
        panic!("{backend:?}: expected a fill");
    };
    fill.started().await.unwrap();
    let mut lead = fill.clone().follow(0, None);
    let mut led = Vec::new();
    while led.len() < SIZE / 2 - 512 * 1024 {
        led.extend_from_slice(&lead.next().await.unwrap().unwrap());
    }
    // Joins past what memory holds, after the store failed at a third: reads back from the spool.
    let late = tokio::spawn(collect(fill.clone().follow(0, None)));
    gate.open();
    led.extend_from_slice(&collect(lead).await.unwrap());
    assert!(led == data, "{backend:?}: the leader's bytes");
    assert!(
        late.await.unwrap().unwrap() == data,
        "{backend:?}: the late reader's bytes"
    );
    assert!(fill.handed_off(), "{backend:?}");
    fill.ended().await;
    assert_eq!(cache.store().size(&digest).await.unwrap(), None);
    assert_eq!(cache.usage().entries, 0);
    assert!(files(&dir.path().join("tmp")).is_empty(), "{backend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_on_the_disk_store() {
    a_full_store_hands_off(Backend::Disk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_on_the_memory_store() {
    a_full_store_hands_off(Backend::Memory).await;
}
