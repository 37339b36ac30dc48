//! End to end for air-gapped sites with real software: the CNCF distribution registry as the
//! connected side's upstream, `wharf prefetch` / `export` / `import` run as an operator would (the
//! binary, with a list file), skopeo and umoci reading the bundle, and skopeo pulling every image
//! through an offline wharf whose upstream is a tripwire that counts connections.

mod common;

use std::path::{Path, PathBuf};

use common::images;
use common::real::{pull, require, skopeo, Registry, Tripwire};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

fn write_config(dir: &Path, url: &str, upstream_extra: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{url}\"\ninsecure = true\n{upstream_extra}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

async fn wharf(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn flags(index: bool) -> Vec<&'static str> {
    let mut f = vec!["--src-tls-verify=false"];
    if index {
        f.push("--all");
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_prefetched_exported_imported_and_served_offline_with_the_upstream_digests() {
    require("umoci");
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let pushed = images::push_all(&registry, &home, work.path(), None).await;
    let mut direct = Vec::new();
    for (i, image) in pushed.iter().enumerate() {
        let src = format!("docker://127.0.0.1:{}/{}", registry.port, image.reference);
        let out = work.path().join(format!("direct{i}"));
        direct.push(pull(&home, &src, &out, &flags(image.index)).await);
    }

    // The connected side: prefetch the list with no wharf running.
    let connected = work.path().join("connected");
    std::fs::create_dir_all(&connected).unwrap();
    let c1 = write_config(&connected, &registry.url(), "");
    let list = connected.join("site.list");
    let mut text = String::from("# images the ship runs\n");
    for image in &pushed {
        text.push_str(&format!("upstream.test/{}\n", image.reference));
    }
    std::fs::write(&list, text).unwrap();
    let (code, out, err) = wharf(&["prefetch", "--file", list.to_str().unwrap()], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 images (3 ok, 0 failed, 3 pinned)"), "{out}");

    // Export while the connected wharf serves (through its control socket).
    let w1 = wharf::start(wharf::Config::load(&c1).unwrap())
        .await
        .unwrap();
    let bundle = work.path().join("site.tar");
    let (code, out, err) = wharf(
        &["export", "--out", bundle.to_str().unwrap(), "--pinned"],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    w1.shutdown().await.unwrap();

    // skopeo reads the bundle as an OCI archive, by the full source reference. The Docker schema
    // 2 image keeps its media type in index.json (its digest covers its bytes), which skopeo 1.9's
    // oci transport does not resolve ("no descriptor found"); wharf import and umoci do.
    for (image, direct) in pushed
        .iter()
        .zip(&direct)
        .filter(|(i, _)| i.reference != "e2e/docker:1")
    {
        let src = format!(
            "oci-archive:{}:upstream.test/{}",
            bundle.display(),
            image.reference
        );
        let out = work.path().join("from-bundle");
        let extra: &[&str] = if image.index { &["--all"] } else { &[] };
        let got = pull(&home, &src, &out, extra).await;
        assert_eq!(got, *direct, "{src}");
    }
    // umoci lists every image of the unpacked layout.
    let layout = work.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&bundle)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(untar.success());
    let ls = std::process::Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(&layout)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success(),
        "{listed}{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    for image in &pushed {
        assert!(
            listed
                .lines()
                .any(|l| l.trim() == format!("upstream.test/{}", image.reference)),
            "umoci ls: {listed}"
        );
    }
    let inspected = skopeo(
        &home,
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:upstream.test/e2e/multi:1", layout.display()),
        ],
    )
    .await;
    assert_eq!(
        common::fake::digest_of(inspected.as_bytes()),
        pushed[0].digest
    );

    // The air-gapped side: empty storage, offline, its upstream a tripwire.
    let tripwire = Tripwire::start().await;
    let airgap = work.path().join("airgap");
    std::fs::create_dir_all(&airgap).unwrap();
    let c2 = write_config(
        &airgap,
        &format!("http://{}", tripwire.addr),
        "offline = true",
    );
    let (code, out, err) = wharf(&["import", bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 images;") && out.contains("3 pinned"),
        "{out}"
    );
    let w2 = wharf::start(wharf::Config::load(&c2).unwrap())
        .await
        .unwrap();
    let mirror = w2.local_addr();
    for (image, direct) in pushed.iter().zip(&direct) {
        for src in [
            format!("docker://{mirror}/upstream.test/{}", image.reference),
            format!(
                "docker://{mirror}/upstream.test/{}@{}",
                image.reference.split(':').next().unwrap(),
                image.digest
            ),
        ] {
            let got = pull(
                &home,
                &src,
                &work.path().join("offline"),
                &flags(image.index),
            )
            .await;
            assert_eq!(got, *direct, "{src}: the upstream's digests, offline");
        }
    }
    w2.shutdown().await.unwrap();
    assert_eq!(
        tripwire.hits(),
        0,
        "the air-gapped wharf never connected to its upstream"
    );
}
