//! A full disk: wharf's storage on a small tmpfs this test mounts (as root; if mounting fails the
//! test fails). A blob larger than the space is still served whole and verified, wharf keeps
//! serving what it has, misses pass through while caching is paused, and caching resumes by itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::fake::{digest_of, random_bytes, Fake};
use common::{client, files_under};

const MIB: usize = 1024 * 1024;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

async fn start(up: &Fake, storage: &Path, min_free: &str, pause: &str) -> wharf::Running {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\nmin_free = \"{min_free}\"\nwrite_error_pause = \"{pause}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{}\"\ndefault = true\ninsecure = true\n",
        storage.display(),
        up.url()
    );
    let config = wharf::Config::from_toml(&text, Path::new("test.toml")).unwrap();
    wharf::start(config).await.unwrap()
}

async fn get(w: &wharf::Running, path: &str) -> (u16, String, Bytes) {
    let res = client()
        .get(format!("http://{}{path}", w.local_addr()))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
    (status, cache, res.bytes().await.unwrap())
}

async fn blob(w: &wharf::Running, digest: &str) -> (String, Bytes) {
    let (status, cache, body) = get(w, &format!("/v2/org/app/blobs/{digest}")).await;
    assert_eq!(status, 200, "{digest}");
    w.fills_settled().await;
    (cache, body)
}

/// Every stored file hashes to its name, and no staging file is left.
fn storage_is_clean(storage: &Path) {
    for path in files_under(&storage.join("blobs"), "") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(
            digest_of(&data),
            format!("sha256:{name}"),
            "{}",
            path.display()
        );
    }
    assert!(files_under(&storage.join("tmp"), "").is_empty());
}

async fn wait_until_unpaused(w: &wharf::Running) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while w.cache().health().paused() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "caching never resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_the_disk_is_served_whole_and_caching_resumes() {
    let fs = Tmpfs::mount("24m");
    let storage = fs.path.join("data");
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, MIB, 1);
    let huge = random_bytes(40 * MIB, 2);
    let huge_digest = up.add_blob(huge.clone());
    let small = random_bytes(2 * MIB, 3);
    let small_digest = up.add_blob(small.clone());
    // No free-space floor: the writes really run into ENOSPC.
    let w = start(&up, &storage, "0", "1s").await;
    let (status, _, _) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!(status, 200);
    assert_eq!(blob(&w, &img.layers[0]).await.0, "miss");
    // Nothing is left for the index to write when the disk fills up.
    w.cache().index().flush().await.unwrap();

    let (cache, body) = blob(&w, &huge_digest).await;
    assert_eq!(cache, "miss", "headers went out before the disk filled up");
    assert_eq!(body.len(), huge.len());
    assert!(body == huge, "the client got the right bytes");
    let resumed = up
        .seen()
        .into_iter()
        .filter(|s| s.path.contains(&huge_digest) && s.range.is_some())
        .count();
    assert_eq!(
        resumed, 1,
        "the reader continued from the upstream where the disk gave out"
    );
    assert!(w.cache().health().failures() >= 1);
    assert_eq!(
        w.cache()
            .index()
            .blob_size(&huge_digest.parse().unwrap())
            .unwrap(),
        None
    );

    // Still serving: hits from the cache, misses straight from the upstream while paused.
    assert_eq!(blob(&w, &img.layers[0]).await.0, "hit");
    let (status, _, manifest) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!((status, manifest), (200, img.manifest.clone()));
    if w.cache().health().paused() {
        let (cache, body) = blob(&w, &small_digest).await;
        assert_eq!(cache, "bypass");
        assert!(body == small);
        assert_eq!(
            w.cache()
                .index()
                .blob_size(&small_digest.parse().unwrap())
                .unwrap(),
            None
        );
    }
    storage_is_clean(&storage);

    // The pause ends and caching resumes by itself.
    wait_until_unpaused(&w).await;
    let (cache, body) = blob(&w, &small_digest).await;
    assert_eq!(cache, "miss");
    assert!(body == small);
    assert_eq!(blob(&w, &small_digest).await.0, "hit");
    storage_is_clean(&storage);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_space_floor_streams_big_blobs_through_before_the_disk_fills() {
    let fs = Tmpfs::mount("24m");
    let storage = fs.path.join("data");
    let up = Fake::start().await;
    let huge = random_bytes(40 * MIB, 4);
    let huge_digest = up.add_blob(huge.clone());
    let small = random_bytes(MIB, 5);
    let small_digest = up.add_blob(small.clone());
    let bad_digest = up.add_blob(random_bytes(MIB, 6));
    up.knobs().corrupt.insert(bad_digest.clone());
    // A pause long enough that the next request surely falls within it.
    let w = start(&up, &storage, "8MiB", "3s").await;

    // Announced as larger than the space above the floor: never staged, streamed and verified.
    let (cache, body) = blob(&w, &huge_digest).await;
    assert_eq!(cache, "bypass");
    assert!(body == huge);
    assert!(files_under(&storage.join("blobs"), "").is_empty());
    assert!(
        w.cache().health().failures() >= 1,
        "the floor counts as a write failure"
    );
    // While paused, a miss is the client's own verified pass-through, and nothing is stored.
    let (cache, body) = blob(&w, &small_digest).await;
    assert_eq!(cache, "bypass");
    assert!(body == small);
    assert_eq!(w.cache().usage().entries, 0);
    assert_eq!(up.count("GET", &small_digest), 1);
    // ... and verified: content that does not match its digest never ends cleanly.
    let res = client()
        .get(format!(
            "http://{}/v2/org/app/blobs/{bad_digest}",
            w.local_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "bypass");
    assert!(
        res.bytes().await.is_err(),
        "a corrupt pass-through ended cleanly"
    );

    wait_until_unpaused(&w).await;
    assert_eq!(blob(&w, &small_digest).await.0, "miss");
    assert_eq!(blob(&w, &small_digest).await.0, "hit");
    storage_is_clean(&storage);
    w.shutdown().await.unwrap();
}
