//! The Docker daemon, wharf's most common client, end to end: a private `dockerd` (Debian's
//! `docker.io`: its own data root, exec root, pid file and socket, no iptables, no bridge) with
//! `--registry-mirror http://127.0.0.1:PORT` pulls an image by tag and by digest through a wharf
//! whose default upstream is named `docker.io` and points at a local distribution registry holding
//! `library/<name>:<tag>`. `docker inspect` must show the upstream's digest.
//!
//! Docker falls back to Docker Hub without a word when the mirror fails, so the test also reads
//! wharf's request log for every manifest and blob Docker asked for (and there is no Docker Hub to
//! fall back to here: no internet, so such a pull would fail). The daemon is stopped, its mounts
//! undone and its directories removed by [`Dockerd`]'s `Drop`, whatever happens.

mod common;

use common::dockerd::Dockerd;
use common::images;
use common::real::{self, Registry};
use common::served::Served;

/// The log's request lines for `path` (exact) with status 200.
fn served_ok(log: &str, path: &str) -> usize {
    let needle = format!(" path={path} ");
    log.lines()
        .filter(|l| l.contains(" request ") || l.contains("request id="))
        .filter(|l| l.contains(&needle) && l.contains(" status=200 "))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_by_tag_and_by_digest_through_wharf() {
    // The upstream: a real registry holding library/wharfe2e:1 (a Docker schema 2 image).
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (image_dir, digest) = images::docker_schema2(&work.path().join("image"));
    real::push(
        &home,
        &format!("dir:{}", image_dir.display()),
        &format!("docker://127.0.0.1:{}/library/wharfe2e:1", registry.port),
        false,
    )
    .await;
    registry.sync_log().await;
    let pushed = registry.requests().len();

    // wharf, whose default upstream is named docker.io (what Docker's mirror requests reach).
    let config = work.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n\
             [[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ndefault = true\ninsecure = true\n",
            work.path().join("data").display(),
            registry.url()
        ),
    )
    .unwrap();
    let wharf = Served::spawn(Served::command(&config));

    // http:// in the mirror URL: wharf serves plain HTTP here.
    let mirror = format!("http://{}", wharf.addr);
    let dockerd = Dockerd::start(&["--registry-mirror", &mirror]).await;
    let info = dockerd
        .docker(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"])
        .await
        .unwrap();
    assert!(info.contains(&wharf.addr), "{info}");

    // By tag.
    if let Err(e) = dockerd.docker(&["pull", "wharfe2e:1"]).await {
        panic!(
            "{e}\nwharf:\n{}\ndockerd:\n{}",
            wharf.log.lock(),
            dockerd.log()
        );
    }
    let repo_digests = dockerd
        .docker(&["inspect", "--format", "{{json .RepoDigests}}", "wharfe2e:1"])
        .await
        .unwrap();
    assert_eq!(
        repo_digests.trim(),
        format!("[\"wharfe2e@{digest}\"]"),
        "docker inspect shows the upstream's digest"
    );
    let log = wharf.log.lock().clone();
    assert!(
        served_ok(&log, "/v2/library/wharfe2e/manifests/1") >= 1,
        "Docker's pull went through wharf:\n{log}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image_dir.join("manifest.json")).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    for blob in [config_digest, layer_digest] {
        assert_eq!(
            served_ok(&log, &format!("/v2/library/wharfe2e/blobs/{blob}")),
            1,
            "{blob} came through wharf:\n{log}"
        );
    }

    // By digest, with the image gone from the daemon so that it has to ask.
    dockerd.docker(&["rmi", "wharfe2e:1"]).await.unwrap();
    let by_digest = format!("wharfe2e@{digest}");
    if let Err(e) = dockerd.docker(&["pull", &by_digest]).await {
        panic!(
            "{e}\nwharf:\n{}\ndockerd:\n{}",
            wharf.log.lock(),
            dockerd.log()
        );
    }
    let repo_digests = dockerd
        .docker(&["inspect", "--format", "{{json .RepoDigests}}", &by_digest])
        .await
        .unwrap();
    assert_eq!(repo_digests.trim(), format!("[\"{by_digest}\"]"));
    let log = wharf.log.lock().clone();
    assert!(
        served_ok(&log, &format!("/v2/library/wharfe2e/manifests/{digest}")) >= 1,
        "the pull by digest went through wharf:\n{log}"
    );
    // Each blob was fetched from the registry once: the second pull was served from wharf's cache.
    registry.sync_log().await;
    let upstream_blob_gets = registry
        .requests_since(pushed)
        .iter()
        .filter(|(method, path)| method == "GET" && path.contains("/blobs/"))
        .count();
    assert_eq!(
        upstream_blob_gets,
        2,
        "{:?}",
        registry.requests_since(pushed)
    );
}
