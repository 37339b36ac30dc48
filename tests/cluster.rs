//! Replicas (`[cluster]`): each blob digest has an owner among the peers, and a replica that misses
//! a blob it does not own fetches it through the owner, so N replicas cost the upstream one GET per
//! blob. Each replica here has its own disk (no shared store: peer forwarding works without one)
//! and runs in its own runtime on its own thread, so a test can kill one outright (every task and
//! socket of it gone at once, as with kill -9) while the others go on.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::fake::{random_bytes, Fake, Gate};
use common::pulls::{d, wait_for};
use common::replicas::*;
use common::{client, free_port};
use url::Url;
use wharf::cluster::{rendezvous, Peer, PeerKey, PEER_HEADER};
use wharf::secret::Secret;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_a_non_owner_costs_one_upstream_get_and_the_owner_keeps_it() {
    let fake = Fake::start().await;
    let secret = secret_file();
    let (replicas, ports) = cluster(&fake, 2, &secret.path().join("secret"));
    let (digest, bytes) = blob_owned_by(&fake, &ports, 0, 1 << 20, 1);
    let (owner, other) = (&replicas[0], &replicas[1]);

    pull_from(&[other.url(&blob_path(&digest))], &bytes).await;
    assert_eq!(upstream_gets(&fake, &digest), 1);
    wait_for("the owner to keep the blob", || async {
        owner.holds(&digest)
    })
    .await;
    wait_for("the replica to keep the blob", || async {
        other.holds(&digest)
    })
    .await;
    // Through the owner, and again through the other: hits, nothing more upstream.
    pull_from(&[owner.url(&blob_path(&digest))], &bytes).await;
    pull_from(&[other.url(&blob_path(&digest))], &bytes).await;
    assert_eq!(upstream_gets(&fake, &digest), 1);

    // A blob the replica owns itself goes straight upstream, and the other replica does not get it.
    let (mine, mine_bytes) = blob_owned_by(&fake, &ports, 1, 64 << 10, 2);
    pull_from(&[other.url(&blob_path(&mine))], &mine_bytes).await;
    assert_eq!(upstream_gets(&fake, &mine), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!owner.holds(&mine));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_is_told_which_upstream_the_blob_is_from() {
    // Two upstreams; the blob is only on the second, which is not the default: the owner must
    // fetch it from that one (the replica names it with ?ns=), not from its default.
    let first = Fake::start().await;
    let second = Fake::start().await;
    let secret = secret_file();
    let secret = secret.path().join("secret");
    let ports = [free_port(), free_port()];
    let replicas: Vec<Replica> = ports
        .iter()
        .map(|port| {
            let dir = tempfile::tempdir().unwrap();
            let ups = [("first.test", first.url()), ("second.test", second.url())];
            let ups: Vec<(&str, &str)> = ups.iter().map(|(n, u)| (*n, u.as_str())).collect();
            let text = replica_config_with(dir.path(), *port, &ports, &ups, &secret);
            start_replica(dir, text)
        })
        .collect();
    let (digest, bytes) = blob_owned_by(&second, &ports, 0, 64 << 10, 7);
    let path = format!("{}?ns=second.test", blob_path(&digest));
    pull_from(&[replicas[1].url(&path)], &bytes).await;
    assert_eq!(upstream_gets(&second, &digest), 1);
    assert_eq!(first.total(), 0, "{:?}", first.seen());
    wait_for("the owner to keep the blob", || async {
        replicas[0].holds(&digest)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_speak_tls() {
    let fake = Fake::start().await;
    let secret = secret_file();
    let secret = secret.path().join("secret");
    let pki = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("wharf cluster test CA");
    let ca_file = pki.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (cert, key) = ca.leaf().write(pki.path(), "");
    let ports = [free_port(), free_port()];
    let replicas: Vec<Replica> = ports
        .iter()
        .map(|port| {
            let dir = tempfile::tempdir().unwrap();
            let mut text = replica_config(dir.path(), *port, &ports, &fake.url(), &secret).replace(
                "[server]\n",
                &format!(
                    "[server]\ntls_cert = '{}'\ntls_key = '{}'\n",
                    cert.display(),
                    key.display()
                ),
            );
            for p in ports {
                text = text.replace(&origin(p), &format!("https://127.0.0.1:{p}"));
            }
            text.push_str(&format!("ca_file = '{}'\n", ca_file.display()));
            let mut replica = start_replica(dir, text);
            replica.base = replica.base.replace("http://", "https://");
            replica
        })
        .collect();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let peers: Vec<Peer> = ports
        .iter()
        .map(|p| Peer::new(&Url::parse(&format!("https://127.0.0.1:{p}")).unwrap()))
        .collect();
    // A blob the first replica owns, by the https origins.
    let (digest, bytes) = (0..)
        .map(|seed| random_bytes(32 << 10, 100 + seed))
        .find(|b| {
            let owner = rendezvous(&peers, &d(&common::fake::digest_of(b))).unwrap();
            *owner == peers[0]
        })
        .map(|b| (fake.add_blob(b.clone()), b))
        .unwrap();
    pull_with(&client, &[replicas[1].url(&blob_path(&digest))], &bytes).await;
    assert_eq!(upstream_gets(&fake, &digest), 1);
    wait_for("the owner to keep the blob", || async {
        replicas[0].holds(&digest)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_over_three_replicas_costs_one_upstream_get() {
    let fake = Fake::start().await;
    let secret = secret_file();
    let (replicas, _ports) = cluster(&fake, 3, &secret.path().join("secret"));
    let bytes = random_bytes(64 << 20, 13);
    let digest = fake.add_blob(bytes.clone());
    // Every client asks before the upstream sends more than the first MiB.
    let gate = Gate::new();
    fake.knobs()
        .hold
        .insert(digest.clone(), (1 << 20, gate.clone()));
    let mut clients = Vec::new();
    for i in 0..30 {
        let url = replicas[i % 3].url(&blob_path(&digest));
        let want = bytes.clone();
        clients.push(tokio::spawn(async move { pull_from(&[url], &want).await }));
    }
    // Longer than owner_timeout (1s): the owner answered at once, and a body may then pause as
    // long as the upstream's may, so no replica gives up on the owner.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gate.open();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(upstream_gets(&fake, &digest), 1, "{:?}", fake.seen());
}

/// As [`pull_from`], counting in `reached` once the first replica's body has given `mark` bytes.
async fn pull_reporting(urls: &[String], want: &Bytes, reached: &AtomicUsize, mark: usize) {
    use futures_util::StreamExt;

    if let Ok(res) = client().get(&urls[0]).send().await {
        if res.status() == 200 {
            let mut body = res.bytes_stream();
            let mut got = Vec::new();
            let mut counted = false;
            while let Some(Ok(chunk)) = body.next().await {
                got.extend_from_slice(&chunk);
                if !counted && got.len() >= mark {
                    counted = true;
                    reached.fetch_add(1, Ordering::SeqCst);
                }
            }
            if got.len() == want.len() {
                assert!(got == *want, "{}: wrong bytes", urls[0]);
                return;
            }
        }
    }
    pull_from(&urls[1..], want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_mid_fill_costs_no_client_its_bytes() {
    let fake = Fake::start().await;
    let secret = secret_file();
    let (mut replicas, ports) = cluster(&fake, 3, &secret.path().join("secret"));
    let (digest, bytes) = blob_owned_by(&fake, &ports, 0, 8 << 20, 3);
    let gate = Gate::new();
    fake.knobs()
        .hold
        .insert(digest.clone(), (1 << 20, gate.clone()));
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| r.url(&blob_path(&digest)))
        .collect();
    let reached = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..12 {
        // Each client falls back to the next replica when its own goes away.
        let mut mine = urls.clone();
        mine.rotate_left(i % 3);
        let (want, reached) = (bytes.clone(), reached.clone());
        clients.push(tokio::spawn(async move {
            pull_reporting(&mine, &want, &reached, 1 << 20).await;
        }));
    }
    // The owner's fill is under way: every client has the first MiB (which the other replicas
    // got from the owner). Then the owner dies.
    wait_for("every client to have the first MiB", || async {
        reached.load(Ordering::SeqCst) == 12
    })
    .await;
    replicas[0].kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open();
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("a client hung")
            .unwrap();
    }
    // The owner's one GET, then the survivors went to the upstream themselves, from where their
    // bodies (from the owner) broke off.
    let gets = upstream_gets(&fake, &digest);
    assert!((2..=3).contains(&gets), "{gets}: {:?}", fake.seen());
    let resumed = fake
        .seen()
        .iter()
        .filter(|s| s.path.contains(&digest) && s.range.is_some())
        .count();
    assert_eq!(resumed, gets - 1, "{:?}", fake.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_headers_are_checked() {
    let fake = Fake::start().await;
    let secret = secret_file();
    let (replicas, ports) = cluster(&fake, 2, &secret.path().join("secret"));
    let (digest, bytes) = blob_owned_by(&fake, &ports, 1, 4096, 4);
    let path = blob_path(&digest);
    let url = replicas[0].url(&path);
    let get = |value: http::HeaderValue| client().get(&url).header(PEER_HEADER, value).send();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let wrong = PeerKey::new(&Secret::new("another secret, also thirty-two bytes long"));
    for value in [
        http::HeaderValue::from_static("123.abcd"),
        http::HeaderValue::from_static("garbage"),
        wrong.sign_at(now, &http::Method::GET, &path),
    ] {
        let res = get(value).await.unwrap();
        assert_eq!(res.status(), 401);
        let body = res.text().await.unwrap();
        assert!(body.contains("UNAUTHORIZED"), "{body}");
        assert!(!body.contains(SECRET));
    }
    // Signed for another path: refused.
    let key = PeerKey::new(&Secret::new(SECRET));
    let res = get(key.sign_at(now, &http::Method::GET, "/v2/other/blobs/x"))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A valid peer request is served by this replica itself, although replica 1 owns the blob:
    // a peer's request is never forwarded.
    let res = get(key.sign_at(now, &http::Method::GET, &path))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap() == bytes);
    assert_eq!(upstream_gets(&fake, &digest), 1);
    wait_for("the replica to keep the blob", || async {
        replicas[0].holds(&digest)
    })
    .await;
    assert!(!replicas[1].holds(&digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_does_not_answer_costs_about_owner_timeout_once() {
    let fake = Fake::start().await;
    let secret = secret_file();
    // The second peer accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let port = free_port();
    let ports = [port, silent_port];
    let dir = tempfile::tempdir().unwrap();
    let text = replica_config(
        dir.path(),
        port,
        &ports,
        &fake.url(),
        &secret.path().join("secret"),
    );
    let replica = start_replica(dir, text);

    let (first, first_bytes) = blob_owned_by(&fake, &ports, 1, 64 << 10, 5);
    let started = Instant::now();
    pull_from(&[replica.url(&blob_path(&first))], &first_bytes).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(upstream_gets(&fake, &first), 1);

    // The silent peer is skipped now: its next digest goes straight upstream.
    let (second, second_bytes) = blob_owned_by(&fake, &ports, 1, 64 << 10, 6);
    let started = Instant::now();
    pull_from(&[replica.url(&blob_path(&second))], &second_bytes).await;
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(upstream_gets(&fake, &second), 1);
    drop(replica);
}
