//! Hostile clients at the connection level: half-sent requests, idle keep-alive floods, a flood
//! that would fill the file table, and a client that stops reading a blob. Each test checks that
//! the bound holds and that a well-behaved client is still served during the attack.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake::{self, Fake};
use common::served::{self, Served};
use common::Wharf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A wharf whose `[server]` section has `extra` and which mirrors `upstream` by default.
async fn wharf(extra: &str, upstream: &str) -> Wharf {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[storage]\npath = \"{}\"\n\
         [[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n",
        dir.path().display()
    );
    Wharf::start_text(dir, &text).await
}

fn addr_of(wharf: &Wharf) -> SocketAddr {
    wharf.running.as_ref().unwrap().local_addr()
}

/// Connects from `from` (another loopback address is another client).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes; `Err` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0) | Err(_)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET /v2/` with a fresh connection from `from`: the status line, or what went wrong.
async fn base_status(from: &str, to: SocketAddr) -> String {
    let mut stream = connect_from(from, to).await;
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = closed_within(&mut stream, Duration::from_secs(30))
        .await
        .unwrap_or_default();
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("(nothing)")
        .to_owned()
}

#[tokio::test]
async fn half_sent_requests_are_cut_off_and_others_are_served() {
    let fake = Fake::start().await;
    let w = wharf("header_read_timeout = \"1s\"", &fake.url()).await;
    let addr = addr_of(&w);
    let mut attackers = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v2/ HT").await.unwrap();
        attackers.push(s);
    }
    // A client that behaves is answered at once, during the attack.
    let started = Instant::now();
    assert_eq!(base_status("127.0.0.2", addr).await, "HTTP/1.1 200 OK");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Every half-sent request is closed once the header timeout passes.
    for s in &mut attackers {
        assert!(
            closed_within(s, Duration::from_secs(10)).await.is_ok(),
            "a connection that never finished its request is still open"
        );
    }
}

#[tokio::test]
async fn a_request_trickled_a_byte_at_a_time_is_cut_off() {
    let fake = Fake::start().await;
    let w = wharf("header_read_timeout = \"1s\"", &fake.url()).await;
    let mut s = TcpStream::connect(addr_of(&w)).await.unwrap();
    let started = Instant::now();
    let request =
        b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in request {
        if s.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "the whole trickled request was accepted");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let fake = Fake::start().await;
    let w = wharf("idle_timeout = \"1s\"", &fake.url()).await;
    let mut s = TcpStream::connect(addr_of(&w)).await.unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    let idle = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await.is_ok(),
        "an idle keep-alive connection stayed open"
    );
    assert!(idle.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let fake = Fake::start().await;
    let w = wharf("max_connections_per_ip = 50", &fake.url()).await;
    let addr = addr_of(&w);
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(connect_from("127.0.0.3", addr).await);
    }
    // The 51st from the same address is closed at once, with nothing sent.
    let mut extra = connect_from("127.0.0.3", addr).await;
    assert_eq!(
        closed_within(&mut extra, Duration::from_secs(5)).await,
        Ok(Vec::new())
    );
    // Another address is served.
    assert_eq!(base_status("127.0.0.4", addr).await, "HTTP/1.1 200 OK");
    // The held ones still work.
    let s = &mut held[0];
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: wharf\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = closed_within(s, Duration::from_secs(10)).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200 OK"));
}

#[tokio::test]
async fn a_client_that_stops_reading_releases_its_blob() {
    let fake = Fake::start().await;
    let blob = fake::random_bytes(64 << 20, 7);
    let digest = fake.add_blob(blob.clone());
    let w = wharf("idle_timeout = \"1s\"", &fake.url()).await;
    let path = format!("/v2/library/big/blobs/{digest}");
    // Cache it.
    let body = common::client()
        .get(w.url(&path))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), blob.len());
    w.settled().await;
    // Ask again and read nothing for a while: the socket buffers fill, the write stalls.
    let mut s = TcpStream::connect(addr_of(&w)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: wharf\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = closed_within(&mut s, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        got.len() < blob.len(),
        "the whole blob was sent to a client that did not read for 4 s ({} bytes)",
        got.len()
    );
}

// === the real binary with a small file table ===

/// `wharf serve --config CONFIG` under `ulimit -n LIMIT`, once it listens.
fn limited(config: &std::path::Path, limit: u32) -> (Served, SocketAddr) {
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" serve --config \"$1\""),
        ])
        .arg(served::BIN)
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    let served = Served::spawn(command);
    let addr = served.addr.parse().unwrap();
    (served, addr)
}

fn limited_config(dir: &std::path::Path, upstream: &str, server: &str) -> std::path::PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[storage]\npath = \"{}\"\n\
             [[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Opens `n` connections from `from` that send nothing, as fast as the kernel accepts them.
async fn idle_flood(from: &str, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(connect_from(from, to).await);
    }
    held
}

#[tokio::test]
async fn an_idle_flood_cannot_fill_the_file_table() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The per-address cap is off: the flood is bounded by max_connections, which wharf fits
    // under its file limit (1024 here), so it never runs out of descriptors.
    let config = limited_config(
        dir.path(),
        &fake.url(),
        "max_connections_per_ip = 0\nheader_read_timeout = \"2s\"",
    );
    let (w, addr) = limited(&config, 1024);
    let flood = idle_flood("127.0.0.1", addr, 1100).await;
    // A client that behaves is served once the flood's first wave times out.
    let started = Instant::now();
    assert_eq!(base_status("127.0.0.2", addr).await, "HTTP/1.1 200 OK");
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(flood);
    // The file table never filled: no accept failures.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = w.log.lock().clone();
    assert!(!log.contains("accept failed"), "{log}");
    assert!(
        log.contains("max_connections is more than the open-file limit"),
        "{log}"
    );
}

#[tokio::test]
async fn an_idle_flood_from_one_address_does_not_delay_others() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = limited_config(dir.path(), &fake.url(), "max_connections_per_ip = 200");
    let (_w, addr) = limited(&config, 1024);
    let flood = idle_flood("127.0.0.1", addr, 1100).await;
    let started = Instant::now();
    assert_eq!(base_status("127.0.0.2", addr).await, "HTTP/1.1 200 OK");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served only after {:?}",
        started.elapsed()
    );
    drop(flood);
}
