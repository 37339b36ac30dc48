//! Hostile clients and hostile bundles: password floods (from one address, and against one user
//! from many), a bundle whose `fetchedAt` lies in the future, tar sizes near 2^64, and the modes
//! of what wharf creates under its storage when started with a umask of 0.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::fake::Fake;
use common::{Up, Wharf};
use futures_util::StreamExt;

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

// === password floods ===

/// An htpasswd file with bcrypt hashes of `cost`.
fn htpasswd(dir: &Path, entries: &[(&str, &str)], cost: u32) -> PathBuf {
    let path = dir.join("htpasswd");
    let text: String = entries
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, cost).unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

async fn with_auth(fake: &Fake, htpasswd: &Path) -> Wharf {
    let dir = tempfile::tempdir().unwrap();
    let mut text = common::config_text(
        dir.path(),
        "5m",
        &[Up {
            name: "upstream.test",
            url: fake.url(),
            default: true,
            extra: "",
        }],
    );
    text.push_str(&format!("[auth]\nhtpasswd = \"{}\"\n", htpasswd.display()));
    Wharf::start_text(dir, &text).await
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works on loopback).
fn from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Status, `Retry-After` and OCI error code of a GET with Basic credentials.
async fn login(
    c: &reqwest::Client,
    url: &str,
    user: &str,
    pass: &str,
) -> (u16, Option<u64>, String) {
    let res = c
        .get(url)
        .basic_auth(user, Some(pass))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body: serde_json::Value =
        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or_default();
    let code = body["errors"][0]["code"].as_str().unwrap_or("").to_owned();
    (status, retry_after, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_is_backed_off_and_a_real_login_elsewhere_stays_fast() {
    let fake = Fake::start().await;
    let files = tempfile::tempdir().unwrap();
    // Cost 10: a check takes tens of milliseconds, so checks that queue show.
    let file = htpasswd(
        files.path(),
        &[
            ("alice", "alice-pw-1"),
            ("bob", "bob-pw-2"),
            ("admin", "admin-pw-3"),
        ],
        10,
    );
    let w = with_auth(&fake, &file).await;
    let base = w.url("/v2/");

    // The baseline: a first login with nothing else going on.
    let started = Instant::now();
    let (status, ..) = login(&from("127.0.0.3"), &base, "bob", "bob-pw-2").await;
    assert_eq!(status, 200);
    let baseline = started.elapsed();

    // 300 wrong passwords from one address, 20 at a time.
    let answered = Arc::new(AtomicUsize::new(0));
    let flood = tokio::spawn({
        let attacker = from("127.0.0.2");
        let base = base.clone();
        let answered = answered.clone();
        async move {
            futures_util::stream::iter(0..300)
                .map(|i| {
                    let (attacker, base, answered) =
                        (attacker.clone(), base.clone(), answered.clone());
                    async move {
                        let r = login(&attacker, &base, "admin", &format!("guess-{i}")).await;
                        answered.fetch_add(1, Ordering::Relaxed);
                        r
                    }
                })
                .buffer_unordered(20)
                .collect::<Vec<_>>()
                .await
        }
    });
    // In the middle of it, a real user's first login from another address.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the flood got no answers");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    let (status, ..) = login(&from("127.0.0.4"), &base, "alice", "alice-pw-1").await;
    let during = started.elapsed();
    let results = flood.await.unwrap();

    assert_eq!(status, 200, "the real user gets in");
    // 401: the password was checked (bcrypt ran); 429: refused without a check.
    let checked = results.iter().filter(|r| r.0 == 401).count();
    let throttled: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(checked + throttled.len(), 300, "{results:?}");
    // Five free failures, then one check per back-off period (1 s, 2 s, 4 s, ...).
    assert!(
        (5..=12).contains(&checked),
        "{checked} of 300 guesses were checked"
    );
    for (_, retry_after, code) in &throttled {
        assert_eq!(code, "TOOMANYREQUESTS");
        assert!(
            retry_after.is_some_and(|s| (1..=300).contains(&s)),
            "{retry_after:?}"
        );
    }
    eprintln!(
        "{checked} of 300 checked; first login {during:?} during the flood, {baseline:?} without"
    );
    assert!(
        during <= baseline * 2 + Duration::from_millis(1500),
        "a first login took {during:?} during the flood, {baseline:?} without"
    );
    // The backed-off address stays backed off, even with the right password of another user.
    let (status, retry_after, _) = login(&from("127.0.0.2"), &base, "bob", "bob-pw-2").await;
    assert_eq!((status, retry_after.is_some()), (429, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_guessed_from_many_addresses_is_backed_off_and_other_users_are_not() {
    let fake = Fake::start().await;
    let files = tempfile::tempdir().unwrap();
    let file = htpasswd(
        files.path(),
        &[("carol", "carol-pw"), ("dave", "dave-pw")],
        4,
    );
    let w = with_auth(&fake, &file).await;
    let base = w.url("/v2/");
    for i in 1..=5 {
        let (status, ..) = login(&from(&format!("127.0.1.{i}")), &base, "carol", "nope").await;
        assert_eq!(status, 401, "attempt {i}: free");
    }
    // From a sixth address, never seen before: carol is backed off, checked or not.
    for pass in ["nope", "carol-pw"] {
        let (status, retry_after, code) = login(&from("127.0.1.6"), &base, "carol", pass).await;
        assert_eq!((status, code.as_str()), (429, "TOOMANYREQUESTS"), "{pass}");
        assert!(retry_after.is_some_and(|s| s >= 1));
    }
    // Another user from yet another address is checked as usual.
    assert_eq!(
        login(&from("127.0.1.7"), &base, "dave", "nope").await.0,
        401
    );
    assert_eq!(
        login(&from("127.0.1.8"), &base, "dave", "dave-pw").await.0,
        200
    );
}

#[test]
fn the_back_off_records_stay_bounded_under_a_flood_of_names_and_addresses() {
    use wharf::access::throttle::{addr_key, Before, Throttle};
    use wharf::limits::{AUTH_FREE_FAILURES, AUTH_TRACKED_ADDRESSES, AUTH_TRACKED_USERS};
    let t = Arc::new(Throttle::default());
    let now = std::time::Instant::now();
    let guesser = addr_key(Some("192.0.2.1".parse().unwrap()));
    for _ in 0..AUTH_FREE_FAILURES {
        t.admit(guesser, "alice", now)
            .unwrap()
            .finish(false, guesser, now);
    }
    // Three times as many distinct addresses (IPv6, each its own /64) and names as are tracked.
    for i in 0..3 * AUTH_TRACKED_ADDRESSES.max(AUTH_TRACKED_USERS) as u64 {
        let ip: IpAddr =
            std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 64)).into();
        let addr = addr_key(Some(ip));
        if let Ok(ticket) = t.admit(addr, &format!("user-{i}"), now) {
            ticket.finish(false, addr, now);
        }
        t.failed_unchecked(addr, now);
    }
    let (addresses, users, trusted) = t.tracked();
    assert!(addresses <= AUTH_TRACKED_ADDRESSES, "{addresses}");
    assert!(users <= AUTH_TRACKED_USERS, "{users}");
    assert_eq!(trusted, 0);
    // The flood did not push out alice's record: she is still backed off for untrusted addresses.
    let elsewhere = addr_key(Some("198.51.100.7".parse().unwrap()));
    assert!(matches!(
        t.before(elsewhere, "alice", false, now),
        Before::Wait(_)
    ));
}

// === bundles ===

/// A configuration with one upstream, `upstream.test`, storage in `dir/data`.
fn write_config(dir: &Path, url: &str, upstream_extra: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{url}\"\ninsecure = true\n{upstream_extra}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Runs the binary (in a shell with `umask`): exit code and stderr.
async fn run(umask: &str, args: &[&str], config: &Path) -> (i32, String) {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Prefetches `org/app:1` from `fake` into a new store and exports it to `out`.
async fn bundle_of(fake: &Fake, out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake.url(), "");
    let (code, err) = run("022", &["prefetch", "upstream.test/org/app:1"], &config).await;
    assert_eq!(code, 0, "{err}");
    let (code, err) = run(
        "022",
        &[
            "export",
            "--out",
            out.to_str().unwrap(),
            "upstream.test/org/app:1",
        ],
        &config,
    )
    .await;
    assert_eq!(code, 0, "{err}");
}

/// The tag `org/app:1` in the store under `data`: its digest and when it was confirmed.
fn tag_of(data: &Path) -> (String, SystemTime) {
    use wharf::store::MetaStore as _;
    let index = wharf::cache::Index::open(&data.join("index")).unwrap();
    let tags = index.all_tags().unwrap();
    assert_eq!(tags.len(), 1, "one tag");
    let entry = &tags[0].3;
    (entry.digest.to_string(), entry.fetched_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_from_the_future_is_clamped_to_the_import_and_does_not_keep_later_ones_out() {
    let files = tempfile::tempdir().unwrap();
    let old = Fake::start().await;
    let old_img = old.add_image("org/app", "1", 1, 1000, 1);
    let a = files.path().join("a.tar");
    bundle_of(&old, &a).await;
    // Rewrite wharf-bundle.json's fetchedAt (it lists the other files' digests, not its own).
    let mut archive = tar::Archive::new(std::fs::File::open(&a).unwrap());
    let mut entries: Vec<(tar::Header, Vec<u8>)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (e.header().clone(), data)
        })
        .collect();
    let (header, json) = entries
        .iter_mut()
        .find(|(h, _)| h.path().unwrap().to_str() == Some("wharf-bundle.json"))
        .unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(json).unwrap();
    assert!(doc["images"][0]["fetchedAt"].is_string(), "{doc}");
    doc["images"][0]["fetchedAt"] = "2100-01-01T00:00:00Z".into();
    *json = serde_json::to_vec(&doc).unwrap();
    header.set_size(json.len() as u64);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    for (h, data) in &entries {
        builder.append(h, &data[..]).unwrap();
    }
    std::fs::write(&a, builder.into_inner().unwrap()).unwrap();

    let airgap = tempfile::tempdir().unwrap();
    let nowhere = Fake::start().await;
    let config = write_config(airgap.path(), &nowhere.url(), "offline = true");
    let (code, err) = run("022", &["import", a.to_str().unwrap()], &config).await;
    assert_eq!(code, 0, "{err}");
    let data = airgap.path().join("data");
    let (digest, fetched_at) = tag_of(&data);
    assert_eq!(digest, old_img.manifest_digest);
    assert!(
        fetched_at <= SystemTime::now(),
        "the tag was confirmed in the future: {fetched_at:?}"
    );

    // A bundle made after that import, with the tag moved on, is newer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let new = Fake::start().await;
    let new_img = new.add_image("org/app", "1", 1, 1000, 2);
    let b = files.path().join("b.tar");
    bundle_of(&new, &b).await;
    let (code, err) = run("022", &["import", b.to_str().unwrap()], &config).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(tag_of(&data).0, new_img.manifest_digest);
}

/// A tar of one pax header claiming `pax_size` (if any) and a file header of `size`, then data
/// and the end marker.
fn huge_tar(pax_size: Option<u64>, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let header = |name: &str, size: u64, kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        h
    };
    if let Some(size) = pax_size {
        let body = format!(" size={size}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        let record = format!("{len}{body}");
        assert_eq!(
            record.len(),
            record.split(' ').next().unwrap().parse::<usize>().unwrap()
        );
        out.extend_from_slice(
            header(
                "PaxHeaders/big",
                record.len() as u64,
                tar::EntryType::XHeader,
            )
            .as_bytes(),
        );
        out.extend_from_slice(record.as_bytes());
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(header("big", size, tar::EntryType::Regular).as_bytes());
    out.extend_from_slice(&[7u8; 4096]);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[tokio::test]
async fn tar_sizes_near_2_pow_64_are_an_error_not_a_panic() {
    for (pax, size) in [
        (Some(u64::MAX), 0),
        (Some(u64::MAX - 100), 0),
        (None, u64::MAX),
        (None, u64::MAX - 510),
    ] {
        let bytes = huge_tar(pax, size);
        // Read the archive as an import does (every chunk of every entry), and skipping the data.
        for read_data in [true, false] {
            let mut reader = wharf::airgap::tar::Reader::new(&bytes[..]);
            let result = async {
                while let Some(_entry) = reader.next().await? {
                    while read_data && !reader.chunk(64 * 1024).await?.is_empty() {}
                }
                Ok::<_, wharf::airgap::tar::TarError>(())
            }
            .await;
            let err = result.expect_err("a size near 2^64 is refused").to_string();
            assert!(err.contains("big"), "{pax:?} {size} {read_data}: {err}");
        }
    }
    assert_eq!(wharf::airgap::tar::padded(u64::MAX), None);
    assert_eq!(wharf::airgap::tar::padded(u64::MAX - 510), None);
    assert_eq!(
        wharf::airgap::tar::padded(u64::MAX - 511),
        Some(u64::MAX - 511)
    );
}

// === file modes ===

/// Every path under `dir` with its mode bits, recursively.
fn modes(dir: &Path) -> Vec<(PathBuf, u32, std::fs::FileType)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.push((
                e.path(),
                meta.permissions().mode() & 0o777,
                meta.file_type(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_files_are_0600_and_directories_0700_with_a_umask_of_0() {
    use std::os::unix::fs::PermissionsExt;
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 2, 50_000, 5);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake.url(), "");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 0 && exec \"$0\" serve --config \"$1\"")
        .arg(BIN)
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    let addr = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("wharf exited").unwrap();
            if let Some(i) = line.find("wharf is listening addr=") {
                break line[i + 24..].split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining, so wharf never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        addr
    })
    .await
    .unwrap();
    let c = common::client();
    let get = |path: String| {
        let c = c.clone();
        let url = format!("http://{addr}{path}");
        async move {
            let res = c.get(url).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap()
        }
    };
    assert_eq!(
        get("/v2/upstream.test/org/app/manifests/1".into()).await,
        img.manifest
    );
    for digest in std::iter::once(&img.config).chain(&img.layers) {
        get(format!("/v2/upstream.test/org/app/blobs/{digest}")).await;
    }
    // An export by the command (a process of its own, with the same umask).
    let bundle = dir.path().join("out").join("app.tar");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let data = dir.path().join("data");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, err) = run(
            "0",
            &[
                "export",
                "--out",
                bundle.to_str().unwrap(),
                "upstream.test/org/app:1",
            ],
            &config,
        )
        .await;
        if code == 0 {
            break;
        }
        // The last blob may still be committing.
        assert!(Instant::now() < deadline, "export failed: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(child);

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&bundle), 0o600, "the exported bundle");
    assert_eq!(mode(&data), 0o700, "the storage directory wharf made");
    let all = modes(&data);
    let blobs = all
        .iter()
        .filter(|(p, _, t)| t.is_file() && p.starts_with(data.join("blobs")))
        .count();
    assert_eq!(blobs, 4, "manifest, config and two layers: {all:?}");
    assert!(all.iter().any(|(p, ..)| p.ends_with("index")));
    for (path, mode, kind) in &all {
        // sled's own files take the umask; its directory keeps them from others.
        if path.starts_with(data.join("index")) && path != &data.join("index") {
            continue;
        }
        let want = if kind.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", path.display());
    }
}
