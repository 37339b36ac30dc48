//! Production end to end with real software: skopeo (HTTP/1.1: containers/image does not offer h2)
//! and curl (HTTP/2) pull through wharf over HTTPS with credentials from an htpasswd file made by
//! Apache's `htpasswd -B`, and wharf pulls from the CNCF distribution registry over HTTPS, trusting
//! the registry's CA through `ca_file`. Everything stays on 127.0.0.1 (see `common::real`).

mod common;

use std::path::Path;
use std::process::Command;

use common::images;
use common::pki::Ca;
use common::real::{capture_logs, captured_logs, pull, push, require, try_pull, Registry};
use common::Wharf;

fn htpasswd_b(file: &Path, user: &str, password: &str) {
    require("htpasswd");
    let status = Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(file)
        .args([user, password])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_over_https_with_credentials_from_a_registry_over_https() {
    capture_logs();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let home = w.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let ca = Ca::new("wharf e2e CA");
    let ca_file = w.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    // The upstream serves HTTPS only, with a certificate from the test CA.
    let (reg_cert, reg_key) = ca.leaf().write(&w.join("registry-tls"), "");
    let registry = Registry::start_with(None, Some((&reg_cert, &reg_key))).await;
    assert!(registry.url().starts_with("https://"));
    let (layout, digest) = images::single(&w.join("image"), "1", 41, 3);
    push(
        &home,
        &format!("oci:{}:1", layout.dir.display()),
        &format!("docker://127.0.0.1:{}/e2e/app:1", registry.port),
        false,
    )
    .await;

    let htpasswd = w.join("htpasswd");
    htpasswd_b(&htpasswd, "alice", "s3cret-alice");
    let (cert, key) = ca.leaf().write(&w.join("wharf-tls"), "");
    let storage = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [storage]\npath = \"{}\"\n\
         [[upstream]]\nname = \"upstream.test\"\nurl = \"{}\"\ndefault = true\nca_file = \"{}\"\n\
         [auth]\nhtpasswd = \"{}\"\n",
        cert.display(),
        key.display(),
        storage.path().display(),
        registry.url(),
        ca_file.display(),
        htpasswd.display()
    );
    let wharf = Wharf::start_text(storage, &config).await;
    let host = wharf.base.trim_start_matches("https://").to_owned();

    // skopeo trusts the CA through --src-cert-dir (a directory with ca.crt).
    let certs = w.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), ca.pem()).unwrap();
    let certs = certs.to_str().unwrap();
    let src = format!("docker://{host}/e2e/app:1");
    let out = w.join("out");

    let no_creds = try_pull(&home, &src, &out, &["--src-cert-dir", certs])
        .await
        .unwrap_err();
    assert!(
        no_creds.to_lowercase().contains("unauthorized") || no_creds.contains("401"),
        "{no_creds}"
    );
    let wrong = try_pull(
        &home,
        &src,
        &out,
        &["--src-cert-dir", certs, "--src-creds", "alice:not-it"],
    )
    .await
    .unwrap_err();
    assert!(
        wrong.to_lowercase().contains("unauthorized") || wrong.contains("401"),
        "{wrong}"
    );
    assert_eq!(
        registry.blob_gets(),
        0,
        "nothing reached the upstream without the right password"
    );

    let creds = ["--src-cert-dir", certs, "--src-creds", "alice:s3cret-alice"];
    let pulled = pull(&home, &src, &out, &creds).await;
    assert_eq!(pulled.manifest_digest, digest);
    assert_eq!(pulled.blobs.len(), 4, "config and three layers: {pulled:?}");

    // curl over HTTP/2 (ALPN h2), with the same credentials: the manifest by tag, from the cache.
    require("curl");
    let body = w.join("manifest.json");
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--http2", "--cacert"])
        .arg(&ca_file)
        .args(["--user", "alice:s3cret-alice", "--output"])
        .arg(&body)
        .args(["--write-out", "%{http_version} %{http_code}", "--header"])
        .arg("Accept: application/vnd.oci.image.manifest.v1+json")
        .arg(format!("https://{host}/v2/e2e/app/manifests/1"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read(&body).unwrap();
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest))
        ),
        digest
    );

    let logs = captured_logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("path=/v2/e2e/app/manifests/1") && l.contains("status=200"))
        .collect();
    for version in ["version=HTTP/1.1", "version=HTTP/2.0"] {
        assert!(
            lines.iter().any(|l| l.contains(version)),
            "{version}: {lines:#?}"
        );
    }
    assert!(!logs.contains("s3cret-alice") && !logs.contains("not-it"));

    // Without ca_file the registry's certificate is not trusted: verification is on.
    let storage = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{}\"\ndefault = true\n",
        storage.path().display(),
        registry.url()
    );
    let untrusting = Wharf::start_text(storage, &text).await;
    let res = common::client()
        .get(untrusting.url("/v2/e2e/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "{:?}", res.text().await);

    // insecure = true: any certificate is accepted.
    let storage = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{}\"\ndefault = true\ninsecure = true\n",
        storage.path().display(),
        registry.url()
    );
    let insecure = Wharf::start_text(storage, &text).await;
    assert!(
        captured_logs().lines().any(|l| l.contains("WARN")
            && l.contains("insecure = true")
            && l.contains(&registry.url())),
        "a warning at start names the insecure upstream"
    );
    let res = common::client()
        .get(insecure.url("/v2/e2e/app/manifests/1"))
        .header("accept", images::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), manifest);
}
