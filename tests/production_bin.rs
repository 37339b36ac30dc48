//! The real binary in production: systemd's readiness protocol, SIGHUP reloading the certificate,
//! SIGTERM letting a download finish before exiting 0; and the systemd unit, checked by
//! `systemd-analyze`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake::{self, Fake, Gate};
use common::pki::Ca;
use common::served::Served;
use tokio::net::UnixDatagram;

/// `wharf serve --config CONFIG` with `env`, once it listens.
fn start(config: &Path, env: &[(&str, &Path)]) -> Served {
    let mut command = Served::command(config);
    for (k, v) in env {
        command.env(k, v);
    }
    Served::spawn(command)
}

/// A datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        Notify {
            socket: UnixDatagram::bind(&path).unwrap(),
            path,
        }
    }

    /// The next message (generous deadline).
    async fn next(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), self.socket.recv(&mut buf))
            .await
            .expect("a notification within 30 s")
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }
}

fn base_config(dir: &Path, upstream: &str, server: &str) -> std::path::PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// The leaf certificate a new TLS connection to `addr` is shown (trusting `ca`, no resumption).
async fn presented(ca: &Ca, addr: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_systemd_hears_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("wharf test CA");
    let first = ca.leaf();
    let (cert, key) = first.write(&dir.path().join("tls"), "");
    let config = base_config(
        dir.path(),
        "http://127.0.0.1:9",
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let notify = Notify::bind(dir.path());
    let wharf = start(&config, &[("NOTIFY_SOCKET", &notify.path)]);
    let ready = notify.next().await;
    assert_eq!(ready, format!("READY=1\nSTATUS=serving on {}", wharf.addr));
    assert_eq!(presented(&ca, &wharf.addr).await, first.der);

    let second = ca.leaf();
    second.write(&dir.path().join("tls"), "");
    wharf.signal("HUP");
    assert_eq!(notify.next().await, "RELOADING=1");
    assert_eq!(notify.next().await, ready, "ready again once reloaded");
    assert_eq!(presented(&ca, &wharf.addr).await, second.der);

    wharf.signal("TERM");
    assert!(notify.next().await.starts_with("STOPPING=1\nSTATUS="));
    let (code, log) = wharf.wait().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("what=\"TLS certificate\"") && log.contains("reloaded"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_download_stops_accepting_lets_it_finish_and_exits_0() {
    let up = Fake::start().await;
    const SIZE: usize = 16 << 20;
    let data = fake::random_bytes(SIZE, 77);
    let digest = up.add_blob(data.clone());
    let gate = Gate::new();
    up.knobs()
        .hold
        .insert(digest.clone(), (SIZE / 2, gate.clone()));
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), &up.url(), "shutdown_grace = \"60s\"\n");
    let notify = Notify::bind(dir.path());
    let wharf = start(&config, &[("NOTIFY_SOCKET", &notify.path)]);
    assert!(notify.next().await.starts_with("READY=1"));

    let mut res = common::client()
        .get(format!("http://{}/v2/org/app/blobs/{digest}", wharf.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut got = Vec::with_capacity(SIZE);
    while got.len() < 1 << 20 {
        got.extend_from_slice(&res.chunk().await.unwrap().unwrap());
    }

    wharf.signal("TERM");
    assert!(notify.next().await.starts_with("STOPPING=1"));
    // New connections are refused from now on, while the download is still held half-way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&wharf.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "wharf still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    gate.open();
    while let Some(chunk) = res.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), SIZE);
    assert!(
        got == data[..],
        "the download completed with the right bytes"
    );
    let (code, log) = wharf.wait().await;
    assert_eq!(code, Some(0), "{log}");
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(
        common::files_under(&dir.path().join("data/blobs"), hex).len(),
        1,
        "the blob was committed before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_line_after_sigterm_says_stopped_and_what_the_drain_waited_for() {
    let up = Fake::start().await;
    const SIZE: usize = 4 << 20;
    let gate = Gate::new();
    let mut blobs = Vec::new();
    for seed in [81, 82] {
        let data = fake::random_bytes(SIZE, seed);
        let digest = up.add_blob(data.clone());
        up.knobs()
            .hold
            .insert(digest.clone(), (SIZE / 2, gate.clone()));
        blobs.push((digest, data));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), &up.url(), "shutdown_grace = \"60s\"\n");
    let notify = Notify::bind(dir.path());
    let wharf = start(&config, &[("NOTIFY_SOCKET", &notify.path)]);
    assert!(notify.next().await.starts_with("READY=1"));

    // Two responses in progress, on two connections, each held half-way by the upstream; and an
    // idle keep-alive connection, which the drain does not wait for.
    let idle = common::client();
    let res = idle
        .get(format!("http://{}/v2/", wharf.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    let mut downloads = Vec::new();
    for (digest, _) in &blobs {
        let mut res = common::client()
            .get(format!("http://{}/v2/org/app/blobs/{digest}", wharf.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut got = Vec::with_capacity(SIZE);
        while got.len() < 1 << 20 {
            got.extend_from_slice(&res.chunk().await.unwrap().unwrap());
        }
        downloads.push((res, got));
    }

    wharf.signal("TERM");
    assert!(notify.next().await.starts_with("STOPPING=1"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&wharf.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "wharf still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.open();
    for ((mut res, mut got), (_, data)) in downloads.into_iter().zip(&blobs) {
        while let Some(chunk) = res.chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert!(
            got == data[..],
            "each download completed with the right bytes"
        );
    }

    let (code, log) = wharf.wait().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("waiting for open responses waiting_for=2"),
        "{log}"
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains(" INFO ") && last.contains("stopped drain_ms="),
        "the last line says wharf stopped: {last:?}\n{log}"
    );
    assert!(
        last.contains(" waited_for=2 abandoned=0 fills="),
        "it waited for the two responses and abandoned none: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_version_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "http://127.0.0.1:9", "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[log]\nformat = \"json\"\n");
    std::fs::write(&config, text).unwrap();
    let wharf = start(&config, &[]);
    let res = common::client()
        .get(format!("http://{}/v2/", wharf.addr))
        .header("x-request-id", "json-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "json-test-1");
    wharf.signal("TERM");
    let (code, log) = wharf.wait().await;
    assert_eq!(code, Some(0), "{log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let request = events
        .iter()
        .find(|e| e["message"] == "request")
        .unwrap_or_else(|| panic!("no request line in {log}"));
    assert_eq!(request["id"], "json-test-1");
    assert_eq!(request["path"], "/v2/");
    assert_eq!(request["status"], 200);
    assert_eq!(request["version"], "HTTP/1.1");
    assert!(request["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(request["level"], "INFO");
}

/// `systemd-analyze`, which scripts/test.sh installs (Debian's systemd package) when missing.
fn systemd_analyze(args: &[&str]) -> std::process::Output {
    common::real::require("systemd-analyze");
    Command::new("systemd-analyze").args(args).output().unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = include_str!("../systemd/wharf.service");
    assert!(
        unit.contains("\nExecStart=/usr/local/bin/wharf serve --config /etc/wharf/config.toml\n")
    );
    // verify insists that the binary exists: point it at the one just built.
    let path = dir.path().join("wharf.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/wharf", common::served::BIN),
    )
    .unwrap();
    let unit_arg = path.to_str().unwrap();
    let out = systemd_analyze(&["verify", unit_arg]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // verify exits 0 on unknown keys and bad values too, warning about them: there must be none.
    assert_eq!(said.trim(), "", "systemd-analyze verify warns");

    for key in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=wharf",
        "ConfigurationDirectory=wharf",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "CapabilityBoundingSet=\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }

    // The exposure score (0 best, 10 worst): systemd 252 rates the unit 1.1.
    let out = systemd_analyze(&["security", "--offline=true", unit_arg]);
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for wharf.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(score <= 1.5, "exposure {score}:\n{text}");
}
