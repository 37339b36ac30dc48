//! Tiered caches: an edge wharf whose upstreams are a regional wharf (`mirror_of_mirror = true`).
//!
//! - In process: every request the edge sends a forwarding upstream (manifests by tag and digest,
//!   the HEAD that revalidates a tag, blobs and their ranged resume, blob HEADs, tag list pages,
//!   referrers, and the retry after a token) carries `?ns=<name>`; and a name the regional does not
//!   have is a 502 each time, never a remembered 404 nor the regional's default registry; and when
//!   the regional drops a name, the bodiless 404 of the edge's revalidating HEAD does not end the
//!   edge's cached tag (it is served stale).
//! - With real software: two distribution registries holding different images under the same
//!   repository and tag, a regional wharf in front of both, an edge wharf in front of the regional,
//!   skopeo through the edge: byte-exact for both; without the flag the edge gets the regional's
//!   default registry for both (the bug this fixes); with the regional stopped the edge still serves
//!   what it has.

mod common;

use std::time::Duration;

use common::fake::{AuthMode, Fake, OCI_INDEX, OCI_MANIFEST};
use common::images;
use common::real::{pull, push, try_pull, Pulled, Registry};
use common::{client, Up, Wharf};

/// An upstream entry of the edge: another wharf at `url`, asked for its registry `name`.
fn forwarding<'a>(name: &'a str, url: &str, forward: bool) -> Up<'a> {
    Up {
        name,
        url: url.to_owned(),
        default: false,
        extra: if forward {
            "mirror_of_mirror = true\n"
        } else {
            ""
        },
    }
}

/// The `ns` values of a query string.
fn ns_values(query: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "ns")
        .map(|(_, v)| v.into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_to_another_wharf_carries_its_name_as_ns() {
    // The fake stands in for the regional wharf: it records each request's query.
    let regional = Fake::start().await;
    regional.knobs().auth = AuthMode::Bearer {
        creds: None,
        realm: None,
    };
    let img = regional.add_image("org/app", "1", 2, 300_000, 7);
    regional.add_image("org/app", "2", 1, 1000, 8);
    let unpulled = regional.add_blob(&b"a blob only HEAD asks about"[..]);
    regional.state.referrers.lock().insert(
        ("org/app".into(), img.manifest_digest.clone()),
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    );
    // The first layer's body breaks once: the fill resumes it with a Range request.
    regional
        .knobs()
        .cut
        .insert(img.layers[0].clone(), (100_000, 1));
    // A plain registry next to it is sent no ns.
    let plain = Fake::start().await;
    plain.add_image("org/app", "1", 1, 1000, 9);
    let edge = Wharf::start(
        "200ms",
        &[
            forwarding("reg-b", &regional.url(), true),
            Up {
                name: "plain.test",
                url: plain.url(),
                default: true,
                extra: "",
            },
        ],
    )
    .await;
    let c = client();
    let get = |path: &str| c.get(edge.url(path)).header("accept", OCI_MANIFEST).send();

    let res = get("/v2/reg-b/org/app/manifests/1").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), img.manifest);
    for d in img.layers.iter().chain([&img.config]) {
        let res = get(&format!("/v2/reg-b/org/app/blobs/{d}")).await.unwrap();
        assert_eq!(res.status(), 200, "{d}");
        let want = regional.state.blobs.lock()[d].clone();
        assert_eq!(res.bytes().await.unwrap(), want, "{d}");
    }
    let res = c
        .head(edge.url(&format!("/v2/reg-b/org/app/blobs/{unpulled}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The client's own ?ns= routes at the edge; the edge sends its own.
    let res = get("/v2/org/app/manifests/2?ns=reg-b").await.unwrap();
    assert_eq!(res.status(), 200);
    let res = get("/v2/reg-b/org/app/tags/list?n=1&last=0").await.unwrap();
    assert_eq!(res.status(), 200);
    let tags: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
    let res = get(&format!(
        "/v2/reg-b/org/app/referrers/{}",
        img.manifest_digest
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    // Once the tag is older than tag_ttl, the edge revalidates it with a HEAD.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = get("/v2/reg-b/org/app/manifests/1").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-cache"], "revalidated");
    edge.settled().await;
    let res = get("/v2/org/app/manifests/1").await.unwrap();
    assert_eq!(res.status(), 200);

    let seen = regional.seen();
    for s in &seen {
        assert_eq!(
            ns_values(s.query.as_deref()),
            ["reg-b"],
            "{} {} {:?}",
            s.method,
            s.path,
            s.query
        );
    }
    let has = |method: &str, part: &str| {
        seen.iter()
            .any(|s| s.method == method && s.path.contains(part))
    };
    for (method, part) in [
        ("GET", "/manifests/1"),
        ("HEAD", "/manifests/1"),
        ("GET", "/manifests/2"),
        ("HEAD", &format!("/blobs/{unpulled}")),
        ("GET", "/tags/list"),
        ("GET", "/referrers/"),
    ] {
        assert!(has(method, part), "no {method} {part} in {seen:#?}");
    }
    // The resume, and the retry after the token exchange, kept the query.
    assert!(
        seen.iter().any(|s| s.range.is_some()),
        "no ranged resume in {seen:#?}"
    );
    assert!(seen.iter().any(|s| s.authorization.is_none()));
    assert!(seen.iter().any(|s| s.authorization.is_some()));
    let page = seen
        .iter()
        .find(|s| s.path.ends_with("/tags/list"))
        .unwrap();
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(page.query.as_deref().unwrap().as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        pairs,
        [("n", "1"), ("last", "0"), ("ns", "reg-b")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    for s in plain.seen() {
        assert_eq!(s.query, None, "{} {}", s.method, s.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_regional_lacks_is_a_502_each_time_not_its_default_nor_a_cached_404() {
    let registry_a = Fake::start().await;
    registry_a.add_image("org/app", "1", 1, 1000, 1);
    let regional = Wharf::start(
        "5m",
        &[Up {
            name: "reg-a",
            url: registry_a.url(),
            default: true,
            extra: "",
        }],
    )
    .await;
    let edge = Wharf::start(
        "5m",
        &[
            forwarding("reg-a", &regional.base, true),
            forwarding("reg-c", &regional.base, true),
        ],
    )
    .await;
    let c = client();
    // Twice: the second is not answered from a negative cache.
    for round in 0..2 {
        for path in [
            "/v2/reg-c/org/app/manifests/1",
            "/v2/reg-c/org/app/tags/list",
        ] {
            let res = c.get(edge.url(path)).send().await.unwrap();
            assert_eq!(res.status(), 502, "{path} round {round}");
            let body = res.text().await.unwrap();
            assert!(
                body.contains(r#"no registry named \"reg-c\""#),
                "{path}: {body}"
            );
        }
    }
    assert_eq!(
        registry_a.total(),
        0,
        "the regional answered reg-c from its default registry"
    );
    // The name it has still works through the same regional.
    let res = c
        .get(edge.url("/v2/reg-a/org/app/manifests/1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A wharf listening on `port` with `ups`.
async fn wharf_on(port: u16, tag_ttl: &str, ups: &[Up<'_>]) -> Wharf {
    let dir = tempfile::tempdir().unwrap();
    let text = common::config_text(dir.path(), tag_ttl, ups).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    Wharf::start_text(dir, &text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_that_drops_the_name_leaves_the_edges_cached_tag_served_stale_not_gone() {
    let registry_b = Fake::start().await;
    let img = registry_b.add_image("org/app", "1", 1, 1000, 3);
    let registry_b_up = |name| Up {
        name,
        url: registry_b.url(),
        default: true,
        extra: "",
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let regional = wharf_on(port, "5m", &[registry_b_up("reg-b")]).await;
    let edge = Wharf::start(
        "200ms",
        &[forwarding(
            "reg-b",
            &format!("http://127.0.0.1:{port}"),
            true,
        )],
    )
    .await;
    let c = client();
    let get = || {
        c.get(edge.url("/v2/reg-b/org/app/manifests/1"))
            .header("accept", OCI_MANIFEST)
            .send()
    };
    let res = get().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), img.manifest);
    // The regional comes back on the same address without reg-b (renamed "reg-x"): its answer to
    // the edge's revalidating HEAD is a bodiless 404, which must not end the edge's tag.
    regional.stop().await;
    let regional = wharf_on(port, "5m", &[registry_b_up("reg-x")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..2 {
        let res = get().await.unwrap();
        assert_eq!(res.status(), 200, "round {round}");
        assert_eq!(res.headers()["x-cache"], "stale", "round {round}");
        assert_eq!(res.bytes().await.unwrap(), img.manifest);
    }
    drop(regional);
}

// === With real software ===

/// Two distribution registries with different images as `org/app:1`, a regional wharf in front of
/// both (`reg-a` its default), and an edge wharf whose `reg-a` and `reg-b` are the regional.
struct Chain {
    registry_a: Registry,
    registry_b: Registry,
    regional: Option<Wharf>,
    edge: Wharf,
    /// Each image pulled straight from its registry: (reg-a's, reg-b's).
    direct: (Pulled, Pulled),
    work: tempfile::TempDir,
}

impl Chain {
    async fn start(forward: bool) -> Chain {
        let work = tempfile::tempdir().unwrap();
        let home = work.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let registry_a = Registry::start(None).await;
        let registry_b = Registry::start(None).await;
        let (image_a, _) = images::single(&work.path().join("image-a"), "1", 21, 2);
        let (image_b, _) = images::single(&work.path().join("image-b"), "1", 22, 3);
        for (registry, image) in [(&registry_a, &image_a), (&registry_b, &image_b)] {
            let dest = format!("docker://127.0.0.1:{}/org/app:1", registry.port);
            push(
                &home,
                &format!("oci:{}:1", image.dir.display()),
                &dest,
                false,
            )
            .await;
        }
        let mut direct = Vec::new();
        for (name, registry) in [("a", &registry_a), ("b", &registry_b)] {
            let src = format!("docker://127.0.0.1:{}/org/app:1", registry.port);
            let out = work.path().join(format!("direct-{name}"));
            direct.push(pull(&home, &src, &out, &["--src-tls-verify=false"]).await);
        }
        let direct_b = direct.pop().unwrap();
        let direct_a = direct.pop().unwrap();
        assert_ne!(direct_a.manifest_digest, direct_b.manifest_digest);
        let regional = Wharf::start(
            "5m",
            &[
                Up {
                    name: "reg-a",
                    url: registry_a.url(),
                    default: true,
                    extra: "",
                },
                Up {
                    name: "reg-b",
                    url: registry_b.url(),
                    default: false,
                    extra: "",
                },
            ],
        )
        .await;
        let edge = Wharf::start(
            "5m",
            &[
                forwarding("reg-a", &regional.base, forward),
                forwarding("reg-b", &regional.base, forward),
            ],
        )
        .await;
        Chain {
            registry_a,
            registry_b,
            regional: Some(regional),
            edge,
            direct: (direct_a, direct_b),
            work,
        }
    }

    fn home(&self) -> std::path::PathBuf {
        self.work.path().join("home")
    }

    /// skopeo copy of `reference` (`reg-b/org/app:1`, `...@sha256:...`) through the edge.
    async fn pull_edge(&self, reference: &str, out: &str) -> Result<Pulled, String> {
        let host = self.edge.base.trim_start_matches("http://");
        try_pull(
            &self.home(),
            &format!("docker://{host}/{reference}"),
            &self.work.path().join(out),
            &["--src-tls-verify=false"],
        )
        .await
    }
}

/// The manifest digest the edge answers for `path` (with its query).
async fn edge_manifest_digest(edge: &Wharf, path: &str) -> String {
    let res = client()
        .get(edge.url(path))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    common::fake::digest_of(&res.bytes().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_through_edge_and_regional_gets_each_registry_byte_exact_and_survives_the_regional()
{
    let mut chain = Chain::start(true).await;
    let (direct_a, direct_b) = chain.direct.clone();
    // Both through the edge, by path prefix: each is its own registry's image, byte for byte.
    for (name, direct) in [("reg-a", &direct_a), ("reg-b", &direct_b)] {
        let got = chain
            .pull_edge(&format!("{name}/org/app:1"), &format!("edge-{name}"))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&got, direct, "{name}");
    }
    // By ?ns= (as containerd asks a mirror), the same answers.
    for (name, direct) in [("reg-a", &direct_a), ("reg-b", &direct_b)] {
        let path = format!("/v2/org/app/manifests/1?ns={name}");
        assert_eq!(
            edge_manifest_digest(&chain.edge, &path).await,
            direct.manifest_digest,
            "{name}"
        );
    }
    // Each registry was asked for its own image only.
    for (registry, direct) in [
        (&chain.registry_a, &direct_a),
        (&chain.registry_b, &direct_b),
    ] {
        registry.sync_log().await;
        for (method, path) in registry.requests() {
            if let Some((_, digest)) = path.split_once("/blobs/sha256:") {
                assert!(
                    direct.blobs.iter().any(|b| b == digest),
                    "{method} {path}: not a blob of this registry's image"
                );
            }
        }
    }
    chain.edge.settled().await;

    // The regional goes away: the edge serves what it has, by digest and by tag.
    chain.regional.take().unwrap().stop().await;
    for (name, direct) in [("reg-a", &direct_a), ("reg-b", &direct_b)] {
        let by_digest = format!("{name}/org/app@{}", direct.manifest_digest);
        let got = chain
            .pull_edge(&by_digest, &format!("cached-{name}"))
            .await
            .unwrap_or_else(|e| panic!("{by_digest} with the regional stopped: {e}"));
        assert_eq!(&got, direct, "{name}");
        let got = chain
            .pull_edge(&format!("{name}/org/app:1"), &format!("cached-tag-{name}"))
            .await
            .unwrap_or_else(|e| panic!("{name}:1 with the regional stopped: {e}"));
        assert_eq!(&got, direct, "{name}");
    }
    // What it does not have fails cleanly.
    assert!(chain
        .pull_edge("reg-b/org/other:1", "missing")
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mirror_of_mirror_the_edge_gets_the_regionals_default_for_every_name() {
    let chain = Chain::start(false).await;
    let (direct_a, direct_b) = chain.direct.clone();
    chain.registry_b.sync_log().await;
    let before = chain.registry_b.requests().len();
    let got = chain
        .pull_edge("reg-b/org/app:1", "edge-reg-b")
        .await
        .unwrap();
    // The bug the flag fixes: reg-b's name is lost between edge and regional.
    assert_eq!(got, direct_a);
    assert_ne!(got.manifest_digest, direct_b.manifest_digest);
    chain.registry_b.sync_log().await;
    assert!(
        chain.registry_b.requests_since(before).is_empty(),
        "registry B was asked"
    );
}
