//! wharf's container image end to end: the repository's `Containerfile` is built by a private
//! Docker daemon ([`Dockerd`]) and the image is run with host networking against a real
//! distribution registry on loopback. skopeo pulls an image through it, byte for byte what the
//! registry holds; the wharf process runs as the image's non-root user; `/healthz` answers; the
//! `HEALTHCHECK` (`wharf health`) makes the container `healthy`; `/readyz` says the volume takes
//! writes while the rest of the file system is read-only (`--read-only`, as the Kubernetes
//! example's `readOnlyRootFilesystem`); and `docker stop` ends wharf cleanly (exit 0) as the
//! container's PID 1.
//!
//! The binary in the image is the one under test (`CARGO_BIN_EXE_wharf`, a debug build: CI does
//! not build release), copied as `target/release/wharf` into a build context that holds only what
//! the Containerfile copies, as `.dockerignore` keeps a real build's context.
//!
//! No image registry is reachable here, so the base image `debian:bookworm-slim` is made when the
//! daemon lacks it (it always does: its data root is new): `debootstrap --variant=minbase bookworm`
//! from the Debian mirror this machine's apt uses, imported with `docker import`. The root file
//! system is kept as a tarball under the cargo target directory (`e2e-cache/`), so only the first
//! run on a machine pays for debootstrap (about a minute). The build's `apt-get install
//! ca-certificates` fetches from that same mirror (debootstrap writes it into the base's apt
//! sources), with `--network host`. Everything the daemon made goes with its data root when the
//! [`Dockerd`] drops.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::dockerd::Dockerd;
use common::images;
use common::real::{self, Registry};

/// The wharf binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_wharf");

/// The base image the Containerfile names.
const BASE: &str = "debian:bookworm-slim";

/// The tag the test builds.
const IMAGE: &str = "wharf-e2e:test";

/// The uid and gid the image runs as.
const UID: u32 = 65532;

/// How long debootstrap may take (it downloads about 40 MiB of packages).
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(900);

/// How long the image build may take (`apt-get update` and one package).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The cargo target directory: the binary is `<target>/<profile>/wharf`.
fn target_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/")
        .to_owned()
}

/// The Debian archive (not the security one) this machine's apt uses for bookworm: from
/// `/etc/apt/sources.list` and `/etc/apt/sources.list.d/` (one-line `.list` files and deb822
/// `.sources` files).
fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let name = file.to_string_lossy();
        let found = if name.ends_with(".sources") {
            mirror_in_deb822(&text)
        } else if name.ends_with(".list") {
            mirror_in_one_line(&text)
        } else {
            None
        };
        if let Some(uri) = found {
            return uri;
        }
    }
    panic!("no bookworm Debian archive in {files:?}: debootstrap needs one");
}

/// `deb [options] URI bookworm components` in a one-line style sources file.
fn mirror_in_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (uri, suite) = (words.next()?, words.next()?);
        (suite == "bookworm").then(|| uri.to_owned())
    })
}

/// A deb822 stanza with `Types: deb` and `Suites:` holding `bookworm`: its first URI.
fn mirror_in_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        let types = field("Types")?;
        let suites = field("Suites")?;
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        (enabled
            && types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == "bookworm"))
        .then(|| field("URIs")?.split_whitespace().next().map(str::to_owned))
        .flatten()
    })
}

/// Runs `program args` to completion within `timeout`; panics with its output on failure.
async fn run(program: &str, args: &[&str], timeout: Duration) {
    let out = tokio::time::timeout(
        timeout,
        tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} took more than {timeout:?}"))
    .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tarball of a minimal bookworm root file system: made with debootstrap the first time,
/// then taken from the cache.
async fn bookworm_tarball() -> PathBuf {
    let cache = target_dir().join("e2e-cache");
    let tarball = cache.join("bookworm-minbase.tar");
    if std::fs::metadata(&tarball).is_ok_and(|m| m.len() > 0) {
        return tarball;
    }
    real::require("debootstrap");
    std::fs::create_dir_all(&cache).unwrap();
    // Apart from other runs; renamed into place only when complete.
    let work = tempfile::tempdir_in(&cache).unwrap();
    // Dropped before `work`: a debootstrap that failed or was killed may have left /proc and
    // /sys mounted in the root, which must be undone before the directory is removed.
    let _unmount = Unmount(work.path().to_owned());
    let root = work.path().join("root");
    let mirror = debian_mirror();
    let root_arg = root.to_str().unwrap();
    run(
        "debootstrap",
        &["--variant=minbase", "bookworm", root_arg, &mirror],
        DEBOOTSTRAP_TIMEOUT,
    )
    .await;
    // What apt fetched (package lists, downloaded .debs): most of the bytes, and not in the real
    // slim image; the Containerfile's `apt-get update` fetches the lists again.
    for dir in [
        "var/lib/apt/lists",
        "var/cache/apt/archives",
        "var/cache/apt",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
    let partial = work.path().join("rootfs.tar");
    run(
        "tar",
        &[
            "-C",
            root_arg,
            "--numeric-owner",
            "-cf",
            partial.to_str().unwrap(),
            ".",
        ],
        DEBOOTSTRAP_TIMEOUT,
    )
    .await;
    std::fs::rename(&partial, &tarball).unwrap();
    tarball
}

/// Unmounts, when dropped, whatever is mounted under its path (deepest first).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| Path::new(m).starts_with(&self.0))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = std::process::Command::new("umount")
                .args(["-l", &m])
                .status();
        }
    }
}

/// A build context as a release build would send it: the Containerfile, .dockerignore, the
/// container config and the binary as `target/release/wharf`.
fn build_context(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "Containerfile",
        ".dockerignore",
        "contrib/container/config.toml",
    ] {
        let to = dir.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo.join(file), to).unwrap();
    }
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::fs::copy(BIN, dir.join("target/release/wharf")).unwrap();
}

/// Times the steps, for a person reading the output (`--nocapture`); nothing is asserted on them.
struct Steps {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        self.done.push((step, now - self.last));
        self.last = now;
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        for (step, took) in &self.done {
            eprintln!("e2e_image: {step:<32} {:>7.1} s", took.as_secs_f64());
        }
    }
}

/// `docker inspect --format FORMAT CONTAINER`, trimmed.
async fn inspect(dockerd: &Dockerd, container: &str, format: &str) -> String {
    dockerd
        .docker(&["inspect", "--format", format, container])
        .await
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_runs_as_non_root_and_mirrors_byte_exact() {
    let mut steps = Steps::new();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // The upstream: a real registry holding a three-layer image.
    let registry = Registry::start(None).await;
    let (layout, digest) = images::multi_layer(&work.path().join("image"), "1");
    let upstream_ref = format!("docker://127.0.0.1:{}/e2e/multi:1", registry.port);
    real::push(
        &home,
        &format!("oci:{}:1", layout.dir.display()),
        &upstream_ref,
        false,
    )
    .await;
    steps.done("registry and test image");

    let dockerd = Dockerd::start(&[]).await;
    steps.done("dockerd started");

    // The base image.
    let tarball = bookworm_tarball().await;
    steps.done("bookworm root fs (debootstrap)");
    if dockerd.docker(&["image", "inspect", BASE]).await.is_err() {
        dockerd
            .docker_within(&["import", "-", BASE], BUILD_TIMEOUT, Some(&tarball))
            .await
            .unwrap();
    }
    steps.done("docker import");

    // The image, built as release tooling would (the legacy builder: the daemon has no BuildKit
    // front end to fetch, and the Containerfile needs no BuildKit feature).
    let context = work.path().join("context");
    build_context(&context);
    let context_arg = context.to_str().unwrap().to_owned();
    let containerfile = context.join("Containerfile");
    let build = tokio::process::Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", dockerd.socket().display()))
        .args(["build", "--network", "host", "-t", IMAGE, "-f"])
        .arg(&containerfile)
        .arg(&context_arg)
        .env("DOCKER_CONFIG", dockerd.dir().join("client"))
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BUILD_TIMEOUT, build)
        .await
        .expect("docker build finishes")
        .unwrap();
    let build_log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "docker build failed:\n{build_log}");
    steps.done("docker build");
    let size = dockerd
        .docker(&["image", "inspect", "--format", "{{.Size}}", IMAGE])
        .await
        .unwrap();
    let size: u64 = size.trim().parse().unwrap();
    let binary = std::fs::metadata(BIN).unwrap().len();
    eprintln!(
        "e2e_image: image {IMAGE}: {:.1} MiB, of which the (debug) binary {:.1} MiB; layers:\n{}",
        size as f64 / 1048576.0,
        binary as f64 / 1048576.0,
        dockerd
            .docker(&[
                "history",
                "--no-trunc",
                "--format",
                "{{.Size}}\t{{.CreatedBy}}",
                IMAGE
            ])
            .await
            .unwrap_or_else(|e| e)
    );
    assert!(
        dockerd
            .docker(&[
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "test",
                IMAGE,
                "-s",
                "/etc/ssl/certs/ca-certificates.crt",
            ])
            .await
            .is_ok(),
        "the image has the CA bundle"
    );

    // wharf, configured like the image's own config but with the test registry as its upstream
    // and free ports (host networking: the ports are the machine's).
    let (port, metrics) = (common::free_port(), common::free_port());
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"0.0.0.0:{port}\"\nshutdown_grace = \"10s\"\n\
             [storage]\npath = \"/var/lib/wharf\"\n\
             [[upstream]]\nname = \"upstream.test\"\nurl = \"{}\"\ndefault = true\ninsecure = true\n\
             [metrics]\nlisten = \"0.0.0.0:{metrics}\"\n",
            registry.url()
        ),
    )
    .unwrap();
    let mount = format!("{}:/etc/wharf/config.toml:ro", config.display());
    let container = dockerd
        .docker(&[
            "run",
            "-d",
            "--network",
            "host",
            // As the Kubernetes example runs it (readOnlyRootFilesystem): wharf writes only to
            // its storage, the volume.
            "--read-only",
            "--health-interval",
            "1s",
            "--health-start-period",
            "30s",
            "-v",
            &mount,
            IMAGE,
        ])
        .await
        .unwrap()
        .trim()
        .to_owned();
    let logs = || dockerd.logs(&container);

    // The HEALTHCHECK reaches healthy.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = inspect(
            &dockerd,
            &container,
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
        )
        .await;
        if state == "running healthy" {
            break;
        }
        assert!(
            state.starts_with("running") && Instant::now() < deadline,
            "the container is {state}, not running healthy:\n{}\n{}",
            inspect(&dockerd, &container, "{{json .State}}").await,
            logs().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    steps.done("container healthy");
    let health_log = inspect(
        &dockerd,
        &container,
        "{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}",
    )
    .await;
    assert!(
        health_log.contains(&format!("0 http://127.0.0.1:{metrics}/healthz: 200 ok")),
        "the HEALTHCHECK ran wharf health: {health_log}"
    );

    // The process runs as the image's user (no user namespace: the host sees the same uid).
    let pid = inspect(&dockerd, &container, "{{.State.Pid}}").await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cmdline).replace('\0', " ").trim(),
        "wharf serve --config /etc/wharf/config.toml"
    );
    for key in ["Uid:", "Gid:"] {
        let ids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(ids, [UID; 4], "{key} real, effective, saved, filesystem");
    }

    // /healthz answers on the metrics listener, and /readyz: the volume takes the user's writes.
    let client = common::client();
    let healthz = client
        .get(format!("http://127.0.0.1:{metrics}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.text().await.unwrap(), "ok\n");
    let ready = dockerd
        .docker(&[
            "exec",
            &container,
            "wharf",
            "health",
            "--ready",
            "--config",
            "/etc/wharf/config.toml",
        ])
        .await
        .unwrap();
    assert_eq!(
        ready.trim(),
        format!("http://127.0.0.1:{metrics}/readyz: 200 ready")
    );

    // A pull through the container is byte for byte the registry's.
    let direct = real::pull(
        &home,
        &upstream_ref,
        &work.path().join("direct"),
        &["--src-tls-verify=false"],
    )
    .await;
    let through = real::pull(
        &home,
        &format!("docker://127.0.0.1:{port}/e2e/multi:1"),
        &work.path().join("through"),
        &["--src-tls-verify=false"],
    )
    .await;
    assert_eq!(through.manifest_digest, digest);
    assert_eq!(through, direct);
    for file in through
        .blobs
        .iter()
        .map(String::as_str)
        .chain(["manifest.json"])
    {
        assert_eq!(
            std::fs::read(work.path().join("through").join(file)).unwrap(),
            std::fs::read(work.path().join("direct").join(file)).unwrap(),
            "{file}"
        );
    }
    // ... and came through wharf.
    let log = logs().await;
    assert!(
        log.lines()
            .any(|l| l.contains(" path=/v2/e2e/multi/manifests/1 ") && l.contains(" status=200 ")),
        "{log}"
    );
    steps.done("skopeo pull through the image");

    // docker stop: SIGTERM to wharf as PID 1, which drains and exits 0.
    dockerd
        .docker(&["stop", "-t", "30", &container])
        .await
        .unwrap();
    assert_eq!(
        inspect(&dockerd, &container, "{{.State.ExitCode}}").await,
        "0",
        "{}",
        logs().await
    );
    assert!(logs().await.contains("stopped"));
    steps.done("docker stop");
}

#[test]
fn the_debian_mirror_is_read_from_either_sources_format() {
    let one_line = "# comment\n\
        deb http://security.debian.org/debian-security bookworm-security main\n\
        deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n";
    assert_eq!(
        mirror_in_one_line(one_line).as_deref(),
        Some("http://mirror.example/debian")
    );
    assert_eq!(
        mirror_in_one_line("deb-src http://x/debian bookworm main\n"),
        None
    );
    let deb822 =
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n\n\
        Types: deb deb-src\nURIs: http://deb.example/debian http://other/debian\n\
        Suites: bookworm bookworm-updates\nComponents: main\n";
    assert_eq!(
        mirror_in_deb822(deb822).as_deref(),
        Some("http://deb.example/debian")
    );
    let disabled = "Enabled: no\nTypes: deb\nURIs: http://a/debian\nSuites: bookworm\n";
    assert_eq!(mirror_in_deb822(disabled), None);
}
