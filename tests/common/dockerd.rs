//! A private Docker daemon for end-to-end tests (Debian's `docker.io`): its own data root, exec
//! root, pid file, socket and `daemon.json`, no iptables, no bridge, so it touches nothing of the
//! machine's and needs no network of its own. The `docker` client talks to it through its socket
//! with a client configuration of its own. Dropping a [`Dockerd`] stops the daemon (and the
//! containerd it started), undoes its mounts and removes its directories, whatever happened.
//! Used by `tests/e2e_docker.rs` (Docker as a client of wharf) and `tests/e2e_image.rs` (wharf's
//! container image).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::real;

/// How long one `docker` command may take, unless the caller says otherwise.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// A private Docker daemon. Dropping it stops the daemon (and the containerd it started),
/// unmounts what it left mounted under its directory and removes the directory.
pub struct Dockerd {
    child: Child,
    /// Short on purpose: a unix socket path is limited to 108 bytes.
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Dockerd {
    /// Starts `dockerd` with `extra` arguments (e.g. `--registry-mirror URL`); returns once it
    /// answers.
    pub async fn start(extra: &[&str]) -> Dockerd {
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
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(extra)
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

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The daemon's private directory (data root, exec root, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `docker args` against this daemon (bounded by [`DOCKER_TIMEOUT`]): stdout, or stdout
    /// and stderr as the error.
    pub async fn docker(&self, args: &[&str]) -> Result<String, String> {
        self.docker_within(args, DOCKER_TIMEOUT, None).await
    }

    /// What a container wrote, standard output and standard error together (`docker logs` passes
    /// them on separately); the error text when `docker logs` fails.
    pub async fn logs(&self, container: &str) -> String {
        let run = tokio::process::Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["logs", container])
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(DOCKER_TIMEOUT, run).await {
            Ok(Ok(out)) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(Err(e)) => format!("docker logs {container}: {e}"),
            Err(_) => format!("docker logs {container} took more than {DOCKER_TIMEOUT:?}"),
        }
    }

    /// The path of the daemon's socket, for a `docker` command a test runs itself.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// As [`Dockerd::docker`], bounded by `timeout`, with `stdin` fed to the command when given
    /// (a file, e.g. a tarball for `docker import -`).
    pub async fn docker_within(
        &self,
        args: &[&str],
        timeout: Duration,
        stdin: Option<&Path>,
    ) -> Result<String, String> {
        let stdin = match stdin {
            Some(path) => Stdio::from(std::fs::File::open(path).map_err(|e| e.to_string())?),
            None => Stdio::null(),
        };
        let run = tokio::process::Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            // A client configuration of its own (no credentials, no contexts from ~/.docker).
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .stdin(stdin)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| format!("docker {args:?} took more than {timeout:?}"))?
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
