//! End to end with real software: the CNCF distribution registry as the upstream (anonymous and with
//! Docker-Hub-style token auth) and skopeo as the client, pulling generated images through wharf.

mod common;

use std::path::Path;

use common::real::{pull, Registry, TokenAuth, TokenServer};
use common::{images, Up, Wharf};

struct Seeded {
    /// (repository:tag, expected manifest digest, needs --all)
    images: Vec<(&'static str, String, bool)>,
}

/// Pushes the three test images into `registry`.
async fn seed(registry: &Registry, home: &Path, work: &Path, creds: Option<&str>) -> Seeded {
    let dest = |repo: &str| format!("docker://127.0.0.1:{}/{repo}", registry.port);
    let (multi, multi_digest) = images::multi_layer(&work.join("multi"), "1");
    let (index, index_digest) = images::multi_arch(&work.join("index"), "1");
    let (docker, docker_digest) = images::docker_schema2(&work.join("docker"));
    let with_creds = |args: &mut Vec<String>| {
        if let Some(c) = creds {
            args.push(format!("--dest-creds={c}"));
        }
    };
    for (src, repo, all) in [
        (
            format!("oci:{}:1", multi.dir.display()),
            "e2e/multi:1",
            false,
        ),
        (
            format!("oci:{}:1", index.dir.display()),
            "e2e/index:1",
            true,
        ),
        (format!("dir:{}", docker.display()), "e2e/docker:1", false),
    ] {
        let mut args = vec![
            "copy".to_owned(),
            "--preserve-digests".to_owned(),
            "--dest-tls-verify=false".to_owned(),
        ];
        with_creds(&mut args);
        if all {
            args.push("--all".to_owned());
        }
        args.push(src);
        args.push(dest(repo));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::real::skopeo(home, &args).await;
    }
    Seeded {
        images: vec![
            ("e2e/multi:1", multi_digest, false),
            ("e2e/index:1", index_digest, true),
            ("e2e/docker:1", docker_digest, false),
        ],
    }
}

fn flags(all: bool) -> Vec<&'static str> {
    let mut f = vec!["--src-tls-verify=false"];
    if all {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_wharf_match_the_upstream_and_repeat_pulls_stay_local() {
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let seeded = seed(&registry, &home, work.path(), None).await;
    let w = wharf_for(&registry, "").await;
    let wharf_host = w.base.trim_start_matches("http://").to_owned();

    for (reference, digest, all) in &seeded.images {
        let direct = pull(
            &home,
            &format!("docker://127.0.0.1:{}/{reference}", registry.port),
            &work.path().join("direct"),
            &flags(*all),
        )
        .await;
        // Path-prefix routing, as a registries.conf mirror sends.
        let first = pull(
            &home,
            &format!("docker://{wharf_host}/upstream.test/{reference}"),
            &work.path().join("first"),
            &flags(*all),
        )
        .await;
        assert_eq!(&first.manifest_digest, digest, "{reference}");
        assert_eq!(
            first.blobs, direct.blobs,
            "{reference}: same content as straight from the upstream"
        );

        let blob_gets = registry.blob_gets();
        assert!(
            blob_gets >= first.blobs.len(),
            "the access log counts blob GETs"
        );
        // Default-upstream routing, as the Docker daemon sends; everything is cached by now.
        let second = pull(
            &home,
            &format!("docker://{wharf_host}/{reference}"),
            &work.path().join("second"),
            &flags(*all),
        )
        .await;
        assert_eq!(&second.manifest_digest, digest, "{reference}");
        assert_eq!(second.blobs, direct.blobs, "{reference}");
        assert_eq!(
            registry.blob_gets(),
            blob_gets,
            "{reference}: the second pull fetched no blob upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_uses_wharf_as_a_registries_conf_mirror_with_a_path_prefix() {
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".config/containers")).unwrap();
    let seeded = seed(&registry, &home, work.path(), None).await;
    let w = wharf_for(&registry, "").await;
    let wharf_host = w.base.trim_start_matches("http://");
    // The "real" location of upstream.test is a loopback port nothing listens on: a pull that
    // skipped the mirror would fail at once and could never leave the machine.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        home.join(".config/containers/registries.conf"),
        format!(
            "[[registry]]\nprefix = \"upstream.test\"\nlocation = \"{dead}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{wharf_host}/upstream.test\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    for (reference, digest, all) in &seeded.images {
        let mut extra = vec![];
        if *all {
            extra.push("--all");
        }
        let pulled = pull(
            &home,
            &format!("docker://upstream.test/{reference}"),
            &work.path().join("out"),
            &extra,
        )
        .await;
        assert_eq!(&pulled.manifest_digest, digest, "{reference}");
    }
    assert!(
        registry.blob_gets() > 0,
        "the mirror fetched from the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_against_a_real_registry() {
    let tokens = TokenServer::start("mirror-bot", "t0k3n-pa55").await;
    let registry = Registry::start(Some(TokenAuth {
        realm: tokens.realm(),
        cert_pem: &tokens.cert_pem,
    }))
    .await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let seeded = seed(&registry, &home, work.path(), Some("mirror-bot:t0k3n-pa55")).await;
    let pushes = tokens.requests.load(std::sync::atomic::Ordering::SeqCst);

    let pw = work.path().join("upstream.password");
    std::fs::write(&pw, "t0k3n-pa55\n").unwrap();
    let w = wharf_for(
        &registry,
        &format!(
            "username = \"mirror-bot\"\npassword_file = \"{}\"",
            pw.display()
        ),
    )
    .await;
    let wharf_host = w.base.trim_start_matches("http://").to_owned();
    for (reference, digest, all) in &seeded.images {
        // skopeo pulls anonymously from wharf; wharf authenticates upstream.
        let pulled = pull(
            &home,
            &format!("docker://{wharf_host}/{reference}"),
            &work.path().join("out"),
            &flags(*all),
        )
        .await;
        assert_eq!(&pulled.manifest_digest, digest, "{reference}");
    }
    let asked = tokens.requests.load(std::sync::atomic::Ordering::SeqCst) - pushes;
    assert!(asked >= 1, "wharf got tokens from the realm");
    let want = "Basic bWlycm9yLWJvdDp0MGszbi1wYTU1";
    assert!(tokens.authorizations.lock()[pushes..]
        .iter()
        .all(|a| a.as_deref() == Some(want)));

    // Without credentials the real registry's token server refuses wharf.
    let anon = wharf_for(&registry, "").await;
    let res = common::client()
        .get(anon.url("/v2/e2e/multi/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        body.contains("refused the token request") && !body.contains("t0k3n"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_images_survive_a_restart_with_the_upstream_gone() {
    let mut registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let seeded = seed(&registry, &home, work.path(), None).await;
    let w = wharf_for(&registry, "").await;
    let wharf_host = w.base.trim_start_matches("http://").to_owned();
    let mut before = Vec::new();
    for (reference, _, all) in &seeded.images {
        before.push(
            pull(
                &home,
                &format!("docker://{wharf_host}/{reference}"),
                &work.path().join("a"),
                &flags(*all),
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
    let wharf_host = w.base.trim_start_matches("http://").to_owned();
    for ((reference, digest, all), earlier) in seeded.images.iter().zip(&before) {
        let again = pull(
            &home,
            &format!("docker://{wharf_host}/{reference}"),
            &work.path().join("b"),
            &flags(*all),
        )
        .await;
        assert_eq!(&again.manifest_digest, digest, "{reference}");
        assert_eq!(again.blobs, earlier.blobs, "{reference}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_updates_and_upstream_outages_with_the_real_registry() {
    let mut registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
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
    let src = format!(
        "docker://{}/e2e/app:1",
        w.base.trim_start_matches("http://")
    );
    let first = pull(&home, &src, &work.path().join("a"), &flags(false)).await;
    assert_eq!(first.manifest_digest, v1_digest);

    // A new image under the same tag upstream: after the TTL, wharf serves the new digest.
    common::real::push(&home, &format!("oci:{}:1", v2.dir.display()), &dest, false).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = pull(&home, &src, &work.path().join("b"), &flags(false)).await;
    assert_eq!(second.manifest_digest, v2_digest);

    // The upstream goes away: past the TTL the pull still succeeds, from the cache.
    registry.kill();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let third = pull(&home, &src, &work.path().join("c"), &flags(false)).await;
    assert_eq!(third.manifest_digest, v2_digest);
    assert_eq!(third.blobs, second.blobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_index_pulls_whole_then_again_offline() {
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let seeded = seed(&registry, &home, work.path(), None).await;
    let (reference, digest, _) = &seeded.images[1];
    let direct = pull(
        &home,
        &format!("docker://127.0.0.1:{}/{reference}", registry.port),
        &work.path().join("d"),
        &flags(true),
    )
    .await;
    let w = wharf_for(&registry, "").await;
    let src = |w: &Wharf| {
        format!(
            "docker://{}/{reference}",
            w.base.trim_start_matches("http://")
        )
    };
    let online = pull(&home, &src(&w), &work.path().join("on"), &flags(true)).await;
    assert_eq!(&online.manifest_digest, digest);
    assert_eq!(
        online.blobs, direct.blobs,
        "every platform's manifest and blobs"
    );
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
    assert_eq!(&offline.manifest_digest, digest);
    assert_eq!(offline.blobs, direct.blobs);
    assert_eq!(
        registry.requests().len(),
        before,
        "an offline wharf sends nothing upstream"
    );
}
