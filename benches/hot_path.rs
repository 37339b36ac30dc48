//! Criterion micro benches of the hot pieces: route parsing, index lookups, and a cache hit from
//! request to first byte (manifest by tag, small blob), in process, without sockets.
//!
//! Run: `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use http_body_util::BodyExt;
use wharf::cache::{Index, TagEntry};
use wharf::oci::{Digest, RepoName, Tag};
use wharf::server::route::{self, RegistryTable};
use wharf::store::MetaStore as _;

fn routing(c: &mut Criterion) {
    let table = RegistryTable::new(
        vec![("docker.io".into(), true), ("ghcr.io".into(), false)],
        Some(0),
    );
    let digest = format!("/v2/library/nginx/blobs/{}", Digest::of(b"x"));
    c.bench_function("route: manifest by tag", |b| {
        b.iter(|| {
            route::parse(
                &Method::GET,
                black_box("/v2/library/nginx/manifests/1.27"),
                None,
                &table,
            )
        })
    });
    c.bench_function("route: blob by digest, ?ns=", |b| {
        b.iter(|| {
            route::parse(
                &Method::GET,
                black_box(&digest),
                Some("ns=docker.io"),
                &table,
            )
        })
    });
}

fn index(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let repo: RepoName = "library/nginx".parse().unwrap();
    let digests: Vec<Digest> = (0..10_000u32)
        .map(|i| Digest::of(&i.to_le_bytes()))
        .collect();
    for (i, d) in digests.iter().enumerate() {
        index.insert_blob(d, i as u64).unwrap();
        let tag: Tag = format!("t{i}").parse().unwrap();
        index
            .set_tag(
                "docker.io",
                &repo,
                &tag,
                TagEntry {
                    digest: *d,
                    fetched_at: SystemTime::now(),
                },
            )
            .unwrap();
    }
    let tag: Tag = "t5000".parse().unwrap();
    c.bench_function("index: blob size (10k blobs)", |b| {
        b.iter(|| index.blob_size(black_box(&digests[5000])).unwrap())
    });
    c.bench_function("index: tag (10k tags)", |b| {
        b.iter(|| index.tag("docker.io", &repo, black_box(&tag)).unwrap())
    });
}

fn hit_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"http://127.0.0.1:9\"\ndefault = true\ninsecure = true\n",
        dir.path().display()
    );
    let config = wharf::Config::from_toml(&text, Path::new("bench.toml")).unwrap();
    let app = wharf::app(&config).unwrap();
    let manifest = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#);
    let manifest_digest = Digest::of(&manifest);
    let blob = Bytes::from(vec![7u8; 225]);
    let blob_digest = Digest::of(&blob);
    let repo: RepoName = "org/app".parse().unwrap();
    runtime.block_on(async {
        let media = "application/vnd.oci.image.manifest.v1+json";
        app.cache
            .put_manifest(&manifest_digest, manifest.clone(), media)
            .await
            .unwrap();
        app.cache
            .put_manifest(&blob_digest, blob.clone(), "application/octet-stream")
            .await
            .unwrap();
        let entry = TagEntry {
            digest: manifest_digest,
            fetched_at: SystemTime::now(),
        };
        app.cache
            .index()
            .set_tag("upstream.test", &repo, &"1".parse().unwrap(), entry)
            .unwrap();
    });
    let first_byte = |path: String| {
        let app = &app;
        async move {
            let response = app.handle(Request::get(path).body(()).unwrap()).await;
            assert_eq!(response.status(), 200);
            response.into_body().frame().await.unwrap().unwrap()
        }
    };
    c.bench_function("hit: manifest by tag, request to first byte", |b| {
        b.to_async(&runtime)
            .iter(|| first_byte("/v2/org/app/manifests/1".to_owned()))
    });
    let blob_path = format!("/v2/org/app/blobs/{blob_digest}");
    c.bench_function("hit: 225-byte blob, request to first byte", |b| {
        b.to_async(&runtime).iter(|| first_byte(blob_path.clone()))
    });
}

criterion_group!(benches, routing, index, hit_path);
criterion_main!(benches);
