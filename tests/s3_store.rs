//! The S3 blob store against a real Garage node on loopback: the blob store contract, ranged and
//! streamed reads of a multipart blob, verified-before-visible (nothing under a digest key before
//! commit, also when Garage is killed mid-upload), listing, and errors that never show the secret.
//! Each test has its own key prefix in one bucket.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use wharf::config::{Backend, S3Config};
use wharf::oci::Digest;
use wharf::store::s3::{PART, WINDOW};
use wharf::store::{BlobStore, S3BlobStore};

use common::garage::Garage;

/// The `[storage.s3]` of `garage` under `prefix`, through wharf's own config parsing.
fn s3_config(garage: &Garage, prefix: &str) -> S3Config {
    let text = format!(
        "[storage]\nbackend = \"s3\"\n{}\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n",
        garage.storage_toml(prefix)
    );
    let config = wharf::Config::from_toml(&text, Path::new("test.toml")).unwrap();
    match config.storage.backend {
        Backend::S3(s3) => s3,
        Backend::Disk => panic!("not s3"),
    }
}

fn store(garage: &Garage, prefix: &str) -> S3BlobStore {
    S3BlobStore::new(&s3_config(garage, prefix)).unwrap()
}

/// `len` bytes that differ from blob to blob (`seed`) and within one.
fn data(len: usize, seed: u8) -> Bytes {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<_>>()
        .into()
}

/// Writes `bytes` in 1 MiB chunks and finishes; not committed.
async fn stage(store: &S3BlobStore, bytes: &Bytes) -> Box<dyn wharf::store::StagedBlob> {
    let mut writer = store.writer().await.unwrap();
    for chunk in bytes.chunks(1 << 20) {
        writer.write(&[bytes.slice_ref(chunk)]).await.unwrap();
    }
    writer.finish().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_and_multipart_reads() {
    let garage = Garage::start(1);
    let store = store(&garage, "conformance/");
    wharf::store::blob::exercise_streaming(&store).await;

    // 20 MiB: three parts (8 + 8 + 4 MiB), three windows when streamed whole.
    let big = data(20 << 20, 1);
    let digest = Digest::of(&big);
    let staged = stage(&store, &big).await;
    assert_eq!(staged.size(), big.len() as u64);
    let e = staged.read_all().await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    assert_eq!(
        store.size(&digest).await.unwrap(),
        None,
        "not before commit"
    );
    staged.commit(&digest).await.unwrap();

    let blob = store.open(&digest).await.unwrap().unwrap();
    assert_eq!(blob.size(), big.len() as u64);
    assert!(blob.contents().is_none());
    let (a, b) = (PART as u64 - 10, PART as u64 + 10);
    assert_eq!(
        blob.read_range(a, b).await.unwrap(),
        big.slice(a as usize..b as usize)
    );
    assert!(blob.read_range(0, big.len() as u64 + 1).await.is_err());

    for (start, end) in [
        (0, big.len() as u64),
        (5, 17 * (1 << 20) + 3),
        (WINDOW, 2 * WINDOW),
        (7, 7),
    ] {
        let chunks: Vec<Bytes> = blob
            .clone()
            .stream_range(start, end)
            .try_collect()
            .await
            .unwrap();
        assert!(chunks.iter().all(|c| c.len() as u64 <= WINDOW));
        assert!(
            chunks.concat() == big[start as usize..end as usize],
            "stream {start}..{end}"
        );
    }
    let past_end: Result<Vec<Bytes>, _> = blob
        .clone()
        .stream_range(0, big.len() as u64 + 1)
        .try_collect()
        .await;
    assert!(past_end.is_err());

    // The same digest committed again (another writer, another replica): Ok, one object.
    let again = stage(&store, &big).await;
    again.commit(&digest).await.unwrap();
    let small = Bytes::from_static(b"committed twice");
    let small_digest = Digest::of(&small);
    for _ in 0..2 {
        let mut writer = store.writer().await.unwrap();
        writer.write(std::slice::from_ref(&small)).await.unwrap();
        writer
            .finish()
            .await
            .unwrap()
            .commit(&small_digest)
            .await
            .unwrap();
    }
    let mut listed: Vec<(Digest, u64)> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.digest, l.size))
        .collect();
    listed.sort();
    // The conformance body leaves its small blob.
    let mut want = vec![
        (digest, big.len() as u64),
        (small_digest, small.len() as u64),
        (Digest::of(b"a small blob"), 12),
    ];
    want.sort();
    assert_eq!(listed, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_multipart_leaves_nothing_and_list_skips_strays() {
    let garage = Garage::start(1);
    let store = store(&garage, "drop/");
    let big = data(PART + (1 << 20), 2);
    let digest = Digest::of(&big);

    // Dropped mid-write (a part uploaded), and dropped after finish.
    let mut writer = store.writer().await.unwrap();
    writer.write(&[big.slice(..PART + 1)]).await.unwrap();
    drop(writer);
    drop(stage(&store, &big).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.size(&digest).await.unwrap(), None);
    assert!(store.list().await.unwrap().is_empty());

    // Keys under blobs/sha256/ that are not a digest are skipped by list.
    let stray = S3BlobStore::new(&s3_config(&garage, "drop/blobs/sha256/junk/")).unwrap();
    let small = Bytes::from_static(b"stray");
    let mut writer = stray.writer().await.unwrap();
    writer.write(std::slice::from_ref(&small)).await.unwrap();
    writer
        .finish()
        .await
        .unwrap()
        .commit(&Digest::of(&small))
        .await
        .unwrap();
    assert!(store.list().await.unwrap().is_empty());
    stage(&store, &small)
        .await
        .commit(&Digest::of(&small))
        .await
        .unwrap();
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].digest, listed[0].size),
        (Digest::of(&small), small.len() as u64)
    );

    // What a crash between completing an upload and copying it leaves under staging/ is swept;
    // young staging objects (an upload in progress elsewhere) are kept.
    let leftover = S3BlobStore::new(&s3_config(&garage, "drop/staging/crashed/")).unwrap();
    stage(&leftover, &small)
        .await
        .commit(&Digest::of(&small))
        .await
        .unwrap();
    assert_eq!(
        store
            .sweep_staging(Duration::from_secs(3600))
            .await
            .unwrap(),
        (0, 0)
    );
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), (1, 5));
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), (0, 0));
    assert_eq!(leftover.size(&Digest::of(&small)).await.unwrap(), None);
    assert_eq!(store.list().await.unwrap().len(), 1, "blobs are not swept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_an_error_without_the_secret() {
    let garage = Garage::start(1);
    let mut config = s3_config(&garage, "auth/");
    let wrong = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    config.secret_access_key = Some(wharf::secret::Secret::new(wrong));
    let store = S3BlobStore::new(&config).unwrap();
    let digest = Digest::of(b"x");
    let e = store.size(&digest).await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("s3://wharf/auth/blobs/sha256/"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(garage.secret()), "{text}");
    let mut writer = store.writer().await.unwrap();
    writer.write(&[Bytes::from_static(b"x")]).await.unwrap();
    let e = writer
        .finish()
        .await
        .unwrap()
        .commit(&digest)
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(wrong) && !text.contains(garage.secret()),
        "{text}"
    );
    let debug = format!("{store:?} {config:?}");
    assert!(
        !debug.contains(wrong) && !debug.contains(garage.secret()),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_killed_mid_upload_leaves_no_digest_key() {
    let mut garage = Garage::start(1);
    let store = Arc::new(store(&garage, "crash/"));
    let big = data(3 * PART, 3);
    let digest = Digest::of(&big);

    let mut writer = store.writer().await.unwrap();
    writer.write(&[big.slice(..PART + 5)]).await.unwrap();
    garage.stop();

    // While it is down: errors, bounded by the timeouts and retries, not hangs.
    let started = Instant::now();
    let rest = async {
        writer.write(&[big.slice(PART + 5..)]).await?;
        writer.finish().await?.commit(&digest).await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(90), rest).await;
    assert!(
        matches!(outcome, Ok(Err(_))),
        "an upload to a stopped store must fail, not hang or succeed"
    );
    let e = tokio::time::timeout(Duration::from_secs(90), store.size(&digest))
        .await
        .expect("a HEAD to a stopped store must fail in bounded time")
        .unwrap_err();
    assert!(e.to_string().contains("s3://wharf/crash/"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(120));

    garage.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let size = loop {
        match store.size(&digest).await {
            Ok(size) => break size,
            Err(e) => {
                assert!(Instant::now() < deadline, "garage did not come back: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(size, None, "nothing under the digest key");
    assert!(store.list().await.unwrap().is_empty());

    // And the store works again.
    stage(&store, &big).await.commit(&digest).await.unwrap();
    let blob = store.open(&digest).await.unwrap().unwrap();
    let all: Vec<Bytes> = blob
        .stream_range(0, big.len() as u64)
        .try_collect()
        .await
        .unwrap();
    assert!(all.concat() == big[..]);
}

/// The three-node harness the replica tests use: a blob written through one node is read through
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_garage_nodes_share_the_bucket() {
    let garage = Garage::start(3);
    let first = store(&garage, "three/");
    let mut config = s3_config(&garage, "three/");
    config.endpoint = Some(garage.endpoint_of(2).parse().unwrap());
    let third = S3BlobStore::new(&config).unwrap();
    let big = data(PART + 3, 4);
    let digest = Digest::of(&big);
    stage(&first, &big).await.commit(&digest).await.unwrap();
    let blob = third.open(&digest).await.unwrap().unwrap();
    let all: Vec<Bytes> = blob
        .stream_range(0, big.len() as u64)
        .try_collect()
        .await
        .unwrap();
    assert!(all.concat() == big[..]);
}

/// Runs the wharf binary with these arguments and `--config config`; its exit code, and its stdout
/// followed by its stderr.
fn wharf_cli(config: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// The count on the `what` line after the `section` heading of `wharf check`'s report.
fn count(out: &str, section: &str, what: &str) -> u64 {
    let line = out
        .lines()
        .skip_while(|l| !l.starts_with(section))
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what} under {section}: {out}"));
    line[what.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_check_hashes_the_bucket_and_repairs_bad_copies() {
    let garage = Garage::start(1);
    let prefix = "check/";
    let store = store(&garage, prefix);
    let good = data(3 << 20, 40);
    let good_digest = Digest::of(&good);
    stage(&store, &good)
        .await
        .commit(&good_digest)
        .await
        .unwrap();
    // An object under a digest key it does not hash to: what a bucket written by something
    // else, or damaged, may hold. The store does not check (the cache does, before commit).
    let bad_digest = Digest::of(b"what the key says");
    stage(&store, &data(1000, 41))
        .await
        .commit(&bad_digest)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = '{}'\nbackend = \"s3\"\n{}\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://127.0.0.1:9\"\ndefault = true\n",
            dir.path().join("data").display(),
            garage.storage_toml(prefix)
        ),
    )
    .unwrap();
    // A storage directory as `wharf serve` leaves it.
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed = wharf::Config::from_toml(&text, &config).unwrap();
    drop(wharf::cache::Cache::open_for(&parsed).unwrap());

    // Listing only: both objects are there, nothing hashed, nothing to report.
    let (code, out) = wharf_cli(&config, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("shared store s3://wharf/check/"), "{out}");
    assert_eq!(count(&out, "shared store", "ok"), 2, "{out}");

    // Hashing finds the bad copy and fails, without removing it.
    let (code, out) = wharf_cli(&config, &["check", "--verify"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(count(&out, "shared store", "hash mismatches"), 1, "{out}");
    assert!(store.size(&bad_digest).await.unwrap().is_some());

    // Repair removes it and keeps the good one.
    let (code, out) = wharf_cli(&config, &["check", "--verify", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(store.size(&bad_digest).await.unwrap(), None);
    assert_eq!(
        store.size(&good_digest).await.unwrap(),
        Some(good.len() as u64)
    );
    let (code, out) = wharf_cli(&config, &["check", "--verify"]);
    assert_eq!(code, 0, "{out}");
}
