//! End to end for issue 16 with real software: the CNCF distribution registry 2.8 (which has no
//! referrers API) holds an image pushed by skopeo, a cosign-scheme signature under the tag
//! `sha256-<hex>.sig`, and an SBOM artifact whose `subject` is the image (pushed with plain HTTP, as
//! oras and cosign do). `wharf prefetch` finds both, `wharf export --sign` carries them, and an
//! offline wharf that trusts the key imports them: the referrers API lists the SBOM, the cosign
//! tag and the SBOM come back byte-exact (skopeo reads them through the mirror), and the upstream
//! (a tripwire) is never contacted. A bundle changed after signing is refused.

mod common;

use std::path::{Path, PathBuf};

use common::images;
use common::real::{push, skopeo, Registry, Tripwire};
use sha2::{Digest as _, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SPDX: &str = "application/spdx+json";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn write_config(dir: &Path, url: &str, upstream_extra: &str, extra: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{url}\"\ninsecure = true\n{upstream_extra}\n{extra}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

async fn run(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
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

async fn wharf(args: &[&str], config: &Path) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let config = config.to_str().unwrap();
    all.extend(["--config", config]);
    run(&all).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Pushes a blob: `POST` an upload, then one monolithic `PUT ...&digest=`; returns its digest.
async fn put_blob(registry: &Registry, repo: &str, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    let res = http()
        .post(format!("{}/v2/{repo}/blobs/uploads/", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{:?}", res.text().await);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", registry.url())
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let res = http()
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    digest
}

/// PUTs a manifest under `reference` (a tag or its digest).
async fn put_manifest(registry: &Registry, repo: &str, reference: &str, bytes: &[u8]) {
    let res = http()
        .put(format!(
            "{}/v2/{repo}/manifests/{reference}",
            registry.url()
        ))
        .header("content-type", OCI_MANIFEST)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{reference}: {:?}", res.text().await);
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let res = http()
        .get(format!("http://{addr}{path}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_and_sboms_travel_in_a_signed_bundle_from_a_real_registry() {
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (layout, image) = images::single(&work.path().join("img"), "1", 5, 1);
    push(
        &home,
        &format!("oci:{}:1", layout.dir.display()),
        &format!("docker://127.0.0.1:{}/e2e/signed:1", registry.port),
        false,
    )
    .await;
    let repo = "e2e/signed";
    let image_len = std::fs::read(
        layout
            .dir
            .join("blobs/sha256")
            .join(image.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();

    // cosign's scheme: a signature manifest under sha256-<hex>.sig, no subject.
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"upstream.test/{repo}"}},"image":{{"docker-manifest-digest":"{image}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let payload_digest = put_blob(&registry, repo, payload.as_bytes()).await;
    let config = br#"{"architecture":"","config":{},"created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = put_blob(&registry, repo, config).await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":{},"digest":"{payload_digest}","annotations":{{"dev.cosignproject.cosign/signature":"MEUCIQDexample"}}}}]}}"#,
        config.len(),
        payload.len()
    );
    let sig_tag = format!("{}.sig", image.replace(':', "-"));
    put_manifest(&registry, repo, &sig_tag, sig.as_bytes()).await;

    // OCI 1.1: an SBOM artifact whose subject is the image, pushed by digest.
    let sbom_blob = br#"{"spdxVersion":"SPDX-2.3","name":"e2e/signed","packages":[]}"#;
    let sbom_blob_digest = put_blob(&registry, repo, sbom_blob).await;
    let empty_digest = put_blob(&registry, repo, b"{}").await;
    let sbom = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{SPDX}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty_digest}","size":2}},"layers":[{{"mediaType":"{SPDX}","digest":"{sbom_blob_digest}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{image}","size":{image_len}}}}}"#,
        sbom_blob.len()
    );
    let sbom_digest = sha(sbom.as_bytes());
    put_manifest(&registry, repo, &sbom_digest, sbom.as_bytes()).await;
    // registry 2.8 has no referrers API, so the SBOM is found through the tag schema's index,
    // which a client of such a registry maintains (as oras and notation do).
    let schema_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len(), "artifactType": SPDX}],
    }))
    .unwrap();
    let res = http()
        .put(format!(
            "{}/v2/{repo}/manifests/{}",
            registry.url(),
            image.replace(':', "-")
        ))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(schema_index.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let (status, _) = get(
        registry
            .url()
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
        &format!("/v2/{repo}/referrers/{image}"),
    )
    .await;
    assert_eq!(status, 404, "distribution 2.8 has no referrers API");

    // The connected side: keys, prefetch, a signed export.
    let connected = work.path().join("connected");
    std::fs::create_dir_all(&connected).unwrap();
    let c1 = write_config(&connected, &registry.url(), "", "");
    let prefix = connected.join("signer");
    let (code, out, err) = run(&["keygen", "--out", prefix.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = wharf(&["prefetch", "upstream.test/e2e/signed:1"], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    let bundle = work.path().join("signed.tar");
    let key = connected.join("signer.key");
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            bundle.to_str().unwrap(),
            "--sign",
            key.to_str().unwrap(),
            "upstream.test/e2e/signed:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    for reference in [
        format!("upstream.test/{repo}:{sig_tag}"),
        format!("upstream.test/{repo}@{sbom_digest}"),
    ] {
        assert!(
            out.contains(&format!("exported {reference}")),
            "{reference}: {out}"
        );
    }
    // skopeo still reads the bundle as an OCI archive.
    let raw = skopeo(
        &home,
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:upstream.test/{repo}:1", bundle.display()),
        ],
    )
    .await;
    assert_eq!(sha(raw.as_bytes()), image);

    // A byte of a blob changed after signing: refused, nothing stored.
    let tripwire = Tripwire::start().await;
    let public = connected.join("signer.pub");
    let trusted = format!("[import]\ntrusted_keys = [\"{}\"]\n", public.display());
    let airgap = work.path().join("airgap");
    std::fs::create_dir_all(&airgap).unwrap();
    let c2 = write_config(
        &airgap,
        &format!("http://{}", tripwire.addr),
        "offline = true",
        &trusted,
    );
    let mut tampered = std::fs::read(&bundle).unwrap();
    let at = tampered
        .windows(sbom_blob.len())
        .position(|w| w == sbom_blob)
        .unwrap();
    tampered[at + 5] ^= 1;
    let tampered_path = work.path().join("tampered.tar");
    std::fs::write(&tampered_path, tampered).unwrap();
    let (code, out, err) = wharf(&["import", tampered_path.to_str().unwrap()], &c2).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&sbom_blob_digest[7..]) && err.contains("nothing was imported"),
        "{err}"
    );
    let stored = common::files_under(&airgap.join("data/blobs"), "");
    assert!(stored.is_empty(), "nothing stored: {stored:?}");

    let (code, out, err) = wharf(&["import", bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified"), "{out}");
    let w = wharf::start(wharf::Config::load(&c2).unwrap())
        .await
        .unwrap();
    let mirror = w.local_addr();
    let (status, body) = get(
        mirror,
        &format!("/v2/upstream.test/{repo}/referrers/{image}"),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        list["manifests"][0]["digest"],
        sbom_digest.as_str(),
        "{list}"
    );
    assert_eq!(list["manifests"][0]["artifactType"], SPDX);
    for (reference, want) in [
        (sig_tag.clone(), sig.as_bytes()),
        (sbom_digest.clone(), sbom.as_bytes()),
    ] {
        let raw = skopeo(
            &home,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{mirror}/upstream.test/{repo}:{reference}")
                    .replace(":sha256:", "@sha256:"),
            ],
        )
        .await;
        assert_eq!(
            raw.as_bytes(),
            want,
            "{reference}: byte-exact through skopeo"
        );
    }
    let (status, body) = get(
        mirror,
        &format!("/v2/upstream.test/{repo}/blobs/{sbom_blob_digest}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, sbom_blob, "the SBOM, byte-exact");
    w.shutdown().await.unwrap();
    assert_eq!(tripwire.hits(), 0, "the air-gapped wharf never connected");
}
