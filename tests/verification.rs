//! Nothing unverified is kept or ended cleanly: wrong bytes and broken bodies abort the client's
//! response and leave no file; a broken body is resumed with a Range request when it can be.

mod common;

use std::time::Duration;

use common::fake::{random_bytes, Fake};
use common::{client, files_under, Wharf};

async fn assert_aborted(res: reqwest::Response) {
    assert_eq!(res.status(), 200, "headers were already sent");
    assert!(res.bytes().await.is_err(), "the body must not end cleanly");
}

async fn no_partials_left(w: &Wharf) {
    // The fill task removes its staging file when it fails; give it a moment to run.
    for _ in 0..100 {
        if files_under(w.dir.path(), ".partial").is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "partial files left: {:?}",
        files_under(w.dir.path(), ".partial")
    );
}

fn blob_path(w: &Wharf, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    w.dir.path().join("blobs/sha256").join(&hex[..2]).join(hex)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_abort_the_response_and_keep_nothing() {
    let up = Fake::start().await;
    let data = random_bytes(300_000, 1);
    let d = up.add_blob(data.clone());
    up.knobs().corrupt.insert(d.clone());
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));

    assert_aborted(client().get(&url).send().await.unwrap()).await;
    no_partials_left(&w).await;
    assert!(!blob_path(&w, &d).exists());

    // The upstream is fixed: the next request fetches again and succeeds.
    up.knobs().corrupt.clear();
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "miss");
    assert_eq!(res.bytes().await.unwrap(), data);
    assert_eq!(up.count("GET", "/blobs/"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_of_another_length_is_refused() {
    let up = Fake::start().await;
    let d = up.add_blob(random_bytes(50_000, 1));
    up.knobs()
        .substitute
        .insert(d.clone(), random_bytes(40_000, 2));
    let w = Wharf::with_upstream(&up.url()).await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert!(res.bytes().await.is_err());
    no_partials_left(&w).await;
    assert!(!blob_path(&w, &d).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_for_good_aborts_and_the_next_request_refetches() {
    let up = Fake::start().await;
    let data = random_bytes(400_000, 3);
    let d = up.add_blob(data.clone());
    // Cut every attempt: the first GET and all three resumes.
    up.knobs().cut.insert(d.clone(), (200_000, 4));
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));
    assert_aborted(client().get(&url).send().await.unwrap()).await;
    no_partials_left(&w).await;
    assert!(!blob_path(&w, &d).exists());
    assert_eq!(up.count("GET", "/blobs/"), 4, "one GET and three resumes");

    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap(), data);
    // Wharf keeps serving other requests meanwhile.
    assert_eq!(
        client().get(w.url("/v2/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_body_is_resumed_with_a_range_request() {
    let up = Fake::start().await;
    let data = random_bytes(1_000_000, 4);
    let d = up.add_blob(data.clone());
    up.knobs().cut.insert(d.clone(), (500_000, 1));
    let w = Wharf::with_upstream(&up.url()).await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    let body = res.bytes().await.expect("the client never sees the break");
    assert!(body == data, "wrong bytes");
    let gets: Vec<_> = up
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/blobs/"))
        .collect();
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[0].range, None);
    // Resumed from what arrived before the break (at most the 500000 bytes the upstream sent).
    let from: u64 = gets[1]
        .range
        .as_deref()
        .unwrap()
        .strip_prefix("bytes=")
        .unwrap()
        .strip_suffix('-')
        .unwrap()
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 500_000, "resumed from {from}");
    w.settled().await;
    assert!(blob_path(&w, &d).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_works_when_the_upstream_ignores_range() {
    let up = Fake::start().await;
    let data = random_bytes(600_000, 5);
    let d = up.add_blob(data.clone());
    {
        let mut k = up.knobs();
        k.cut.insert(d.clone(), (300_000, 1));
        k.ignore_range = true;
    }
    let w = Wharf::with_upstream(&up.url()).await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert!(res.bytes().await.unwrap() == data, "wrong bytes");
    w.settled().await;
    assert!(blob_path(&w, &d).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_content_never_ends_cleanly_even_when_nearly_all_was_streamed() {
    // The upstream sends all but its last byte, then waits: the client streams what arrived, and
    // when the last (corrupt) byte lands the response is aborted short of its length.
    let up = Fake::start().await;
    let data = random_bytes(200_000, 6);
    let d = up.add_blob(data.clone());
    let gate = common::fake::Gate::new();
    up.knobs()
        .hold
        .insert(d.clone(), (data.len() - 1, gate.clone()));
    up.knobs().corrupt.insert(d.clone());
    let w = Wharf::with_upstream(&up.url()).await;
    let mut res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    let mut got = 0usize;
    // Wharf holds back the last byte it has until the blob is verified.
    while got < data.len() - 2 {
        got += res.chunk().await.unwrap().unwrap().len();
    }
    assert_eq!(
        got,
        data.len() - 2,
        "streamed while the upstream was still sending"
    );
    gate.open();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => got += chunk.len(),
            Ok(None) => panic!("clean end after {got} of {} corrupt bytes", data.len()),
            Err(_) => break,
        }
    }
    assert!(got < data.len());
    no_partials_left(&w).await;
}
