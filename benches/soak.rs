//! Load and soak: 2,000 concurrent client connections against the release binary (a separate
//! process) for 10 minutes, mixed as an edge mirror meets them: most idle (connect and send
//! nothing), some slow (a request line trickled a byte a second, as slowloris does), and some
//! active (keep-alive GETs of a cached manifest, a small blob and a 1 MiB blob, as fast as they are
//! answered). Idle and slow clients connect again whenever wharf closes them, so the pressure
//! never lets up. Every 30 s it samples wharf's RSS and open file descriptors; at the end it prints
//! requests served, errors, p50/p99/p99.9 latency of the active clients, and the first and last
//! samples: memory and descriptors must be flat.
//!
//! Run: `cargo bench --bench soak` (loopback only; about 10 minutes and a few seconds).
//! `SOAK_SECS=60 SOAK_CONNS=500 cargo bench --bench soak` for a shorter or smaller run.
//! The upstream is a small in-process registry that serves the three objects.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the connections are shared out: idle, slow, active (per mille of the total).
const IDLE: usize = 800;
const SLOW: usize = 150;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The objects the upstream serves: path → (content type, body).
type Objects = Arc<Vec<(String, &'static str, Bytes)>>;

async fn upstream(objects: Objects) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let objects = objects.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let objects = objects.clone();
                    async move {
                        let path = request.uri().path();
                        let found = objects.iter().find(|(p, _, _)| p == path);
                        let response = match found {
                            Some((_, kind, body)) => Response::builder()
                                .header("content-type", *kind)
                                .header("docker-content-digest", digest(body))
                                .body(Full::new(body.clone()))
                                .unwrap(),
                            None if path == "/v2/" => Response::new(Full::new(Bytes::new())),
                            None => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn start_wharf(dir: &std::path::Path, upstream: SocketAddr) -> (Proc, SocketAddr) {
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[log]\nlevel = \"warn,wharf=info\"\n\
             [[upstream]]\nname = \"upstream.test\"\nurl = \"http://{upstream}\"\ndefault = true\ninsecure = true\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "wharf exited");
        if let Some(i) = line.find("wharf is listening addr=") {
            break line[i + 24..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
    };
    // Keep draining the log (request lines) so wharf never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stderr.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    (Proc(child), addr)
}

/// RSS (KiB) and open descriptors of a process.
fn sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    (rss, fds)
}

#[derive(Default)]
struct Counters {
    served: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    latencies: Mutex<Vec<u32>>,
}

/// Connects, sends nothing, waits to be closed, connects again.
async fn idle_client(addr: SocketAddr, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut buf = [0u8; 64];
        tokio::select! {
            _ = s.read(&mut buf) => { counters.reconnects.fetch_add(1, Ordering::Relaxed); }
            () = wait_for(&stop) => return,
        }
    }
}

/// Trickles a request line a byte a second until wharf closes the connection, then again.
async fn slow_client(addr: SocketAddr, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let request = b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for byte in request {
            if stop.load(Ordering::Relaxed) || s.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keep-alive GETs of the three objects in turn, timing each.
async fn active_client(
    base: String,
    paths: Arc<Vec<(String, usize)>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    seed: usize,
) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut i = seed;
    let mut latencies = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let (path, len) = &paths[i % paths.len()];
        i += 1;
        let started = Instant::now();
        let ok = match client.get(format!("{base}{path}")).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok_and(|b| b.len() == *len),
            _ => false,
        };
        if ok {
            counters.served.fetch_add(1, Ordering::Relaxed);
            latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        } else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if latencies.len() >= 4096 {
            counters.latencies.lock().append(&mut latencies);
        }
    }
    counters.latencies.lock().append(&mut latencies);
}

async fn wait_for(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

fn main() {
    // The load generator holds as many sockets as wharf does.
    let _ = wharf::server::conn::raise_file_limit();
    let secs = env_or("SOAK_SECS", 600);
    let conns = usize::try_from(env_or("SOAK_CONNS", 2000)).unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let manifest_config = bytes(1024, 1);
        let small = bytes(4 * 1024, 2);
        let large = bytes(1 << 20, 3);
        let manifest = Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&manifest_config), "size": manifest_config.len()},
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&small), "size": small.len()},
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&large), "size": large.len()}
                ]
            })
            .to_string(),
        );
        let objects: Objects = Arc::new(vec![
            ("/v2/library/soak/manifests/latest".into(), "application/vnd.oci.image.manifest.v1+json", manifest.clone()),
            (format!("/v2/library/soak/blobs/{}", digest(&small)), "application/octet-stream", small.clone()),
            (format!("/v2/library/soak/blobs/{}", digest(&large)), "application/octet-stream", large.clone()),
        ]);
        let paths: Arc<Vec<(String, usize)>> = Arc::new(vec![
            ("/v2/library/soak/manifests/latest".into(), manifest.len()),
            (format!("/v2/library/soak/blobs/{}", digest(&small)), small.len()),
            (format!("/v2/library/soak/blobs/{}", digest(&small)), small.len()),
            (format!("/v2/library/soak/blobs/{}", digest(&large)), large.len()),
        ]);
        let upstream = upstream(objects).await;
        let dir = tempfile::tempdir().unwrap();
        let (wharf, addr) = start_wharf(dir.path(), upstream);
        let pid = wharf.0.id();
        let base = format!("http://{addr}");
        // Warm the cache, then take the baseline.
        let warm = reqwest::Client::builder().no_proxy().build().unwrap();
        for (path, _) in paths.iter() {
            let r = warm.get(format!("{base}{path}")).send().await.unwrap();
            assert!(r.status().is_success(), "warm-up {path}: {}", r.status());
            r.bytes().await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = sample(pid);

        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let idle = conns * IDLE / 1000;
        let slow = conns * SLOW / 1000;
        let active = conns - idle - slow;
        let mut tasks = Vec::with_capacity(conns);
        for i in 0..conns {
            let (stop, counters) = (stop.clone(), counters.clone());
            tasks.push(if i < idle {
                tokio::spawn(idle_client(addr, stop, counters))
            } else if i < idle + slow {
                tokio::spawn(slow_client(addr, stop, counters))
            } else {
                tokio::spawn(active_client(base.clone(), paths.clone(), stop, counters, i))
            });
        }
        println!(
            "soak: {conns} connections ({idle} idle, {slow} slow, {active} active) for {secs} s against {addr}"
        );
        println!("{:>6}  {:>10}  {:>8}  {:>9}  {:>5}", "t (s)", "served", "errors", "RSS MiB", "fds");
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(secs) {
            let step = Duration::from_secs(30).min(Duration::from_secs(secs).saturating_sub(started.elapsed()));
            tokio::time::sleep(step).await;
            let (rss, fds) = sample(pid);
            samples.push((rss, fds));
            println!(
                "{:>6}  {:>10}  {:>8}  {:>9.1}  {:>5}",
                started.elapsed().as_secs(),
                counters.served.load(Ordering::Relaxed),
                counters.errors.load(Ordering::Relaxed),
                rss as f64 / 1024.0,
                fds
            );
        }
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // Let wharf close what the clients left (they are gone now).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = sample(pid);
        let elapsed = started.elapsed().as_secs_f64();
        let mut latencies = std::mem::take(&mut *counters.latencies.lock());
        latencies.sort_unstable();
        let served = counters.served.load(Ordering::Relaxed);
        // The first sample under load against the last: flat means no growth over the run.
        let (first, last) = (samples.first().copied().unwrap_or(before), samples.last().copied().unwrap_or(before));
        println!();
        println!("| measure | value |");
        println!("|---|---|");
        println!("| connections (idle / slow / active) | {idle} / {slow} / {active} |");
        println!("| duration | {elapsed:.0} s |");
        println!("| requests served (active clients) | {served} ({:.0}/s) |", served as f64 / elapsed);
        println!("| errors | {} |", counters.errors.load(Ordering::Relaxed));
        println!("| idle and slow connections closed by wharf | {} |", counters.reconnects.load(Ordering::Relaxed));
        println!(
            "| latency p50 / p99 / p99.9 | {:.1} / {:.1} / {:.1} ms |",
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            percentile(&latencies, 99.9)
        );
        println!("| RSS before load / first sample / last sample / after | {:.1} / {:.1} / {:.1} / {:.1} MiB |",
            before.0 as f64 / 1024.0, first.0 as f64 / 1024.0, last.0 as f64 / 1024.0, after.0 as f64 / 1024.0);
        println!("| open fds before load / first sample / last sample / after | {} / {} / {} / {} |", before.1, first.1, last.1, after.1);
        drop(wharf);
    });
}
