//! Hostile documents (issue 11): manifests are parsed, not trusted; tag lists are coalesced,
//! cached briefly and bounded; referrers filters are validated and answered from one cached list;
//! allow lists hold for cached content too.

mod common;

use std::time::Duration;

use common::fake::{Fake, Gate, OCI_INDEX, OCI_MANIFEST};
use common::{client, Up, Wharf};

fn one(url: String) -> Vec<Up<'static>> {
    vec![Up {
        name: "upstream.test",
        url,
        default: true,
        extra: "",
    }]
}

fn two(a: String, b: String) -> Vec<Up<'static>> {
    vec![
        Up {
            name: "a.test",
            url: a,
            default: true,
            extra: "",
        },
        Up {
            name: "b.test",
            url: b,
            default: false,
            extra: "",
        },
    ]
}

async fn error_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    (
        status,
        body["errors"][0]["code"].as_str().unwrap_or("").to_owned(),
    )
}

// === allow lists on hits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_hold_for_cached_blobs_and_manifests() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 1000, 1);
    let hub_img = fake.add_image("library/nginx", "1", 1, 1000, 2);
    let w = Wharf::start(
        "5m",
        &[
            Up {
                name: "a.test",
                url: fake.url(),
                default: true,
                extra: "allow = [\"org/app\"]",
            },
            Up {
                name: "b.test",
                url: fake.url(),
                default: false,
                extra: "allow = [\"team/**\"]",
            },
            Up {
                name: "docker.io",
                url: fake.url(),
                default: false,
                extra: "allow = [\"nginx\"]",
            },
        ],
    )
    .await;
    let c = client();
    // Cache everything through the allowed names.
    for path in [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/manifests/{}", img.manifest_digest),
        format!("/v2/org/app/blobs/{}", img.layers[0]),
        format!("/v2/org/app/blobs/{}", img.config),
        "/v2/docker.io/nginx/manifests/1".to_owned(),
        format!("/v2/docker.io/nginx/blobs/{}", hub_img.layers[0]),
    ] {
        let res = c.get(w.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        res.bytes().await.unwrap();
    }
    w.settled().await;
    let asked = fake.total();
    for path in [
        format!("/v2/other/secret/blobs/{}", img.layers[0]),
        format!("/v2/other/secret/blobs/{}", img.config),
        format!("/v2/other/secret/manifests/{}", img.manifest_digest),
        format!("/v2/a.test/other/secret/blobs/{}", img.layers[0]),
        format!("/v2/other/secret/blobs/{}?ns=a.test", img.layers[0]),
        format!("/v2/b.test/org/app/blobs/{}", img.layers[0]),
        format!("/v2/org/app/blobs/{}?ns=b.test", img.layers[0]),
        format!("/v2/b.test/org/app/manifests/{}", img.manifest_digest),
        format!("/v2/docker.io/redis/blobs/{}", hub_img.layers[0]),
        format!("/v2/docker.io/library/redis/blobs/{}", hub_img.layers[0]),
        format!("/v2/redis/blobs/{}?ns=docker.io", hub_img.layers[0]),
        format!("/v2/docker.io/evil/nginx/blobs/{}", hub_img.layers[0]),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let res = c
                .request(method.clone(), w.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{method} {path}");
            if method == reqwest::Method::GET {
                assert_eq!(error_code(res).await, (403, "DENIED".into()), "{path}");
            }
        }
    }
    assert_eq!(
        fake.total(),
        asked,
        "denied requests never reach the upstream"
    );
    // And still served under the allowed names, from the cache.
    let res = c
        .get(w.url(&format!("/v2/org/app/blobs/{}", img.layers[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "hit");
}

// === manifests are parsed, not trusted ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_manifest_is_a_502_naming_the_upstream_and_is_not_stored() {
    let fake = Fake::start().await;
    let html = "<html><body><script>alert(document.cookie)</script></body></html>";
    let digest = fake.add_manifest("org/app", Some("1"), "text/html", html);
    // Valid JSON of a manifest type, but sent as HTML: refused too, the claim is checked.
    let img = fake.add_image("org/app", "2", 0, 0, 1);
    fake.add_manifest("org/app", Some("2"), "text/html", img.manifest.clone());
    // And a manifest announced as an index.
    let lying = fake.add_image("org/app", "3", 0, 0, 2);
    fake.add_manifest("org/app", Some("3"), OCI_INDEX, lying.manifest.clone());
    let w = Wharf::start("5m", &one(fake.url())).await;
    let c = client();
    for path in [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/manifests/{digest}"),
        "/v2/org/app/manifests/2".to_owned(),
        "/v2/org/app/manifests/3".to_owned(),
    ] {
        let res = c.get(w.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 502, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
        assert!(!body.contains("<script>"), "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "MANIFEST_INVALID", "{path}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("upstream upstream.test"), "{message}");
    }
    // Nothing was stored: asking again asks the upstream again.
    let asked = fake.count("GET", "/manifests/");
    let res = c
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(fake.count("GET", "/manifests/"), asked + 1);
    let index = w.cache().index();
    for d in [&digest, &img.manifest_digest, &lying.manifest_digest] {
        let d: wharf::oci::Digest = d.parse().unwrap();
        assert_eq!(index.manifest_type(&d).unwrap(), None, "{d}");
        assert_eq!(index.blob_size(&d).unwrap(), None, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_json_content_type_is_resolved_from_the_document() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 0, 0, 1);
    fake.add_manifest(
        "org/app",
        Some("1"),
        "application/json",
        img.manifest.clone(),
    );
    fake.add_manifest(
        "org/app",
        Some("2"),
        "text/plain; charset=utf-8",
        r#"{"schemaVersion":2,"manifests":[]}"#,
    );
    // Media types are case-insensitive (RFC 6838 section 4.2); this one is still generic JSON.
    fake.add_manifest(
        "org/app",
        Some("3"),
        "Application/JSON; charset=UTF-8",
        img.manifest.clone(),
    );
    let w = Wharf::start("5m", &one(fake.url())).await;
    let c = client();
    for tag in ["1", "3"] {
        let res = c
            .get(w.url(&format!("/v2/org/app/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], OCI_MANIFEST, "{tag}");
        assert_eq!(res.bytes().await.unwrap(), img.manifest);
    }
    // No mediaType: an index by its shape, as distribution decides.
    let res = c
        .get(w.url("/v2/org/app/manifests/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], OCI_INDEX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_cannot_change_the_type_another_serves_even_after_a_restart() {
    let good = Fake::start().await;
    let bad = Fake::start().await;
    let img = good.add_image("org/app", "1", 0, 0, 1);
    // The hostile upstream serves the same bytes (same digest) as HTML, and as an index.
    bad.add_manifest("org/app", Some("1"), "text/html", img.manifest.clone());
    bad.add_manifest("org/app", Some("2"), OCI_INDEX, img.manifest.clone());
    let w = Wharf::start("5m", &two(good.url(), bad.url())).await;
    let c = client();
    let by_digest = |up: &str| {
        w.url(&format!(
            "/v2/{up}/org/app/manifests/{}",
            img.manifest_digest
        ))
    };
    // The hostile upstream is asked first.
    for path in [
        by_digest("b.test"),
        w.url("/v2/b.test/org/app/manifests/1"),
        w.url("/v2/b.test/org/app/manifests/2"),
    ] {
        assert_eq!(c.get(&path).send().await.unwrap().status(), 502, "{path}");
    }
    let res = c.get(by_digest("a.test")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], OCI_MANIFEST);
    let res = c
        .get(w.url("/v2/a.test/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], OCI_MANIFEST);
    // The hostile upstream's tags still do not resolve to the stored manifest.
    let res = c
        .get(w.url("/v2/b.test/org/app/manifests/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);

    // After a restart on the same storage, both names serve the type the document has.
    let dir = w.stop().await;
    let w = Wharf::start_in(dir, "5m", &two(good.url(), bad.url())).await;
    for up in ["a.test", "b.test"] {
        let path = w.url(&format!(
            "/v2/{up}/org/app/manifests/{}",
            img.manifest_digest
        ));
        let res = c.get(&path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], OCI_MANIFEST, "{path}");
        assert_eq!(res.headers()["x-cache"], "hit", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_recorded_by_an_older_wharf_is_corrected_when_read() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 0, 0, 1);
    let html = "<html><script>alert(1)</script></html>";
    let html_digest = fake.add_manifest("org/app", Some("h"), "text/html", html);
    let w = Wharf::start("5m", &one(fake.url())).await;
    let c = client();
    let res = c
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // What today's main recorded for a manifest an upstream sent as text/html: the bytes stored
    // and indexed as a manifest of that type.
    let digest: wharf::oci::Digest = img.manifest_digest.parse().unwrap();
    let index = w.cache().index().clone();
    index
        .insert_manifest(&digest, img.manifest.len() as u64, "text/html")
        .unwrap();
    let html_d: wharf::oci::Digest = html_digest.parse().unwrap();
    drop(index);
    let dir = w.stop().await;
    let w = Wharf::start_in(dir, "5m", &one(fake.url())).await;
    // (The HTML "manifest" is planted as an older wharf would have stored it.)
    {
        let cache = w.cache();
        cache
            .put_manifest(
                &html_d,
                bytes::Bytes::from_static(html.as_bytes()),
                "text/html",
            )
            .await
            .unwrap();
    }
    let res = c
        .get(w.url(&format!("/v2/org/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-cache"],
        "hit",
        "still cached after the upgrade"
    );
    assert_eq!(res.headers()["content-type"], OCI_MANIFEST);
    assert_eq!(
        w.cache().index().manifest_type(&digest).unwrap().as_deref(),
        Some(OCI_MANIFEST),
        "the record is corrected"
    );
    let res = c
        .get(w.url(&format!("/v2/org/app/manifests/{html_d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502, "stored HTML is not served as a manifest");
}

// === referrers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_type_that_is_no_media_type_is_a_400() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 0, 0, 1);
    let w = Wharf::start("5m", &one(fake.url())).await;
    let c = client();
    let url = w.url(&format!("/v2/org/app/referrers/{}", img.manifest_digest));
    let long = format!("application/{}", "x".repeat(300 - "application/".len()));
    for bad in [
        long.as_str(),
        "application/x%00y",
        "application%2Fjson%0A",
        "not-a-type",
        "",
    ] {
        let res = c
            .get(format!("{url}?artifactType={bad}"))
            .send()
            .await
            .unwrap();
        let (status, code) = error_code(res).await;
        assert_eq!((status, code.as_str()), (400, "UNSUPPORTED"), "{bad}");
    }
    assert_eq!(fake.count("GET", "/referrers/"), 0, "never asked upstream");
    assert_eq!(w.cache().index().referrers_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_artifact_types_share_one_cached_list() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 0, 0, 1);
    let sbom = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": common::fake::digest_of(b"sbom"), "size": 4, "artifactType": "application/spdx+json"});
    let sig = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": common::fake::digest_of(b"sig"), "size": 3, "artifactType": "application/x.sig"});
    fake.state.referrers.lock().insert(
        ("org/app".into(), img.manifest_digest.clone()),
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sbom, sig]}),
    );
    let w = Wharf::start("5m", &one(fake.url())).await;
    let c = client();
    let url = w.url(&format!("/v2/org/app/referrers/{}", img.manifest_digest));
    for i in 0..150 {
        let res = c
            .get(format!("{url}?artifactType=application%2Fx.type{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{i}");
        assert_eq!(res.headers()["oci-filters-applied"], "artifactType");
        let list: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(list["manifests"], serde_json::json!([]), "{i}");
    }
    let res = c
        .get(format!("{url}?artifactType=application%2Fspdx%2Bjson"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    let list: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(list["manifests"], serde_json::json!([sbom]));
    let res = c.get(&url).send().await.unwrap();
    let list: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(list["manifests"], serde_json::json!([sbom, sig]));
    assert_eq!(fake.count("GET", "/referrers/"), 1, "one upstream request");
    assert_eq!(w.cache().index().referrers_len(), 1, "one index record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrers_answer_that_is_no_list_is_a_502() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 0, 0, 1);
    fake.state.referrers.lock().insert(
        ("org/app".into(), img.manifest_digest.clone()),
        serde_json::json!({"html": "<script>alert(1)</script>"}),
    );
    let w = Wharf::start("5m", &one(fake.url())).await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/referrers/{}", img.manifest_digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(w.cache().index().referrers_len(), 0);
}

// === tag lists ===

/// A tag list body of about `bytes` bytes: tags `t000000`, `t000001`, ...
fn big_tag_list(name: &str, bytes: usize) -> (bytes::Bytes, usize) {
    let count = bytes / 10;
    let tags: Vec<String> = (0..count).map(|i| format!("t{i:06}")).collect();
    let body = serde_json::json!({"name": name, "tags": tags}).to_string();
    (bytes::Bytes::from(body), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tag_lists_are_one_upstream_request() {
    let fake = Fake::start().await;
    let (body, count) = big_tag_list("org/app", 1024 * 1024);
    let gate = Gate::new();
    {
        let mut knobs = fake.knobs();
        knobs.tags_body.insert("org/app".into(), body);
        knobs.hold_tags = Some(gate.clone());
    }
    let w = Wharf::start("5m", &one(fake.url())).await;
    let c = client();
    let mut clients = Vec::new();
    for i in 0..20 {
        // Under both names a client may use: the page is the same upstream request.
        let path = if i % 2 == 0 {
            "/v2/org/app/tags/list"
        } else {
            "/v2/upstream.test/org/app/tags/list"
        };
        let req = c.get(w.url(path));
        clients.push(tokio::spawn(async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            let len: usize = res.headers()["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let list: serde_json::Value =
                serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
            (len, list)
        }));
    }
    // Every request is in (or queued behind) the first one, which waits at the gate.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.count("GET", "/tags/list") == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    gate.open();
    for (i, client) in clients.into_iter().enumerate() {
        let (len, list) = client.await.unwrap();
        let name = if i % 2 == 0 {
            "org/app"
        } else {
            "upstream.test/org/app"
        };
        assert_eq!(list["name"], name);
        assert_eq!(list["tags"].as_array().unwrap().len(), count);
        assert_eq!(list["tags"][count - 1], format!("t{:06}", count - 1));
        assert_eq!(len, serde_json::to_vec(&list).unwrap().len());
    }
    assert_eq!(fake.count("GET", "/tags/list"), 1, "one upstream request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_list_is_kept_briefly() {
    let fake = Fake::start().await;
    fake.add_image("org/app", "1", 0, 0, 1);
    let w = Wharf::start("5m", &one(fake.url())).await;
    let c = client();
    let get = |path: &'static str| c.get(w.url(path)).send();
    assert_eq!(
        get("/v2/org/app/tags/list").await.unwrap().headers()["x-cache"],
        "miss"
    );
    let res = get("/v2/org/app/tags/list").await.unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    let list: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(list, serde_json::json!({"name": "org/app", "tags": ["1"]}));
    assert_eq!(fake.count("GET", "/tags/list"), 1);
    // Another page is another request.
    get("/v2/org/app/tags/list?n=1").await.unwrap();
    assert_eq!(fake.count("GET", "/tags/list"), 2);
}
