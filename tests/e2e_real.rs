//! End to end with real software: the CNCF distribution registry as the upstream (anonymous and with
//! Docker-Hub-style token auth) and skopeo as the client, pulling generated images through wharf.
//! Each test owns its registry, its wharf and a private `HOME` for skopeo; all traffic stays on
//! 127.0.0.1 (see `common::real`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::images::{self, Pushed};
use common::real::{
    basic, capture_logs, captured_logs, inspect_digest, mirror_home, pull, try_pull, Pulled,
    Registry, TokenAuth, TokenServer, Tripwire,
};
use common::{files_under, Up, Wharf};

fn flags(index: bool) -> Vec<&'static str> {
    let mut f = vec!["--src-tls-verify=false"];
    if index {
        f.push("--all");
    }
    f
}

async fn wharf_for(registry: &Registry, extra: &str) -> Wharf {
    Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: registry.url(),
            default: true,
            extra,
        }],
    )
    .await
}

fn host(w: &Wharf) -> String {
    w.base.trim_start_matches("http://").to_owned()
}

/// A work directory with an empty `home/` for skopeo.
fn workdir() -> (tempfile::TempDir, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    (work, home)
}

/// Each image pulled straight from the registry, as the reference to compare wharf's answers with.
async fn direct_pulls(
    registry: &Registry,
    home: &Path,
    work: &Path,
    images: &[Pushed],
) -> Vec<Pulled> {
    let mut out = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let src = format!("docker://127.0.0.1:{}/{}", registry.port, image.reference);
        let direct = pull(
            home,
            &src,
            &work.join(format!("direct{i}")),
            &flags(image.index),
        )
        .await;
        assert_eq!(direct.manifest_digest, image.digest, "{}", image.reference);
        out.push(direct);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_wharf_match_the_upstream_and_repeat_pulls_stay_local() {
    let registry = Registry::start(None).await;
    let (work, home) = workdir();
    let images = images::push_all(&registry, &home, work.path(), None).await;
    let direct = direct_pulls(&registry, &home, work.path(), &images).await;
    let w = wharf_for(&registry, "").await;
    let wharf = host(&w);

    for (image, direct) in images.iter().zip(&direct) {
        let reference = image.reference;
        // Path-prefix routing, as a registries.conf mirror sends.
        let first = pull(
            &home,
            &format!("docker://{wharf}/upstream.test/{reference}"),
            &work.path().join("first"),
            &flags(image.index),
        )
        .await;
        assert_eq!(
            first, *direct,
            "{reference}: wharf serves what the upstream has"
        );
        assert_eq!(
            inspect_digest(&home, &format!("docker://{wharf}/{reference}"), &[]).await,
            image.digest,
            "{reference}: `skopeo inspect --raw` through wharf"
        );

        registry.sync_log().await;
        let before = registry.requests().len();
        // Again, by both routes: the path prefix and the default upstream (as the Docker daemon
        // sends), and by digest. Everything is cached by now and the tag is within its TTL.
        let repo = reference.split(':').next().unwrap();
        for src in [
            format!("docker://{wharf}/upstream.test/{reference}"),
            format!("docker://{wharf}/{reference}"),
            format!("docker://{wharf}/{repo}@{}", image.digest),
        ] {
            let again = pull(&home, &src, &work.path().join("again"), &flags(image.index)).await;
            assert_eq!(again, *direct, "{src}");
        }
        registry.sync_log().await;
        let upstream = registry.requests_since(before);
        assert_eq!(
            upstream
                .iter()
                .filter(|(m, p)| m == "GET" && p.contains("/blobs/"))
                .count(),
            0,
            "{reference}: repeat pulls fetched no blob upstream: {upstream:?}"
        );
        assert!(
            upstream.is_empty(),
            "{reference}: repeat pulls within tag_ttl sent nothing upstream: {upstream:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_uses_wharf_as_a_registries_conf_mirror_with_a_path_prefix() {
    let registry = Registry::start(None).await;
    let (work, home) = workdir();
    let images = images::push_all(&registry, &home, work.path(), None).await;
    let direct = direct_pulls(&registry, &home, work.path(), &images).await;
    let w = wharf_for(&registry, "").await;
    // A separate HOME holds the mirror configuration: upstream.test's own location is the
    // tripwire, so a pull that skipped wharf fails at once and is counted.
    let tripwire = Tripwire::start().await;
    let mirror_home_dir = work.path().join("mirror-home");
    mirror_home(
        &mirror_home_dir,
        &format!("{}/upstream.test", host(&w)),
        &tripwire,
    );

    for (image, direct) in images.iter().zip(&direct) {
        let src = format!("docker://upstream.test/{}", image.reference);
        // No --src-tls-verify: `insecure = true` in registries.conf is what lets skopeo use HTTP.
        let extra: &[&str] = if image.index { &["--all"] } else { &[] };
        let first = pull(&mirror_home_dir, &src, &work.path().join("first"), extra).await;
        assert_eq!(first, *direct, "{src}");
        registry.sync_log().await;
        let before = registry.requests().len();
        let again = pull(&mirror_home_dir, &src, &work.path().join("again"), extra).await;
        assert_eq!(again, *direct, "{src}");
        registry.sync_log().await;
        let upstream = registry.requests_since(before);
        assert!(
            !upstream
                .iter()
                .any(|(m, p)| m == "GET" && p.contains("/blobs/")),
            "{src}: the repeat pull fetched no blob upstream: {upstream:?}"
        );
    }
    assert!(
        registry.blob_gets() > direct.len(),
        "the mirror fetched from the upstream"
    );
    assert_eq!(tripwire.hits(), 0, "skopeo never skipped the mirror");

    // The guard works: an image wharf cannot serve makes skopeo fall back to upstream.test's own
    // location, which is the tripwire on loopback, and the pull fails fast.
    let started = Instant::now();
    let missing = try_pull(
        &mirror_home_dir,
        "docker://upstream.test/e2e/absent:1",
        &work.path().join("absent"),
        &[],
    )
    .await;
    assert!(missing.is_err(), "{missing:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a pull that falls back fails fast ({:?})",
        started.elapsed()
    );
    assert!(tripwire.hits() > 0, "the fallback went to the tripwire");
    registry.sync_log().await;
    assert!(
        registry
            .requests()
            .iter()
            .any(|(_, p)| p == "/v2/e2e/absent/manifests/1"),
        "skopeo asked the mirror first, and wharf asked the upstream"
    );
}

/// Every status line, header and body wharf sends for the read API of `reference`: the
/// manifests (and an index's instances), each blob by GET and HEAD, tags, and some errors.
async fn everything_wharf_answers(w: &Wharf, reference: &str) -> Vec<u8> {
    let client = common::client();
    let (repo, tag) = reference.split_once(':').unwrap();
    let accept = [
        images::OCI_MANIFEST,
        images::OCI_INDEX,
        images::DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
    .join(", ");
    let mut paths = vec![
        "/v2/".to_owned(),
        format!("/v2/{repo}/manifests/{tag}"),
        format!("/v2/{repo}/tags/list"),
        format!("/v2/{repo}/manifests/absent"),
        format!("/v2/{repo}/blobs/sha256:{}", "0".repeat(64)),
        "/v2/e2e/absent/manifests/1".to_owned(),
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while i < paths.len() {
        let path = paths[i].clone();
        i += 1;
        for method in [reqwest::Method::HEAD, reqwest::Method::GET] {
            let res = client
                .request(method.clone(), w.url(&path))
                .header("accept", &accept)
                .send()
                .await
                .unwrap();
            out.extend_from_slice(format!("{method} {path} {}\n", res.status()).as_bytes());
            for (k, v) in res.headers() {
                out.extend_from_slice(k.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.push(b'\n');
            }
            let ok = res.status().is_success();
            let body = res.bytes().await.unwrap();
            out.extend_from_slice(&body);
            // Follow what a manifest references.
            if ok && method == reqwest::Method::GET && path.contains("/manifests/") {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for m in v["manifests"].as_array().into_iter().flatten() {
                    paths.push(format!(
                        "/v2/{repo}/manifests/{}",
                        m["digest"].as_str().unwrap()
                    ));
                }
                let blobs = v["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(std::iter::once(&v["config"]));
                for b in blobs {
                    if let Some(d) = b["digest"].as_str() {
                        paths.push(format!("/v2/{repo}/blobs/{d}"));
                    }
                }
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_against_a_real_registry() {
    const USER: &str = "mirror-bot";
    const PASS: &str = "t0k3n-pa55";
    capture_logs();
    // Over https: a token server on another port of the registry's host is another service, which
    // wharf sends credentials to only when listed in token_realms, and never over plain http.
    let tokens = TokenServer::start_https(USER, PASS).await;
    let registry = Registry::start(Some(TokenAuth {
        realm: tokens.realm(),
        cert_pem: &tokens.cert_pem,
    }))
    .await;
    let (work, home) = workdir();
    let images = images::push_all(
        &registry,
        &home,
        work.path(),
        Some(&format!("{USER}:{PASS}")),
    )
    .await;
    let pushes = tokens.count();
    // The registry really demands a token.
    let denied = common::client()
        .get(format!("{}/v2/e2e/multi/manifests/1", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    let pw = work.path().join("upstream.password");
    std::fs::write(&pw, format!("{PASS}\n")).unwrap();
    let w = wharf_for(
        &registry,
        &format!(
            "username = \"{USER}\"\npassword_file = \"{}\"\ntoken_realms = [\"127.0.0.1\"]",
            pw.display()
        ),
    )
    .await;
    let wharf = host(&w);
    let mut answers = Vec::new();
    for (i, image) in images.iter().enumerate() {
        // skopeo pulls anonymously from wharf; wharf authenticates upstream.
        let out = work.path().join(format!("out{i}"));
        let pulled = pull(
            &home,
            &format!("docker://{wharf}/{}", image.reference),
            &out,
            &flags(image.index),
        )
        .await;
        assert_eq!(pulled.manifest_digest, image.digest, "{}", image.reference);
        for file in files_under(&out, "") {
            answers.extend(std::fs::read(file).unwrap());
        }
        let asked_wharf = everything_wharf_answers(&w, image.reference).await;
        for blob in pulled.blobs.iter().filter(|b| b.len() == 64) {
            let line = format!(
                "GET /v2/{}/blobs/sha256:{blob} 200 OK",
                image.reference.split(':').next().unwrap()
            );
            assert!(contains(&asked_wharf, &line), "the scan fetched {line}");
        }
        answers.extend(asked_wharf);
    }
    w.settled().await;

    let asked = tokens.since(pushes);
    assert!(!asked.is_empty(), "wharf got tokens from the realm");
    let want = basic(USER, PASS);
    for t in &asked {
        assert_eq!(t.authorization.as_deref(), Some(want.as_str()), "{t:?}");
        assert!(t.token.is_some(), "{t:?}");
        assert!(
            !t.scopes.is_empty()
                && t.scopes
                    .iter()
                    .all(|s| s.starts_with("repository:e2e/") && s.ends_with(":pull")),
            "wharf asks for pull access only: {t:?}"
        );
    }

    // No credential reaches a client, the logs (everything at trace level) or the disk.
    let logs = captured_logs();
    assert!(
        logs.contains(&wharf) && logs.contains("/v2/e2e/multi/manifests/1"),
        "the capture holds this wharf's logs"
    );
    let mut secrets = vec![
        PASS.to_owned(),
        want.trim_start_matches("Basic ").to_owned(),
    ];
    secrets.extend(asked.iter().filter_map(|t| t.token.clone()));
    let stored: Vec<u8> = files_under(w.dir.path(), "")
        .into_iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    for secret in &secrets {
        let shown = &secret[..secret.len().min(12)];
        assert!(
            !logs.contains(secret.as_str()),
            "{shown}… is in wharf's logs"
        );
        assert!(!contains(&answers, secret), "{shown}… reached a client");
        assert!(!contains(&stored, secret), "{shown}… is in wharf's storage");
    }

    // Without credentials the token server refuses wharf, and the client is told so.
    let anon = wharf_for(&registry, "token_realms = [\"127.0.0.1\"]").await;
    let res = common::client()
        .get(anon.url("/v2/e2e/multi/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        body.contains("refused the token request") && !body.contains(PASS),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bearer_tokens_as_for_public_images() {
    // Docker Hub's public images: the registry still demands a Bearer token, and the realm hands
    // one out without credentials.
    let tokens = TokenServer::start_with("pusher", "push-pass", true).await;
    let registry = Registry::start(Some(TokenAuth {
        realm: tokens.realm(),
        cert_pem: &tokens.cert_pem,
    }))
    .await;
    let (work, home) = workdir();
    let images = images::push_all(&registry, &home, work.path(), Some("pusher:push-pass")).await;
    let pushes = tokens.count();
    // The token server is on another port of the registry's 127.0.0.1: it must be listed.
    let w = wharf_for(&registry, "token_realms = [\"127.0.0.1\"]").await;
    let wharf = host(&w);
    for image in &images {
        let pulled = pull(
            &home,
            &format!("docker://{wharf}/upstream.test/{}", image.reference),
            &work.path().join("out"),
            &flags(image.index),
        )
        .await;
        assert_eq!(pulled.manifest_digest, image.digest, "{}", image.reference);
    }
    let asked = tokens.since(pushes);
    assert!(!asked.is_empty());
    assert!(
        asked
            .iter()
            .all(|t| t.authorization.is_none() && t.token.is_some()),
        "{asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_images_survive_a_restart_with_the_upstream_gone() {
    let mut registry = Registry::start(None).await;
    let (work, home) = workdir();
    let images = images::push_all(&registry, &home, work.path(), None).await;
    let w = wharf_for(&registry, "").await;
    let wharf = host(&w);
    let mut before = Vec::new();
    for image in &images {
        before.push(
            pull(
                &home,
                &format!("docker://{wharf}/{}", image.reference),
                &work.path().join("a"),
                &flags(image.index),
            )
            .await,
        );
    }
    let url = registry.url();
    let storage = w.stop().await;
    registry.kill();
    let w = Wharf::start_in(
        storage,
        "5m",
        &[Up {
            name: "upstream.test",
            url,
            default: true,
            extra: "",
        }],
    )
    .await;
    let wharf = host(&w);
    for (image, earlier) in images.iter().zip(&before) {
        let again = pull(
            &home,
            &format!("docker://{wharf}/{}", image.reference),
            &work.path().join("b"),
            &flags(image.index),
        )
        .await;
        assert_eq!(again.manifest_digest, image.digest, "{}", image.reference);
        assert_eq!(again, *earlier, "{}", image.reference);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_updates_and_upstream_outages_with_the_real_registry() {
    let mut registry = Registry::start(None).await;
    let (work, home) = workdir();
    let (v1, v1_digest) = images::single(&work.path().join("v1"), "1", 11, 1);
    let (v2, v2_digest) = images::single(&work.path().join("v2"), "1", 12, 1);
    let dest = format!("docker://127.0.0.1:{}/e2e/app:1", registry.port);
    common::real::push(&home, &format!("oci:{}:1", v1.dir.display()), &dest, false).await;

    let w = Wharf::start(
        "1s",
        &[Up {
            name: "upstream.test",
            url: registry.url(),
            default: true,
            extra: "",
        }],
    )
    .await;
    let src = format!("docker://{}/e2e/app:1", host(&w));
    let first = pull(&home, &src, &work.path().join("a"), &flags(false)).await;
    assert_eq!(first.manifest_digest, v1_digest);

    // A new image under the same tag upstream: after the TTL, wharf serves the new digest. (The
    // real registry runs on the real clock, so this test waits out a short TTL.)
    common::real::push(&home, &format!("oci:{}:1", v2.dir.display()), &dest, false).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = pull(&home, &src, &work.path().join("b"), &flags(false)).await;
    assert_eq!(second.manifest_digest, v2_digest);

    // The upstream goes away: past the TTL the pull still succeeds, from the cache.
    registry.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = pull(&home, &src, &work.path().join("c"), &flags(false)).await;
    assert_eq!(third.manifest_digest, v2_digest);
    assert_eq!(third.blobs, second.blobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_index_pulls_whole_then_again_offline() {
    let registry = Registry::start(None).await;
    let (work, home) = workdir();
    let images = images::push_all(&registry, &home, work.path(), None).await;
    let index = &images[1];
    assert!(index.index);
    let direct = pull(
        &home,
        &format!("docker://127.0.0.1:{}/{}", registry.port, index.reference),
        &work.path().join("d"),
        &flags(true),
    )
    .await;
    let direct_arm64 = pull(
        &home,
        &format!("docker://127.0.0.1:{}/{}", registry.port, index.reference),
        &work.path().join("d-arm"),
        &["--src-tls-verify=false", "--override-arch=arm64"],
    )
    .await;
    let w = wharf_for(&registry, "").await;
    let src = |w: &Wharf| format!("docker://{}/{}", host(w), index.reference);
    let online = pull(&home, &src(&w), &work.path().join("on"), &flags(true)).await;
    assert_eq!(online, direct, "every platform's manifest and blobs");
    assert_eq!(
        online
            .blobs
            .iter()
            .filter(|b| b.ends_with(".manifest.json"))
            .count(),
        2
    );

    let url = registry.url();
    let storage = w.stop().await;
    registry.sync_log().await;
    let before = registry.requests().len();
    let w = Wharf::start_in(
        storage,
        "5m",
        &[Up {
            name: "upstream.test",
            url,
            default: true,
            extra: "offline = true",
        }],
    )
    .await;
    let offline = pull(&home, &src(&w), &work.path().join("off"), &flags(true)).await;
    assert_eq!(offline, direct);
    // One platform, as a runtime pulls it: the index by tag, then that platform's manifest by digest.
    let one = ["--src-tls-verify=false", "--override-arch=arm64"];
    let arm64 = pull(&home, &src(&w), &work.path().join("arm"), &one).await;
    assert_eq!(arm64, direct_arm64, "the arm64 image, offline");
    assert_ne!(arm64.manifest_digest, index.digest);
    registry.sync_log().await;
    assert_eq!(
        registry.requests_since(before),
        vec![],
        "an offline wharf sends nothing upstream"
    );
}
