//! The status report (`/status.json` on the admin listener, `wharf status` over the control
//! socket) after a known sequence of pulls, checked exactly as `tests/production.rs` checks the
//! metrics: misses then hits, a fill in flight held half-way with two clients, an eviction under a
//! small `max_size`, a 429 from the upstream; then the real binary's `wharf status --json` and
//! tables against the same wharf, and its one-line error when no wharf runs.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fake::{self, Fake, Gate};
use common::Wharf;
use wharf::status::report::{Counts, StatusReport, TopEntry};

const MIB: u64 = 1024 * 1024;

fn config(dir: &Path, upstream: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\nmax_size = \"4MiB\"\nhigh_watermark = 75\nlow_watermark = 50\n[metrics]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n",
        dir.display()
    )
}

async fn status(admin: SocketAddr) -> StatusReport {
    let res = common::client()
        .get(format!("http://{admin}/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

/// Asks until `done` holds of the report (a request is recorded when its response body is
/// dropped, which can be a moment after the client read its last byte).
async fn status_when(
    admin: SocketAddr,
    what: &str,
    done: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(admin).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn requests(s: &StatusReport) -> u64 {
    s.value.total.hits + s.value.total.misses
}

fn sum(points: &[Counts]) -> Counts {
    points.iter().fold(Counts::default(), |a, p| Counts {
        hits: a.hits + p.hits,
        misses: a.misses + p.misses,
        hit_bytes: a.hit_bytes + p.hit_bytes,
        miss_bytes: a.miss_bytes + p.miss_bytes,
    })
}

/// What may differ between two reports of the same state made a moment apart: the time, the
/// back-off left, the free space (other processes write to the disk), and where the charts' steps
/// fall (their sums stay).
fn settled(mut s: StatusReport) -> StatusReport {
    s.now = 0;
    s.cache.free_bytes = s.cache.free_bytes.map(|_| 0);
    for u in &mut s.upstreams {
        u.backoff_seconds = u.backoff_seconds.map(|_| 0);
    }
    for series in [&mut s.value.hour, &mut s.value.day] {
        series.end = 0;
        series.points = vec![sum(&series.points)];
    }
    s
}

fn wharf_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_known_sequence_of_pulls_exactly() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 100_000, 21);
    fake.knobs().rate_limit = Some((100, 76));
    let held = fake.add_blob(fake::random_bytes(1 << 20, 22));
    let gate = Gate::new();
    fake.knobs()
        .hold
        .insert(held.clone(), (512 * 1024, gate.clone()));
    let big: Vec<String> = (0..2)
        .map(|i| fake.add_blob(fake::random_bytes(1 << 20, 30 + i)))
        .collect();
    let limited = fake.add_blob(fake::random_bytes(10, 40));
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &fake.url());
    let config_file = dir.path().join("wharf.toml");
    std::fs::write(&config_file, &text).unwrap();
    let w = Wharf::start_text(dir, &text).await;
    let admin = w.running.as_ref().unwrap().metrics_addr().unwrap();
    let c = common::client();
    let get = |path: String| {
        let req = c.get(w.url(&path));
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let cache = res
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, cache, res.bytes().await.unwrap().len() as u64)
        }
    };
    let m = img.manifest.len() as u64;
    let layer_len = 100_000;

    // Before any pull: nothing counted, charts of full length.
    let s = status(admin).await;
    assert_eq!(s.value.total, Counts::default());
    assert_eq!((s.value.hour.step, s.value.hour.points.len()), (60, 60));
    assert_eq!((s.value.day.step, s.value.day.points.len()), (600, 144));
    assert_eq!(s.upstreams[0].reachable, None);
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));

    let manifest = "/v2/org/app/manifests/1".to_owned();
    let layer = format!("/v2/org/app/blobs/{}", img.layers[0]);
    assert_eq!(get(manifest.clone()).await, (200, Some("miss".into()), m));
    assert_eq!(get(manifest.clone()).await, (200, Some("hit".into()), m));
    assert_eq!(
        get(layer.clone()).await,
        (200, Some("miss".into()), layer_len)
    );
    w.settled().await;
    assert_eq!(get(layer).await, (200, Some("hit".into()), layer_len));
    // Not counted: a HEAD, and a 404 (normal client traffic, not an error either).
    let res = c.head(w.url(&manifest)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let missing = fake::digest_of(b"not there");
    assert_eq!(get(format!("/v2/org/app/blobs/{missing}")).await.0, 404);

    // A fill held half-way, with two clients reading it.
    let held_url = w.url(&format!("/v2/org/app/blobs/{held}"));
    let leader = c.get(&held_url).send().await.unwrap();
    let follower = c.get(&held_url).send().await.unwrap();
    assert_eq!(follower.headers()["x-cache"], "coalesced");
    let s = status_when(admin, "half of the held blob received", |s| {
        s.fills.first().is_some_and(|f| f.received == 512 * 1024)
    })
    .await;
    assert_eq!(s.fills.len(), 1, "{:?}", s.fills);
    let f = &s.fills[0];
    assert_eq!(
        (
            f.upstream.as_str(),
            f.repository.as_str(),
            f.digest.as_str(),
            f.size,
            f.clients
        ),
        ("upstream.test", "org/app", held.as_str(), Some(MIB), 2)
    );
    assert!(f.started <= s.now && f.started >= s.started, "{f:?}");
    gate.open();
    let (a, b) = (
        leader.bytes().await.unwrap(),
        follower.bytes().await.unwrap(),
    );
    assert_eq!((a.len(), b.len()), (1 << 20, 1 << 20));
    w.settled().await;

    // Two more MiB: over the high watermark (3 MiB), evicted down to the low one (2 MiB).
    for digest in &big {
        let (status, cache, len) = get(format!("/v2/org/app/blobs/{digest}")).await;
        assert_eq!((status, cache, len), (200, Some("miss".into()), MIB));
    }
    w.settled().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.cache().usage().bytes > 2 * MIB {
        assert!(Instant::now() < deadline, "not evicted down to 2 MiB");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Last, as it stops wharf asking the upstream: a 429 with Retry-After: 30.
    let limited_path = format!("/v2/org/app/blobs/{limited}");
    fake.knobs()
        .status
        .insert(limited_path.clone(), (429, Some("30".into())));
    let res = c.get(w.url(&limited_path)).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    drop(res.bytes().await);

    let s = status_when(admin, "every pull and the 429 recorded", |s| {
        requests(s) == 8 && !s.errors.is_empty()
    })
    .await;

    // Totals: misses are the cold manifest and layer, the held blob twice (the leader and the
    // coalesced follower) and the two big blobs; hits the second manifest and layer.
    let want = Counts {
        hits: 2,
        misses: 6,
        hit_bytes: m + layer_len,
        miss_bytes: m + layer_len + 2 * MIB + 2 * MIB,
    };
    assert_eq!(s.value.total, want);
    assert_eq!(sum(&s.value.hour.points), want);
    assert_eq!(sum(&s.value.day.points), want);
    assert_eq!(s.value.hour.end % 60, 0);
    assert!(s.value.hour.end > s.now && s.value.hour.end <= s.now + 60);

    // Top lists: one repository; one image, with its manifest and its layer (not the blobs no
    // manifest named).
    let all = want.hit_bytes + want.miss_bytes;
    let repo = vec![TopEntry {
        name: "upstream.test/org/app".into(),
        pulls: 2,
        bytes: all,
    }];
    assert_eq!(s.top.window, 86_400);
    assert_eq!(s.top.repositories_by_pulls, repo);
    assert_eq!(s.top.repositories_by_bytes, repo);
    let image = vec![TopEntry {
        name: "upstream.test/org/app:1".into(),
        pulls: 2,
        bytes: 2 * m + 2 * layer_len,
    }];
    assert_eq!(s.top.images_by_pulls, image);
    assert_eq!(s.top.images_by_bytes, image);

    // The upstream: reachable, rate limit as last seen, the 429 and its back-off.
    let u = &s.upstreams[0];
    assert_eq!(u.name, "upstream.test");
    assert_eq!(u.url, format!("{}/", fake.url()));
    assert!(!u.offline);
    assert_eq!(u.reachable, Some(true));
    assert_eq!(
        u.last_error.as_deref(),
        Some("answered 429 Too Many Requests")
    );
    let at = u.last_error_at.unwrap();
    assert!(at >= s.started && at <= s.now, "{u:?}");
    assert!(u.last_ok.is_some_and(|t| t >= at), "{u:?}");
    let backoff = u.backoff_seconds.unwrap();
    assert!((1..=30).contains(&backoff), "{u:?}");
    assert_eq!(
        (u.rate_limit_remaining, u.rate_limit_limit),
        (Some(76), Some(100))
    );

    // The failed request, with the id the client got; the 404 is not there.
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    let e = &s.errors[0];
    assert_eq!(e.request_id, request_id);
    assert_eq!(
        (
            e.method.as_str(),
            e.path.as_str(),
            e.status,
            e.code.as_deref()
        ),
        ("GET", limited_path.as_str(), 429, Some("TOOMANYREQUESTS"))
    );
    assert_eq!(
        e.message,
        "upstream upstream.test is rate-limiting this mirror; retry later"
    );

    // The cache: its budget, what it holds and what it evicted, as the cache itself counts.
    let usage = w.cache().usage();
    let evictions = w.cache().evictions();
    assert_eq!(
        (s.cache.bytes, s.cache.entries),
        (usage.bytes, usage.entries)
    );
    assert_eq!(s.cache.max_bytes, Some(4 * MIB));
    assert_eq!(s.cache.high_watermark_bytes, Some(3 * MIB));
    assert_eq!(s.cache.low_watermark_bytes, Some(2 * MIB));
    assert!(s.cache.bytes <= 2 * MIB, "{:?}", s.cache);
    assert!(evictions.count >= 1);
    // Whatever the order, what was stored is either still there or evicted.
    assert_eq!(
        s.cache.bytes + s.cache.evicted_bytes,
        m + layer_len + 3 * MIB,
        "{:?}",
        s.cache
    );
    assert_eq!(
        (s.cache.evictions, s.cache.evicted_bytes),
        (evictions.count, evictions.bytes)
    );
    assert_eq!(s.cache.pinned_bytes, 0);
    assert!(!s.cache.paused);
    assert!(s.fills.is_empty(), "{:?}", s.fills);
    assert!(s.pins.is_empty() && s.sync.is_empty());

    // `wharf status --json` asks the same wharf over its control socket: the same document.
    let config_arg = config_file.to_str().unwrap();
    let out = tokio::task::spawn_blocking({
        let config_arg = config_arg.to_owned();
        move || wharf_bin(&["status", "--config", &config_arg, "--json"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    let after = status(admin).await;
    assert_eq!(settled(printed), settled(after.clone()));

    // And as tables: no colour on a pipe, the key lines aligned.
    let out = tokio::task::spawn_blocking({
        let config_arg = config_arg.to_owned();
        move || wharf_bin(&["status", "--config", &config_arg])
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "{text}");
    let has = |want: &str| {
        assert!(
            text.lines().any(|l| l.contains(want)),
            "no line with {want:?} in:\n{text}"
        );
    };
    for section in [
        "Cache",
        "Value",
        "Upstreams",
        "Fills in flight",
        "Top (last 24 h)",
        "Pins",
        "Sync",
        "Recent errors",
    ] {
        assert!(text.lines().any(|l| l == section), "no {section}:\n{text}");
    }
    has("  stored ");
    has("of 4.0 MiB");
    has("  since start     2       6        25%            98.0 KiB        4.1 MiB");
    has(&format!("  upstream.test  {}/  reachable  ", fake.url()));
    has("76/100      answered 429 Too Many Requests (");
    has("  upstream.test/org/app:1  ");
    has(&format!(
        "{request_id}  429     GET {limited_path}  TOOMANYREQUESTS  upstream upstream.test is rate-limiting this mirror; retry later"
    ));
}

#[tokio::test]
async fn wharf_status_says_in_one_line_when_no_wharf_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.toml");
    std::fs::write(&file, config(dir.path(), "http://127.0.0.1:9")).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || wharf_bin(&["status", "--config", &file]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let socket = dir.path().join("admin.sock");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "wharf: no wharf is running on this storage: its control socket {} does not answer (",
            socket.display()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_sync_runs_and_the_pins_they_make() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 50_000, 51);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[sync]]\nimages = [\"upstream.test/org/app:1\"]\ninterval = \"1h\"\n",
        config(dir.path(), &fake.url())
    );
    let w = Wharf::start_text(dir, &text).await;
    let admin = w.running.as_ref().unwrap().metrics_addr().unwrap();
    // The entry runs at start.
    let s = status_when(admin, "a sync run", |s| {
        s.sync.first().is_some_and(|e| e.last_run.is_some())
    })
    .await;
    assert_eq!(s.sync.len(), 1);
    let e = &s.sync[0];
    assert_eq!(
        (e.entry, e.images.as_slice(), e.interval),
        (0, &["upstream.test/org/app:1".to_owned()][..], 3600)
    );
    let run = e.last_run.as_ref().unwrap();
    let config_len = w
        .cache()
        .index()
        .blob_size(&img.config.parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.images, run.failed, run.blobs_fetched, run.bytes_fetched),
        (1, 0, 2, config_len + 50_000)
    );
    assert_eq!(
        run.changed,
        vec![format!(
            "upstream.test/org/app:1: none -> {}",
            img.manifest_digest
        )]
    );
    assert!(run.started >= s.started && run.started <= s.now, "{run:?}");
    // Synced images are pinned (`pin` defaults to true): the manifest, config and layer.
    w.settled().await;
    let s = status(admin).await;
    assert_eq!(s.pins.len(), 1, "{:?}", s.pins);
    assert_eq!(s.pins[0].image, "upstream.test/org/app:1");
    assert_eq!(s.pins[0].source, "command");
    assert_eq!(
        s.cache.pinned_bytes,
        img.manifest.len() as u64 + config_len + 50_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_survives_a_configuration_reload() {
    let fake = Fake::start().await;
    let img = fake.add_image("org/app", "1", 1, 1000, 61);
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &fake.url());
    let w = Wharf::start_text(dir, &text).await;
    let admin = w.running.as_ref().unwrap().metrics_addr().unwrap();
    let res = common::client()
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res.bytes().await);
    let before = status_when(admin, "the pull counted", |s| requests(s) == 1).await;
    // Another upstream: a new App, around the same cache and metrics.
    let changed = format!(
        "{text}[[upstream]]\nname = \"other.test\"\nurl = \"http://127.0.0.1:9\"\ninsecure = true\n"
    );
    let config = wharf::Config::from_toml(&changed, Path::new("test.toml")).unwrap();
    w.running
        .as_ref()
        .unwrap()
        .reload_config(config)
        .await
        .unwrap();
    let after = status(admin).await;
    assert_eq!(after.upstreams.len(), 2);
    assert_eq!(after.started, before.started);
    assert_eq!(after.value.total, before.value.total);
    assert_eq!(
        after.value.total,
        Counts {
            hits: 0,
            misses: 1,
            hit_bytes: 0,
            miss_bytes: img.manifest.len() as u64
        }
    );
    assert_eq!(after.top, before.top);
    // The kept upstream client keeps its health.
    assert_eq!(after.upstreams[0].reachable, Some(true));
    assert_eq!(after.upstreams[1].reachable, None);
}
