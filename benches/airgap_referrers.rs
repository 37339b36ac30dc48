//! What referrers cost `wharf export` and `wharf import`, per image: N small images (one config, one
//! 64 KiB layer), each with a cosign signature under `sha256-<hex>.sig`, an SBOM with a `subject`
//! (recorded as prefetch records it) and a cosign signature of the SBOM, exported and imported with
//! the engine in this process, with referrers and with `--no-referrers`; and a signed export and an
//! import that verifies it.
//!
//! `cargo bench --bench airgap_referrers` prints a table (medians of 5). `WHARF_BENCH_IMAGES`
//! (default 50) sets N. The upstream side of referrers (prefetch) is requests, not CPU: per
//! manifest, one referrers API call and three cosign tag lookups (four tag lookups when the
//! upstream has no API), each once per run; the table counts them instead of timing a loopback.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use wharf::airgap::referrers::Options as Referrers;
use wharf::airgap::sign::{SigningKey, TrustedKey};
use wharf::airgap::{export, import};
use wharf::cache::TagEntry;
use wharf::oci::{media, referrer, Digest};

const SPDX: &str = "application/spdx+json";

fn config(root: &Path) -> wharf::Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\nmin_free = \"0\"\n[[upstream]]\nname = \"bench.test\"\nurl = \"https://127.0.0.1:9\"\noffline = true\n",
        root.display()
    );
    wharf::Config::from_toml(&text, Path::new("bench.toml")).unwrap()
}

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

async fn put_manifest(app: &wharf::server::App, repo: &str, doc: serde_json::Value) -> Digest {
    let bytes = serde_json::to_vec(&doc).unwrap();
    let digest = Digest::of(&bytes);
    if let Some(r) = referrer::of_manifest(&bytes) {
        app.cache
            .index()
            .add_referrer(
                "bench.test",
                &repo.parse().unwrap(),
                &r.subject,
                &digest,
                &r.descriptor,
            )
            .unwrap();
    }
    app.cache
        .put_manifest(&digest, Bytes::from(bytes), media::OCI_MANIFEST)
        .await
        .unwrap();
    digest
}

fn tag(app: &wharf::server::App, repo: &str, tag: &str, digest: Digest) {
    app.cache
        .index()
        .set_tag(
            "bench.test",
            &repo.parse().unwrap(),
            &tag.parse().unwrap(),
            TagEntry {
                digest,
                fetched_at: SystemTime::now(),
            },
        )
        .unwrap();
}

fn desc(media_type: &str, digest: Digest, size: usize) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// A cosign signature of `of`, tagged in `repo`.
async fn sign(app: &wharf::server::App, repo: &str, of: Digest, config: (Digest, usize)) {
    let payload = Bytes::from(format!(
        r#"{{"critical":{{"image":{{"docker-manifest-digest":"{of}"}}}}}}"#
    ));
    let len = payload.len();
    let p = put_blob(&app.cache, payload).await;
    let sig = put_manifest(
        app,
        repo,
        serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", config.0, config.1),
            "layers": [desc("application/vnd.dev.cosign.simplesigning.v1+json", p, len)],
        }),
    )
    .await;
    tag(app, repo, &format!("sha256-{}.sig", of.hex()), sig);
}

/// Plants `n` images `bench.test/bench/appI:1`, each with its three referrers.
async fn plant(app: &wharf::server::App, n: usize) {
    let config = Bytes::from_static(br#"{"architecture":"amd64","os":"linux"}"#);
    let config_len = config.len();
    let config_digest = put_blob(&app.cache, config).await;
    let empty = put_blob(&app.cache, Bytes::from_static(b"{}")).await;
    for i in 0..n {
        let repo = format!("bench/app{i}");
        let mut layer = vec![0u8; 64 << 10];
        layer[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let layer_digest = put_blob(&app.cache, Bytes::from(layer)).await;
        let image = put_manifest(app, &repo, serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", config_digest, config_len),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer_digest, 64 << 10)],
        }))
        .await;
        let image_len = app.cache.index().blob_size(&image).unwrap().unwrap() as usize;
        tag(app, &repo, "1", image);
        sign(app, &repo, image, (config_digest, config_len)).await;
        let spdx = Bytes::from(format!(r#"{{"spdxVersion":"SPDX-2.3","name":"app{i}"}}"#));
        let spdx_len = spdx.len();
        let s = put_blob(&app.cache, spdx).await;
        let sbom = put_manifest(
            app,
            &repo,
            serde_json::json!({
                "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": SPDX,
                "config": desc("application/vnd.oci.empty.v1+json", empty, 2),
                "layers": [desc(SPDX, s, spdx_len)],
                "subject": desc(media::OCI_MANIFEST, image, image_len),
            }),
        )
        .await;
        sign(app, &repo, sbom, (config_digest, config_len)).await;
    }
}

fn request(n: usize, referrers: Referrers, sign: Option<SigningKey>) -> export::Request {
    export::Request {
        selection: export::Selection::Images(
            (0..n)
                .map(|i| format!("bench.test/bench/app{i}:1"))
                .collect(),
        ),
        platforms: None,
        since: None,
        referrers,
        sign,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("WHARF_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let keys = dir.path().join("signer");
    wharf::airgap::sign::keygen(&keys).unwrap();
    let key = SigningKey::read(&dir.path().join("signer.key")).unwrap();
    let trusted = vec![TrustedKey::read(&dir.path().join("signer.pub")).unwrap()];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let source = dir.path().join("source");
        let app = wharf::app(&config(&source)).unwrap();
        plant(&app, n).await;
        let mut rows = Vec::new();
        for (name, referrers, signing, verify) in [
            ("without referrers (--no-referrers)", Referrers::none(), None, false),
            ("with referrers (3 per image)", Referrers::default(), None, false),
            ("with referrers, signed / verified", Referrers::default(), Some(key.clone()), true),
        ] {
            let bundle = dir.path().join("bundle.tar");
            let mut exports = Vec::new();
            let mut images = 0;
            for _ in 0..5 {
                let started = Instant::now();
                let plan = export::plan(&app, &request(n, referrers.clone(), signing.clone()), &source)
                    .await
                    .unwrap();
                images = plan.manifest.images.len();
                let file = tokio::fs::File::create(&bundle).await.unwrap();
                let file = export::write(&app, &plan, file, |_| {}).await.unwrap();
                file.sync_all().await.unwrap();
                exports.push(started.elapsed());
            }
            let mut imports = Vec::new();
            for i in 0..5 {
                let root = dir.path().join(format!("import{i}"));
                let target = wharf::app(&config(&root)).unwrap();
                let options = import::Options {
                    pin: true,
                    trusted: if verify { trusted.clone() } else { Vec::new() },
                };
                let started = Instant::now();
                let file = tokio::fs::File::open(&bundle).await.unwrap();
                import::run(&target, file, options).await.unwrap();
                imports.push(started.elapsed());
                drop(target);
                std::fs::remove_dir_all(&root).unwrap();
            }
            let len = std::fs::metadata(&bundle).unwrap().len();
            rows.push((name, images, len, median(exports), median(imports)));
        }
        println!("wharf air-gap referrers; {n} images of one 64 KiB layer; median of 5; 2 cores (shared, noisy)");
        println!(
            "{:<38} {:>7} {:>10} {:>11} {:>11} {:>13} {:>13}",
            "bundle", "entries", "bytes", "export ms", "import ms", "export ms/img", "import ms/img"
        );
        for (name, images, len, e, i) in &rows {
            let ms = |d: &Duration| d.as_secs_f64() * 1e3;
            println!(
                "{name:<38} {images:>7} {len:>10} {:>11.1} {:>11.1} {:>13.3} {:>13.3}",
                ms(e),
                ms(i),
                ms(e) / n as f64,
                ms(i) / n as f64
            );
        }
        let (_, _, _, e0, i0) = rows[0];
        let (_, _, _, e1, i1) = rows[1];
        println!(
            "referrers add {:.3} ms per image to export and {:.3} ms per image to import",
            (e1.as_secs_f64() - e0.as_secs_f64()) * 1e3 / n as f64,
            (i1.as_secs_f64() - i0.as_secs_f64()) * 1e3 / n as f64
        );
        println!("prefetch asks the upstream, per manifest of an image and per referrer found: 1 referrers API GET + 3 cosign tag GETs (4 tag GETs without the API)");
    });
}
