//! The `wharf` binary's contract with the operator: a bad command line or configuration exits 64 with
//! exactly one line on stderr naming the file and the key; help exits 0 and documents `--config`;
//! no message ever shows a password.
//!
//! Every test runs the real binary in its own tempdir; none starts a server that stays up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished `wharf` run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `wharf args...` in `dir` with `env` added (and `RUST_LOG` removed unless given), with output
/// captured in files (so a chatty run cannot fill a pipe) and a deadline (so a config that wrongly
/// validates cannot hang the suite: the child is killed by its own handle).
fn wharf(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out_path = dir.join("stdout.txt");
    let err_path = dir.join("stderr.txt");
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wharf {args:?} did not exit within 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(out_path).unwrap(),
        stderr: std::fs::read_to_string(err_path).unwrap(),
    }
}

/// A tempdir holding `config.toml` with `text`.
fn with_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const UPSTREAM: &str =
    "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n";

#[test]
fn bad_configs_exit_64_with_one_line_naming_file_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        // (config text, key the line must name, text it must contain)
        (
            "[server]\nlisen = \"0.0.0.0:5000\"\n",
            "server.lisen",
            "unknown key; valid keys here are listen",
        ),
        (
            "[[upstream]]\nname = \"x.io\"\nurl = \"ftp://x\"\n",
            "upstream[0].url",
            "\"ftp://x\" is not an http(s) URL",
        ),
        (
            "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\ndefault = true\n[[upstream]]\nname = \"b.io\"\nurl = \"https://b.io\"\ndefault = true\n",
            "upstream[1].default",
            "two upstreams have default = true (a.io and b.io); set it on one only",
        ),
        ("[cache]\ntag_ttl = \"5\"\n", "cache.tag_ttl", "is not a duration"),
        ("", "upstream", "no [[upstream]] is configured"),
    ];
    for (text, key, problem) in cases {
        // Unknown keys and the rest are reported whatever follows them, so a valid upstream is
        // appended where the case does not define its own.
        let text = if text.contains("[[upstream]]") || text.is_empty() {
            (*text).to_owned()
        } else {
            format!("{text}{UPSTREAM}")
        };
        let (dir, path) = with_config(&text);
        let run = wharf(
            dir.path(),
            &["serve", "--config", path.to_str().unwrap()],
            &[],
        );
        assert_eq!(run.code, Some(64), "{text:?}: {}", run.stderr);
        let want = format!("wharf: {}: {key}: ", path.display());
        assert_eq!(run.stderr.lines().count(), 1, "{text:?}: {:?}", run.stderr);
        assert!(
            run.stderr.starts_with(&want),
            "{text:?}: want {want:?} in {:?}",
            run.stderr
        );
        assert!(
            run.stderr.contains(problem),
            "{text:?}: want {problem:?} in {:?}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{text:?}: stdout {:?}", run.stdout);
    }
}

#[test]
fn missing_config_file_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--config", "nope.toml"], "nope.toml"),
        (&["serve", "-c", "etc/wharf.toml"], "etc/wharf.toml"),
        // Without --config: ./config.toml in the working directory, which the tempdir lacks.
        (&["serve"], "./config.toml"),
    ];
    for (args, file) in cases {
        let run = wharf(dir.path(), args, &[]);
        assert_eq!(run.code, Some(64), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {:?}", run.stderr);
        let want = format!("wharf: {file}: cannot read the file (no such file);");
        assert!(
            run.stderr.starts_with(&want),
            "{args:?}: want {want:?} in {:?}",
            run.stderr
        );
        assert!(
            run.stderr.contains("--config PATH"),
            "{args:?}: {:?}",
            run.stderr
        );
    }
}

#[test]
fn bad_command_lines_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[][..],
        &["serv"],
        &["serve", "--conf", "x"],
        &["serve", "--config"],
    ] {
        let run = wharf(dir.path(), args, &[]);
        assert_eq!(run.code, Some(64), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn help_exits_0_and_documents_the_config() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["serve", "--help"], &["help", "serve"]] {
        let run = wharf(dir.path(), args, &[]);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        for want in ["--config", "config.toml", "64", "RUST_LOG"] {
            assert!(
                run.stdout.contains(want),
                "{args:?}: no {want:?} in {}",
                run.stdout
            );
        }
    }
    let run = wharf(dir.path(), &["--version"], &[]);
    assert_eq!(run.code, Some(0));
    assert!(
        run.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        run.stdout
    );
}

#[test]
fn password_from_env_is_never_printed() {
    const PASSWORD: &str = "pw-5f1c2b9e-never-print-me";
    let creds = "username = \"bot\"\npassword_env = \"WHARF_TEST_PW\"\n";
    let cases = [
        // The password is read, then a later key is wrong.
        format!("{UPSTREAM}{creds}[server]\nlisen = \"x\"\n"),
        format!("{UPSTREAM}{creds}timeout = \"soon\"\n"),
        format!("{UPSTREAM}{creds}[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\ndefault = true\n"),
        // A password source without a username, and both sources at once.
        format!("{UPSTREAM}password_env = \"WHARF_TEST_PW\"\n"),
        format!("{UPSTREAM}{creds}password_file = \"pw\"\n"),
        // The value pasted where the variable's name belongs.
        format!("{UPSTREAM}username = \"bot\"\npassword_env = \"{PASSWORD}\"\n"),
        // A URL carrying the password, whatever else is wrong with it.
        format!("[[upstream]]\nname = \"a.io\"\nurl = \"ftp://bot:{PASSWORD}@a.io\"\n"),
        format!("[[upstream]]\nname = \"a.io\"\nurl = \"https://bot:{PASSWORD}@\"\n"),
    ];
    for text in &cases {
        let (dir, path) = with_config(text);
        let run = wharf(
            dir.path(),
            &["serve", "--config", path.to_str().unwrap()],
            &[("WHARF_TEST_PW", PASSWORD), ("RUST_LOG", "trace")],
        );
        assert_eq!(run.code, Some(64), "{text:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{text:?}: {:?}", run.stderr);
        for output in [&run.stdout, &run.stderr] {
            assert!(!output.contains(PASSWORD), "{text:?} leaked: {output}");
            assert!(
                !output.contains("never-print-me"),
                "{text:?} leaked: {output}"
            );
        }
    }
}

#[test]
fn password_is_never_printed_when_startup_fails() {
    const PASSWORD: &str = "pw-0d6e-never-print-me";
    // A valid configuration whose storage path is a file: startup fails after logging is on (at
    // trace), so every log line written with the configuration loaded is checked.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = '{}'\n{UPSTREAM}username = \"bot\"\npassword_env = \"WHARF_TEST_PW\"\n",
        blocker.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let run = wharf(
        dir.path(),
        &["serve", "--config", path.to_str().unwrap()],
        &[("WHARF_TEST_PW", PASSWORD), ("RUST_LOG", "trace")],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("wharf: "), "{:?}", run.stderr);
    assert!(last.contains(blocker.to_str().unwrap()), "{last}");
    for output in [&run.stdout, &run.stderr] {
        assert!(!output.contains("never-print-me"), "leaked: {output}");
    }
}
