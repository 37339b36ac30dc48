//! The cache's lifecycle with an in-process wharf, on the disk: batched access times, truncated
//! files, and start-up repairs (eviction is in `tests/eviction.rs`).

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::fake::{random_bytes, Fake};
use common::pulls::{d, get, pull, wait_for};
use common::{client, Wharf};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn indexed(w: &Wharf, digest: &str) -> bool {
    w.cache().index().blob_size(&d(digest)).unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_times_are_batched_in_memory_not_written_per_hit() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, 300 * KIB, 1);
    let w = Wharf::with_upstream(&up.url()).await;
    let paths = [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/blobs/{}", img.config),
        format!("/v2/org/app/blobs/{}", img.layers[0]),
    ];
    for path in &paths {
        assert_eq!(get(&w, path).await.0, 200);
    }
    w.settled().await;
    let cache = w.cache();
    cache.flush_access().unwrap();
    let digests = [d(&img.manifest_digest), d(&img.config), d(&img.layers[0])];
    let before: Vec<u64> = digests
        .iter()
        .map(|x| {
            cache
                .index()
                .access(x)
                .unwrap()
                .expect("recorded when stored")
        })
        .collect();
    let writes = cache.access_writes();

    // 150 hits: from memory (manifest, small config) and from the file (layer).
    for _ in 0..50 {
        for path in &paths {
            let (status, x_cache, _) = get(&w, path).await;
            assert_eq!((status, x_cache.as_str()), (200, "hit"));
        }
    }
    // A timer flush may fall in between (each writes one record per digest, three at most), but
    // never one write per hit.
    let during = cache.access_writes() - writes;
    assert!(during <= 6, "{during} access records written for 150 hits");
    let flushed = cache.flush_access().unwrap();
    assert!(flushed <= 3, "one record per digest used: {flushed}");
    for (x, before) in digests.iter().zip(before) {
        let after = cache.index().access(x).unwrap().unwrap();
        assert!(after > before, "{x}: the flush recorded the later use");
    }
    assert_eq!(cache.access_pending(), 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_blob_is_never_served_and_is_fetched_again() {
    let up = Fake::start().await;
    let data = random_bytes(MIB, 11);
    let digest = up.add_blob(data.clone());
    let big = random_bytes(16 * MIB, 12);
    let big_digest = up.add_blob(big.clone());
    let w = Wharf::with_upstream(&up.url()).await;
    assert_eq!(pull(&w, &digest, &data).await, "miss");
    let path = blob_path(w.dir.path(), &digest);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(500 * KIB as u64)
        .unwrap();
    // The size on open disagrees with the index: dropped and fetched again, never served short.
    assert_eq!(pull(&w, &digest, &data).await, "miss");
    assert_eq!(up.count("GET", &digest), 2);
    assert_eq!(pull(&w, &digest, &data).await, "hit");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MIB as u64);

    // A file cut short while a hit streams it ends that response with an error, not cleanly.
    pull(&w, &big_digest, &big).await;
    let mut res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{big_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    let mut got = res.chunk().await.unwrap().unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(blob_path(w.dir.path(), &big_digest))
        .unwrap()
        .set_len(MIB as u64)
        .unwrap();
    let ended = loop {
        match res.chunk().await {
            Ok(Some(chunk)) => got += chunk.len(),
            Ok(None) => break Ok(got),
            Err(e) => break Err(e),
        }
    };
    assert!(
        ended.is_err(),
        "a truncated file ended cleanly after {got} bytes"
    );
    assert!(got < big.len());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_repairs_what_a_crash_leaves() {
    let up = Fake::start().await;
    let blobs: Vec<(String, Bytes)> = (0..3)
        .map(|i| {
            let b = random_bytes(300 * KIB, 400 + i);
            (up.add_blob(b.clone()), b)
        })
        .collect();
    let stranger = random_bytes(300 * KIB, 500);
    let stranger_digest = up.add_blob(stranger.clone());
    let w = Wharf::with_upstream(&up.url()).await;
    for (digest, bytes) in &blobs {
        pull(&w, digest, bytes).await;
    }
    let dir = w.stop().await;

    // What a crash (or a careless hand) leaves: a record without its file, a file without its
    // record, a file without a record that is not what its name says, a staging file.
    std::fs::remove_file(blob_path(dir.path(), &blobs[0].0)).unwrap();
    {
        use wharf::store::MetaStore as _;
        let index = wharf::cache::Index::open(&dir.path().join("index")).unwrap();
        index.remove_blob(&d(&blobs[1].0)).unwrap();
        index.flush().await.unwrap();
    }
    let fake_path = blob_path(dir.path(), &stranger_digest);
    std::fs::create_dir_all(fake_path.parent().unwrap()).unwrap();
    std::fs::write(&fake_path, random_bytes(300 * KIB, 501)).unwrap();
    let leftover = dir.path().join("tmp/4242-7.partial");
    std::fs::write(&leftover, b"half a blob").unwrap();

    let text = common::config_text(
        dir.path(),
        "5m",
        &[common::Up {
            name: "upstream.test",
            url: up.url(),
            default: true,
            extra: "",
        }],
    );
    let w = Wharf::start_text(dir, &text).await;
    assert!(
        !leftover.exists(),
        "staging files are removed before serving"
    );
    assert_eq!(
        w.cache().index().blob_size(&d(&blobs[0].0)).unwrap(),
        None,
        "a record without its file is dropped at start-up"
    );
    wait_for("orphans to be verified", || async {
        w.cache().orphans_pending() == 0 && indexed(&w, &blobs[1].0) && !fake_path.exists()
    })
    .await;
    assert_eq!(w.cache().usage().entries, 2);
    assert_eq!(w.cache().usage().bytes, 2 * 300 * KIB as u64);

    let gets = up.total();
    assert_eq!(pull(&w, &blobs[1].0, &blobs[1].1).await, "hit", "adopted");
    assert_eq!(pull(&w, &blobs[2].0, &blobs[2].1).await, "hit");
    assert_eq!(up.total(), gets);
    assert_eq!(
        pull(&w, &blobs[0].0, &blobs[0].1).await,
        "miss",
        "fetched again"
    );
    assert_eq!(
        pull(&w, &stranger_digest, &stranger).await,
        "miss",
        "the bad file was not served"
    );
    assert_eq!(pull(&w, &stranger_digest, &stranger).await, "hit");
    w.stop().await;
}
