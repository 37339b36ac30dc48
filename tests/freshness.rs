//! Freshness and outages: tags revalidated with HEAD after their TTL, stale tags served when the
//! upstream cannot answer, offline upstreams never contacted, 404s remembered, referrers cached.

mod common;

use std::time::Duration;

use common::fake::{Fake, OCI_MANIFEST};
use common::{client, Up, Wharf};

const TTL: &str = "300ms";
const PAST_TTL: Duration = Duration::from_millis(400);

fn up<'a>(url: String, extra: &'a str) -> Vec<Up<'a>> {
    vec![Up {
        name: "upstream.test",
        url,
        default: true,
        extra,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_revalidated_with_head_after_their_ttl() {
    let fake = Fake::start().await;
    let first = fake.add_image("org/app", "1", 1, 100, 1);
    let w = Wharf::start(TTL, &up(fake.url(), "")).await;
    let c = client();
    let get = || c.get(w.url("/v2/org/app/manifests/1")).send();
    assert_eq!(get().await.unwrap().headers()["x-cache"], "miss");
    assert_eq!(
        (
            fake.count("HEAD", "/manifests/"),
            fake.count("GET", "/manifests/")
        ),
        (0, 1)
    );

    // Within the TTL: no upstream request at all.
    assert_eq!(get().await.unwrap().headers()["x-cache"], "hit");
    assert_eq!(fake.total(), 1);

    // Past the TTL, unchanged: one HEAD, no GET.
    tokio::time::sleep(PAST_TTL).await;
    let res = get().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "revalidated");
    assert_eq!(
        res.headers()["docker-content-digest"],
        first.manifest_digest.as_str()
    );
    assert_eq!(
        (
            fake.count("HEAD", "/manifests/"),
            fake.count("GET", "/manifests/")
        ),
        (1, 1)
    );
    // Revalidation restarts the TTL.
    assert_eq!(get().await.unwrap().headers()["x-cache"], "hit");
    assert_eq!(fake.total(), 2);

    // Past the TTL, changed: one HEAD and one GET, and the new digest is served.
    let second = fake.add_image("org/app", "1", 1, 100, 2);
    tokio::time::sleep(PAST_TTL).await;
    let res = get().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "miss");
    assert_eq!(
        res.headers()["docker-content-digest"],
        second.manifest_digest.as_str()
    );
    assert_eq!(
        (
            fake.count("HEAD", "/manifests/"),
            fake.count("GET", "/manifests/")
        ),
        (2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_tag_is_served_stale_when_the_upstream_is_down() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 100, 1);
    let w = Wharf::start(TTL, &up(fake.url(), "")).await;
    let c = client();
    c.get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    drop(fake); // the listener closes: connection refused from now on
    tokio::time::sleep(PAST_TTL).await;

    let res = c
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "stale");
    assert_eq!(res.headers()["warning"], "110 - \"Response is Stale\"");
    assert_eq!(
        res.headers()["docker-content-digest"],
        img.manifest_digest.as_str()
    );
    assert!(res.bytes().await.unwrap() == img.manifest);

    // Not cached: the upstream's outage, as an OCI error that names it.
    let res = c
        .get(w.url("/v2/org/other/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        body.contains("UNAVAILABLE") && body.contains("upstream.test"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_serving_can_be_turned_off() {
    let fake = Fake::start().await;
    fake.add_image("org/app", "1", 1, 100, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut text = common::config_text(dir.path(), TTL, &up(fake.url(), ""));
    text = text.replace("[cache]\n", "[cache]\nserve_stale = false\n");
    let config = wharf::Config::from_toml(&text, std::path::Path::new("t.toml")).unwrap();
    let running = wharf::start(config).await.unwrap();
    let url = format!("http://{}/v2/org/app/manifests/1", running.local_addr());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    drop(fake);
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(client().get(&url).send().await.unwrap().status(), 503);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_deleted_upstream_is_not_served_stale_and_its_404_is_remembered() {
    let fake = Fake::start().await;
    fake.add_image("org/app", "1", 1, 100, 1);
    let w = Wharf::start(TTL, &up(fake.url(), "")).await;
    let c = client();
    let get = |tag: &'static str| c.get(w.url(&format!("/v2/org/app/manifests/{tag}"))).send();
    assert_eq!(get("1").await.unwrap().status(), 200);
    fake.state.manifests.lock().retain(|(_, r), _| r != "1");
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(
        get("1").await.unwrap().status(),
        404,
        "an authoritative 404 is not an outage"
    );

    // A tag that never existed: asked once, then remembered (negative_ttl defaults to 30 s).
    let before = fake.total();
    for _ in 0..3 {
        let res = get("missing").await.unwrap();
        assert_eq!(res.status(), 404);
    }
    assert_eq!(fake.total(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_upstream_is_never_contacted() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 2, 50_000, 1);
    fake.add_image("org/app", "2", 0, 0, 2);
    // Fill the cache online.
    let w = Wharf::start(TTL, &up(fake.url(), "")).await;
    let c = client();
    let mut paths = vec![
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/blobs/{}", img.config),
    ];
    paths.extend(img.layers.iter().map(|l| format!("/v2/org/app/blobs/{l}")));
    for p in &paths {
        assert_eq!(c.get(w.url(p)).send().await.unwrap().status(), 200, "{p}");
    }
    let dir = w.stop().await;
    let connections = fake.connections();
    let requests = fake.total();

    // Offline, long past the TTL: everything cached is served as it is.
    let w = Wharf::start_in(dir, TTL, &up(fake.url(), "offline = true")).await;
    tokio::time::sleep(PAST_TTL).await;
    for p in &paths {
        let res = c.get(w.url(p)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{p}");
        assert_eq!(res.headers()["x-cache"], "hit", "{p}");
        assert!(!res.headers().contains_key("warning"));
    }
    let res = c.get(w.url("/v2/org/app/tags/list")).send().await.unwrap();
    let list: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(
        list["tags"],
        serde_json::json!(["1"]),
        "tags/list from the cache"
    );
    // What is not cached is unknown, and the message says why.
    for (path, code) in [
        ("/v2/org/app/manifests/2".to_owned(), "MANIFEST_UNKNOWN"),
        (
            format!("/v2/org/app/blobs/{}", common::fake::digest_of(b"x")),
            "BLOB_UNKNOWN",
        ),
    ] {
        let res = c.get(w.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
        assert!(body.contains(code) && body.contains("offline"), "{body}");
    }
    let res = c
        .head(w.url(&format!(
            "/v2/org/app/blobs/{}",
            common::fake::digest_of(b"y")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        fake.connections(),
        connections,
        "no connection to an offline upstream"
    );
    assert_eq!(fake.total(), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_lists_fall_back_to_the_cache_when_the_upstream_is_down() {
    let fake = Fake::start().await;
    for t in ["a", "b", "c"] {
        fake.add_manifest(
            "org/app",
            Some(t),
            OCI_MANIFEST,
            format!(r#"{{"schemaVersion":2,"t":"{t}"}}"#),
        );
    }
    let w = Wharf::start(TTL, &up(fake.url(), "")).await;
    let c = client();
    for t in ["a", "b", "c"] {
        c.get(w.url(&format!("/v2/org/app/manifests/{t}")))
            .send()
            .await
            .unwrap();
    }
    drop(fake);
    let res = c
        .get(w.url("/v2/org/app/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["warning"], "110 - \"Response is Stale\"");
    assert_eq!(
        res.headers()["link"],
        "</v2/org/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let list: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(
        list,
        serde_json::json!({"name": "org/app", "tags": ["a", "b"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_are_proxied_filtered_and_cached() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 0, 0, 1);
    let sig = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": common::fake::digest_of(b"sig"), "size": 3, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"});
    let sbom = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": common::fake::digest_of(b"sbom"), "size": 4, "artifactType": "application/spdx+json"});
    fake.state.referrers.lock().insert(
        ("org/app".into(), img.manifest_digest.clone()),
        serde_json::json!({"schemaVersion": 2, "mediaType": common::fake::OCI_INDEX, "manifests": [sig, sbom]}),
    );
    let w = Wharf::start(TTL, &up(fake.url(), "")).await;
    let c = client();
    let url = w.url(&format!("/v2/org/app/referrers/{}", img.manifest_digest));

    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], common::fake::OCI_INDEX);
    assert_eq!(res.headers()["x-cache"], "miss");
    let all: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(all["manifests"].as_array().unwrap().len(), 2);

    let res = c
        .get(format!("{url}?artifactType=application%2Fspdx%2Bjson"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["oci-filters-applied"], "artifactType");
    let filtered: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(filtered["manifests"], serde_json::json!([sbom]));

    // Cached for the tag TTL, then served stale when the upstream is gone.
    assert_eq!(
        c.get(&url).send().await.unwrap().headers()["x-cache"],
        "hit"
    );
    // One unfiltered list answers every filter.
    let asked = fake.count("GET", "/referrers/");
    assert_eq!(asked, 1);
    drop(fake);
    tokio::time::sleep(PAST_TTL).await;
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "stale");

    // A registry without the API answers 404, which is passed on (clients fall back to tags).
    let res = c
        .get(w.url(&format!(
            "/v2/org/app/referrers/{}",
            common::fake::digest_of(b"none")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "upstream gone and nothing cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_style_tags_work_like_any_tag() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 0, 0, 1);
    let sig_tag = format!("{}.sig", img.manifest_digest.replace(':', "-"));
    fake.add_manifest(
        "org/app",
        Some(&sig_tag),
        OCI_MANIFEST,
        r#"{"schemaVersion":2,"layers":[],"sig":1}"#,
    );
    let w = Wharf::start(TTL, &up(fake.url(), "")).await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/manifests/{sig_tag}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
