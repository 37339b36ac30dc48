//! Reloading the whole configuration on SIGHUP, with the real binary: under load (20 clients in
//! the middle of a 256 MiB blob), an added upstream answers, a changed allow list refuses, an
//! invalid file and a changed listen address are refused and logged while the running
//! configuration keeps working, a removed upstream's download in flight finishes, and not one
//! client sees an error. And `wharf check-config`, which validates a file and touches nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake::{self, Fake, Gate};
use common::served::{Served, BIN};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

const BIG: usize = 256 * 1024 * 1024;
const CLIENTS: usize = 20;

/// A config with `upstreams` (TOML `[[upstream]]` tables) under a fixed `[server]` and
/// `[storage]`.
fn write_config(dir: &Path, listen: &str, upstreams: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    let text = format!(
        "[server]\nlisten = \"{listen}\"\n[storage]\npath = \"{}\"\n{upstreams}",
        dir.join("data").display()
    );
    // Renamed into place: the reload never reads half a file.
    let tmp = dir.join("wharf.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn upstream(name: &str, url: &str, extra: &str) -> String {
    format!("[[upstream]]\nname = \"{name}\"\nurl = \"{url}\"\ninsecure = true\n{extra}\n")
}

/// Waits (up to 30 s) until `needle` is in the log `n` times; the log.
async fn log_has(wharf: &Served, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = wharf.log.lock().clone();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not {n} times in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET `path` on wharf: status and body.
async fn get(client: &reqwest::Client, wharf: &Served, path: &str) -> (u16, bytes::Bytes) {
    let r = client
        .get(format!("http://{}{path}", wharf.addr))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap())
}

fn oci_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration_under_load_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let main = Fake::start().await;
    let big_up = Fake::start().await;
    let second = Fake::start().await;
    let app_blob = main.add_blob(fake::random_bytes(4096, 1));
    let other_blob = main.add_blob(fake::random_bytes(4096, 2));
    let second_blob = second.add_blob(fake::random_bytes(4096, 3));
    let big = fake::random_bytes(BIG, 4);
    let big_digest = big_up.add_blob(big.clone());
    let want = hex::encode(Sha256::digest(&big));
    drop(big);
    // The big blob stops a quarter of the way until every reload is done.
    let gate = Gate::new();
    big_up
        .knobs()
        .hold
        .insert(big_digest.clone(), (BIG / 4, gate.clone()));

    let main_up = upstream(
        "upstream.test",
        &main.url(),
        "default = true\nallow = [\"org/app\", \"org/other\"]",
    );
    // Silent for as long as the test holds it: no timeout, no slow-download cut.
    let big_entry = upstream(
        "big.test",
        &big_up.url(),
        "timeout = \"10m\"\nmin_rate = \"0\"",
    );
    let config = write_config(dir.path(), "127.0.0.1:0", &format!("{main_up}{big_entry}"));
    let wharf = Served::spawn(Served::command(&config));
    let client = common::client();

    // 20 clients in the middle of the big blob, each hashing what it receives.
    let started = Arc::new(AtomicUsize::new(0));
    let mut pulls = Vec::new();
    for _ in 0..CLIENTS {
        let url = format!(
            "http://{}/v2/big.test/org/big/blobs/{big_digest}",
            wharf.addr
        );
        let (client, started) = (client.clone(), started.clone());
        pulls.push(tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            let mut body = response.bytes_stream();
            let mut hash = Sha256::new();
            let mut len = 0usize;
            let mut first = true;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| format!("body error: {e}"))?;
                if first {
                    started.fetch_add(1, Ordering::SeqCst);
                    first = false;
                }
                len += chunk.len();
                hash.update(&chunk);
            }
            Ok::<_, String>((status, len, hex::encode(hash.finalize())))
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while started.load(Ordering::SeqCst) < CLIENTS {
        assert!(Instant::now() < deadline, "the clients did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        big_up.count("GET", &big_digest),
        1,
        "one fill for 20 clients"
    );

    // Before: no such upstream; org/other allowed.
    let second_path = format!("/v2/second.test/org/x/blobs/{second_blob}");
    let other_path = format!("/v2/org/other/blobs/{other_blob}");
    let app_path = format!("/v2/org/app/blobs/{app_blob}");
    assert_ne!(get(&client, &wharf, &second_path).await.0, 200);
    assert_eq!(get(&client, &wharf, &other_path).await.0, 200);

    // (a) An upstream added.
    let second_entry = upstream("second.test", &second.url(), "");
    write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("{main_up}{big_entry}{second_entry}"),
    );
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reloaded", 1).await;
    assert!(log.contains("upstreams added [second.test]"), "{log}");
    let (status, body) = get(&client, &wharf, &second_path).await;
    assert_eq!(status, 200);
    assert_eq!(fake::digest_of(&body), second_blob);

    // (b) The allow list changed: org/other is refused with the OCI error, org/app still served.
    let main_up = upstream(
        "upstream.test",
        &main.url(),
        "default = true\nallow = [\"org/app\"]",
    );
    write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("{main_up}{big_entry}{second_entry}"),
    );
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reloaded", 2).await;
    assert!(log.contains("upstreams changed [upstream.test]"), "{log}");
    let (status, body) = get(&client, &wharf, &other_path).await;
    assert_eq!(status, 403);
    assert_eq!(oci_code(&body), "DENIED");
    assert_eq!(get(&client, &wharf, &app_path).await.0, 200);

    // (c) An invalid file: refused with the line `wharf serve` would print, and nothing changes.
    let mut bad = format!("{main_up}{big_entry}{second_entry}");
    bad.push_str("[cache]\ntag_ttl = \"forever\"\n");
    let bad_config = write_config(dir.path(), "127.0.0.1:0", &bad);
    let refusal = wharf::Config::load(&bad_config).unwrap_err().to_string();
    assert!(refusal.contains("cache.tag_ttl"), "{refusal}");
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reload refused", 1).await;
    assert!(
        log.contains(&refusal),
        "the refusal is logged as is:\n{log}"
    );
    assert_eq!(get(&client, &wharf, &second_path).await.0, 200);
    assert_eq!(get(&client, &wharf, &other_path).await.0, 403);
    assert_eq!(get(&client, &wharf, &app_path).await.0, 200);

    // (d) The big blob's upstream removed while its download is held: new requests for it are
    // refused; the download in flight goes on.
    write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("{main_up}{second_entry}"),
    );
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reloaded", 3).await;
    assert!(log.contains("upstreams removed [big.test]"), "{log}");
    let (status, body) = get(
        &client,
        &wharf,
        &format!("/v2/big.test/org/big/blobs/{big_digest}"),
    )
    .await;
    // big.test is no upstream now: an unknown registry.
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("big.test"));

    // Every client was still waiting; now all of them finish, byte-exact.
    assert_eq!(started.load(Ordering::SeqCst), CLIENTS);
    assert!(pulls.iter().all(|p| !p.is_finished()));
    gate.open();
    for pull in pulls {
        let (status, len, hash) = pull.await.unwrap().unwrap();
        assert_eq!((status, len), (200, BIG));
        assert_eq!(hash, want, "a client's body is not the blob");
    }
    let log = wharf.log.lock().clone();
    assert!(!log.contains("password"), "{log}");
    wharf.signal("TERM");
    let (code, log) = wharf.wait().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listen_address_is_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let up = Fake::start().await;
    let blob = up.add_blob(fake::random_bytes(1000, 7));
    let entry = upstream("upstream.test", &up.url(), "default = true");
    let config = write_config(dir.path(), "127.0.0.1:0", &entry);
    let wharf = Served::spawn(Served::command(&config));
    let client = common::client();
    let path = format!("/v2/org/app/blobs/{blob}");
    assert_eq!(get(&client, &wharf, &path).await.0, 200);

    let port = common::free_port();
    // With a new upstream too: a refused file changes nothing at all.
    let other = upstream("other.test", &up.url(), "");
    write_config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &format!("{entry}{other}"),
    );
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reload refused", 1).await;
    let line = log
        .lines()
        .find(|l| l.contains("configuration reload refused"))
        .unwrap();
    assert!(
        line.contains("server.listen changed") && line.contains("restart wharf"),
        "{line}"
    );
    assert_eq!(get(&client, &wharf, &path).await.0, 200);
    assert_ne!(
        get(
            &client,
            &wharf,
            &format!("/v2/other.test/org/app/blobs/{blob}")
        )
        .await
        .0,
        200
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the refused address"
    );

    // Put back, the next reload goes through.
    write_config(dir.path(), "127.0.0.1:0", &format!("{entry}{other}"));
    wharf.signal("HUP");
    log_has(&wharf, "configuration reloaded", 1).await;
    assert_eq!(
        get(
            &client,
            &wharf,
            &format!("/v2/other.test/org/app/blobs/{blob}")
        )
        .await
        .0,
        200
    );
}

#[test]
fn check_config_validates_a_file_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let entry = upstream("upstream.test", "http://127.0.0.1:9", "default = true");
    let config = write_config(dir.path(), "127.0.0.1:0", &entry);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok\n", config.display())
    );
    assert!(!dir.path().join("data").exists(), "no storage is created");

    // A password file that is missing: the one line `wharf serve` prints, exit 64.
    let entry = upstream(
        "upstream.test",
        "http://127.0.0.1:9",
        &format!(
            "default = true\nusername = \"u\"\npassword_file = \"{}\"",
            dir.path().join("missing").display()
        ),
    );
    let config = write_config(dir.path(), "127.0.0.1:0", &entry);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = wharf::Config::load(&config).unwrap_err().to_string();
    assert_eq!(stderr, format!("wharf: {expected}\n"));
    assert!(stderr.contains("password_file"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!dir.path().join("data").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_changes_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let up = Fake::start().await;
    let blob = up.add_blob(fake::random_bytes(1000, 8));
    let entry = upstream("upstream.test", &up.url(), "default = true");
    // Request lines (wharf::server::log, info) off at first.
    let quiet = format!("{entry}[log]\nlevel = \"info,wharf::server::log=warn\"\n");
    let config = write_config(dir.path(), "127.0.0.1:0", &quiet);
    let mut command = Served::command(&config);
    command.env_remove("RUST_LOG");
    let wharf = Served::spawn(command);
    let client = common::client();
    let path = format!("/v2/org/app/blobs/{blob}");
    let marker = |n: u32| format!("{path}?n={n}");
    assert_eq!(get(&client, &wharf, &marker(1)).await.0, 200);

    write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("{entry}[log]\nlevel = \"info\"\n"),
    );
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reloaded", 1).await;
    assert!(log.contains("keys [log.level]"), "{log}");
    assert_eq!(get(&client, &wharf, &marker(2)).await.0, 200);
    let log = log_has(&wharf, "query=\"n=2\"", 1).await;
    assert!(
        !log.contains("query=\"n=1\""),
        "no request line before the reload:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_sync_entries_added_by_a_reload_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let up = Fake::start().await;
    up.add_image("org/synced", "1", 1, 1000, 9);
    let entry = upstream("upstream.test", &up.url(), "default = true");
    let config = write_config(dir.path(), "127.0.0.1:0", &entry);
    let wharf = Served::spawn(Served::command(&config));
    let pins = || {
        let out = Command::new(BIN)
            .args(["pins", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!pins().contains("org/pinned"));
    assert_eq!(up.count("GET", "/v2/org/synced/manifests/1"), 0);

    write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!(
            "{entry}[[pin]]\nimage = \"upstream.test/org/pinned:1\"\n\
             [[sync]]\nimages = [\"upstream.test/org/synced:1\"]\ninterval = \"1h\"\n"
        ),
    );
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reloaded", 1).await;
    assert!(log.contains("keys [pin, sync]"), "{log}");
    assert!(pins().contains("upstream.test/org/pinned:1"), "{}", pins());
    // The new sync entry runs at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.count("GET", "/v2/org/synced/manifests/1") == 0 {
        assert!(
            Instant::now() < deadline,
            "the sync entry did not run:\n{}",
            wharf.log.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_turned_on_by_a_reload_and_its_file_then_watched() {
    let dir = tempfile::tempdir().unwrap();
    let up = Fake::start().await;
    let blob = up.add_blob(fake::random_bytes(1000, 10));
    let entry = upstream("upstream.test", &up.url(), "default = true");
    let config = write_config(dir.path(), "127.0.0.1:0", &entry);
    let wharf = Served::spawn(Served::command(&config));
    let client = common::client();
    let path = format!("/v2/org/app/blobs/{blob}");
    let url = format!("http://{}{path}", wharf.addr);
    let status = |user: &'static str, pass: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(url)
                .basic_auth(user, Some(pass))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(&client, &wharf, &path).await.0, 200);

    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("pw-one-7c1", 4).unwrap()),
    )
    .unwrap();
    write_config(
        dir.path(),
        "127.0.0.1:0",
        &format!("{entry}[auth]\nhtpasswd = \"{}\"\n", htpasswd.display()),
    );
    wharf.signal("HUP");
    let log = log_has(&wharf, "configuration reloaded", 1).await;
    assert!(log.contains("keys [auth.htpasswd]"), "{log}");
    let (code, body) = get(&client, &wharf, &path).await;
    assert_eq!(code, 401);
    assert_eq!(oci_code(&body), "UNAUTHORIZED");
    assert_eq!(status("alice", "pw-one-7c1").await, 200);

    // The new file is watched like the one named at start: a new password without a SIGHUP.
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("pw-two-7c1", 4).unwrap()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("alice", "pw-two-7c1").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the htpasswd file was not reloaded:\n{}",
            wharf.log.lock()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = wharf.log.lock().clone();
    assert!(
        !log.contains("pw-one-7c1") && !log.contains("pw-two-7c1"),
        "{log}"
    );
}
