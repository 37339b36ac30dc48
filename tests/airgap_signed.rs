//! Referrers travel with their images, and bundles are signed (issue 16), with the real binary and
//! the in-process fake upstream:
//! - an image with an SBOM listed by the upstream's referrers API (an OCI 1.1 `subject`), a cosign
//!   signature tag (`sha256-<hex>.sig`) and a cosign signature of the SBOM (recursion): prefetched,
//!   exported, imported on a fresh offline wharf, and served there byte-exact (the referrers API
//!   from what it holds, the cosign tags, the SBOM blob) with no upstream connection;
//! - the tag schema (`sha256-<hex>` index) for an upstream without the API; `--no-referrers` and
//!   `--referrers-type`;
//! - signed bundles: imported with the right key; refused with the wrong key, unsigned, and after
//!   one byte of `wharf-bundle.json` or of a blob changed, with the store unchanged each time;
//!   `import --list` of a signed and an unsigned bundle.
//!
//! The same with a real registry (docker-registry 2.8, which has no referrers API) and skopeo is
//! in `e2e_airgap.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::bundle::{entries, wharf, write_config, write_tar};
use common::fake::{digest_of, Fake, Image, OCI_INDEX};
use common::{client, files_under};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SPDX: &str = "application/spdx+json";
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// `wharf keygen --out PREFIX` (no configuration): exit code and stdout.
async fn keygen(prefix: &Path) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(prefix)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file of a storage outside its index with its size, and the index's blobs, tags, pins and
/// referrers of the image.
fn snapshot(data: &Path, subject: &str) -> (BTreeMap<PathBuf, u64>, Vec<String>) {
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
    let repo: wharf::oci::RepoName = "org/app".parse().unwrap();
    records.extend(
        index
            .referrers_of("upstream.test", &repo, &subject.parse().unwrap(), 100)
            .unwrap()
            .into_iter()
            .map(|(d, _)| format!("referrer {d}")),
    );
    (files, records)
}

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

/// The cosign tag of a digest.
fn cosign_tag(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replace(':', "-"))
}

/// A cosign-style signature manifest (generic config, one simplesigning layer), no subject.
fn signature(up: &Fake, of: &str) -> (Vec<u8>, String) {
    let payload = up.add_blob(format!(
        r#"{{"critical":{{"image":{{"docker-manifest-digest":"{of}"}}}}}}"#
    ));
    let config_bytes = r#"{"architecture":"","os":""}"#;
    let config = up.add_blob(config_bytes.to_owned());
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"{SIMPLESIGNING}","digest":"{payload}","size":{},"annotations":{{"dev.cosignproject.cosign/signature":"MEUC"}}}}]}}"#,
        config_bytes.len(),
        up.state.blobs.lock()[&payload].len()
    );
    (m.into_bytes(), payload)
}

struct Signed {
    up: Fake,
    img: Image,
    sbom: Vec<u8>,
    sbom_digest: String,
    sbom_blob: String,
    sig: Vec<u8>,
    sbom_sig: Vec<u8>,
}

/// org/app:1 with an SBOM (subject, listed by the referrers API), a cosign signature of the image
/// and one of the SBOM.
async fn signed_site() -> Signed {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, 64 * 1024, 7);
    let sbom_blob = up.add_blob(r#"{"spdxVersion":"SPDX-2.3","name":"app"}"#.to_owned());
    let empty = up.add_blob("{}".to_owned());
    let sbom = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{SPDX}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"{SPDX}","digest":"{sbom_blob}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}},"annotations":{{"org.opencontainers.image.created":"2026-11-30T00:00:00Z"}}}}"#,
        up.state.blobs.lock()[&sbom_blob].len(),
        img.manifest_digest,
        img.manifest.len()
    )
    .into_bytes();
    let sbom_digest = up.add_manifest("org/app", None, OCI_MANIFEST, sbom.clone());
    up.state.referrers.lock().insert(
        ("org/app".into(), img.manifest_digest.clone()),
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len(), "artifactType": SPDX}
        ]}),
    );
    let (sig, _) = signature(&up, &img.manifest_digest);
    up.add_manifest(
        "org/app",
        Some(&cosign_tag(&img.manifest_digest, "sig")),
        OCI_MANIFEST,
        sig.clone(),
    );
    let (sbom_sig, _) = signature(&up, &sbom_digest);
    up.add_manifest(
        "org/app",
        Some(&cosign_tag(&sbom_digest, "sig")),
        OCI_MANIFEST,
        sbom_sig.clone(),
    );
    Signed {
        up,
        img,
        sbom,
        sbom_digest,
        sbom_blob,
        sig,
        sbom_sig,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_travel_signed_and_are_served_offline_byte_exact() {
    let s = signed_site().await;
    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &s.up.url(), "", "");
    let (code, out, err) = wharf(&["prefetch", "upstream.test/org/app:1"], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = keygen(&connected.path().join("signer")).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("key id ed25519:"), "{out}");
    let key = connected.path().join("signer.key");
    let public = connected.path().join("signer.pub");

    let bundle = connected.path().join("site.tar");
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            bundle.to_str().unwrap(),
            "--sign",
            key.to_str().unwrap(),
            "upstream.test/org/app:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signed by ed25519:"), "{out}");
    let tar = entries(&bundle);
    assert_eq!(tar[0].0, "wharf-bundle.json");
    assert_eq!(
        tar[1].0, "wharf-bundle.sig",
        "the signature comes before any blob"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&tar[0].1).unwrap();
    let images: Vec<(String, Option<String>)> = manifest["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["reference"].as_str().unwrap().to_owned(),
                i["referrerOf"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let sig_ref = format!(
        "upstream.test/org/app:{}",
        cosign_tag(&s.img.manifest_digest, "sig")
    );
    let sbom_ref = format!("upstream.test/org/app@{}", s.sbom_digest);
    let sbom_sig_ref = format!(
        "upstream.test/org/app:{}",
        cosign_tag(&s.sbom_digest, "sig")
    );
    for (reference, of) in [
        (&sig_ref, &s.img.manifest_digest),
        (&sbom_ref, &s.img.manifest_digest),
        (&sbom_sig_ref, &s.sbom_digest),
    ] {
        assert!(
            images.contains(&(reference.clone(), Some(of.clone()))),
            "{reference} of {of}: {images:?}"
        );
    }
    assert_eq!(images[0], ("upstream.test/org/app:1".to_owned(), None));
    assert_eq!(images.len(), 4, "{images:?}");

    // --list: images, referrers, sizes, signer; verified against the key.
    let (code, out, err) = wharf(
        &[
            "import",
            "--list",
            "--trusted-key",
            public.to_str().unwrap(),
            bundle.to_str().unwrap(),
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("signature: signed by ed25519:") && out.contains(": verified"),
        "{out}"
    );
    assert!(
        out.contains("images (1):") && out.contains("upstream.test/org/app:1"),
        "{out}"
    );
    assert!(out.contains(&format!("referrer {sig_ref}")), "{out}");
    assert!(
        out.contains(&format!("referrer {sbom_ref}")) && out.contains(SPDX),
        "{out}"
    );
    assert!(out.contains(&format!("of {}", s.sbom_digest)), "{out}");

    // The air-gapped side trusts the key and has no way out.
    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let trusted = format!("[import]\ntrusted_keys = [\"{}\"]\n", public.display());
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", &trusted);
    let (code, out, err) = wharf(&["import", bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("signed by ed25519:") && out.contains("verified"),
        "{out}"
    );

    let w = wharf::start(wharf::Config::load(&c2).unwrap())
        .await
        .unwrap();
    let (status, headers, body) = get(
        &w,
        &format!(
            "/v2/upstream.test/org/app/referrers/{}",
            s.img.manifest_digest
        ),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], OCI_INDEX);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        list["manifests"],
        serde_json::json!([{
            "mediaType": OCI_MANIFEST,
            "digest": s.sbom_digest,
            "size": s.sbom.len(),
            "artifactType": SPDX,
            "annotations": {"org.opencontainers.image.created": "2026-11-30T00:00:00Z"},
        }])
    );
    let (status, _, body) = get(
        &w,
        &format!(
            "/v2/upstream.test/org/app/referrers/{}?artifactType=application%2Fx-other",
            s.img.manifest_digest
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["manifests"],
        serde_json::json!([])
    );
    for (tag, want) in [
        (cosign_tag(&s.img.manifest_digest, "sig"), &s.sig),
        (cosign_tag(&s.sbom_digest, "sig"), &s.sbom_sig),
        (s.sbom_digest.clone(), &s.sbom),
    ] {
        let (status, _, body) =
            get(&w, &format!("/v2/upstream.test/org/app/manifests/{tag}")).await;
        assert_eq!(status, 200, "{tag}");
        assert!(body == *want, "{tag}: byte-exact");
    }
    let (status, _, body) = get(
        &w,
        &format!("/v2/upstream.test/org/app/blobs/{}", s.sbom_blob),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body == s.up.state.blobs.lock()[&s.sbom_blob],
        "the SBOM blob, byte-exact"
    );
    w.shutdown().await.unwrap();
    assert_eq!(
        nowhere.connections(),
        0,
        "the offline wharf never connected"
    );

    // Referrers were pinned with their image; --pinned carries them as referrers, not as images.
    let pinned = connected.path().join("pinned.tar");
    let (code, out, err) = wharf(
        &["export", "--out", pinned.to_str().unwrap(), "--pinned"],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let m: serde_json::Value = serde_json::from_slice(&entries(&pinned)[0].1).unwrap();
    let listed: Vec<(String, Option<String>)> = m["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["reference"].as_str().unwrap().to_owned(),
                i["referrerOf"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(listed, images, "the same images, the same way");

    // Only some types, or none.
    let only = connected.path().join("only.tar");
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            only.to_str().unwrap(),
            "--referrers-type",
            SPDX,
            "upstream.test/org/app:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&sbom_ref) && !out.contains(&sig_ref) && !out.contains(&sbom_sig_ref),
        "{out}"
    );
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            only.to_str().unwrap(),
            "--referrers-type",
            SIMPLESIGNING,
            "upstream.test/org/app:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&sig_ref) && !out.contains(&sbom_ref), "{out}");
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            only.to_str().unwrap(),
            "--no-referrers",
            "upstream.test/org/app:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("referrer of"), "{out}");
    assert_eq!(
        entries(&only)[1].0,
        "oci-layout",
        "unsigned: no signature entry"
    );

    // A signed export through a running wharf (the key crosses its control socket).
    let w1 = wharf::start(wharf::Config::load(&c1).unwrap())
        .await
        .unwrap();
    let remote = connected.path().join("remote.tar");
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            remote.to_str().unwrap(),
            "--sign",
            key.to_str().unwrap(),
            "upstream.test/org/app:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signed by ed25519:"), "{out}");
    w1.shutdown().await.unwrap();
    let (code, out, err) = wharf(
        &[
            "import",
            "--list",
            "--trusted-key",
            public.to_str().unwrap(),
            remote.to_str().unwrap(),
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(": verified") && out.contains("referrer "),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_referrers_api_the_tag_schema_index_is_followed() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, 1024, 9);
    let sbom_blob = up.add_blob("sbom".to_owned());
    let sbom = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{SPDX}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"{SPDX}","digest":"{sbom_blob}","size":4}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}}}"#,
        up.add_blob("{}".to_owned()),
        img.manifest_digest,
        img.manifest.len()
    );
    let sbom_digest = up.add_manifest("org/app", None, OCI_MANIFEST, sbom.clone());
    let schema_index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": sbom.len(), "artifactType": SPDX}
    ]})
    .to_string();
    let tag = img.manifest_digest.replace(':', "-");
    up.add_manifest("org/app", Some(&tag), OCI_INDEX, schema_index.clone());

    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &up.url(), "", "");
    let (code, out, err) = wharf(&["prefetch", "upstream.test/org/app:1"], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        up.count("GET", &format!("/referrers/{}", img.manifest_digest)),
        1,
        "the API was asked"
    );
    assert!(
        up.count("GET", &format!("/blobs/{sbom_blob}")) == 1,
        "the SBOM's blob came along"
    );
    let bundle = connected.path().join("b.tar");
    let (code, out, err) = wharf(
        &[
            "export",
            "--out",
            bundle.to_str().unwrap(),
            "upstream.test/org/app:1",
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("upstream.test/org/app:{tag}")),
        "{out}"
    );

    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", "");
    let (code, out, err) = wharf(&["import", bundle.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("not checked"),
        "an unverified import is logged: {err}"
    );
    let w = wharf::start(wharf::Config::load(&c2).unwrap())
        .await
        .unwrap();
    // The upstream had no API; the offline wharf answers it from the subject it holds.
    let (status, _, body) = get(
        &w,
        &format!(
            "/v2/upstream.test/org/app/referrers/{}",
            img.manifest_digest
        ),
    )
    .await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["manifests"][0]["digest"], sbom_digest.as_str());
    assert_eq!(list["manifests"][0]["artifactType"], SPDX);
    let (status, _, body) = get(&w, &format!("/v2/upstream.test/org/app/manifests/{tag}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        schema_index.as_bytes(),
        "the tag schema's index, byte-exact"
    );
    // A subject with nothing: an empty list, as a registry with the API answers.
    let (status, _, body) = get(
        &w,
        &format!(
            "/v2/upstream.test/org/app/referrers/{}",
            digest_of(b"other")
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["manifests"],
        serde_json::json!([])
    );
    w.shutdown().await.unwrap();
    assert_eq!(nowhere.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_is_not_signed_by_a_trusted_key_is_refused_and_nothing_is_stored() {
    let s = signed_site().await;
    let connected = tempfile::tempdir().unwrap();
    let c1 = write_config(connected.path(), &s.up.url(), "", "");
    let (code, out, err) = wharf(&["prefetch", "upstream.test/org/app:1"], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    for name in ["signer", "other"] {
        let (code, _, err) = keygen(&connected.path().join(name)).await;
        assert_eq!(code, 0, "{err}");
    }
    // keygen does not replace a key.
    let (code, _, err) = keygen(&connected.path().join("signer")).await;
    assert_eq!(code, 1, "{err}");
    let key = connected.path().join("signer.key");
    let public = connected.path().join("signer.pub");
    let other = connected.path().join("other.pub");
    let signed = connected.path().join("signed.tar");
    let unsigned = connected.path().join("unsigned.tar");
    for (out, sign) in [(&signed, true), (&unsigned, false)] {
        let mut args = vec!["export", "--out", out.to_str().unwrap()];
        if sign {
            args.extend(["--sign", key.to_str().unwrap()]);
        }
        args.push("upstream.test/org/app:1");
        let (code, o, e) = wharf(&args, &c1).await;
        assert_eq!(code, 0, "{o}{e}");
    }
    // Altered after signing: one byte of wharf-bundle.json, one byte of a blob.
    let tar = entries(&signed);
    let mut json_changed = tar.clone();
    let at = json_changed[0]
        .1
        .windows(4)
        .position(|w| w == b"\"cre")
        .unwrap()
        + 13;
    json_changed[0].1[at] ^= 1;
    let json_changed_path = connected.path().join("json-changed.tar");
    write_tar(&json_changed_path, &json_changed);
    let mut blob_changed = tar.clone();
    let layer = format!("blobs/sha256/{}", &s.img.layers[0][7..]);
    let e = blob_changed.iter_mut().find(|(n, _)| *n == layer).unwrap();
    let last = e.1.len() - 1;
    e.1[last] ^= 1;
    let blob_changed_path = connected.path().join("blob-changed.tar");
    write_tar(&blob_changed_path, &blob_changed);
    // Unsigned --list: says so, exit 0 without trusted keys.
    let (code, out, err) = wharf(&["import", "--list", unsigned.to_str().unwrap()], &c1).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signature: not signed"), "{out}");
    // Signed --list without a trusted key: signer shown, not verified.
    let (code, out, _) = wharf(&["import", "--list", signed.to_str().unwrap()], &c1).await;
    assert_eq!(code, 0);
    assert!(out.contains("not verified (no trusted key"), "{out}");
    let (code, out, _) = wharf(
        &[
            "import",
            "--list",
            "--trusted-key",
            other.to_str().unwrap(),
            signed.to_str().unwrap(),
        ],
        &c1,
    )
    .await;
    assert_eq!(
        code, 1,
        "a trusted key given and the signature is not by it: {out}"
    );
    let (code, out, _) = wharf(
        &[
            "import",
            "--list",
            "--trusted-key",
            public.to_str().unwrap(),
            json_changed_path.to_str().unwrap(),
        ],
        &c1,
    )
    .await;
    assert_eq!(code, 1);
    assert!(out.contains("DOES NOT MATCH"), "{out}");

    let nowhere = Fake::start().await;
    let airgap = tempfile::tempdir().unwrap();
    let trusted = format!("[import]\ntrusted_keys = [\"{}\"]\n", public.display());
    let c2 = write_config(airgap.path(), &nowhere.url(), "offline = true", &trusted);
    // Something is in the store already, so "unchanged" is not "empty".
    let (code, out, err) = wharf(&["import", signed.to_str().unwrap()], &c2).await;
    assert_eq!(code, 0, "{out}{err}");
    let data = airgap.path().join("data");
    let before = snapshot(&data, &s.img.manifest_digest);
    assert!(
        before.1.iter().any(|r| r.starts_with("referrer ")),
        "{:?}",
        before.1
    );
    // The same storage, trusting no key in its configuration.
    let c3 = airgap.path().join("nokeys.toml");
    std::fs::write(
        &c3,
        std::fs::read_to_string(&c2).unwrap().replace(&trusted, ""),
    )
    .unwrap();
    for (what, bundle, config, extra, want) in [
        ("unsigned", &unsigned, &c2, None, "not signed"),
        (
            "another key",
            &signed,
            &c3,
            Some(&other),
            "not a trusted key",
        ),
        (
            "json changed",
            &json_changed_path,
            &c2,
            None,
            "does not match",
        ),
        ("blob changed", &blob_changed_path, &c2, None, &layer[..]),
    ] {
        let mut args = vec!["import".to_owned()];
        if let Some(k) = extra {
            args.extend(["--trusted-key".to_owned(), k.display().to_string()]);
        }
        args.push(bundle.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = wharf(&args, config).await;
        assert_eq!(code, 1, "{what}: {out}{err}");
        let line: Vec<&str> = err.lines().filter(|l| l.starts_with("wharf: ")).collect();
        assert_eq!(line.len(), 1, "{what}: one line: {err}");
        assert!(
            line[0].contains(want) && line[0].contains("nothing was imported"),
            "{what}: {err}"
        );
        assert_eq!(
            snapshot(&data, &s.img.manifest_digest),
            before,
            "{what}: the store is unchanged"
        );
    }
    // The same through a running wharf (the command sends the keys over the control socket).
    let w = wharf::start(wharf::Config::load(&c2).unwrap())
        .await
        .unwrap();
    let (code, out, err) = wharf(&["import", unsigned.to_str().unwrap()], &c2).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not signed"), "{err}");
    let (code, out, err) = wharf(
        &[
            "import",
            "--trusted-key",
            other.to_str().unwrap(),
            signed.to_str().unwrap(),
        ],
        &c3,
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not a trusted key"), "{err}");
    w.shutdown().await.unwrap();
    assert_eq!(
        snapshot(&data, &s.img.manifest_digest),
        before,
        "through the server: unchanged"
    );

    // The right key on the command line, the configuration trusting none: imported.
    let fresh = tempfile::tempdir().unwrap();
    let c4 = write_config(fresh.path(), &nowhere.url(), "offline = true", "");
    let (code, out, err) = wharf(
        &[
            "import",
            "--trusted-key",
            public.to_str().unwrap(),
            signed.to_str().unwrap(),
        ],
        &c4,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified"), "{out}");
    // A trusted key that is no key is a one-line configuration error naming the key.
    let c5 = write_config(
        fresh.path(),
        &nowhere.url(),
        "offline = true",
        &format!("[import]\ntrusted_keys = [\"{}\"]\n", key.display()),
    );
    let (code, _, err) = wharf(&["import", signed.to_str().unwrap()], &c5).await;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("import.trusted_keys[0]") && err.contains("no PEM public key"),
        "{err}"
    );
    assert_eq!(nowhere.connections(), 0);
}
