//! Garage, a real S3-compatible object store (written in Rust, by Deuxfleurs), as a test peer: one
//! node, or three on 127.0.0.1 with distinct ports. Each node runs in its own temporary directory
//! with free loopback ports, and is killed when the handle drops (no pid files, no `pkill`). The
//! binary comes from `PATH` (`~/.cargo/bin` included): `scripts/test.sh` installs it when missing;
//! a missing binary fails the test, never skips it.
//!
//! [`Garage::start`] lays out the cluster, creates the bucket `wharf` and one access key with a
//! random id and secret (imported, so a restart keeps them), and writes the id and the secret into
//! files for `[storage.s3] access_key_id_file` / `secret_access_key_file`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// The bucket every Garage of the tests holds.
pub const BUCKET: &str = "wharf";

/// The region Garage signs with.
pub const REGION: &str = "garage";

/// One Garage node: its config file and process.
struct Node {
    config: PathBuf,
    s3_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running Garage of one or three nodes, killed on drop.
pub struct Garage {
    dir: TempDir,
    nodes: Vec<Node>,
    key_id: String,
    secret: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf).unwrap();
    hex::encode(buf)
}

/// The `garage` binary, failing the test when it is missing.
fn binary() -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "command -v garage"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let in_cargo = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cargo/bin/garage"))
        .filter(|p| p.exists());
    on_path.or(in_cargo).expect(
        "garage is not installed: run the tests with ./scripts/test.sh, which installs it (cargo install garage --locked)",
    )
}

// === impl Garage ===

impl Garage {
    /// Starts `n` nodes (1 or 3), lays out the cluster with a replication factor of `n`, creates
    /// the bucket and the key, and waits until the S3 API answers.
    pub fn start(n: usize) -> Garage {
        assert!(n == 1 || n == 3, "Garage::start takes 1 or 3 nodes");
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let rpc_secret = random_hex(32);
        let mut nodes = Vec::new();
        for i in 0..n {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = node_dir.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{meta}\"\n\
                     data_dir = \"{data}\"\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = {n}\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{rpc_secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"{REGION}\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\n\
                     [admin]\n\
                     api_bind_addr = \"127.0.0.1:{admin}\"\n",
                    meta = node_dir.join("meta").display(),
                    data = node_dir.join("data").display(),
                ),
            )
            .unwrap();
            nodes.push(Node {
                config,
                s3_port: s3,
                child: None,
                log: node_dir.join("garage.log"),
            });
        }
        let mut garage = Garage {
            dir,
            nodes,
            key_id: format!("GK{}", random_hex(12)),
            secret: random_hex(32),
        };
        for node in &mut garage.nodes {
            node.spawn(&bin);
        }
        // `node id` reads a local file: first wait until every node answers RPC.
        for node in &garage.nodes {
            garage.cli_until_ok(node, &["status"]);
        }
        // Every node knows the others, then one layout with all of them.
        let ids: Vec<String> = garage
            .nodes
            .iter()
            .map(|node| garage.cli_until_ok(node, &["node", "id", "-q"]))
            .collect();
        for id in &ids[1..] {
            garage.cli(&garage.nodes[0], &["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            let zone = format!("dc{}", i + 1);
            garage.cli(
                &garage.nodes[0],
                &["layout", "assign", "-z", &zone, "-c", "1G", short],
            );
        }
        garage.cli(&garage.nodes[0], &["layout", "apply", "--version", "1"]);
        garage.cli_until_ok(&garage.nodes[0], &["bucket", "create", BUCKET]);
        garage.cli(
            &garage.nodes[0],
            &[
                "key",
                "import",
                "--yes",
                "-n",
                "wharf",
                &garage.key_id.clone(),
                &garage.secret.clone(),
            ],
        );
        garage.cli(
            &garage.nodes[0],
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "wharf",
            ],
        );
        std::fs::write(
            garage.dir.path().join("key-id"),
            format!("{}\n", garage.key_id),
        )
        .unwrap();
        std::fs::write(
            garage.dir.path().join("secret"),
            format!("{}\n", garage.secret),
        )
        .unwrap();
        garage.wait_s3();
        garage
    }

    /// The S3 endpoint of the first node, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint_of(0)
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The files holding the access key id and the secret access key.
    pub fn key_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("key-id"),
            self.dir.path().join("secret"),
        )
    }

    /// The secret access key itself (to check it never shows in errors).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A `[storage.s3]` section (with `backend = "s3"` left to the caller's `[storage]`) for this
    /// Garage, with `prefix` (empty, or ending with `/`).
    pub fn storage_toml(&self, prefix: &str) -> String {
        let (id, secret) = self.key_files();
        format!(
            "[storage.s3]\nbucket = \"{BUCKET}\"\nprefix = \"{prefix}\"\nendpoint = \"{}\"\nregion = \"{REGION}\"\npath_style = true\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\ntimeout = \"5s\"\nconnect_timeout = \"1s\"\n",
            self.endpoint(),
            id.display(),
            secret.display()
        )
    }

    /// Kills every node (like a crash: no clean shutdown).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every node again on the same data and ports, and waits until the S3 API answers.
    pub fn restart(&mut self) {
        self.stop();
        let bin = binary();
        for node in &mut self.nodes {
            node.spawn(&bin);
        }
        self.wait_s3();
    }

    /// Garage's logs, for failure messages.
    pub fn log_text(&self) -> String {
        self.nodes
            .iter()
            .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `garage -c CONFIG args`, failing the test on an error; its stdout.
    fn cli(&self, node: &Node, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("-c")
            .arg(&node.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// [`Garage::cli`], retried for up to 20 s while the node starts.
    fn cli_until_ok(&self, node: &Node, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(binary())
                .arg("-c")
                .arg(&node.config)
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?} kept failing: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every node's S3 API lists the bucket with the key (the layout is live).
    fn wait_s3(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                // A bucket listing signed by the key is the real readiness check; the CLI's
                // `bucket info` only needs RPC, so poll the port and then the bucket.
                let up = std::net::TcpStream::connect(("127.0.0.1", node.s3_port)).is_ok()
                    && Command::new(binary())
                        .arg("-c")
                        .arg(&node.config)
                        .args(["bucket", "info", BUCKET])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                if up {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "garage did not become ready:\n{}",
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

// === impl Node ===

impl Node {
    fn spawn(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
