//! Replicas (`[cluster]`) for the tests: each in a runtime of its own on its own thread, so a test
//! can kill one outright (every task and socket of it gone at once, as with kill -9) while the
//! others go on; their configurations, owners and pulls through them.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use tempfile::TempDir;
use url::Url;
use wharf::cluster::{rendezvous, Peer};

use super::fake::{random_bytes, Fake};
use super::pulls::d;
use super::{client, config_text, files_under, free_port, Up};

pub const SECRET: &str = "a shared secret of more than thirty-two bytes";

/// One wharf replica in a runtime of its own.
pub struct Replica {
    pub base: String,
    pub dir: TempDir,
    /// `true` for a graceful shutdown, `false` to kill it.
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    /// Kills the replica: its runtime goes, with every connection and fill it had.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the replica's disk holds the blob (a fill commits it just after its last byte).
    pub fn holds(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        files_under(self.dir.path(), hex).iter().any(|p| {
            let inside = p.strip_prefix(self.dir.path()).unwrap_or(p);
            inside.starts_with("blobs")
        })
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn origin(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

pub fn peer(port: u16) -> Peer {
    Peer::new(&Url::parse(&origin(port)).unwrap())
}

/// The configuration of the replica on `port` among `ports`, in front of `upstream`.
pub fn replica_config(
    dir: &Path,
    port: u16,
    ports: &[u16],
    upstream: &str,
    secret: &Path,
) -> String {
    replica_config_with(dir, port, ports, &[("upstream.test", upstream)], secret)
}

/// As [`replica_config`], with several upstreams (`(name, url)`, the first the default).
pub fn replica_config_with(
    dir: &Path,
    port: u16,
    ports: &[u16],
    upstreams: &[(&str, &str)],
    secret: &Path,
) -> String {
    let ups: Vec<Up<'_>> = upstreams
        .iter()
        .enumerate()
        .map(|(i, (name, url))| Up {
            name,
            url: (*url).to_owned(),
            default: i == 0,
            extra: "",
        })
        .collect();
    let text = config_text(dir, "5m", &ups).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\"\nshutdown_grace = \"1s\""),
    );
    let peers = ports
        .iter()
        .map(|p| format!("\"{}\"", origin(*p)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{text}[cluster]\npeers = [{peers}]\nself = \"{}\"\nsecret_file = '{}'\nowner_timeout = \"1s\"\n",
        origin(port),
        secret.display()
    )
}

/// Starts a replica with this configuration, on a thread and runtime of its own.
pub fn start_replica(dir: TempDir, text: String) -> Replica {
    let config = wharf::Config::from_toml(&text, Path::new("replica.toml")).unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<bool>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = rt.block_on(wharf::start(config)).unwrap();
        addr_tx.send(running.local_addr()).unwrap();
        let graceful = rt.block_on(async { stopped.await.unwrap_or(false) });
        if graceful {
            rt.block_on(running.shutdown()).unwrap();
        } else {
            // Every task of the replica ends here, its sockets with them.
            rt.shutdown_background();
            drop(running);
        }
    });
    let addr = addr_rx.recv().unwrap();
    Replica {
        base: format!("http://{addr}"),
        dir,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// The cluster's secret file.
pub fn secret_file() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    dir
}

/// `n` replicas in front of `fake`, and their ports.
pub fn cluster(fake: &Fake, n: usize, secret: &Path) -> (Vec<Replica>, Vec<u16>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let replicas = ports
        .iter()
        .map(|port| {
            let dir = tempfile::tempdir().unwrap();
            let text = replica_config(dir.path(), *port, &ports, &fake.url(), secret);
            start_replica(dir, text)
        })
        .collect();
    (replicas, ports)
}

/// Which of `ports` owns `digest`.
pub fn owner_of(ports: &[u16], digest: &str) -> usize {
    let peers: Vec<Peer> = ports.iter().map(|p| peer(*p)).collect();
    let owner = rendezvous(&peers, &d(digest)).unwrap();
    peers.iter().position(|p| p == owner).unwrap()
}

/// A blob on the fake of `len` bytes whose owner among `ports` is `owner`.
/// `salt` tells apart the blobs one test asks for.
pub fn blob_owned_by(
    fake: &Fake,
    ports: &[u16],
    owner: usize,
    len: usize,
    salt: u64,
) -> (String, Bytes) {
    let base = random_bytes(len, salt);
    for seed in 0..u64::MAX {
        let mut bytes = base.to_vec();
        bytes[..8].copy_from_slice(&u64::to_be_bytes(seed));
        let bytes = Bytes::from(bytes);
        let digest = super::fake::digest_of(&bytes);
        if owner_of(ports, &digest) == owner {
            fake.add_blob(bytes.clone());
            return (digest, bytes);
        }
    }
    unreachable!()
}

pub fn blob_path(digest: &str) -> String {
    format!("/v2/org/app/blobs/{digest}")
}

/// GETs the blob from the first of `urls` that answers it whole; the body must be `want`.
pub async fn pull_from(urls: &[String], want: &Bytes) {
    pull_with(&client(), urls, want).await;
}

/// As [`pull_from`], with this client.
pub async fn pull_with(client: &reqwest::Client, urls: &[String], want: &Bytes) {
    for url in urls {
        let Ok(res) = client.get(url).send().await else {
            continue;
        };
        if res.status() != 200 {
            continue;
        }
        if let Ok(body) = res.bytes().await {
            assert!(body == *want, "{url}: wrong bytes");
            return;
        }
    }
    panic!("no replica served the blob whole: {urls:?}");
}

pub fn upstream_gets(fake: &Fake, digest: &str) -> usize {
    fake.count("GET", digest)
}

/// GETs `digest` (`len` bytes) from the first of `urls` that answers it whole, hashing the body as
/// it streams in (a herd of big pulls must not hold every body in memory); panics on wrong bytes.
pub async fn pull_streamed(client: &reqwest::Client, urls: &[String], digest: &str, len: u64) {
    use futures_util::StreamExt;

    let want = d(digest);
    for url in urls {
        let Ok(res) = client.get(url).send().await else {
            continue;
        };
        if res.status() != 200 {
            continue;
        }
        let mut verifier = wharf::oci::Verifier::new();
        let mut body = res.bytes_stream();
        let mut whole = true;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => verifier.update(&chunk),
                Err(_) => {
                    whole = false;
                    break;
                }
            }
        }
        if whole {
            assert!(
                verifier.finish(&want, Some(len)).is_ok(),
                "{url}: wrong bytes"
            );
            return;
        }
    }
    panic!("no replica served the blob whole: {urls:?}");
}
