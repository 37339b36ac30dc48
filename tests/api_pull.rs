//! The read API against an in-process fake upstream: hits and misses, headers, ranges, errors,
//! routing between upstreams, and persistence across a restart.

mod common;

use common::fake::{digest_of, Fake, OCI_MANIFEST};
use common::{client, files_under, Up, Wharf};
use serde_json::Value;

async fn error_code(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(ct, "application/json");
    let v: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    (
        status,
        v["errors"][0]["code"].as_str().unwrap().to_owned(),
        v["errors"][0]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_answers_api_version() {
    let up = Fake::start().await;
    let w = Wharf::with_upstream(&up.url()).await;
    let res = client().get(w.url("/v2/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(up.total(), 0, "/v2/ is answered locally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_by_tag_then_hit_then_by_digest() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, 1000, 1);
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();

    let res = c
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "miss");
    assert_eq!(res.headers()["content-type"], OCI_MANIFEST);
    assert_eq!(
        res.headers()["docker-content-digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(
        res.headers()["content-length"],
        img.manifest.len().to_string().as_str()
    );
    assert_eq!(res.bytes().await.unwrap(), img.manifest);
    assert_eq!(up.count("GET", "/manifests/1"), 1);

    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let res = c
            .request(method.clone(), w.url("/v2/org/app/manifests/1"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "hit", "{method}");
        assert_eq!(
            res.headers()["docker-content-digest"],
            img.manifest_digest.as_str()
        );
        assert_eq!(
            res.headers()["content-length"],
            img.manifest.len().to_string().as_str()
        );
    }
    let res = c
        .get(w.url(&format!("/v2/org/app/manifests/{}", img.manifest_digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    assert_eq!(res.bytes().await.unwrap(), img.manifest);
    assert_eq!(up.total(), 1, "only the first request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_is_asked_again_after_its_ttl() {
    let up = Fake::start().await;
    let first = up.add_image("org/app", "1", 1, 10, 1);
    let w = Wharf::start(
        "1s",
        &[Up {
            name: "upstream.test",
            url: up.url(),
            default: true,
            extra: "",
        }],
    )
    .await;
    let c = client();
    let get = || c.get(w.url("/v2/org/app/manifests/1")).send();
    assert_eq!(get().await.unwrap().headers()["x-cache"], "miss");
    assert_eq!(get().await.unwrap().headers()["x-cache"], "hit");
    let second = up.add_image("org/app", "1", 1, 10, 2);
    // The TTL has whole-second resolution in the index: wait past it.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let res = get().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "miss");
    assert_eq!(
        res.headers()["docker-content-digest"],
        second.manifest_digest.as_str()
    );
    assert_ne!(first.manifest_digest, second.manifest_digest);
    assert_eq!(up.count("GET", "/manifests/1"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_by_digest_is_verified() {
    let up = Fake::start().await;
    let real = bytes::Bytes::from_static(br#"{"schemaVersion":2,"layers":[]}"#);
    let digest = digest_of(&real);
    // The upstream answers the digest with other bytes.
    up.state.manifests.lock().insert(
        ("org/app".into(), digest.clone()),
        (
            OCI_MANIFEST.into(),
            bytes::Bytes::from_static(br#"{"schemaVersion":2,"evil":1}"#),
        ),
    );
    let w = Wharf::with_upstream(&up.url()).await;
    let url = w.url(&format!("/v2/org/app/manifests/{digest}"));
    let (status, code, message) = error_code(client().get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (502, "DIGEST_INVALID"));
    assert!(message.contains("upstream.test"), "{message}");
    let (status, _, _) = error_code(client().get(&url).send().await.unwrap()).await;
    assert_eq!(status, 502);
    assert_eq!(up.count("GET", "/manifests/"), 2, "nothing was cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_miss_then_hit_with_headers() {
    let up = Fake::start().await;
    let data = common::fake::random_bytes(700_000, 9);
    let d = up.add_blob(data.clone());
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));

    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "miss");
    assert_eq!(res.headers()["docker-content-digest"], d.as_str());
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(res.headers()["content-length"], "700000");
    assert_eq!(res.bytes().await.unwrap(), data);

    w.settled().await;
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    assert_eq!(res.headers()["content-length"], "700000");
    assert_eq!(res.bytes().await.unwrap(), data);
    assert_eq!(up.count("GET", "/blobs/"), 1);

    let hex = d.trim_start_matches("sha256:");
    let stored = w.dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
    assert_eq!(
        std::fs::read(stored).unwrap(),
        data,
        "content-addressed path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_ranges_on_miss_and_hit() {
    let up = Fake::start().await;
    let data = common::fake::random_bytes(100_000, 3);
    let d = up.add_blob(data.clone());
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();
    let url = w.url(&format!("/v2/org/app/blobs/{d}"));
    let size = data.len();
    let cases = [
        ("bytes=0-9", 0, 10),
        ("bytes=10-", 10, size),
        ("bytes=-5", size - 5, size),
        ("bytes=99990-200000", 99_990, size),
    ];
    // The first request is a miss served from the fill; the rest are hits.
    for (round, cache) in [(0, "miss"), (1, "hit")] {
        for (i, (range, start, end)) in cases.iter().enumerate() {
            let res = c.get(&url).header("range", *range).send().await.unwrap();
            assert_eq!(res.status(), 206, "{range}");
            if round == 0 && i == 0 {
                assert_eq!(res.headers()["x-cache"], cache);
            } else {
                assert_ne!(res.headers()["x-cache"], "miss");
            }
            assert_eq!(
                res.headers()["content-range"],
                format!("bytes {start}-{}/{size}", end - 1).as_str()
            );
            assert_eq!(
                res.bytes().await.unwrap(),
                data.slice(*start..*end),
                "{range}"
            );
        }
    }
    let res = c
        .get(&url)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    assert_eq!(up.count("GET", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_head_on_miss_does_not_fetch_the_body() {
    let up = Fake::start().await;
    let d = up.add_blob(common::fake::random_bytes(5000, 1));
    let w = Wharf::with_upstream(&up.url()).await;
    let res = client()
        .head(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "5000");
    assert_eq!(res.headers()["docker-content-digest"], d.as_str());
    assert_eq!(up.count("GET", "/blobs/"), 0);
    assert_eq!(up.count("HEAD", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_content_gets_oci_errors() {
    let up = Fake::start().await;
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();
    let missing = digest_of(b"nothing");
    let res = c
        .get(w.url(&format!("/v2/org/app/blobs/{missing}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 404);
    let res = c
        .get(w.url(&format!("/v2/org/app/blobs/{missing}")))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (404, "BLOB_UNKNOWN"));
    let res = c
        .get(w.url("/v2/org/app/manifests/nope"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (404, "MANIFEST_UNKNOWN"));
    let res = c
        .get(w.url("/v2/org/app/blobs/sha256:xyz"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (400, "DIGEST_INVALID"));
    assert!(files_under(w.dir.path(), ".partial").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_as_read_only() {
    let up = Fake::start().await;
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();
    let d = digest_of(b"x");
    let cases = [
        (
            reqwest::Method::POST,
            "/v2/org/app/blobs/uploads/".to_owned(),
        ),
        (reqwest::Method::PUT, "/v2/org/app/manifests/1".to_owned()),
        (
            reqwest::Method::PATCH,
            "/v2/org/app/blobs/uploads/abc".to_owned(),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v2/org/app/manifests/{d}"),
        ),
        (reqwest::Method::DELETE, format!("/v2/org/app/blobs/{d}")),
    ];
    for (method, path) in cases {
        let res = c
            .request(method.clone(), w.url(&path))
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_code(res).await;
        assert_eq!(
            (status, code.as_str()),
            (405, "UNSUPPORTED"),
            "{method} {path}"
        );
        assert!(message.contains("read-only"), "{message}");
    }
    assert_eq!(up.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_never_reach_upstream_or_disk() {
    let up = Fake::start().await;
    let w = Wharf::with_upstream(&up.url()).await;
    let before = files_under(w.dir.path(), "").len();
    let long = "a".repeat(300);
    let paths = [
        "/v2/Upper/manifests/1".to_owned(),
        "/v2/a//b/manifests/1".to_owned(),
        "/v2/../etc/manifests/1".to_owned(),
        "/v2/a/%2e%2e/b/manifests/1".to_owned(),
        format!("/v2/{long}/manifests/1"),
        "/v2/-a/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .to_owned(),
    ];
    for path in &paths {
        // Raw HTTP so that no client normalises the path.
        let status_line = raw_get(&w.base, path).await;
        assert!(status_line.contains(" 400 "), "{path}: {status_line}");
        assert!(
            status_line.contains("NAME_INVALID"),
            "{path}: {status_line}"
        );
    }
    assert_eq!(up.total(), 0);
    assert_eq!(files_under(w.dir.path(), "").len(), before);
}

async fn raw_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_between_upstreams() {
    let a = Fake::start().await;
    let b = Fake::start().await;
    let hub = Fake::start().await;
    a.add_image("org/app", "1", 0, 0, 1);
    b.add_image("org/app", "1", 0, 0, 2);
    hub.add_image("library/nginx", "1", 0, 0, 3);
    let w = Wharf::start(
        "5m",
        &[
            Up {
                name: "a.test",
                url: a.url(),
                default: true,
                extra: "",
            },
            Up {
                name: "b.test",
                url: b.url(),
                default: false,
                extra: "",
            },
            Up {
                name: "docker.io",
                url: hub.url(),
                default: false,
                extra: "",
            },
        ],
    )
    .await;
    let c = client();
    let cases = [
        ("/v2/org/app/manifests/1?ns=b.test", 200, "b"),
        ("/v2/b.test/org/app/manifests/1", 200, "b"),
        ("/v2/org/app/manifests/1", 200, "a"),
        ("/v2/a.test/org/app/manifests/1", 200, "a"),
        ("/v2/nginx/manifests/1?ns=docker.io", 200, "hub"),
        ("/v2/docker.io/nginx/manifests/1", 200, "hub"),
        ("/v2/org/app/manifests/1?ns=unknown.test", 404, "-"),
    ];
    for (path, status, which) in cases {
        let before = (a.total(), b.total(), hub.total());
        let res = c.get(w.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path}");
        if status == 404 {
            let (_, code, _) = error_code(res).await;
            assert_eq!(code, "NAME_UNKNOWN", "{path}");
            continue;
        }
        let after = (a.total(), b.total(), hub.total());
        // Either the upstream was asked now, or the tag was cached by an earlier case on it.
        let asked = match which {
            "a" => after.0 >= before.0 && a.count("GET", "/v2/org/app/manifests/1") == 1,
            "b" => b.count("GET", "/v2/org/app/manifests/1") == 1,
            _ => hub.count("GET", "/v2/library/nginx/manifests/1") == 1,
        };
        assert!(
            asked,
            "{path} went to the wrong upstream: {before:?} -> {after:?}"
        );
    }
    assert_eq!(a.total(), 1);
    assert_eq!(b.total(), 1);
    assert_eq!(hub.total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_prefix_naming_an_unconfigured_registry_is_name_unknown() {
    let up = Fake::start().await;
    let w = Wharf::with_upstream(&up.url()).await;
    for path in [
        "/v2/quay.io/org/app/manifests/1",
        "/v2/localhost:5000/app/manifests/1",
    ] {
        let res = client().get(w.url(path)).send().await.unwrap();
        let (status, code, message) = error_code(res).await;
        assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"), "{path}");
        assert!(message.contains("not configured"), "{message}");
    }
    assert_eq!(up.total(), 0, "not guessed onto the default upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_upstream_means_name_unknown() {
    let a = Fake::start().await;
    let w = Wharf::start(
        "5m",
        &[Up {
            name: "a.test",
            url: a.url(),
            default: false,
            extra: "",
        }],
    )
    .await;
    let res = client()
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"));
    assert_eq!(a.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_paginates_and_links_back_to_wharf() {
    let up = Fake::start().await;
    for t in ["a", "b", "c", "d"] {
        up.add_manifest(
            "org/app",
            Some(t),
            OCI_MANIFEST,
            format!(r#"{{"schemaVersion":2,"t":"{t}"}}"#),
        );
    }
    let w = Wharf::with_upstream(&up.url()).await;
    let res = client()
        .get(w.url("/v2/upstream.test/org/app/tags/list?n=2&last=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        "</v2/upstream.test/org/app/tags/list?n=2&last=c>; rel=\"next\""
    );
    let v: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "upstream.test/org/app", "tags": ["b", "c"]})
    );
    let seen = up.seen();
    assert_eq!(seen[0].query.as_deref(), Some("n=2&last=a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_mapping() {
    let up = Fake::start().await;
    {
        let mut k = up.knobs();
        k.status.insert(
            "/v2/org/limited/manifests/1".into(),
            (429, Some("7".into())),
        );
        k.status
            .insert("/v2/org/broken/manifests/1".into(), (500, None));
        k.status
            .insert("/v2/org/denied/manifests/1".into(), (403, None));
    }
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();
    let get = |path: &'static str| c.get(w.url(path)).send();
    let (status, _, _) = error_code(get("/v2/org/broken/manifests/1").await.unwrap()).await;
    assert_eq!(status, 502);
    let (status, code, _) = error_code(get("/v2/org/denied/manifests/1").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"));

    let res = get("/v2/org/limited/manifests/1").await.unwrap();
    assert_eq!(res.headers()["retry-after"], "7");
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (429, "TOOMANYREQUESTS"));
    // The upstream is left alone until its Retry-After passes: wharf answers 429 itself, for any
    // request to that upstream, with what is left of the wait.
    let asked = up.total();
    let res = get("/v2/org/broken/manifests/1").await.unwrap();
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=7).contains(&retry_after), "{retry_after}");
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (429, "TOOMANYREQUESTS"));
    assert_eq!(
        up.total(),
        asked,
        "no request reached the upstream during the back-off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_503_naming_it() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let w = Wharf::with_upstream(&format!("http://127.0.0.1:{port}")).await;
    let res = client()
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_code(res).await;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"));
    assert!(message.contains("upstream.test"), "{message}");
    for internal in ["reqwest", "hyper", "error sending", "tcp"] {
        assert!(!message.to_lowercase().contains(internal), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_pulled_survives_a_restart_without_upstream() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 2, 300_000, 5);
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();
    let mut paths = vec!["/v2/org/app/manifests/1".to_owned()];
    paths.push(format!("/v2/org/app/blobs/{}", img.config));
    for l in &img.layers {
        paths.push(format!("/v2/org/app/blobs/{l}"));
    }
    let mut bodies = Vec::new();
    for p in &paths {
        let res = c.get(w.url(p)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{p}");
        bodies.push(res.bytes().await.unwrap());
    }
    let url = up.url();
    let dir = w.stop().await;
    drop(up);
    let w = Wharf::start_in(
        dir,
        "5m",
        &[Up {
            name: "upstream.test",
            url,
            default: true,
            extra: "",
        }],
    )
    .await;
    for (p, body) in paths.iter().zip(&bodies) {
        let res = c.get(w.url(p)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{p}");
        assert_eq!(res.headers()["x-cache"], "hit", "{p}");
        assert_eq!(&res.bytes().await.unwrap(), body, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_head_on_a_miss_and_an_image_index() {
    let up = Fake::start().await;
    let amd = up.add_image("org/app", "amd", 1, 100, 1);
    let arm = up.add_image("org/app", "arm", 1, 100, 2);
    let (index, index_digest) = up.add_index("org/app", "multi", &[&amd, &arm]);
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();

    // HEAD on a miss: the same headers a GET would have, no body.
    let res = c
        .head(w.url("/v2/org/app/manifests/multi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "miss");
    assert_eq!(res.headers()["content-type"], common::fake::OCI_INDEX);
    assert_eq!(
        res.headers()["docker-content-digest"],
        index_digest.as_str()
    );
    assert_eq!(
        res.headers()["content-length"],
        index.len().to_string().as_str()
    );
    assert!(res.bytes().await.unwrap().is_empty());

    // The index comes back byte for byte with its media type, and each platform's manifest by digest.
    let res = c
        .get(w.url("/v2/org/app/manifests/multi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], common::fake::OCI_INDEX);
    assert_eq!(res.bytes().await.unwrap(), index);
    for img in [&amd, &arm] {
        let path = format!("/v2/org/app/manifests/{}", img.manifest_digest);
        let res = c.get(w.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(res.headers()["x-cache"], "miss");
        assert_eq!(res.bytes().await.unwrap(), img.manifest);
        let res = c.get(w.url(&path)).send().await.unwrap();
        assert_eq!(res.headers()["x-cache"], "hit");
    }
    assert_eq!(up.count("GET", "/manifests/multi"), 1);
    assert_eq!(up.count("GET", "/manifests/sha256:"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_on_uncached_content_is_a_gateway_error() {
    let up = Fake::start().await;
    let d = up.add_blob(common::fake::random_bytes(100, 1));
    {
        let mut k = up.knobs();
        k.status
            .insert("/v2/org/app/manifests/1".into(), (503, None));
        k.status
            .insert(format!("/v2/org/app/blobs/{d}"), (500, None));
    }
    let w = Wharf::with_upstream(&up.url()).await;
    let c = client();
    for path in [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/blobs/{d}"),
    ] {
        let (status, _, message) = error_code(c.get(w.url(&path)).send().await.unwrap()).await;
        assert_eq!(status, 502, "{path}: {message}");
        assert!(message.contains("upstream.test"), "{path}: {message}");
    }
    // Nothing was cached from the failures: once the upstream recovers, both are fetched.
    up.knobs().status.clear();
    up.add_image("org/app", "1", 0, 0, 1);
    for path in [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/blobs/{d}"),
    ] {
        let res = c.get(w.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["x-cache"], "miss", "{path}");
    }
}
