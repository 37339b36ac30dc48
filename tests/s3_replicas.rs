//! Replicas on a real S3-compatible store (Garage): a blob one replica fetched is a hit for the
//! others, with no upstream GET, and nothing is under a digest key that does not hash to it.

mod common;

use common::fake::{random_bytes, Fake};
use common::garage::Garage;
use common::pulls::get;
use common::{config_text, Up, Wharf};

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
        "[storage]\nbackend = \"s3\"\n",
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
