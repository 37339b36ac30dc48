//! The Docker daemon, wharf's most common client, end to end: a private `dockerd` (Debian's
//! `docker.io`: its own data root, exec root, pid file and socket, no iptables, no bridge) with
//! `--registry-mirror http://127.0.0.1:PORT` pulls an image by tag and by digest through a wharf
//! whose default upstream is named `docker.io` and points at a local distribution registry holding
//! `library/<name>:<tag>`. `docker inspect` must show the upstream's digest.
//!
//! Docker falls back to Docker Hub without a word when the mirror fails, so the test also reads
//! wharf's request log for every manifest and blob Docker asked for (and there is no Docker Hub to
//! fall back to here: no internet, so such a pull would fail). The daemon is stopped, its mounts
//! undone and its directories removed by [`Dockerd`]'s `Drop`, whatever happens.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::images;
use common::real::{self, Registry};
use common::served::Served;

/// How long one `docker` command may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// A private Docker daemon. Dropping it stops the daemon (and the containerd it started),
/// unmounts what it left mounted under its directory and removes the directory.
struct Dockerd {
    child: Child,
    /// Short on purpose: a unix socket path is limited to 108 bytes.
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Dockerd {
    /// Starts `dockerd` with `mirror` as its registry mirror; returns once it answers.
    async fn start(mirror: &str) -> Dockerd {
        real::require("dockerd");
        real::require("docker");
        let dir = tempfile::Builder::new()
            .prefix("dk")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("d.sock");
        // An empty daemon.json of its own: nothing from /etc/docker applies.
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let mut command = Command::new("dockerd");
        command
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("e"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--registry-mirror",
                mirror,
            ])
            // The mirror is on loopback: no proxy may stand between.
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().unwrap();
        let dockerd = Dockerd { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if dockerd.docker(&["version"]).await.is_ok() {
                break dockerd;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                dockerd.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs `docker args` against this daemon (bounded by [`DOCKER_TIMEOUT`]): stdout, or stdout
    /// and stderr as the error.
    async fn docker(&self, args: &[&str]) -> Result<String, String> {
        let run = tokio::process::Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            // A client configuration of its own (no credentials, no contexts from ~/.docker).
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(DOCKER_TIMEOUT, run)
            .await
            .map_err(|_| format!("docker {args:?} took more than {DOCKER_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "docker {args:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let d = self.dir.path().to_owned();
        // SIGTERM first, so dockerd stops its containerd and unmounts; SIGKILL if it hangs.
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The containerd this dockerd started, should it have outlived it (by its pid file).
        if let Ok(pid) = std::fs::read_to_string(d.join("e/containerd/containerd.pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                let _ = Command::new("sh")
                    .args(["-c", &format!("kill -KILL {pid}")])
                    .status();
            }
        }
        // Whatever is still mounted under the directory (overlay layers, shm, netns), deepest
        // first; then the TempDir removes the files.
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| Path::new(m).starts_with(&d))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
    }
}

/// The log's request lines for `path` (exact) with status 200.
fn served_ok(log: &str, path: &str) -> usize {
    let needle = format!(" path={path} ");
    log.lines()
        .filter(|l| l.contains(" request ") || l.contains("request id="))
        .filter(|l| l.contains(&needle) && l.contains(" status=200 "))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_by_tag_and_by_digest_through_wharf() {
    // The upstream: a real registry holding library/wharfe2e:1 (a Docker schema 2 image).
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (image_dir, digest) = images::docker_schema2(&work.path().join("image"));
    real::push(
        &home,
        &format!("dir:{}", image_dir.display()),
        &format!("docker://127.0.0.1:{}/library/wharfe2e:1", registry.port),
        false,
    )
    .await;
    registry.sync_log().await;
    let pushed = registry.requests().len();

    // wharf, whose default upstream is named docker.io (what Docker's mirror requests reach).
    let config = work.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n\
             [[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ndefault = true\ninsecure = true\n",
            work.path().join("data").display(),
            registry.url()
        ),
    )
    .unwrap();
    let wharf = Served::spawn(Served::command(&config));

    // http:// in the mirror URL: wharf serves plain HTTP here.
    let dockerd = Dockerd::start(&format!("http://{}", wharf.addr)).await;
    let info = dockerd
        .docker(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"])
        .await
        .unwrap();
    assert!(info.contains(&wharf.addr), "{info}");

    // By tag.
    if let Err(e) = dockerd.docker(&["pull", "wharfe2e:1"]).await {
        panic!(
            "{e}\nwharf:\n{}\ndockerd:\n{}",
            wharf.log.lock(),
            dockerd.log()
        );
    }
    let repo_digests = dockerd
        .docker(&["inspect", "--format", "{{json .RepoDigests}}", "wharfe2e:1"])
        .await
        .unwrap();
    assert_eq!(
        repo_digests.trim(),
        format!("[\"wharfe2e@{digest}\"]"),
        "docker inspect shows the upstream's digest"
    );
    let log = wharf.log.lock().clone();
    assert!(
        served_ok(&log, "/v2/library/wharfe2e/manifests/1") >= 1,
        "Docker's pull went through wharf:\n{log}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image_dir.join("manifest.json")).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    for blob in [config_digest, layer_digest] {
        assert_eq!(
            served_ok(&log, &format!("/v2/library/wharfe2e/blobs/{blob}")),
            1,
            "{blob} came through wharf:\n{log}"
        );
    }

    // By digest, with the image gone from the daemon so that it has to ask.
    dockerd.docker(&["rmi", "wharfe2e:1"]).await.unwrap();
    let by_digest = format!("wharfe2e@{digest}");
    if let Err(e) = dockerd.docker(&["pull", &by_digest]).await {
        panic!(
            "{e}\nwharf:\n{}\ndockerd:\n{}",
            wharf.log.lock(),
            dockerd.log()
        );
    }
    let repo_digests = dockerd
        .docker(&["inspect", "--format", "{{json .RepoDigests}}", &by_digest])
        .await
        .unwrap();
    assert_eq!(repo_digests.trim(), format!("[\"{by_digest}\"]"));
    let log = wharf.log.lock().clone();
    assert!(
        served_ok(&log, &format!("/v2/library/wharfe2e/manifests/{digest}")) >= 1,
        "the pull by digest went through wharf:\n{log}"
    );
    // Each blob was fetched from the registry once: the second pull was served from wharf's cache.
    registry.sync_log().await;
    let upstream_blob_gets = registry
        .requests_since(pushed)
        .iter()
        .filter(|(method, path)| method == "GET" && path.contains("/blobs/"))
        .count();
    assert_eq!(
        upstream_blob_gets,
        2,
        "{:?}",
        registry.requests_since(pushed)
    );
}
