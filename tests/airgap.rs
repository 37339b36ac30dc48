//! Air-gapped sites with the real binary and the in-process fake upstream: `wharf prefetch`,
//! `export` and `import` with no server (the command opens the storage) and while a wharf serves it
//! (the command talks to it over `<storage>/admin.sock`), platform filters, incremental bundles,
//! corrupt bundles that must leave the store as it was, and a `[[sync]]` entry that follows a tag.
//! The end-to-end run with the real registry, skopeo and umoci is in `e2e_airgap.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::bundle::{entries, entries_of, wharf, wharf_with_stdin, write_config, write_tar};
use common::fake::{Fake, Image};
use common::{client, files_under};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

async fn serve(config: &Path) -> wharf::Running {
    wharf::start(wharf::Config::load(config).unwrap())
        .await
        .unwrap()
}

/// The blobs of an image: config and layers.
fn blobs_of(img: &Image) -> Vec<String> {
    std::iter::once(img.config.clone())
        .chain(img.layers.iter().cloned())
        .collect()
}

fn blob_entry(digest: &str) -> String {
    format!("blobs/sha256/{}", &digest[7..])
}

/// A picture of a storage: every file outside the index with its size, and the index's blobs,
/// tags and pins.
fn snapshot(data: &Path) -> (BTreeMap<PathBuf, u64>, Vec<String>) {
    let files = files_under(data, "")
        .into_iter()
        .filter(|p| !p.starts_with(data.join("index")))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    use wharf::store::MetaStore as _;
    let index = wharf::cache::Index::open(&data.join("index")).unwrap();
    let mut records: Vec<String> = index
        .blobs()
        .map(|b| format!("blob {}", b.unwrap().0))
        .collect();
    records.extend(
        index
            .all_tags()
            .unwrap()
            .into_iter()
            .map(|(u, r, t, e)| format!("tag {u}/{r}:{t} {}", e.digest)),
    );
    records.extend(
        index
            .pins()
            .unwrap()
            .into_iter()
            .map(|(i, _)| format!("pin {i}")),
    );
    (files, records)
}

/// GETs `path` from a running wharf: status, headers, body.
async fn get(w: &wharf::Running, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let res = client()
        .get(format!("http://{}{path}", w.local_addr()))
        .header(
            "accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.unwrap().to_vec())
}

/// Checks that `w` serves the image (manifest by tag, every blob) exactly as the fake has it.
async fn assert_serves(w: &wharf::Running, up: &Fake, repo: &str, tag: &str, img: &Image) {
    let (status, headers, body) =
        get(w, &format!("/v2/upstream.test/{repo}/manifests/{tag}")).await;
    assert_eq!(
        status,
        200,
        "{repo}:{tag}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        headers["docker-content-digest"],
        img.manifest_digest.as_str()
    );
    assert_eq!(body, img.manifest);
    for digest in blobs_of(img) {
        let (status, _, body) = get(w, &format!("/v2/upstream.test/{repo}/blobs/{digest}")).await;
        assert_eq!(status, 200, "{repo} {digest}");
        assert!(
            body == up.state.blobs.lock()[&digest],
            "{repo} {digest}: the bytes the upstream has"
        );
    }
}

struct Site {
    up: Fake,
    app: Image,
    amd: Image,
    arm: Image,
    index_digest: String,
}

async fn site() -> Site {
    let up = Fake::start().await;
    let app = up.add_image("org/app", "1", 2, 300 * 1024, 1);
    let amd = up.add_image("org/multi", "amd64", 1, 100 * 1024, 2);
    let arm = up.add_image("org/multi", "arm64", 1, 100 * 1024, 3);
    let (_, index_digest) = up.add_index("org/multi", "1", &[&amd, &arm]);
    Site {
        up,
        app,
        amd,
        arm,
        index_digest,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_export_import_without_a_server_then_serve_offline() {
    let s = site().await;
    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &s.up.url(), "", "");
    let list = connected.path().join("images.list");
    std::fs::write(
        &list,
        "# the ship's images\nupstream.test/org/app:1\n\nupstream.test/org/multi:1   # both platforms\n",
    )
    .unwrap();

    let (code, out, err) = wharf(&["prefetch", "--file", list.to_str().unwrap()], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("prefetch: 2 images (2 ok, 0 failed, 2 pinned); manifests: 4 fetched, 0 cached; blobs: 7 fetched"),
        "{out}"
    );
    // Off a terminal: one line per image.
    assert!(
        err.contains("prefetch: upstream.test/org/multi:1: done: 4 blobs fetched"),
        "{err}"
    );
    assert_eq!(s.up.count("GET", "/blobs/"), 7, "each blob fetched once");

    // Resumable: a second run finds everything cached and fetches nothing.
    let (code, out, err) = wharf(&["prefetch", "--file", list.to_str().unwrap()], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("manifests: 0 fetched, 4 cached; blobs: 0 fetched (0 B), 7 already cached"),
        "{out}"
    );
    assert_eq!(s.up.count("GET", "/blobs/"), 7);

    let bundle = connected.path().join("site.tar");
    let (code, out, err) = wharf(
        &["export", "--out", bundle.to_str().unwrap(), "--pinned"],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("export: wrote"), "{out}");
    assert!(!connected.path().join("site.tar.partial").exists());
    let tar = entries(&bundle);
    let names: Vec<&str> = tar.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..5],
        [
            "wharf-bundle.json",
            "oci-layout",
            "index.json",
            "blobs/",
            "blobs/sha256/"
        ]
    );
    let blob_names: Vec<&str> = names[5..].to_vec();
    let mut sorted = blob_names.clone();
    sorted.sort_unstable();
    assert_eq!(blob_names, sorted, "blobs in digest order");
    // 7 blobs and 4 manifests (app, index, two platforms).
    assert_eq!(blob_names.len(), 11, "{names:?}");
    for (name, data) in &tar[5..] {
        assert_eq!(
            common::fake::digest_of(data),
            format!("sha256:{}", name.trim_start_matches("blobs/sha256/")),
            "{name}"
        );
    }
    let index: serde_json::Value = serde_json::from_slice(&tar[2].1).unwrap();
    let refs: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap(),
                m["digest"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        [
            ("upstream.test/org/app:1", s.app.manifest_digest.as_str()),
            ("upstream.test/org/multi:1", s.index_digest.as_str())
        ]
    );
    let manifest: serde_json::Value = serde_json::from_slice(&tar[0].1).unwrap();
    let listed: BTreeMap<String, (String, u64)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                (
                    f["sha256"].as_str().unwrap().to_owned(),
                    f["size"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let in_tar: BTreeMap<String, (String, u64)> = tar[1..]
        .iter()
        .filter(|(n, _)| !n.ends_with('/'))
        .map(|(n, d)| (n.clone(), (common::fake::digest_of(d), d.len() as u64)))
        .collect();
    assert_eq!(listed, in_tar, "wharf-bundle.json names every file");
    assert!(manifest["created"].as_str().unwrap().ends_with('Z'));
    // Every entry has the bundle's creation time, whatever the files' times in the store.
    let created = humantime::parse_rfc3339(manifest["created"].as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let bytes = std::fs::read(&bundle).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    for e in archive.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), created);
    }

    // The air-gapped side: offline, empty storage, its upstream a listener that counts connections.
    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", "");
    let (code, out, err) = wharf(&["import", bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "imported upstream.test/org/app:1 {} (tag set)",
            s.app.manifest_digest
        )),
        "{out}"
    );
    assert!(out.contains("2 images; 11 blobs stored"), "{out}");
    assert!(out.contains("2 pinned"), "{out}");
    // Again: nothing new, nothing changed.
    let before = snapshot(&airgap.path().join("data"));
    let (code, out, err) = wharf(&["import", bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 blobs stored (0 B), 11 already present"),
        "{out}"
    );
    assert!(out.contains("(tag unchanged)"), "{out}");
    assert_eq!(snapshot(&airgap.path().join("data")), before);

    let w = serve(&c2).await;
    assert_serves(&w, &s.up, "org/app", "1", &s.app).await;
    let (status, headers, _) = get(&w, "/v2/upstream.test/org/multi/manifests/1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["docker-content-digest"], s.index_digest.as_str());
    for img in [&s.amd, &s.arm] {
        assert_serves(&w, &s.up, "org/multi", &img.manifest_digest, img).await;
    }
    let (code, out, _) = wharf(&["pins"], &c2).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("upstream.test/org/multi:1\tcommand\tsha256:"),
        "{out}"
    );
    w.shutdown().await.unwrap();
    assert_eq!(
        nowhere.connections(),
        0,
        "the offline wharf never connected"
    );

    // A layer lost from the connected storage: --all exports the rest and says what it left out.
    let layer = &s.app.layers[1];
    let path = connected
        .path()
        .join("data/blobs/sha256")
        .join(&layer[7..9])
        .join(&layer[7..]);
    std::fs::remove_file(path).unwrap();
    let rest = connected.path().join("rest.tar");
    let (code, out, err) = wharf(&["export", "--out", rest.to_str().unwrap(), "--all"], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!(
            "warning: upstream.test/org/app:1: layers[1] {layer} is not cached"
        )) && err.contains("left out"),
        "{err}"
    );
    assert!(
        out.contains("exported upstream.test/org/multi:1") && !out.contains("org/app"),
        "{out}"
    );
    // Named, the same image is refused.
    let (code, _, err) = wharf(
        &[
            "export",
            "--out",
            rest.to_str().unwrap(),
            "upstream.test/org/app:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("layers[1] {layer} is not cached")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_filters_are_recorded_and_respected() {
    let s = site().await;
    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &s.up.url(), "", "");
    let (code, out, err) = wharf(
        &[
            "prefetch",
            "--platform",
            "linux/arm64",
            "upstream.test/org/multi:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("manifests: 2 fetched"), "{out}");
    for d in blobs_of(&s.arm) {
        assert_eq!(s.up.count("GET", &d), 1, "{d}");
    }
    for d in blobs_of(&s.amd) {
        assert_eq!(s.up.count("GET", &d), 0, "{d}");
    }

    let bundle = connected.path().join("arm.tar");
    let b = bundle.to_str().unwrap();
    // Every platform was asked for, and amd64 is not cached: refused, naming it.
    let (code, out, err) = wharf(&["export", "--out", b, "upstream.test/org/multi:1"], &c1).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("platform linux/amd64")
            && err.contains("is not cached")
            && err.contains("--platform"),
        "{err}"
    );
    assert!(!bundle.exists() && !connected.path().join("arm.tar.partial").exists());

    // --all takes what is cached: the missing platform is left out, said, and recorded.
    let all = connected.path().join("all.tar");
    let (code, out, err) = wharf(&["export", "--out", all.to_str().unwrap(), "--all"], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: upstream.test/org/multi:1: platform linux/amd64")
            && out.contains("left out: linux/amd64 (not cached)"),
        "{out}{err}"
    );

    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            b,
            "--platform",
            "linux/arm64",
            "upstream.test/org/multi:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("left out: linux/amd64 (platform)"), "{out}");

    let airgap = tempfile::tempdir().unwrap();
    let nowhere = Fake::start().await;
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", "");
    let (code, out, err) = wharf(&["import", b], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    let w = serve(&c2).await;
    assert_serves(&w, &s.up, "org/multi", &s.arm.manifest_digest, &s.arm).await;
    let (status, _, body) = get(
        &w,
        &format!(
            "/v2/upstream.test/org/multi/manifests/{}",
            s.amd.manifest_digest
        ),
    )
    .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("offline"));
    w.shutdown().await.unwrap();

    // A bundle whose wharf-bundle.json does not say amd64 was left out is refused.
    let mut tar = entries(&bundle);
    let mut manifest: serde_json::Value = serde_json::from_slice(&tar[0].1).unwrap();
    manifest["images"][0]
        .as_object_mut()
        .unwrap()
        .remove("omitted");
    tar[0].1 = serde_json::to_vec(&manifest).unwrap();
    let tampered = connected.path().join("tampered.tar");
    write_tar(&tampered, &tar);
    let other = tempfile::tempdir().unwrap();
    let c3 = write_config(other.path(), &nowhere.url(), "offline = true", "");
    let (code, _, err) = wharf(&["import", tampered.to_str().unwrap()], &c3).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("index entry linux/amd64") && err.contains("does not list it as left out"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_export_import_and_pins_while_a_server_runs() {
    let s = site().await;
    let connected = tempfile::tempdir().unwrap();
    // Clients need credentials on this mirror; the commands (local to the server) do not.
    let htpasswd = connected.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("secret", 4).unwrap()),
    )
    .unwrap();
    let c1 = write_config(
        connected.path(),
        &s.up.url(),
        "",
        &format!("[auth]\nhtpasswd = \"{}\"", htpasswd.display()),
    );
    let w1 = serve(&c1).await;
    let (status, _, _) = get(&w1, "/v2/upstream.test/org/app/manifests/1").await;
    assert_eq!(status, 401);
    let socket = connected.path().join("data/admin.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the wharf user (and root) may connect"
    );

    // A prefetch with an image the upstream lacks: the other images are still fetched, exit 1.
    let (code, out, err) = wharf(
        &[
            "prefetch",
            "upstream.test/org/app:1",
            "upstream.test/org/missing:1",
            "--no-pin",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("prefetch: 2 images (1 ok, 1 failed, 0 pinned)"),
        "{out}"
    );
    assert!(
        out.contains("failed: upstream.test/org/missing:1: "),
        "{out}"
    );
    // The running wharf did the work: its cache has the image.
    for d in blobs_of(&s.app) {
        assert!(
            w1.cache()
                .index()
                .blob_size(&d.parse().unwrap())
                .unwrap()
                .is_some(),
            "{d}"
        );
    }
    // pin and pins work through the server too.
    let (code, out, err) = wharf(&["pin", "upstream.test/org/app:1"], &c1).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pinned upstream.test/org/app:1") && out.contains("keeps 4 blobs"),
        "{out}"
    );
    let (code, out, _) = wharf(&["pins"], &c1).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("upstream.test/org/app:1\tcommand\tsha256:"),
        "{out}"
    );
    // A client pull and a prefetch of the same image at once: one upstream fetch per blob.
    let before = s.up.count("GET", "/blobs/");
    let pull = {
        let addr = w1.local_addr();
        let layers = blobs_of(&s.amd);
        tokio::spawn(async move {
            for d in layers {
                let res = client()
                    .get(format!(
                        "http://{addr}/v2/upstream.test/org/multi/blobs/{d}"
                    ))
                    .basic_auth("alice", Some("secret"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                res.bytes().await.unwrap();
            }
        })
    };
    let (code, out, err) = wharf(&["prefetch", "upstream.test/org/multi:1"], &c1).await;
    pull.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    w1.fills_settled().await;
    assert_eq!(s.up.count("GET", "/blobs/") - before, 4, "each blob once");

    // Export to stdout through the server, import from stdin through another server.
    let ((code, _, err), tar) = wharf_with_stdin(
        &[
            "export",
            "--out",
            "-",
            "upstream.test/org/app:1",
            "upstream.test/org/multi:1",
        ],
        &c1,
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("export: wrote stdout: 2 images, 11 blobs"),
        "{err}"
    );
    assert_eq!(entries_of(&tar)[0].0, "wharf-bundle.json");

    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", "");
    let w2 = serve(&c2).await;
    let ((code, out, err), _) = wharf_with_stdin(&["import", "-"], &c2, Some(tar)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("import: stdin") && out.contains("2 pinned"),
        "{out}"
    );
    assert_serves(&w2, &s.up, "org/app", "1", &s.app).await;
    assert_serves(&w2, &s.up, "org/multi", &s.arm.manifest_digest, &s.arm).await;
    let pins = w2.cache().index().pins().unwrap();
    assert_eq!(pins.len(), 2, "{pins:?}");

    // A bad bundle through the server: refused, one line, nothing stored.
    let before = w2.cache().usage();
    let garbage = airgap.path().join("garbage.tar");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let (code, _, err) = wharf(&["import", garbage.to_str().unwrap()], &c2).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a valid tar header"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(w2.cache().usage(), before);

    w2.shutdown().await.unwrap();
    assert!(
        !airgap.path().join("data/admin.sock").exists(),
        "removed at shutdown"
    );
    w1.shutdown().await.unwrap();
    assert_eq!(nowhere.connections(), 0);
    // With the servers gone, the commands open the storage themselves again.
    let (code, out, err) = wharf(&["pins"], &c2).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("upstream.test/org/app:1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bundles_are_refused_naming_the_entry_and_change_nothing() {
    let s = site().await;
    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &s.up.url(), "", "");
    let (code, _, err) = wharf(
        &[
            "prefetch",
            "upstream.test/org/app:1",
            "upstream.test/org/multi:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let app_bundle = connected.path().join("app.tar");
    let multi_bundle = connected.path().join("multi.tar");
    for (bundle, image) in [
        (&app_bundle, "upstream.test/org/app:1"),
        (&multi_bundle, "upstream.test/org/multi:1"),
    ] {
        let (code, _, err) =
            wharf(&["export", "--out", bundle.to_str().unwrap(), image], &c1).await;
        assert_eq!(code, 0, "{err}");
    }
    // The air-gapped store already holds one image: what follows must add nothing to it.
    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", "");
    let (code, _, err) = wharf(&["import", multi_bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{err}");
    let data = airgap.path().join("data");
    let before = snapshot(&data);

    let good = entries(&app_bundle);
    let layer = &s.app.layers[1];
    let layer_entry = blob_entry(layer);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("flipped byte in a layer", {
            let mut t = good.clone();
            let e = t.iter_mut().find(|(n, _)| *n == layer_entry).unwrap();
            e.1[1000] ^= 1;
            tar_bytes(&t)
        }, format!("{layer_entry}: content hashes to sha256:")),
        ("truncated", {
            // Cut 1000 bytes into the layer's data.
            let bytes = std::fs::read(&app_bundle).unwrap();
            let mut archive = tar::Archive::new(&bytes[..]);
            let at = archive
                .entries()
                .unwrap()
                .map(Result::unwrap)
                .find(|e| e.path().unwrap().to_string_lossy() == layer_entry)
                .unwrap()
                .raw_file_position();
            bytes[..at as usize + 1000].to_vec()
        }, format!("the archive is truncated: {layer_entry} ends after 1000 of 307200 bytes")),
        ("a manifest that references a missing blob", {
            let mut t = good.clone();
            t.retain(|(n, _)| *n != layer_entry);
            let mut m: serde_json::Value = serde_json::from_slice(&t[0].1).unwrap();
            m["files"].as_array_mut().unwrap().retain(|f| f["path"] != layer_entry.as_str());
            t[0].1 = serde_json::to_vec(&m).unwrap();
            tar_bytes(&t)
        }, format!("upstream.test/org/app:1: layers[1] {layer} is neither in the bundle nor in this wharf's store")),
        ("a blob listed but missing", {
            let mut t = good.clone();
            t.retain(|(n, _)| *n != layer_entry);
            tar_bytes(&t)
        }, format!("{layer_entry}: listed in wharf-bundle.json but not in the archive")),
        ("bad JSON", {
            let mut t = good.clone();
            let junk = b"{\"manifests\": [".to_vec();
            let mut m: serde_json::Value = serde_json::from_slice(&t[0].1).unwrap();
            for f in m["files"].as_array_mut().unwrap() {
                if f["path"] == "index.json" {
                    f["sha256"] = common::fake::digest_of(&junk).into();
                    f["size"] = junk.len().into();
                }
            }
            t[0].1 = serde_json::to_vec(&m).unwrap();
            t[2].1 = junk;
            tar_bytes(&t)
        }, "index.json: not valid JSON".into()),
        ("index.json not as listed", {
            let mut t = good.clone();
            t[2].1.push(b' ');
            tar_bytes(&t)
        }, "index.json: ".into()),
        ("an extra file", {
            let mut t = good.clone();
            t.push(("notes.txt".into(), b"hi".to_vec()));
            tar_bytes(&t)
        }, "notes.txt: not part of a wharf bundle".into()),
        ("a path out of the archive", {
            let mut t = good.clone();
            t.push(("../evil".into(), b"hi".to_vec()));
            tar_bytes(&t)
        }, "leads out of the archive".into()),
        ("not a wharf bundle", {
            let mut t = good.clone();
            t.remove(0);
            tar_bytes(&t)
        }, "not a wharf bundle: it has no wharf-bundle.json".into()),
    ];
    for (what, bytes, want) in cases {
        let path = airgap.path().join("bad.tar");
        std::fs::write(&path, &bytes).unwrap();
        let (code, out, err) = wharf(&["import", path.to_str().unwrap()], &c2).await;
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(
            err.starts_with(&format!("wharf: {}: ", path.display())),
            "{what}: {err}"
        );
        assert!(err.contains(&want), "{what}: want {want:?} in {err}");
        assert!(
            err.trim_end().ends_with("nothing was imported"),
            "{what}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
        assert_eq!(snapshot(&data), before, "{what}: the store is unchanged");
    }
    // A wharf that does not know the bundle's registry refuses it, saying what to add.
    let other = tempfile::tempdir().unwrap();
    let c3 = other.path().join("wharf.toml");
    std::fs::write(
        &c3,
        format!(
            "[storage]\npath = \"{}\"\n[[upstream]]\nname = \"other.test\"\nurl = \"https://other.test\"\noffline = true\n",
            other.path().join("data").display()
        ),
    )
    .unwrap();
    let (code, _, err) = wharf(&["import", app_bundle.to_str().unwrap()], &c3).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("names registry \"upstream.test\", which is not an [[upstream]] name; configured: other.test; add that upstream"),
        "{err}"
    );

    // And the good bundle still imports.
    let (code, _, err) = wharf(&["import", app_bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{err}");
}

fn tar_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tar");
    write_tar(&path, entries);
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_bundles_hold_only_new_blobs_and_import_on_top_of_their_base() {
    let s = site().await;
    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &s.up.url(), "", "");
    let (code, _, err) = wharf(&["prefetch", "upstream.test/org/app:1"], &c1).await;
    assert_eq!(code, 0, "{err}");
    let base = connected.path().join("base.tar");
    let (code, _, err) = wharf(
        &["export", "--out", base.to_str().unwrap(), "--pinned"],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // A month later: a new tag of the app and the multi-platform image.
    let app2 = s.up.add_image("org/app", "2", 1, 200 * 1024, 9);
    let (code, _, err) = wharf(
        &[
            "prefetch",
            "upstream.test/org/app:2",
            "upstream.test/org/multi:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let inc = connected.path().join("inc.tar");
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            inc.to_str().unwrap(),
            "--pinned",
            "--since",
            base.to_str().unwrap(),
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("incremental on base.tar"), "{out}");
    let in_inc: Vec<String> = entries(&inc)
        .into_iter()
        .filter(|(n, _)| n.starts_with("blobs/sha256/") && !n.ends_with('/'))
        .map(|(n, _)| format!("sha256:{}", n.trim_start_matches("blobs/sha256/")))
        .collect();
    let mut want: Vec<String> = blobs_of(&app2)
        .into_iter()
        .chain(blobs_of(&s.amd))
        .chain(blobs_of(&s.arm))
        .chain([
            app2.manifest_digest.clone(),
            s.amd.manifest_digest.clone(),
            s.arm.manifest_digest.clone(),
            s.index_digest.clone(),
        ])
        .collect();
    want.sort();
    assert_eq!(in_inc, want, "only what the base lacks");
    let m: serde_json::Value = serde_json::from_slice(&entries(&inc)[0].1).unwrap();
    assert_eq!(m["since"]["file"], "base.tar");
    assert_eq!(
        m["excluded"].as_array().unwrap().len(),
        4,
        "app:1's manifest, config and layers"
    );
    assert_eq!(m["images"].as_array().unwrap().len(), 3);

    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", "");
    // Without its base: refused, saying what to import first.
    let before = snapshot(&airgap.path().join("data"));
    let (code, _, err) = wharf(&["import", inc.to_str().unwrap()], &c2).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("upstream.test/org/app:1")
            && err.contains("incremental on base.tar")
            && err.contains("import that one first"),
        "{err}"
    );
    assert_eq!(snapshot(&airgap.path().join("data")), before);
    for b in [&base, &inc] {
        let (code, out, err) = wharf(&["import", b.to_str().unwrap()], &c2).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let w = serve(&c2).await;
    assert_serves(&w, &s.up, "org/app", "1", &s.app).await;
    assert_serves(&w, &s.up, "org/app", "2", &app2).await;
    assert_serves(&w, &s.up, "org/multi", &s.amd.manifest_digest, &s.amd).await;
    w.shutdown().await.unwrap();
    assert_eq!(nowhere.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_entry_follows_a_tag_that_moves_upstream() {
    common::real::capture_logs();
    let up = Fake::start().await;
    let first = up.add_image("org/synced", "1", 1, 50 * 1024, 21);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &up.url(),
        "",
        "[[sync]]\nimages = [\"upstream.test/org/synced:1\"]\ninterval = \"1s\"\n",
    );
    let w = serve(&config).await;
    let index = w.cache().index().clone();
    let repo: wharf::oci::RepoName = "org/synced".parse().unwrap();
    let tag: wharf::oci::Tag = "1".parse().unwrap();
    let wait_for = |digest: String| {
        let index = index.clone();
        let (repo, tag) = (repo.clone(), tag.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = index
                    .tag("upstream.test", &repo, &tag)
                    .unwrap()
                    .map(|e| e.digest.to_string());
                if now.as_deref() == Some(digest.as_str()) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the sync did not reach {digest}: at {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(first.manifest_digest.clone()).await;
    // The tag moves upstream.
    let second = up.add_image("org/synced", "1", 1, 50 * 1024, 22);
    wait_for(second.manifest_digest.clone()).await;
    // Its content follows (the run fetches it after the HEAD saw the change).
    let deadline = Instant::now() + Duration::from_secs(60);
    for d in blobs_of(&second) {
        while w
            .cache()
            .index()
            .blob_size(&d.parse().unwrap())
            .unwrap()
            .is_none()
        {
            assert!(Instant::now() < deadline, "{d} not fetched by the sync");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let logs = common::real::captured_logs();
    let line = logs
        .lines()
        .find(|l| l.contains("tag changed") && l.contains(&second.manifest_digest))
        .unwrap_or_else(|| panic!("no change logged:\n{logs}"));
    assert!(
        line.contains("upstream.test/org/synced:1") && line.contains(&first.manifest_digest),
        "{line}"
    );
    assert!(logs.contains("sync run done"), "{logs}");
    // Every run asks with a HEAD; the manifest is fetched with a GET only when the tag moved (and
    // the first time).
    assert!(up.count("HEAD", "/org/synced/manifests/1") >= 1);
    assert_eq!(up.count("GET", "/org/synced/manifests/1"), 2);
    let pins = w.cache().index().pins().unwrap();
    assert_eq!(pins.len(), 1, "synced images are pinned");
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_leaves_nothing_visible_and_runs_again() {
    use tokio::io::AsyncWriteExt;
    let s = site().await;
    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &s.up.url(), "", "");
    let (code, _, err) = wharf(&["prefetch", "upstream.test/org/app:1"], &c1).await;
    assert_eq!(code, 0, "{err}");
    let bundle = connected.path().join("app.tar");
    let (code, _, err) = wharf(
        &["export", "--out", bundle.to_str().unwrap(), "--pinned"],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&bundle).unwrap();

    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", "");
    let data = airgap.path().join("data");
    // Most of the bundle arrives on stdin, then the import is killed (SIGKILL) while it waits for
    // the rest with blobs staged.
    let mut child = tokio::process::Command::new(BIN)
        .args(["import", "-", "--config"])
        .arg(&c2)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&bytes[..bytes.len() * 3 / 4])
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_under(&data.join("tmp"), ".partial").len() < 2 {
        assert!(Instant::now() < deadline, "the import staged nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    drop(stdin);
    assert!(
        files_under(&data.join("blobs"), "").is_empty(),
        "no blob is visible"
    );
    use wharf::store::MetaStore as _;
    let index = wharf::cache::Index::open(&data.join("index")).unwrap();
    assert_eq!(index.blobs().count(), 0);
    assert!(index.all_tags().unwrap().is_empty() && index.pins().unwrap().is_empty());
    drop(index);

    // Run again: the staging leftovers are cleared and the import completes.
    let (code, out, err) = wharf(&["import", bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 blobs stored"), "{out}");
    assert!(files_under(&data.join("tmp"), "").is_empty());
    let w = serve(&c2).await;
    assert_serves(&w, &s.up, "org/app", "1", &s.app).await;
    w.shutdown().await.unwrap();
}
