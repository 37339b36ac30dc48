//! The real binary: exit codes and one-line messages for bad configurations, help text, and no
//! secret in its logs even at trace level.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::fake::{AuthMode, Fake};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

/// Starts the binary and reads its log until it says where it listens: the child, the rest of its
/// log, the address, and the lines read so far.
#[allow(
    clippy::zombie_processes,
    reason = "the child is handed to the caller, which waits for it"
)]
fn spawn_listening(
    mut command: Command,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
    String,
) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "wharf exited:\n{log}"
        );
        log.push_str(&line);
        if let Some(i) = line.find("wharf is listening addr=") {
            let addr = line[i + 24..].split_whitespace().next().unwrap().to_owned();
            return (child, stderr, addr, log);
        }
    }
}

fn run_with(config: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("WHARF_TEST_PW", "env-secret-value")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configurations_exit_64_with_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let up = "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n";
    let cases = [
        (
            "unknown.toml",
            format!("[server]\nlisen = \"0.0.0.0:5000\"\n{up}"),
            "server.lisen",
        ),
        (
            "badurl.toml",
            "[[upstream]]\nname = \"a.io\"\nurl = \"ftp://a.io\"\n".to_owned(),
            "upstream[0].url",
        ),
        (
            "twodefaults.toml",
            format!(
                "{up}[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\ndefault = true\n"
            ),
            "upstream[1].default",
        ),
        (
            "badenv.toml",
            format!("{up}username = \"u\"\npassword_env = \"NOT_SET_ANYWHERE\"\n"),
            "upstream[0].password_env",
        ),
        (
            "nousername.toml",
            format!("{up}password_env = \"WHARF_TEST_PW\"\n"),
            "upstream[0].username",
        ),
    ];
    for (name, text, key) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = run_with(&path);
        assert_eq!(code, 64, "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(key),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("env-secret-value"), "{stderr}");
    }
    let (code, stderr) = run_with(&dir.path().join("missing.toml"));
    assert_eq!(code, 64);
    assert!(
        stderr.contains("missing.toml") && stderr.contains("--config"),
        "{stderr}"
    );
}

#[test]
fn help_explains_the_commands() {
    for args in [vec!["--help"], vec!["serve", "--help"]] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("serve"), "{args:?}: {text}");
        if args.len() == 2 {
            assert!(text.contains("--config") && text.contains("64"), "{text}");
        }
    }
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, 1000, 1);
    up.knobs().auth = AuthMode::Bearer {
        creds: Some(("alice".into(), "pw-9f8e7d".into())),
        realm: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw-9f8e7d\n").unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{}\"\ndefault = true\ninsecure = true\nusername = \"alice\"\npassword_file = \"{}\"\n",
            dir.path().join("data").display(),
            up.url(),
            pw.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace");
    let (mut child, mut stderr, addr, mut log) = spawn_listening(command);
    let c = common::client();
    let res = c
        .get(format!("http://{addr}/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c
        .get(format!("http://{addr}/v2/org/app/blobs/{}", img.layers[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    // SIGTERM: a graceful stop, then the whole log.
    // The shell's builtin kill: no procps needed.
    Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    assert!(status.success(), "graceful shutdown exits 0:\n{log}");
    assert!(
        log.contains("/v2/org/app/manifests/1"),
        "requests are logged"
    );
    for secret in ["pw-9f8e7d", "fake-token-0123456789", "YWxpY2U6cHctOWY4ZTdk"] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_offline_never_contacts_any_upstream() {
    let up = Fake::start().await;
    up.add_image("org/app", "1", 0, 0, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{}\"\ndefault = true\ninsecure = true\n",
            dir.path().join("data").display(),
            up.url()
        ),
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--offline", "--config"])
        .arg(&config);
    let (mut child, _stderr, addr, _log) = spawn_listening(command);
    let res = common::client()
        .get(format!("http://{addr}/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(body.contains("offline"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(up.connections(), 0);
}
