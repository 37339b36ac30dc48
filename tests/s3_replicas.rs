//! Replicas on a real S3-compatible store (Garage): a blob one replica fetched is a hit for the
//! others, with no upstream GET; the README's replica example on three Garage nodes serves a herd
//! of sixty clients with one upstream GET; Garage killed mid-pull costs no client its bytes and
//! leaves nothing under a digest key that does not hash to it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fake::{random_bytes, Fake, Gate};
use common::garage::Garage;
use common::pulls::{d, get, wait_for};
use common::replicas::{blob_path, origin, pull_streamed, secret_file, start_replica, Replica};
use common::{client, config_text, free_port, Up, Wharf};
use wharf::store::BlobStore;

async fn replica(garage: &Garage, upstream: &str) -> Wharf {
    let dir = tempfile::tempdir().unwrap();
    let up = Up {
        name: "upstream.test",
        url: upstream.to_owned(),
        default: true,
        extra: "",
    };
    let text = config_text(dir.path(), "5m", &[up]).replacen(
        "[storage]\n",
        "[storage]\nbackend = \"s3\"\nwrite_error_pause = \"1s\"\n",
        1,
    );
    let text = format!("{text}\n{}", garage.storage_toml("replicas/"));
    Wharf::start_text(dir, &text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_pulled_through_one_replica_costs_the_next_no_upstream_get() {
    let garage = Garage::start(1);
    let fake = Fake::start().await;
    let a = replica(&garage, &fake.url()).await;
    let b = replica(&garage, &fake.url()).await;
    let bytes = random_bytes(20 * 1024 * 1024 + 3, 11);
    let digest = fake.add_blob(bytes.clone());
    let path = format!("/v2/org/app/blobs/{digest}");

    let (status, _, body) = get(&a, &path).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    a.settled().await;
    let shared = a.cache().shared().unwrap().store().clone();
    common::pulls::wait_for("the blob in the bucket", || async {
        shared
            .size(&common::pulls::d(&digest))
            .await
            .unwrap()
            .is_some()
    })
    .await;

    let (status, _, body) = get(&b, &path).await;
    assert_eq!(status, 200);
    assert!(body == bytes, "byte-exact from the object store");
    assert_eq!(fake.count("GET", "/blobs/"), 1, "no upstream GET from b");
    assert_eq!(b.cache().shared().unwrap().counts().reads, 1);
    b.settled().await;
    assert!(b.stored(&digest).await, "b keeps it in its hot tier");
}

/// The `toml` blocks of the README's "Running several replicas" section, joined.
fn readme_replica_example() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("\n## Running several replicas\n")
        .expect("the README has a \"Running several replicas\" section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("a closed block")])
        .collect();
    assert_eq!(blocks.len(), 2, "the [cluster] and the [storage] examples");
    blocks.concat()
}

/// The README's example, made replica `i`'s of `ports` on this machine: the example's host names,
/// ports and paths become loopback ports and temporary files; every key and value stays.
fn from_readme(
    example: &str,
    i: usize,
    ports: &[u16],
    dir: &Path,
    secret: &Path,
    garage: &Garage,
    upstream: &str,
) -> String {
    let (key_id, key_secret) = garage.key_files();
    let mut text = example.replace(
        "self = \"http://wharf-0:5000\"",
        &format!("self = \"http://wharf-{i}:5000\""),
    );
    for (n, port) in ports.iter().enumerate() {
        text = text.replace(&format!("http://wharf-{n}:5000"), &origin(*port));
    }
    let substitutions = [
        ("/etc/wharf/cluster.secret", secret.display().to_string()),
        ("/var/lib/wharf", dir.display().to_string()),
        ("http://garage.internal:3900", garage.endpoint_of(i)),
        ("/etc/wharf/s3.key-id", key_id.display().to_string()),
        ("/etc/wharf/s3.secret", key_secret.display().to_string()),
    ];
    for (from, to) in substitutions {
        assert!(text.contains(from), "the README example names {from}");
        text = text.replace(from, &to);
    }
    assert!(text.contains(&format!("bucket = \"{}\"", garage.bucket())));
    format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nshutdown_grace = \"1s\"\n\
         [[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n\n{text}",
        ports[i]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_on_three_garage_nodes_serves_a_herd_of_sixty_with_one_upstream_get() {
    const LEN: usize = 256 << 20;
    let garage = Garage::start(3);
    let fake = Fake::start().await;
    let secret = secret_file();
    let example = readme_replica_example();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let replicas: Vec<Replica> = (0..3)
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            let text = from_readme(
                &example,
                i,
                &ports,
                dir.path(),
                &secret.path().join("secret"),
                &garage,
                &fake.url(),
            );
            start_replica(dir, text)
        })
        .collect();

    let digest = fake.add_blob(random_bytes(LEN, 60));
    // Every client asks before the upstream sends more than the first MiB.
    let gate = Gate::new();
    fake.knobs()
        .hold
        .insert(digest.clone(), (1 << 20, gate.clone()));
    let client = client();
    let mut clients = Vec::new();
    for i in 0..60 {
        let url = replicas[i % 3].url(&blob_path(&digest));
        let (client, digest) = (client.clone(), digest.clone());
        clients.push(tokio::spawn(async move {
            pull_streamed(&client, &[url], &digest, LEN as u64).await;
        }));
    }
    // Longer than the example's owner_timeout (2 s): the owner answered at once, and its body may
    // then pause as long as the upstream's may.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gate.open();
    for c in clients {
        tokio::time::timeout(Duration::from_secs(600), c)
            .await
            .expect("a client hung")
            .unwrap();
    }
    assert_eq!(fake.count("GET", &digest), 1, "{:?}", fake.seen());

    // The owner put it in the bucket; the bucket holds it whole under its digest key.
    let bucket = replicas_bucket(&garage);
    wait_for("the blob in the bucket", || async {
        bucket.size(&d(&digest)).await.unwrap() == Some(LEN as u64)
    })
    .await;
    let report = wharf::cache::check::shared(
        &bucket,
        wharf::cache::check::CheckOptions {
            verify: true,
            repair: false,
        },
        &wharf::cache::check::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.hash_mismatch.count, 0);
    assert_eq!(report.ok.count, 1);
}

/// The bucket the README example's replicas share (its `cache/` prefix), as a store of its own.
fn replicas_bucket(garage: &Garage) -> wharf::store::S3BlobStore {
    let text = format!(
        "[storage]\nbackend = \"s3\"\n{}\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n",
        garage.storage_toml("cache/")
    );
    bucket_of(&text)
}

fn bucket_of(text: &str) -> wharf::store::S3BlobStore {
    let config = wharf::Config::from_toml(text, Path::new("bucket.toml")).unwrap();
    match config.storage.backend {
        wharf::config::Backend::S3(s3) => wharf::store::S3BlobStore::new(&s3).unwrap(),
        wharf::config::Backend::Disk => panic!("not s3"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_killed_mid_pull_costs_no_client_its_bytes_and_nothing_bad_becomes_visible() {
    const LEN: usize = 40 << 20;
    let mut garage = Garage::start(1);
    let fake = Fake::start().await;
    let a = replica(&garage, &fake.url()).await;
    let b = replica(&garage, &fake.url()).await;
    let bucket = bucket_of(&format!(
        "[storage]\nbackend = \"s3\"\n{}\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n",
        garage.storage_toml("replicas/")
    ));

    // A blob already shared before the outage: a hit in a's hot tier throughout.
    let early = random_bytes(3 << 20, 61);
    let early_digest = fake.add_blob(early.clone());
    let (status, _, body) = get(&a, &format!("/v2/org/app/blobs/{early_digest}")).await;
    assert_eq!(status, 200);
    assert!(body == early);
    a.settled().await;

    // A multipart upload under way (the upstream holds after 20 MiB), then Garage dies.
    let big = random_bytes(LEN, 62);
    let big_digest = fake.add_blob(big.clone());
    let gate = Gate::new();
    fake.knobs()
        .hold
        .insert(big_digest.clone(), (20 << 20, gate.clone()));
    let url = a.url(&format!("/v2/org/app/blobs/{big_digest}"));
    let (pull_client, digest) = (client(), big_digest.clone());
    let pull = tokio::spawn(async move {
        pull_streamed(&pull_client, &[url], &digest, LEN as u64).await;
    });
    wait_for("the upstream to send the first 20 MiB", || async {
        fake.count("GET", &big_digest) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    garage.stop();
    gate.open();
    tokio::time::timeout(Duration::from_secs(120), pull)
        .await
        .expect("the pull hung")
        .unwrap();

    // While Garage is down: a's hot tier still serves, and a new blob through b comes from the
    // upstream, byte-exact.
    let (status, _, body) = get(&a, &format!("/v2/org/app/blobs/{early_digest}")).await;
    assert_eq!(status, 200);
    assert!(body == early);
    let during = random_bytes(2 << 20, 63);
    let during_digest = fake.add_blob(during.clone());
    let (status, _, body) = get(&b, &format!("/v2/org/app/blobs/{during_digest}")).await;
    assert_eq!(status, 200);
    assert!(body == during);

    // Garage back: nothing in the bucket under a key it does not hash to; the interrupted upload
    // never became visible.
    garage.restart();
    let report = wharf::cache::check::shared(
        &bucket,
        wharf::cache::check::CheckOptions {
            verify: true,
            repair: false,
        },
        &wharf::cache::check::NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.hash_mismatch.count, 0, "{}", garage.log_text());
    assert_eq!(bucket.size(&d(&big_digest)).await.unwrap(), None);
    assert_eq!(
        bucket.size(&d(&early_digest)).await.unwrap(),
        Some(early.len() as u64)
    );

    // After write_error_pause, pulls go through the bucket again: a new blob through a is a hit
    // for b with no second upstream GET.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = random_bytes(5 << 20, 64);
    let after_digest = fake.add_blob(after.clone());
    let path = format!("/v2/org/app/blobs/{after_digest}");
    let (status, _, body) = get(&a, &path).await;
    assert_eq!(status, 200);
    assert!(body == after);
    wait_for("the new blob in the bucket", || async {
        bucket.size(&d(&after_digest)).await.unwrap().is_some()
    })
    .await;
    let (status, _, body) = get(&b, &path).await;
    assert_eq!(status, 200);
    assert!(body == after);
    assert_eq!(fake.count("GET", &after_digest), 1);
}

/// A configuration file for the commands, storage in `dir/data` in front of `garage` under
/// `prefix`, with `upstream` as `upstream.test`.
fn command_config(dir: &Path, garage: &Garage, prefix: &str, upstream: &str) -> std::path::PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = '{}'\nbackend = \"s3\"\n{}\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ninsecure = true\ndefault = true\n",
            dir.join("data").display(),
            garage.storage_toml(prefix)
        ),
    )
    .unwrap();
    path
}

/// Runs the wharf binary with `args` and `--config config`, off the runtime's threads; asserts it
/// exits 0.
async fn wharf_ok(args: &[&str], config: &Path) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    command.args(args).arg("--config").arg(config);
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "wharf {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_and_import_put_their_blobs_in_the_bucket_before_the_command_exits() {
    let garage = Garage::start(1);
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 2, 3 << 20, 65);

    // Prefetch on the connected side: the process exits only once the layers are in the bucket.
    let connected = tempfile::tempdir().unwrap();
    let config = command_config(connected.path(), &garage, "prefetched/", &fake.url());
    wharf_ok(&["prefetch", "upstream.test/org/app:1"], &config).await;
    let bucket = bucket_of(&std::fs::read_to_string(&config).unwrap());
    for layer in &img.layers {
        assert!(
            bucket.size(&d(layer)).await.unwrap().is_some(),
            "{layer} in the bucket after prefetch"
        );
    }

    // Export it, and import the bundle on a wharf with another prefix: the import, too, has put
    // every layer in its bucket when it exits.
    let bundle = connected.path().join("app.tar");
    wharf_ok(
        &["export", "--out", bundle.to_str().unwrap(), "--pinned"],
        &config,
    )
    .await;
    let site = tempfile::tempdir().unwrap();
    let site_config = command_config(site.path(), &garage, "imported/", "http://127.0.0.1:9");
    wharf_ok(&["import", bundle.to_str().unwrap()], &site_config).await;
    let site_bucket = bucket_of(&std::fs::read_to_string(&site_config).unwrap());
    for layer in &img.layers {
        assert!(
            site_bucket.size(&d(layer)).await.unwrap().is_some(),
            "{layer} in the bucket after import"
        );
    }
}
