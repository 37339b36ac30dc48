//! Deterministic test images written as OCI layouts (and a skopeo `dir:` tree for Docker schema 2),
//! pushed into a real registry with skopeo. Every byte is fixed: seeded random file contents (so
//! layers do not compress), tar mtimes 0, gzip mtime 0, so the digests are the same on every run
//! and every machine.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic, incompressible bytes (xorshift64* seeded through splitmix64).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x = (x ^ (x >> 31)) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A gzipped tar with one file of seeded random bytes; returns (gzip bytes, diff id).
fn layer(seed: u64, size: usize) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = random_bytes(size, seed);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, format!("file-{seed}.bin"), &data[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha(bytes), "size": bytes.len()})
}

/// An OCI image layout on disk.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_owned(),
        }
    }

    fn put(&self, bytes: &[u8]) -> String {
        let d = sha(bytes);
        std::fs::write(
            self.dir
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            bytes,
        )
        .unwrap();
        d
    }

    /// Writes config + layers + manifest for one platform; returns the manifest bytes.
    fn image(&self, seed: u64, layers: usize, layer_size: usize, arch: &str) -> Vec<u8> {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for i in 0..layers {
            let (gz, diff_id) = layer(seed * 100 + i as u64, layer_size);
            self.put(&gz);
            descs.push(descriptor(OCI_LAYER_GZIP, &gz));
            diff_ids.push(diff_id);
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {}
        }))
        .unwrap();
        self.put(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config), "layers": descs
        }))
        .unwrap();
        self.put(&manifest);
        manifest
    }

    fn index(&self, top: &[u8], media_type: &str, tag: &str) {
        let mut d = descriptor(media_type, top);
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [d]});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A three-layer OCI image tagged `tag`; returns (layout, manifest digest).
pub fn multi_layer(dir: &Path, tag: &str) -> (Layout, String) {
    single(dir, tag, 1, 3)
}

/// An OCI image of `layers` layers whose bytes depend on `seed`; returns (layout, manifest digest).
pub fn single(dir: &Path, tag: &str, seed: u64, layers: usize) -> (Layout, String) {
    let layout = Layout::new(dir);
    let manifest = layout.image(seed, layers, 300_000, "amd64");
    layout.index(&manifest, OCI_MANIFEST, tag);
    (layout, sha(&manifest))
}

/// A two-platform OCI index tagged `tag`; returns (layout, index digest).
pub fn multi_arch(dir: &Path, tag: &str) -> (Layout, String) {
    let layout = Layout::new(dir);
    let mut entries = Vec::new();
    for (seed, arch) in [(2, "amd64"), (3, "arm64")] {
        let manifest = layout.image(seed, 1, 100_000, arch);
        let mut d = descriptor(OCI_MANIFEST, &manifest);
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        entries.push(d);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries
    }))
    .unwrap();
    layout.put(&index);
    layout.index(&index, OCI_INDEX, tag);
    (layout, sha(&index))
}

/// A Docker schema 2 image as a skopeo `dir:` tree; returns (dir, manifest digest).
pub fn docker_schema2(dir: &Path) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha(bytes);
        std::fs::write(dir.join(d.trim_start_matches("sha256:")), bytes).unwrap();
    };
    let (gz, diff_id) = layer(40, 200_000);
    put(&gz);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}
    }))
    .unwrap();
    put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": [descriptor(DOCKER_LAYER, &gz)]
    }))
    .unwrap();
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
    (dir.to_owned(), sha(&manifest))
}

/// An image pushed by [`push_all`].
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `repository:tag`, e.g. `e2e/multi:1`.
    pub reference: &'static str,
    /// The digest of the top manifest (the index for `e2e/index:1`).
    pub digest: String,
    /// Whether the reference names an index (pull it with `--all`).
    pub index: bool,
}

/// Writes the three test images under `work` and pushes them into `registry` with
/// `skopeo copy --preserve-digests`, as `e2e/multi:1` (three-layer OCI image), `e2e/index:1` (OCI
/// index, linux/amd64 + linux/arm64) and `e2e/docker:1` (Docker schema 2). `creds` (`user:pass`)
/// for a registry with token auth. Checks that the registry holds the expected manifests.
pub async fn push_all(
    registry: &super::real::Registry,
    home: &Path,
    work: &Path,
    creds: Option<&str>,
) -> Vec<Pushed> {
    let (multi, multi_digest) = multi_layer(&work.join("multi"), "1");
    let (index, index_digest) = multi_arch(&work.join("index"), "1");
    let (docker, docker_digest) = docker_schema2(&work.join("docker"));
    let pushed = vec![
        Pushed {
            reference: "e2e/multi:1",
            digest: multi_digest,
            index: false,
        },
        Pushed {
            reference: "e2e/index:1",
            digest: index_digest,
            index: true,
        },
        Pushed {
            reference: "e2e/docker:1",
            digest: docker_digest,
            index: false,
        },
    ];
    let sources = [
        format!("oci:{}:1", multi.dir.display()),
        format!("oci:{}:1", index.dir.display()),
        format!("dir:{}", docker.display()),
    ];
    let creds_flag = creds.map(|c| format!("--creds={c}"));
    for (image, src) in pushed.iter().zip(&sources) {
        let dest = format!("docker://127.0.0.1:{}/{}", registry.port, image.reference);
        super::real::push_with(home, src, &dest, image.index, creds).await;
        let extra: Vec<&str> = creds_flag.iter().map(String::as_str).collect();
        assert_eq!(
            super::real::inspect_digest(home, &dest, &extra).await,
            image.digest,
            "{}: the registry holds the manifest as generated",
            image.reference
        );
    }
    pushed
}
