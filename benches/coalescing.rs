//! Concurrent misses on one uncached blob: N = 1, 10, 50, 200 clients ask wharf (release build, as a
//! separate process) for the same 64 MiB blob that only the upstream (the real distribution registry,
//! on loopback) has. Prints, per N: upstream blob GETs, the slowest client's time to last byte, that
//! time relative to a single client's, and wharf's peak RSS (VmHWM).
//!
//! Run: `cargo bench --bench coalescing` (needs `docker-registry`; `./scripts/test.sh` installs it).
//! The machine is shared and noisy: each row is the median of 3 runs, each with empty storage.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

const SIZE: usize = 64 * 1024 * 1024;
const RUNS: usize = 3;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn blob() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn registry_blob_gets(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("] \"GET ") && l.contains("/blobs/sha256:"))
        .count()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn start_wharf(dir: &std::path::Path, upstream: &str) -> (Proc, String) {
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"bench.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,wharf=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "wharf exited");
        if let Some(i) = line.find("wharf is listening addr=") {
            break line[i + 24..].split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so wharf never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    (Proc(child), addr)
}

#[tokio::main]
async fn main() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let reg_config = work.path().join("registry.yml");
    std::fs::write(
        &reg_config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            work.path().join("registry").display()
        ),
    )
    .unwrap();
    let reg_log = work.path().join("registry.log");
    let log_file = std::fs::File::create(&reg_log).unwrap();
    let _registry = Proc(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&reg_config)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("docker-registry is installed (./scripts/test.sh installs it)"),
    );
    let upstream = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..100 {
        if client.get(format!("{upstream}/v2/")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = blob();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    // Upload: POST opens a session, PUT with the digest sends the bytes and commits.
    let res = client
        .post(format!("{upstream}/v2/perf/blob/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "upload session");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{upstream}{location}")
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let res = client
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "upload commit");

    println!("Concurrent misses on one uncached {} MiB blob (median of {RUNS} runs; shared, noisy machine)", SIZE >> 20);
    println!(
        "{:>8} {:>14} {:>18} {:>12} {:>14}",
        "clients", "upstream GETs", "slowest last byte", "vs 1 client", "wharf peak RSS"
    );
    let mut single = None;
    for n in [1usize, 10, 50, 200] {
        let mut rows = Vec::new();
        for _ in 0..RUNS {
            let dir = tempfile::tempdir().unwrap();
            let (wharf, addr) = start_wharf(dir.path(), &upstream);
            let before = registry_blob_gets(&reg_log);
            let url = format!("http://{addr}/v2/perf/blob/blobs/{digest}");
            let started = Instant::now();
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        let res = client.get(url).send().await.unwrap();
                        assert_eq!(res.status(), 200);
                        let mut body = res.bytes_stream();
                        let mut got = 0usize;
                        while let Some(chunk) = body.next().await {
                            got += chunk.unwrap().len();
                        }
                        assert_eq!(got, SIZE);
                        started.elapsed()
                    })
                })
                .collect();
            let mut slowest = Duration::ZERO;
            for t in tasks {
                slowest = slowest.max(t.await.unwrap());
            }
            let gets = registry_blob_gets(&reg_log) - before;
            rows.push((slowest, gets, peak_rss_kib(wharf.0.id())));
            drop(wharf);
        }
        rows.sort_by_key(|r| r.0);
        let (slowest, gets, rss) = rows[RUNS / 2];
        let base = *single.get_or_insert(slowest);
        println!(
            "{n:>8} {gets:>14} {:>15.0} ms {:>11.2}x {:>11.1} MiB",
            slowest.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() / base.as_secs_f64(),
            rss as f64 / 1024.0
        );
    }
}
