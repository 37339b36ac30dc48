//! Deterministic test images written as OCI layouts (and a skopeo `dir:` tree for Docker schema 2),
//! pushed into a real registry with skopeo.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::fake::random_bytes;

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
