//! Running wharf in production, in process: HTTPS (HTTP/2 and HTTP/1.1 by ALPN) and certificate
//! reload, client Basic auth and allow lists, request ids, `/metrics` counted exactly, `/healthz`
//! and `/readyz`. The real binary (signals, systemd notification, graceful shutdown) is in
//! `tests/production_bin.rs`; real registries and skopeo in `tests/e2e_production.rs`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake::{self, Fake, Gate};
use common::pki::Ca;
use common::real::{capture_logs, captured_logs};
use common::{config_text, Up, Wharf};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn up(url: String, extra: &str) -> Vec<Up<'_>> {
    vec![Up {
        name: "upstream.test",
        url,
        default: true,
        extra,
    }]
}

/// Config text for a wharf in `dir` with `server` keys added to `[server]` and `tail` appended.
fn text(dir: &Path, upstream: &str, extra: &str, server: &str, tail: &str) -> String {
    let base = config_text(dir, "5m", &up(upstream.to_owned(), extra));
    let base = base.replacen(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{server}"),
        1,
    );
    format!("{base}{tail}")
}

fn client_trusting(ca: &Ca) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
}

async fn error_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    (
        status,
        body["errors"][0]["code"].as_str().unwrap_or("").to_owned(),
    )
}

// === TLS ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1_by_alpn() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 300_000, 7);
    let ca = Ca::new("wharf test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf().write(&dir.path().join("tls"), "");
    let server = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let text = text(dir.path(), &fake.url(), "", &server, "");
    let w = Wharf::start_text(dir, &text).await;
    assert!(w.base.starts_with("https://127.0.0.1:"), "{}", w.base);

    // A client that connects and never starts its handshake holds up nobody else.
    let addr = w.running.as_ref().unwrap().local_addr();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    let manifest = w.url("/v2/org/app/manifests/1");
    let blob = w.url(&format!("/v2/org/app/blobs/{}", img.layers[0]));
    let blob_bytes = fake.state.blobs.lock()[&img.layers[0]].clone();
    for (client, version) in [
        (client_trusting(&ca).build().unwrap(), http::Version::HTTP_2),
        (
            client_trusting(&ca).http1_only().build().unwrap(),
            http::Version::HTTP_11,
        ),
    ] {
        let res = client.get(&manifest).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), version);
        assert_eq!(res.bytes().await.unwrap(), img.manifest);
        let res = client.get(&blob).send().await.unwrap();
        assert_eq!((res.status().as_u16(), res.version()), (200, version));
        assert_eq!(res.bytes().await.unwrap(), blob_bytes);
        w.settled().await;
    }

    // A client that does not trust the CA is refused at the handshake; plain HTTP gets no answer.
    let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(untrusting.get(&manifest).send().await.is_err());
    let plain = w.base.replace("https://", "http://");
    let res = common::client().get(format!("{plain}/v2/")).send().await;
    assert!(res.as_ref().map_or(true, |r| r.status() != 200), "{res:?}");
}

/// A TLS client that trusts `cas`, offering HTTP/1.1 only, without session resumption.
fn tls_connector(cas: &[&Ca]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.cert.der().clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A resumed session would not show the certificate again: every connection does a full
    // handshake.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(connector: &tokio_rustls::TlsConnector, addr: SocketAddr) -> TlsStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn presented(stream: &TlsStream) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// `GET /v2/` on an open HTTP/1.1 connection; the status.
async fn get_base(stream: &mut TlsStream) -> u16 {
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        // The body of /v2/ is "{}".
        if let Some(end) = text.find("\r\n\r\n") {
            if got.len() >= end + 4 + 2 {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_open_connections_and_serves_the_new_one_to_new_connections() {
    let ca = Ca::new("wharf test CA");
    let first = ca.leaf();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let (cert, key) = first.write(&tls, "");
    let server = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let text = text(dir.path(), "http://127.0.0.1:9", "", &server, "");
    let w = Wharf::start_text(dir, &text).await;
    let running = w.running.as_ref().unwrap();
    let addr = running.local_addr();
    let connector = tls_connector(&[&ca]);

    let mut open = tls_connect(&connector, addr).await;
    assert_eq!(presented(&open), first.der);
    assert_eq!(get_base(&mut open).await, 200);

    // Renewed: a new key and certificate from the same CA.
    let second = ca.leaf();
    second.write(&tls, "");
    let outcomes = running.reload().await;
    assert_eq!(
        outcomes,
        [wharf::reload::Outcome::Reloaded("TLS certificate")]
    );
    let fresh = tls_connect(&connector, addr).await;
    assert_eq!(
        presented(&fresh),
        second.der,
        "a new connection gets the new certificate"
    );
    assert_eq!(
        get_base(&mut open).await,
        200,
        "the connection made before the reload still works"
    );
    assert_eq!(presented(&open), first.der);

    // A broken renewal (a certificate without its key) is refused and the last good pair stays.
    let third = ca.leaf();
    std::fs::write(&cert, &third.cert_pem).unwrap();
    let outcomes = running.reload().await;
    assert!(
        matches!(&outcomes[..], [wharf::reload::Outcome::Failed("TLS certificate", e)] if e.contains("does not match")),
        "{outcomes:?}"
    );
    let mut after = tls_connect(&connector, addr).await;
    assert_eq!(presented(&after), second.der);
    assert_eq!(get_base(&mut after).await, 200);
}

// === Client access control ===

fn htpasswd(dir: &Path, entries: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let text: String = entries
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_refuses_missing_and_wrong_credentials_and_logs_no_password() {
    capture_logs();
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 1000, 3);
    let files = tempfile::tempdir().unwrap();
    let file = htpasswd(files.path(), &[("alice", "pw-alice-71"), ("bob", "pw-bob")]);
    let dir = tempfile::tempdir().unwrap();
    let tail = format!("[auth]\nhtpasswd = \"{}\"\n", file.display());
    let text = text(dir.path(), &fake.url(), "", "", &tail);
    let w = Wharf::start_text(dir, &text).await;
    let c = common::client();
    let manifest = w.url("/v2/org/app/manifests/1");

    for url in [w.url("/v2/"), manifest.clone()] {
        let res = c.get(&url).send().await.unwrap();
        assert_eq!(
            res.headers()["www-authenticate"],
            "Basic realm=\"wharf\"",
            "{url}"
        );
        assert_eq!(error_code(res).await, (401, "UNAUTHORIZED".into()), "{url}");
    }
    for (user, pass) in [
        ("alice", "wrong-pw-99"),
        ("mallory", "pw-alice-71"),
        ("alice", ""),
    ] {
        let res = c
            .get(&manifest)
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"wharf\"");
        assert_eq!(
            error_code(res).await,
            (401, "UNAUTHORIZED".into()),
            "{user}"
        );
    }
    assert_eq!(fake.total(), 0, "refused requests never reach the upstream");

    // The right password, many times (one bcrypt check, then remembered).
    for _ in 0..5 {
        let res = c
            .get(&manifest)
            .basic_auth("alice", Some("pw-alice-71"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), img.manifest);
    }
    let res = c
        .get(w.url(&format!("/v2/org/app/blobs/{}", img.config)))
        .basic_auth("bob", Some("pw-bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The failed attempts are in the log with the client and the user, the passwords are not.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = captured_logs();
        if logs.contains("client authentication failed") && logs.contains("\"mallory\"") {
            let line = logs
                .lines()
                .find(|l| l.contains("client authentication failed") && l.contains("alice"))
                .expect("alice's failed attempt is logged");
            assert!(line.contains("client=127.0.0.1"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure line in:\n{logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = captured_logs();
    for secret in ["wrong-pw-99", "pw-alice-71", "cHctYWxpY2UtNzE"] {
        assert!(!logs.contains(secret), "{secret} is in the log");
    }

    // A changed password takes effect at the reload, although the old one was remembered.
    htpasswd(files.path(), &[("alice", "new-pw"), ("bob", "pw-bob")]);
    let outcomes = w.running.as_ref().unwrap().reload().await;
    assert_eq!(outcomes, [wharf::reload::Outcome::Reloaded("htpasswd")]);
    let status = |user: &'static str, pass: &'static str| {
        let req = c.get(&manifest).basic_auth(user, Some(pass));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("alice", "pw-alice-71").await, 401);
    assert_eq!(status("alice", "new-pw").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_deny_other_repositories_without_asking_the_upstream() {
    let fake = Fake::start().await;
    let allowed = fake.add_image("org/app", "1", 1, 1000, 1);
    let secret = fake.add_image("other/secret", "1", 1, 1000, 2);
    let dir = tempfile::tempdir().unwrap();
    let text = text(
        dir.path(),
        &fake.url(),
        "allow = [\"org/app\", \"team/**\"]",
        "",
        "",
    );
    let w = Wharf::start_text(dir, &text).await;
    let c = common::client();
    for path in [
        "/v2/other/secret/manifests/1".to_owned(),
        format!("/v2/other/secret/manifests/{}", secret.manifest_digest),
        format!("/v2/other/secret/blobs/{}", secret.layers[0]),
        // Content addressed, and allowed under org/app: still not through another name.
        format!("/v2/other/secret/blobs/{}", allowed.layers[0]),
        "/v2/other/secret/tags/list".to_owned(),
        format!("/v2/other/secret/referrers/{}", secret.manifest_digest),
        "/v2/upstream.test/other/secret/manifests/1".to_owned(),
        "/v2/org/app2/manifests/1".to_owned(),
        "/v2/team/manifests/1".to_owned(),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let res = c
                .request(method.clone(), w.url(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{method} {path}");
            if method == reqwest::Method::GET {
                assert_eq!(error_code(res).await, (403, "DENIED".into()), "{path}");
            }
        }
    }
    assert_eq!(
        fake.connections(),
        0,
        "denied requests never reach the upstream"
    );

    let res = c
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), allowed.manifest);
    let res = c
        .get(w.url("/v2/team/x/y/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res).await,
        (404, "MANIFEST_UNKNOWN".into()),
        "allowed by team/**, and asked of the upstream, which does not have it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_made() {
    let w = Wharf::with_upstream("http://127.0.0.1:9").await;
    let c = common::client();
    let res = c
        .get(w.url("/v2/"))
        .header("x-request-id", "lb-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "lb-1234");
    let mut seen = std::collections::HashSet::new();
    for bad in ["", "has space", &"x".repeat(200)] {
        let res = c
            .get(w.url("/v2/nope/x/manifests/%"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 16, "{id}");
        assert!(seen.insert(id));
    }
}

// === Metrics and health ===

/// Scrapes `/metrics` and parses it with an independent Prometheus text parser.
async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let res = common::client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = res.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `name` whose labels include `labels` (exactly one must match), or 0.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?}: {matching:?}");
    matching.first().map_or(0.0, |s| match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: not a scalar: {other:?}"),
    })
}

fn total(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Scrapes until `wharf_http_requests_total` adds up to `n`: a request is counted when its
/// response body is dropped, which can be a moment after the client read its last byte.
async fn scrape_after(addr: SocketAddr, n: f64) -> prometheus_parse::Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(addr).await;
        let counted = total(&s, "wharf_http_requests_total");
        if counted == n {
            return s;
        }
        assert!(counted < n, "counted {counted} requests, expected {n}");
        assert!(
            Instant::now() < deadline,
            "only {counted} of {n} requests counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_of_pulls_exactly() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 100_000, 11);
    fake.knobs().rate_limit = Some((100, 76));
    let held = fake.add_blob(fake::random_bytes(1 << 20, 12));
    let gate = Gate::new();
    fake.knobs()
        .hold
        .insert(held.clone(), (512 * 1024, gate.clone()));
    let dir = tempfile::tempdir().unwrap();
    let text = text(
        dir.path(),
        &fake.url(),
        "",
        "",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let w = Wharf::start_text(dir, &text).await;
    let admin = w.running.as_ref().unwrap().metrics_addr().unwrap();
    let c = common::client();
    let get = |path: String| {
        let req = c.get(w.url(&path));
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.bytes().await.unwrap().len() as f64)
        }
    };
    let manifest_len = img.manifest.len() as f64;
    let layer_len = 100_000.0;

    assert_eq!(
        get("/v2/org/app/manifests/1".into()).await,
        (200, manifest_len)
    ); // miss
    assert_eq!(
        get("/v2/org/app/manifests/1".into()).await,
        (200, manifest_len)
    ); // hit
    let layer = format!("/v2/org/app/blobs/{}", img.layers[0]);
    assert_eq!(get(layer.clone()).await, (200, layer_len)); // miss
    w.settled().await;
    assert_eq!(get(layer).await, (200, layer_len)); // hit
    let missing = fake::digest_of(b"not there");
    let (status, not_found_len) = get(format!("/v2/org/app/blobs/{missing}")).await;
    assert_eq!(status, 404);
    let res = c
        .head(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200); // hit

    // Two clients on one held download: a miss and a coalesced follower, one fill in flight.
    let held_url = w.url(&format!("/v2/org/app/blobs/{held}"));
    let leader = c.get(&held_url).send().await.unwrap();
    let follower = c.get(&held_url).send().await.unwrap();
    assert_eq!(
        (
            leader.headers()["x-cache"].to_str().unwrap(),
            follower.headers()["x-cache"].to_str().unwrap()
        ),
        ("miss", "coalesced")
    );
    let s = scrape_after(admin, 6.0).await;
    assert_eq!(value(&s, "wharf_fills_in_flight", &[]), 1.0);
    gate.open();
    let (a, b) = (
        leader.bytes().await.unwrap(),
        follower.bytes().await.unwrap(),
    );
    assert_eq!((a.len(), b.len()), (1 << 20, 1 << 20));
    w.settled().await;

    let s = scrape_after(admin, 8.0).await;
    let req = |route: &str, method: &str, status: &str, cache: &str| {
        value(
            &s,
            "wharf_http_requests_total",
            &[
                ("route", route),
                ("method", method),
                ("status", status),
                ("cache", cache),
            ],
        )
    };
    assert_eq!(req("manifest", "GET", "200", "miss"), 1.0);
    assert_eq!(req("manifest", "GET", "200", "hit"), 1.0);
    assert_eq!(req("manifest", "HEAD", "200", "hit"), 1.0);
    assert_eq!(req("blob", "GET", "200", "miss"), 2.0);
    assert_eq!(req("blob", "GET", "200", "hit"), 1.0);
    assert_eq!(req("blob", "GET", "200", "coalesced"), 1.0);
    assert_eq!(req("blob", "GET", "404", "none"), 1.0);
    let bytes = |cache: &str| value(&s, "wharf_http_response_bytes_total", &[("cache", cache)]);
    let held_len = f64::from(1u32 << 20);
    assert_eq!(bytes("miss"), manifest_len + layer_len + held_len);
    assert_eq!(bytes("hit"), manifest_len + layer_len);
    assert_eq!(bytes("coalesced"), held_len);
    assert_eq!(bytes("none"), not_found_len);
    assert_eq!(value(&s, "wharf_coalesced_requests_total", &[]), 1.0);
    assert_eq!(value(&s, "wharf_fills_in_flight", &[]), 0.0);
    assert_eq!(value(&s, "wharf_client_auth_failures_total", &[]), 0.0);

    // Upstream: the manifest, the layer, the held blob (200) and the missing blob (404), as the
    // fake saw them.
    assert_eq!(fake.total(), 4, "{:?}", fake.seen());
    let upstream = |status: &str| {
        value(
            &s,
            "wharf_upstream_requests_total",
            &[
                ("upstream", "upstream.test"),
                ("method", "GET"),
                ("status", status),
            ],
        )
    };
    assert_eq!(upstream("200"), 3.0);
    assert_eq!(upstream("404"), 1.0);
    assert_eq!(
        value(
            &s,
            "wharf_upstream_request_duration_seconds_count",
            &[("upstream", "upstream.test"), ("method", "GET")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &s,
            "wharf_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let limit = |name: &str| value(&s, name, &[("upstream", "upstream.test")]);
    assert_eq!(limit("wharf_upstream_rate_limit_remaining"), 76.0);
    assert_eq!(limit("wharf_upstream_rate_limit_limit"), 100.0);

    // The cache holds the manifest, the layer and the held blob; nothing was evicted.
    assert_eq!(value(&s, "wharf_cache_entries", &[]), 3.0);
    assert_eq!(
        value(&s, "wharf_cache_bytes", &[]),
        manifest_len + layer_len + held_len
    );
    assert_eq!(value(&s, "wharf_evictions_total", &[]), 0.0);
    assert_eq!(value(&s, "wharf_storage_paused", &[]), 0.0);
    assert_eq!(value(&s, "wharf_storage_failures_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let text = text(
        dir.path(),
        "http://127.0.0.1:9",
        "",
        "",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let storage = dir.path().to_owned();
    let w = Wharf::start_text(dir, &text).await;
    let admin = w.running.as_ref().unwrap().metrics_addr().unwrap();
    let c = common::client();
    let get = |path: &str| {
        let req = c.get(format!("http://{admin}{path}"));
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(get("/nope").await.0, 404);

    // Storage that cannot take a new file: not ready, with the reason; ready again once repaired.
    let tmp = storage.join("tmp");
    std::fs::rename(&tmp, storage.join("tmp.away")).unwrap();
    std::fs::write(&tmp, b"a file where the staging directory was").unwrap();
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: storage is not writable"),
        "{body}"
    );
    assert_eq!(get("/healthz").await.0, 200, "alive all the same");
    std::fs::remove_file(&tmp).unwrap();
    std::fs::rename(storage.join("tmp.away"), &tmp).unwrap();
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));

    // The public port serves none of these.
    let res = c.get(w.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}
