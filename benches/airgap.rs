//! Air-gap throughput: export and import of one image of 1 GiB (16 layers of 64 MiB), with the
//! engine in this process (no wharf serving, as `wharf export FILE` / `wharf import FILE` run then)
//! and through a running wharf's control socket, next to what the machine does without wharf:
//! hashing the same bytes with sha256, and copying the bundle file.
//!
//! `cargo bench --bench airgap` prints a table (medians of 3). `WHARF_BENCH_AIRGAP_MIB` (default
//! 1024) sizes the image and `WHARF_BENCH_AIRGAP_LAYER_KIB` (default 65536) its layers: small
//! layers show the cost per entry. Storage lives under target/ (a real disk, not tmpfs); the page cache is
//! warm, as it is for an export right after a prefetch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use wharf::airgap::client::Client;
use wharf::airgap::{export, import};
use wharf::cache::TagEntry;
use wharf::oci::{Digest, Verifier};

fn config(root: &Path) -> wharf::Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\nmin_free = \"0\"\n[[upstream]]\nname = \"bench.test\"\nurl = \"https://127.0.0.1:9\"\noffline = true\n",
        root.display()
    );
    wharf::Config::from_toml(&text, Path::new("bench.toml")).unwrap()
}

/// Deterministic, incompressible bytes.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Stores a blob as a fill would.
async fn put_blob(cache: &wharf::cache::Cache, bytes: Bytes) -> Digest {
    let digest = Digest::of(&bytes);
    let size = bytes.len() as u64;
    let mut writer = cache.store().writer().await.unwrap();
    writer.write(&[bytes]).await.unwrap();
    cache
        .commit_staged(
            wharf::cache::ToCommit::Written(writer),
            &digest,
            size,
            None,
            None,
        )
        .await
        .unwrap();
    digest
}

/// Plants an image of `layers` layers of `layer` bytes in a cache, tagged `bench.test/bench/app:1`.
async fn plant(app: &wharf::server::App, layers: usize, layer: usize) -> u64 {
    let cache = &app.cache;
    let mut descriptors = Vec::new();
    let mut data = vec![0u8; layer];
    let mut total = 0;
    for i in 0..layers {
        fill(&mut data, i as u64 + 1);
        let bytes = Bytes::copy_from_slice(&data);
        let digest = put_blob(cache, bytes).await;
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer
        }));
        total += layer as u64;
    }
    let config = Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let config_digest = put_blob(cache, config.clone()).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": wharf::oci::media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    }))
    .unwrap();
    let digest = Digest::of(&manifest);
    cache
        .put_manifest(
            &digest,
            Bytes::from(manifest),
            wharf::oci::media::OCI_MANIFEST,
        )
        .await
        .unwrap();
    cache
        .index()
        .set_tag(
            "bench.test",
            &"bench/app".parse().unwrap(),
            &"1".parse().unwrap(),
            TagEntry {
                digest,
                fetched_at: SystemTime::now(),
            },
        )
        .unwrap();
    total
}

fn request() -> export::Request {
    export::Request {
        selection: export::Selection::Images(vec!["bench.test/bench/app:1".into()]),
        platforms: None,
        since: None,
        referrers: Default::default(),
        sign: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mib: usize = std::env::var("WHARF_BENCH_AIRGAP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let layer: usize = std::env::var("WHARF_BENCH_AIRGAP_LAYER_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(65536)
        << 10;
    let layers = (mib << 20).div_ceil(layer).max(1);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let source = dir.path().join("source");
        let app = wharf::app(&config(&source)).unwrap();
        eprintln!("planting {layers} layers of {} KiB ...", layer >> 10);
        let bytes = plant(&app, layers, layer).await;
        let bundle = dir.path().join("bundle.tar");

        let mut export_local = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let plan = export::plan(&app, &request(), &source).await.unwrap();
            let file = tokio::fs::File::create(&bundle).await.unwrap();
            let file = export::write(&app, &plan, file, |_| {}).await.unwrap();
            file.sync_all().await.unwrap();
            export_local.push(started.elapsed());
        }
        let tar_len = std::fs::metadata(&bundle).unwrap().len();

        let mut import_local = Vec::new();
        let mut import_again = Vec::new();
        for i in 0..3 {
            let root = dir.path().join(format!("import{i}"));
            let target = wharf::app(&config(&root)).unwrap();
            let started = Instant::now();
            let file = tokio::fs::File::open(&bundle).await.unwrap();
            import::run(&target, file, import::Options { pin: true, trusted: Vec::new() }).await.unwrap();
            import_local.push(started.elapsed());
            let started = Instant::now();
            let file = tokio::fs::File::open(&bundle).await.unwrap();
            let report = import::run(&target, file, import::Options { pin: true, trusted: Vec::new() }).await.unwrap();
            import_again.push(started.elapsed());
            assert_eq!(report.blobs_new, 0);
            drop(target);
            std::fs::remove_dir_all(&root).unwrap();
        }
        drop(app);

        // The same through running wharfs' control sockets.
        let running = wharf::start(config(&source)).await.unwrap();
        let client = Client::new(&source);
        let mut export_socket = Vec::new();
        for _ in 0..3 {
            use futures_util::StreamExt;
            use tokio::io::AsyncWriteExt;
            let started = Instant::now();
            let export = client.export(&request()).await.unwrap();
            let mut file = tokio::fs::File::create(&bundle).await.unwrap();
            let body = export.body;
            tokio::pin!(body);
            while let Some(chunk) = body.next().await {
                file.write_all(&chunk.unwrap()).await.unwrap();
            }
            file.sync_all().await.unwrap();
            export_socket.push(started.elapsed());
        }
        running.shutdown().await.unwrap();
        let mut import_socket = Vec::new();
        for i in 0..3 {
            let root: PathBuf = dir.path().join(format!("socket{i}"));
            let running = wharf::start(config(&root)).await.unwrap();
            let client = Client::new(&root);
            let started = Instant::now();
            let file = tokio::fs::File::open(&bundle).await.unwrap();
            client.import(file, true, &[]).await.unwrap();
            import_socket.push(started.elapsed());
            running.shutdown().await.unwrap();
            std::fs::remove_dir_all(&root).unwrap();
        }

        // Baselines: sha256 of the same bytes in memory (one core), and a plain file copy.
        let mut data = vec![0u8; layer];
        fill(&mut data, 1);
        let data = Arc::new(data);
        let started = Instant::now();
        for _ in 0..layers {
            let mut v = Verifier::new();
            v.update(&data);
            let _ = v.finish(&Digest::of(b""), None);
        }
        let hashing = started.elapsed();
        let mut copies = Vec::new();
        for _ in 0..3 {
            let copy = dir.path().join("copy.tar");
            let started = Instant::now();
            std::fs::copy(&bundle, &copy).unwrap();
            std::fs::File::open(&copy).unwrap().sync_all().unwrap();
            copies.push(started.elapsed());
            std::fs::remove_file(copy).unwrap();
        }

        let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
        println!(
            "wharf air-gap bundles; one image of {} MiB ({layers} layers of {} KiB); bundle {tar_len} bytes; median of 3; 2 cores (shared, noisy)",
            bytes >> 20,
            layer >> 10
        );
        println!("{:<52} {:>8} {:>8}", "metric", "seconds", "GB/s");
        println!("{}", "-".repeat(70));
        for (name, d) in [
            ("export, no server (plan + write + fsync)", median(export_local)),
            ("export through a running wharf's socket", median(export_socket)),
            ("import into empty storage, no server", median(import_local)),
            ("import through a running wharf's socket", median(import_socket)),
            ("import again (all present: hash only)", median(import_again)),
            ("baseline: sha256 in memory, one core", hashing),
            ("baseline: cp of the bundle + fsync", median(copies)),
        ] {
            println!("{name:<52} {:>8.2} {:>8.2}", d.as_secs_f64(), gbs(d));
        }
    });
}
