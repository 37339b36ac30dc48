//! `wharf health`, the real binary: against a serving wharf (`/healthz`, `/readyz`, any URL of its
//! metrics listener), against listeners that refuse, stall, answer garbage or answer 503, and with
//! usage errors. One line of output each time, and the exit code a container's `HEALTHCHECK`
//! reads: 0 healthy, 1 not, 64 misconfigured.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::served::{Served, BIN};

/// Runs `wharf health args`: (exit code, stdout, stderr).
fn health(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("health")
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_with_metrics(dir: &Path, metrics: &str) -> std::path::PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n\
             [[upstream]]\nname = \"upstream.test\"\nurl = \"http://127.0.0.1:9\"\n\
             default = true\ninsecure = true\n{metrics}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// A listener on a free loopback port that answers one connection with `reply` (after reading
/// the request) and closes it.
fn answering(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(reply);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_asks_a_serving_wharf() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = config_with_metrics(
        dir.path(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let _wharf = Served::spawn(Served::command(&config));
    let config_arg = config.to_str().unwrap();

    let (code, stdout, stderr) = health(&["--config", config_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("http://127.0.0.1:{port}/healthz: 200 ok\n"));
    assert_eq!(stderr, "");

    let (code, stdout, stderr) = health(&["--config", config_arg, "--ready"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!("http://127.0.0.1:{port}/readyz: 200 ready\n")
    );

    // Any URL: the metrics page is 200 (its first line shown), an unknown path is not.
    let (code, stdout, _) = health(&["--url", &format!("http://127.0.0.1:{port}/metrics")]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!("http://127.0.0.1:{port}/metrics: 200 # "))
            && stdout.lines().count() == 1,
        "{stdout}"
    );
    let (code, stdout, stderr) = health(&["--url", &format!("http://127.0.0.1:{port}/nope")]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!("wharf: http://127.0.0.1:{port}/nope: 404 not found; try /status, /status.json, /metrics, /healthz or /readyz\n")
    );
}

#[test]
fn health_fails_with_one_line_when_the_answer_is_not_ok() {
    // Nothing listens.
    let closed = common::free_port();
    let (code, _, stderr) = health(&["--url", &format!("http://127.0.0.1:{closed}/healthz")]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(&format!(
            "wharf: http://127.0.0.1:{closed}/healthz: cannot connect: "
        )) && stderr.lines().count() == 1,
        "{stderr}"
    );

    // A listener that takes the connection (in its backlog) and never answers.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stalled.local_addr().unwrap().port();
    let (code, _, stderr) = health(&[
        "--url",
        &format!("http://127.0.0.1:{port}/healthz"),
        "--timeout",
        "300ms",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!("wharf: http://127.0.0.1:{port}/healthz: no answer within 300ms\n")
    );
    drop(stalled);

    // A draining wharf's answer.
    let port = answering(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 25\r\n\r\nnot ready: shutting down\n",
    );
    let (code, stdout, stderr) = health(&["--url", &format!("http://127.0.0.1:{port}/readyz")]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(
        stderr,
        format!("wharf: http://127.0.0.1:{port}/readyz: 503 not ready: shutting down\n")
    );

    // Not HTTP at all.
    let port = answering(b"SSH-2.0-OpenSSH_9.2\r\n");
    let (code, _, stderr) = health(&["--url", &format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "wharf: http://127.0.0.1:{port}/healthz: not an HTTP response: SSH-2.0-OpenSSH_9.2\n"
        )
    );

    // A connection closed without a word.
    let port = answering(b"");
    let (code, _, stderr) = health(&["--url", &format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(code, 1);
    assert!(
        stderr.ends_with("/healthz: not an HTTP response: the connection closed without a reply\n"),
        "{stderr}"
    );
}

#[test]
fn health_usage_errors_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let off = config_with_metrics(dir.path(), "");
    let (code, stdout, stderr) = health(&["--config", off.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str()), (64, ""));
    assert!(
        stderr.contains(&off.display().to_string())
            && stderr.contains("metrics.listen")
            && stderr.contains("--url")
            && stderr.lines().count() == 1,
        "{stderr}"
    );

    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = health(&["--config", missing.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    let (code, _, stderr) = health(&["--url", "https://127.0.0.1:9095/healthz"]);
    assert_eq!(code, 64);
    assert!(stderr.contains("only http://"), "{stderr}");

    // --url says where; --ready and --config would be ignored, so they are refused with it.
    for extra in [["--ready", ""], ["--config", "x.toml"]] {
        let mut args = vec!["--url", "http://127.0.0.1:9095/healthz"];
        args.extend(extra.iter().filter(|a| !a.is_empty()));
        let (code, _, stderr) = health(&args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}
