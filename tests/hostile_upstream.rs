//! A hostile upstream: redirects to internal services and down from https, redirect chains (long
//! or slow), manifests trickled a byte a second, token answers of 64 MiB, and token realms on another port
//! of the upstream's host. Each test checks that the bound holds: nothing internal is contacted,
//! nothing is waited for longer than the upstream's `timeout`, nothing large is buffered, and no
//! credential leaves for a place it may not go.
//!
//! The https-to-http downgrade and the address classes are unit-tested in
//! `src/upstream/redirect.rs` (a table, no TLS needed).

mod common;

use std::time::{Duration, Instant};

use common::fake::{digest_of, AuthMode, Fake};
use common::hostile::{not_found, ok, redirect, Hostile, Reply};
use common::{client, Up, Wharf};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A small valid OCI image manifest (what an "internal service" might well answer).
fn manifest() -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
        digest_of(b"{}")
    )
    .into_bytes()
}

async fn wharf(url: &str, extra: &str) -> Wharf {
    Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: url.to_owned(),
            default: true,
            extra,
        }],
    )
    .await
}

/// An "internal service" that answers anything with a manifest, or with `blob` under `/cdn/`.
async fn internal_service(blob: Vec<u8>) -> Hostile {
    Hostile::start(move |r| {
        if r.target.starts_with("/cdn/") {
            ok("application/octet-stream", &blob)
        } else {
            ok(OCI_MANIFEST, &manifest())
        }
    })
    .await
}

/// An upstream that redirects every manifest and blob request to `location`.
async fn redirecting_upstream(location: String) -> Hostile {
    Hostile::start(move |r| {
        if r.target.contains("/manifests/") || r.target.contains("/blobs/") {
            redirect(&location)
        } else {
            not_found()
        }
    })
    .await
}

async fn get(w: &Wharf, path: &str) -> (u16, String) {
    let res = client()
        .get(w.url(path))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_redirect_to_an_internal_service_is_refused() {
    let internal = internal_service(Vec::new()).await;
    // Another port of the upstream's own 127.0.0.1: the shape of a metadata or admin endpoint.
    let up = redirecting_upstream(format!("{}/latest/meta-data", internal.url())).await;
    let w = wharf(&up.url(), "").await;
    let (status, body) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("\"errors\"") && body.contains("upstream.test"),
        "an OCI error naming the upstream: {body}"
    );
    assert!(body.contains("loopback"), "{body}");
    assert!(
        !body.contains("meta-data"),
        "the path is not echoed: {body}"
    );
    assert_eq!(
        internal.connections(),
        0,
        "the internal service was contacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_redirect_to_an_internal_service_is_refused() {
    let data = common::fake::random_bytes(10_000, 7);
    let d = digest_of(&data);
    let internal = internal_service(data.to_vec()).await;
    let up = redirecting_upstream(format!("{}/cdn/{d}", internal.url())).await;
    let w = wharf(&up.url(), "").await;
    let (status, body) = get(&w, &format!("/v2/org/app/blobs/{d}")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream.test"), "{body}");
    assert_eq!(
        internal.connections(),
        0,
        "the internal service was contacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_redirect_host_is_followed_without_the_upstreams_authorization() {
    let data = common::fake::random_bytes(10_000, 8);
    let cdn = internal_service(data.to_vec()).await;
    let up = Fake::start().await;
    let d = up.add_blob(data.clone());
    {
        let mut k = up.knobs();
        k.auth = AuthMode::Bearer {
            creds: None,
            realm: None,
        };
        k.redirect_blobs_to = Some(cdn.url());
    }
    // Not listed: a loopback "CDN" on another port is refused.
    let w = wharf(&up.url(), "").await;
    let (status, body) = get(&w, &format!("/v2/org/app/blobs/{d}")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(cdn.connections(), 0);
    drop(w);

    // Listed: followed, and the CDN never sees the upstream's token.
    let w = wharf(&up.url(), "redirect_hosts = [\"127.0.0.1\"]").await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap() == data);
    let seen = cdn.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].authorization, None,
        "the CDN got the upstream's token"
    );
    assert!(up
        .seen()
        .iter()
        .any(|s| s.authorization.as_deref() == Some("Bearer fake-token-0123456789")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_loopback_is_checked_on_its_addresses() {
    let internal = internal_service(Vec::new()).await;
    // "localhost" is not an IP literal: only its resolved addresses show it is loopback.
    let location = format!("http://localhost:{}/manifest", internal.addr.port());
    let up = redirecting_upstream(location).await;

    let w = wharf(&up.url(), "").await;
    let (status, body) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("localhost") && body.contains("loopback"),
        "{body}"
    );
    assert_eq!(
        internal.connections(),
        0,
        "the internal service was contacted"
    );
    drop(w);

    let w = wharf(&up.url(), "redirect_hosts = [\"localhost\"]").await;
    let (status, body) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_bytes(), manifest());
    assert_eq!(internal.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_chains_stop_after_five_hops() {
    // /v2/<hops>/app/manifests/1 → /hop/<hops-1> → ... → /hop/0, which answers the manifest: a
    // chain of <hops> redirects on the upstream's own origin.
    let up = Hostile::start(|r| {
        if let Some(n) = r.target.strip_prefix("/hop/") {
            let n: u32 = n.parse().unwrap();
            return if n == 0 {
                ok(OCI_MANIFEST, &manifest())
            } else {
                redirect(&format!("/hop/{}", n - 1))
            };
        }
        let hops = r
            .target
            .strip_prefix("/v2/h")
            .and_then(|rest| rest.split('/').next());
        match hops.and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => redirect(&format!("/hop/{}", n - 1)),
            None => not_found(),
        }
    })
    .await;
    let w = wharf(&up.url(), "").await;
    let (status, body) = get(&w, "/v2/h5/app/manifests/1").await;
    assert_eq!(status, 200, "five hops are followed: {body}");
    let before = up.requests().len();
    let (status, body) = get(&w, "/v2/h6/app/manifests/1").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("redirects"), "{body}");
    assert_eq!(
        up.requests().len() - before,
        6,
        "the request and five redirects, not the sixth"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_manifest_is_cut_at_the_deadline() {
    let up = Hostile::start(|r| {
        if r.target.contains("/manifests/") {
            Reply::Trickle {
                status: 200,
                headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
                body: manifest(),
                every: Duration::from_secs(1),
            }
        } else {
            not_found()
        }
    })
    .await;
    let good = Fake::start().await;
    good.add_image("org/app", "1", 1, 100, 3);
    let w = Wharf::start(
        "5m",
        &[
            Up {
                name: "upstream.test",
                url: up.url(),
                default: true,
                extra: "timeout = \"2s\"",
            },
            Up {
                name: "good.test",
                url: good.url(),
                default: false,
                extra: "",
            },
        ],
    )
    .await;
    let started = Instant::now();
    let trickled = {
        let url = w.url("/v2/org/app/manifests/1");
        tokio::spawn(async move {
            let res = client()
                .get(url)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.text().await.unwrap())
        })
    };
    // Meanwhile a client of a healthy upstream is served as usual.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let healthy = Instant::now();
    let (status, body) = get(&w, "/v2/good.test/org/app/manifests/1").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        healthy.elapsed() < Duration::from_secs(5),
        "{:?}",
        healthy.elapsed()
    );
    let (status, body) = trickled.await.unwrap();
    let took = started.elapsed();
    assert!(
        status == 504 || status == 502,
        "an upstream error, not a hang: {status} {body}"
    );
    assert!(body.contains("upstream.test"), "{body}");
    // The deadline is 2 s; the trickle would take minutes. Generous for a loaded machine.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        up.body_written() < manifest().len() as u64,
        "the whole trickle was waited for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redirect_chain_is_cut_at_the_deadline() {
    // Each hop answers after 1.8 s, under the 2 s of silence reqwest's read timeout allows, so
    // only an overall deadline stops the chain: 5 hops and the answer would take 10.8 s.
    let up = Hostile::start(|r| {
        let reply = if r.target.starts_with("/hop/") {
            let n: u32 = r.target["/hop/".len()..].parse().unwrap();
            if n == 0 {
                ok(OCI_MANIFEST, &manifest())
            } else {
                redirect(&format!("/hop/{}", n - 1))
            }
        } else if r.target.contains("/manifests/") {
            redirect("/hop/4")
        } else {
            not_found()
        };
        Reply::Late {
            after: Duration::from_millis(1800),
            reply: Box::new(reply),
        }
    })
    .await;
    let w = wharf(&up.url(), "timeout = \"2s\"").await;
    for method in ["GET", "HEAD"] {
        let started = Instant::now();
        let res = client()
            .request(method.parse().unwrap(), w.url("/v2/org/app/manifests/1"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(res.status(), 504, "{method}");
        // The deadline is 2 s; the chain takes 10.8 s. Generous for a loaded machine.
        assert!(took < Duration::from_secs(8), "{method}: took {took:?}");
    }
}

/// An upstream whose token realm (its own origin) answers with 64 MiB.
async fn huge_token_upstream(announce: bool) -> Hostile {
    Hostile::start(move |r| {
        if r.target.starts_with("/token") {
            return Reply::Huge {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                len: 64 * 1024 * 1024,
                announce,
            };
        }
        if r.authorization.is_none() {
            return Reply::Full {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".into(),
                    format!(
                        "Bearer realm=\"http://{}/token\",service=\"hostile\"",
                        r.host
                    ),
                )],
                body: Vec::new(),
            };
        }
        ok(OCI_MANIFEST, &manifest())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_token_answer_is_refused_without_reading_it() {
    for announce in [true, false] {
        let up = huge_token_upstream(announce).await;
        let w = wharf(&up.url(), "").await;
        let started = Instant::now();
        let (status, body) = get(&w, "/v2/org/app/manifests/1").await;
        assert_eq!(status, 502, "announce {announce}: {body}");
        assert!(
            body.contains("upstream.test") && body.contains("token"),
            "{body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        // Two replies: the 401 and the token answer, which wharf must have cut off.
        assert!(up.finished(2, Duration::from_secs(15)).await);
        assert!(
            up.cut(),
            "announce {announce}: the whole 64 MiB was read ({} bytes written)",
            up.body_written()
        );
        assert!(
            up.body_written() < 32 * 1024 * 1024,
            "announce {announce}: {} bytes written",
            up.body_written()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_on_another_port_of_the_upstream_host_gets_no_credentials() {
    let up = Fake::start().await;
    up.add_image("org/app", "1", 0, 0, 1);
    // Same address as the upstream, another port: another service on the same machine.
    let other = Fake::start().await;
    up.knobs().auth = AuthMode::Bearer {
        creds: Some(("alice".into(), "pw".into())),
        realm: Some(format!("http://127.0.0.1:{}/token", other.addr.port())),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "pw\n").unwrap();
    let creds = format!(
        "username = \"alice\"\npassword_file = \"{}\"",
        file.display()
    );

    let w = wharf(&up.url(), &creds).await;
    let (status, body) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("token_realms"), "names the fix: {body}");
    assert!(!body.contains("pw\""), "{body}");
    assert_eq!(other.tokens(), 0, "the other port was asked for a token");
    drop(w);

    // Listed, it may be asked, but plain-http credentials still go only to the upstream's own
    // host and port: still nothing is sent there.
    let w = wharf(
        &up.url(),
        &format!("{creds}\ntoken_realms = [\"127.0.0.1\"]"),
    )
    .await;
    let (status, body) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("plain http"), "{body}");
    assert_eq!(other.tokens(), 0, "credentials went to the other port");
}
