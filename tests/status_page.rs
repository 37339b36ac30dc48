//! The status page in a real browser: Debian's headless Chromium, driven over the DevTools protocol
//! (a websocket), loads `/status` from a wharf that has served a few pulls, and the test checks what
//! a person would see: no console errors or script exceptions, the value charts with one point per
//! step (60 for the hour, 144 for the day), a page that is not blank (pixel variance of the
//! screenshot) and that fits a 1280x800 window without horizontal scrolling. The screenshot is
//! written to `target/status-page.png` (`scripts/status-screenshot.sh` copies it to `docs/`).
//!
//! A second page, rendered from a report with something in every section (50 errors, full top
//! lists, long names and digests), is checked the same way: the width check only means something
//! with long strings on the page.

mod common;

use std::fs::File;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::fake::{self, Fake, Gate};
use common::{config_text, Up, Wharf};
use serde_json::{json, Value};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket};
use wharf::status::report::{
    CacheStatus, Counts, ErrorStatus, FillStatus, PinStatus, Series, StatusReport, SyncRun,
    SyncStatus, TopEntry, TopStatus, UpstreamStatus, ValueStatus,
};

/// The longest any one step may take: Chromium's start, a page load, one answer.
const STEP: Duration = Duration::from_secs(60);

/// The viewport the page must fit.
const WIDTH: u64 = 1280;
const HEIGHT: u64 = 800;

/// A headless Chromium with a private profile, killed on drop.
struct Chromium {
    child: Child,
    profile: TempDir,
    /// The browser's DevTools websocket path (`/devtools/browser/...`) and port.
    port: u16,
    path: String,
}

/// A DevTools session on one page.
struct Page {
    ws: WebSocket<TcpStream>,
    session: String,
    next: u64,
    /// Events received (Runtime, Log, Page), in order.
    events: Vec<Value>,
}

/// What the page reports about itself.
struct Looked {
    facts: Value,
    png: Vec<u8>,
}

// === impl Chromium ===

impl Chromium {
    fn start() -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let stderr = File::create(profile.path().join("stderr.log")).unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={WIDTH},{HEIGHT}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("chromium (Debian's package; scripts/test.sh installs it)");
        let mut chromium = Chromium {
            child,
            profile,
            port: 0,
            path: String::new(),
        };
        // Chromium writes the port it bound and the browser's websocket path here once it listens.
        let active = chromium.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    chromium.port = port.parse().unwrap();
                    chromium.path = path.to_owned();
                    return chromium;
                }
            }
            if let Some(status) = chromium.child.try_wait().unwrap() {
                panic!("chromium exited ({status}): {}", chromium.log());
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not listen within {STEP:?}: {}",
                chromium.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("stderr.log")).unwrap_or_default()
    }

    /// A new page (1280x800, as a desktop) with the Page, Runtime and Log domains on.
    fn page(&self) -> Page {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        // The handshake blocks up to STEP; then reads wake every half second to check deadlines.
        stream.set_read_timeout(Some(STEP)).unwrap();
        let url = format!("ws://127.0.0.1:{}{}", self.port, self.path);
        let (ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut page = Page {
            ws,
            session: String::new(),
            next: 0,
            events: Vec::new(),
        };
        let target = page.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = page.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        page.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Page", "Runtime", "Log"] {
            page.call(&format!("{domain}.enable"), json!({}));
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false}),
        );
        page
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === impl Page ===

impl Page {
    /// Sends `method` and waits for its answer, keeping the events that come before it.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(message.to_string())).unwrap();
        let deadline = Instant::now() + STEP;
        loop {
            let message = self.read(deadline, method);
            if message["id"] == json!(id) {
                assert!(
                    message.get("error").is_none(),
                    "{method}: {}",
                    message["error"]
                );
                return message["result"].clone();
            }
            self.keep(message);
        }
    }

    /// Waits for the event `method` at or after `events[from]`.
    fn event(&mut self, method: &str, from: usize) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(e) = self.events[from..].iter().find(|e| e["method"] == method) {
                return e.clone();
            }
            let message = self.read(deadline, method);
            self.keep(message);
        }
    }

    fn keep(&mut self, message: Value) {
        if message.get("method").is_some() {
            self.events.push(message);
        }
    }

    fn read(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer to {waiting_for} within {STEP:?}"
            );
            match self.ws.read() {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).unwrap(),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("devtools websocket: {e}"),
            }
        }
    }

    /// Loads `url` and waits for its load event.
    fn load(&mut self, url: &str) {
        let from = self.events.len();
        let navigated = self.call("Page.navigate", json!({"url": url}));
        assert!(
            navigated.get("errorText").is_none(),
            "{url}: {}",
            navigated["errorText"]
        );
        self.event("Page.loadEventFired", from);
    }

    /// The page's facts (one script, so a reload cannot fall between two answers) and a
    /// screenshot of the whole page at 1280 pixels wide.
    fn look(&mut self) -> Looked {
        let facts = self.call(
            "Runtime.evaluate",
            json!({"expression": FACTS, "returnByValue": true}),
        );
        assert!(facts.get("exceptionDetails").is_none(), "{facts}");
        let facts = facts["result"]["value"].clone();
        let height = facts["scrollHeight"].as_u64().unwrap().max(HEIGHT);
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        Looked { facts, png }
    }

    /// Console errors, uncaught exceptions and error log entries (failed loads included).
    fn errors(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|e| match e["method"].as_str().unwrap_or("") {
                "Runtime.exceptionThrown" => true,
                "Runtime.consoleAPICalled" => {
                    matches!(e["params"]["type"].as_str(), Some("error" | "assert"))
                }
                "Log.entryAdded" => e["params"]["entry"]["level"] == "error",
                _ => false,
            })
            .cloned()
            .collect()
    }
}

/// Evaluated in the page: its width against the window's, its sections and its charts.
const FACTS: &str = r"(() => {
  const charts = {};
  for (const svg of document.querySelectorAll('svg.chart')) {
    const line = (c) => { const l = svg.querySelector('polyline.' + c); return l ? l.points.numberOfItems : -1; };
    charts[svg.dataset.series] = {
      declared: Number(svg.dataset.points),
      bars: svg.querySelectorAll('rect.pt').length,
      hit: line('hit'),
      miss: line('miss'),
      width: svg.getBoundingClientRect().width,
    };
  }
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    scrollHeight: document.documentElement.scrollHeight,
    sections: [...document.querySelectorAll('main > section')].map((s) => s.id),
    text: document.body.innerText,
    scripts: document.scripts.length,
    charts,
  };
})()";

// === checks ===

/// Where cargo builds (the test binary is in `target/debug/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// The variance of the screenshot's luminance (0 for a blank page).
fn variance(png: &[u8]) -> f64 {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(u64::from(info.width), WIDTH, "screenshot width");
    let channels = info.color_type.samples();
    let lum: Vec<f64> = pixels[..info.buffer_size()]
        .chunks(channels)
        .map(|p| {
            if channels >= 3 {
                0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
            } else {
                f64::from(p[0])
            }
        })
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64
}

/// The checks every status page must pass; writes the screenshot to `shot`.
fn check(page: &Page, looked: &Looked, shot: &Path) {
    std::fs::write(shot, &looked.png).unwrap();
    let facts = &looked.facts;
    assert_eq!(page.errors(), Vec::<Value>::new(), "console errors");
    assert_eq!(facts["scripts"], 0, "the page runs no script");
    assert!(
        facts["scrollWidth"].as_u64().unwrap() <= facts["innerWidth"].as_u64().unwrap(),
        "the page scrolls sideways at {WIDTH}x{HEIGHT}: {} > {}",
        facts["scrollWidth"],
        facts["innerWidth"]
    );
    assert_eq!(facts["innerWidth"], WIDTH);
    assert_eq!(
        facts["sections"],
        json!([
            "cache",
            "upstreams",
            "value",
            "fills",
            "top",
            "pins",
            "sync",
            "errors"
        ])
    );
    for (window, n) in [("hour", 60), ("day", 144)] {
        let ratio = &facts["charts"][format!("{window}-ratio")];
        assert_eq!(ratio["declared"], n, "{window}-ratio: {ratio}");
        assert_eq!(ratio["bars"], n, "{window}-ratio: {ratio}");
        let bytes = &facts["charts"][format!("{window}-bytes")];
        assert_eq!(bytes["declared"], n, "{window}-bytes: {bytes}");
        assert_eq!(bytes["hit"], n, "{window}-bytes: {bytes}");
        assert_eq!(bytes["miss"], n, "{window}-bytes: {bytes}");
        for chart in [ratio, bytes] {
            assert!(chart["width"].as_f64().unwrap() > 200.0, "{chart}");
        }
    }
    let v = variance(&looked.png);
    assert!(
        v > 100.0,
        "the screenshot is blank or nearly: variance {v:.1}"
    );
    eprintln!(
        "{}: variance {v:.0}, {} bytes of PNG, page {}x{}",
        shot.display(),
        looked.png.len(),
        facts["innerWidth"],
        facts["scrollHeight"]
    );
}

// === tests ===

/// Pulls `img` (manifest, config, layers) through wharf by `tag`, checking each length.
async fn pull(c: &reqwest::Client, w: &Wharf, repo: &str, tag: &str, img: &fake::Image) {
    let res = c
        .get(w.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", fake::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{repo}:{tag}");
    assert_eq!(res.bytes().await.unwrap(), img.manifest);
    for blob in std::iter::once(&img.config).chain(&img.layers) {
        let res = c
            .get(w.url(&format!("/v2/{repo}/blobs/{blob}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{repo}@{blob}");
        res.bytes().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_chromium() {
    let fake = Fake::start().await;
    fake.knobs().rate_limit = Some((100, 76));
    let images = [
        (
            "library/alpine",
            "3.20",
            fake.add_image("library/alpine", "3.20", 1, 3 << 20, 1),
        ),
        (
            "library/postgres",
            "16",
            fake.add_image("library/postgres", "16", 3, 2 << 20, 2),
        ),
        (
            "team/api",
            "v1.4.2",
            fake.add_image("team/api", "v1.4.2", 2, 1 << 20, 3),
        ),
        (
            "library/redis",
            "7",
            fake.add_image("library/redis", "7", 2, 1 << 20, 4),
        ),
    ];
    let held = fake.add_blob(fake::random_bytes(8 << 20, 5));
    let gate = Gate::new();
    fake.knobs()
        .hold
        .insert(held.clone(), (3 << 20, gate.clone()));

    let dir = tempfile::tempdir().unwrap();
    let up = [Up {
        name: "upstream.test",
        url: fake.url(),
        default: true,
        extra: "",
    }];
    let text = config_text(dir.path(), "5m", &up).replacen(
        "[cache]\n",
        "max_size = \"32MiB\"\nhigh_watermark = 90\nlow_watermark = 75\n[cache]\n",
        1,
    ) + "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let w = Wharf::start_text(dir, &text).await;
    let admin = w.running.as_ref().unwrap().metrics_addr().unwrap();
    let c = common::client();

    // Misses, then hits: each image once from the upstream, then from the cache a few times.
    for (round, count) in [(0, 4), (1, 3), (2, 2), (3, 1)] {
        for (repo, tag, img) in images.iter().take(count) {
            pull(&c, &w, repo, tag, img).await;
        }
        if round == 0 {
            w.settled().await;
        }
    }
    // A tag the upstream does not have: a recent error.
    let res = c
        .get(w.url("/v2/library/alpine/manifests/does-not-exist"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // A fill in flight: the upstream holds the blob after 3 MiB until the gate opens.
    let held_url = w.url(&format!("/v2/team/api/blobs/{held}"));
    let reader = tokio::spawn({
        let c = c.clone();
        async move {
            c.get(held_url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .len()
        }
    });
    let deadline = Instant::now() + STEP;
    while w.running.as_ref().unwrap().fills_in_flight() == 0 {
        assert!(Instant::now() < deadline, "the held fill never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Plain HTTP first: both paths, HEAD, and the 404 hint.
    for path in ["/", "/status"] {
        let res = c.get(format!("http://{admin}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
        let body = res.text().await.unwrap();
        assert!(body.starts_with("<!doctype html>"), "{path}");
        assert!(body.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    }
    let res = c
        .head(format!("http://{admin}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert!(res.bytes().await.unwrap().is_empty());
    let res = c.get(format!("http://{admin}/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("/status"));

    let url = format!("http://{admin}/status");
    let shot = target_dir().join("status-page.png");
    let version = env!("CARGO_PKG_VERSION");
    tokio::task::spawn_blocking(move || {
        let chromium = Chromium::start();
        let mut page = chromium.page();
        page.load(&url);
        let looked = page.look();
        check(&page, &looked, &shot);
        let text = looked.facts["text"].as_str().unwrap();
        assert!(text.contains(version), "{text}");
        assert!(text.contains("upstream.test"), "{text}");
        // The page reloads itself (meta refresh) and loads again without an error.
        let from = page.events.len();
        page.event("Page.loadEventFired", from);
        assert_eq!(
            page.errors(),
            Vec::<Value>::new(),
            "console errors after a reload"
        );
    })
    .await
    .unwrap();

    gate.open();
    assert_eq!(reader.await.unwrap(), 8 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_report_fits_the_window_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("status.html");
    let page_text = wharf::status::html::render(&full_report(1_800_000_000));
    std::fs::write(&file, &page_text).unwrap();
    let url = format!("file://{}", file.display());
    let shot = target_dir().join("status-page-full.png");
    tokio::task::spawn_blocking(move || {
        let chromium = Chromium::start();
        let mut page = chromium.page();
        page.load(&url);
        let looked = page.look();
        check(&page, &looked, &shot);
        let text = looked.facts["text"].as_str().unwrap();
        // The hostile name is shown as text, not run or parsed as markup.
        assert!(text.contains("<img src=x onerror=alert(1)>"), "{text}");
    })
    .await
    .unwrap();
}

/// The checks above can fail: a page with a console error, an exception and a too-wide element is
/// caught on each count, and a blank page has no variance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_a_broken_page() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<!doctype html><html><head><link rel=\"icon\" href=\"data:,\"></head><body>\
         <div style=\"width:2000px\">too wide</div>\
         <script>console.error('broken'); throw new Error('boom');</script></body></html>",
    )
    .unwrap();
    let blank = dir.path().join("blank.html");
    std::fs::write(
        &blank,
        "<!doctype html><html><head><link rel=\"icon\" href=\"data:,\"></head><body></body></html>",
    )
    .unwrap();
    tokio::task::spawn_blocking(move || {
        let chromium = Chromium::start();
        let mut page = chromium.page();
        page.load(&format!("file://{}", broken.display()));
        let looked = page.look();
        let errors = page.errors();
        for kind in ["Runtime.consoleAPICalled", "Runtime.exceptionThrown"] {
            assert!(
                errors.iter().any(|e| e["method"] == kind),
                "{kind} not seen: {errors:?}"
            );
        }
        assert_eq!(looked.facts["scripts"], 1);
        assert!(
            looked.facts["scrollWidth"].as_u64().unwrap() > WIDTH,
            "{}",
            looked.facts
        );
        let mut page = chromium.page();
        page.load(&format!("file://{}", blank.display()));
        let looked = page.look();
        assert!(page.errors().is_empty(), "{:?}", page.errors());
        let v = variance(&looked.png);
        assert!(v < 1.0, "a blank page has variance {v}");
    })
    .await
    .unwrap();
}

/// A report with every section full: long names, digests and messages, 50 errors, 10 of each top
/// list, and one name that is markup.
fn full_report(now: u64) -> StatusReport {
    let long = "registry.example.com/a-rather-long-organisation-name/with/deeply/nested/paths/and-a-repository-name-that-goes-on-and-on";
    let hostile = "<img src=x onerror=alert(1)>";
    let digest = |i: u64| {
        let x = u128::from(i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
        format!("sha256:{x:032x}{:032x}", x.rotate_left(61) ^ 0x5bd1_e995)
    };
    let series = |step: u64, len: u64| Series {
        step,
        end: now - now % step + step,
        points: (0..len)
            .map(|i| Counts {
                hits: 40 + (i * 7) % 23,
                misses: (i * 3) % 5,
                hit_bytes: (200 + (i * 37) % 300) << 20,
                miss_bytes: ((i * 11) % 40) << 20,
            })
            .collect(),
    };
    let top = |unit: u64| -> Vec<TopEntry> {
        (0..10)
            .map(|i| TopEntry {
                name: if i == 3 {
                    format!("{long}:v{i}")
                } else {
                    format!("docker.io/library/image-{i}:1.{i}")
                },
                pulls: (10 - i) * 97,
                bytes: (10 - i) * unit,
            })
            .collect()
    };
    StatusReport {
        version: "0.9.0".into(),
        now,
        started: now - 3 * 86_400 - 7_000,
        cache: CacheStatus {
            bytes: 43 << 30,
            entries: 18_402,
            max_bytes: Some(50 << 30),
            high_watermark_bytes: Some(380 << 27),
            low_watermark_bytes: Some(340 << 27),
            pinned_bytes: 6 << 30,
            evictions: 1_204,
            evicted_bytes: 71 << 30,
            free_bytes: Some(212 << 30),
            paused: false,
        },
        value: ValueStatus {
            total: Counts {
                hits: 1_204_331,
                misses: 48_210,
                hit_bytes: 9 << 40,
                miss_bytes: 412 << 30,
            },
            hour: series(60, 60),
            day: series(600, 144),
        },
        upstreams: vec![
            UpstreamStatus {
                name: "docker.io".into(),
                url: "https://registry-1.docker.io".into(),
                offline: false,
                reachable: Some(true),
                last_ok: Some(now - 2),
                last_error: Some(format!(
                    "429 Too Many Requests on /v2/{long}/manifests/latest"
                )),
                last_error_at: Some(now - 340),
                backoff_seconds: Some(25),
                rate_limit_remaining: Some(12),
                rate_limit_limit: Some(100),
            },
            UpstreamStatus {
                name: format!("{long}{hostile}"),
                url: format!("https://{long}"),
                offline: false,
                reachable: Some(false),
                last_ok: Some(now - 4000),
                last_error: Some("connect: connection refused".into()),
                last_error_at: Some(now - 8),
                backoff_seconds: None,
                rate_limit_remaining: None,
                rate_limit_limit: None,
            },
            UpstreamStatus {
                name: "airgapped".into(),
                url: String::new(),
                offline: true,
                reachable: None,
                last_ok: None,
                last_error: None,
                last_error_at: None,
                backoff_seconds: None,
                rate_limit_remaining: None,
                rate_limit_limit: None,
            },
        ],
        fills: (0..5)
            .map(|i| FillStatus {
                upstream: "docker.io".into(),
                repository: if i == 0 {
                    long.into()
                } else {
                    format!("library/app-{i}")
                },
                digest: digest(i),
                received: (i * 37) << 20,
                size: if i == 4 { None } else { Some(200 << 20) },
                clients: i + 1,
                started: now - i * 13,
            })
            .collect(),
        top: TopStatus {
            window: 86_400,
            repositories_by_pulls: top(1 << 30),
            repositories_by_bytes: top(3 << 30),
            images_by_pulls: top(1 << 29),
            images_by_bytes: top(5 << 29),
        },
        pins: vec![
            PinStatus {
                image: format!("docker.io/{long}:stable"),
                source: "config".into(),
            },
            PinStatus {
                image: format!("@{}", digest(99)),
                source: "command".into(),
            },
        ],
        sync: vec![
            SyncStatus {
                entry: 0,
                images: vec![format!("{long}:1"), "docker.io/library/alpine:3.20".into()],
                interval: 3600,
                last_run: Some(SyncRun {
                    started: now - 1200,
                    millis: 8_400,
                    images: 12,
                    changed: vec![format!(
                        "docker.io/library/alpine:3.20: {} -> {}",
                        digest(1),
                        digest(2)
                    )],
                    failed: 1,
                    blobs_fetched: 14,
                    bytes_fetched: 880 << 20,
                }),
            },
            SyncStatus {
                entry: 1,
                images: Vec::new(),
                interval: 86_400,
                last_run: None,
            },
        ],
        errors: (0..50)
            .map(|i| ErrorStatus {
                at: now - i * 61,
                request_id: format!("01JD{i:022}"),
                method: "GET".into(),
                path: format!("/v2/{long}/blobs/{}", digest(i)),
                status: if i % 3 == 0 { 502 } else { 404 },
                code: Some(
                    if i % 3 == 0 {
                        "UNKNOWN"
                    } else {
                        "BLOB_UNKNOWN"
                    }
                    .into(),
                ),
                message: if i == 0 {
                    hostile.into()
                } else {
                    format!("upstream docker.io: {}{}", digest(i), "x".repeat(120))
                },
            })
            .collect(),
    }
}
