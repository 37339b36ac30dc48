//! The README's Quick start, run as written, so the README cannot drift from what works.
//!
//! The test reads the fenced blocks under `## Quick start` in README.md: `sh` blocks are commands
//! (one per line), and a `text` block right after one is the output it must print (each line must
//! appear, in any order; `...` inside a line stands for any text, and a line of `...` alone for
//! lines left out).
//!
//! - The first command, `cargo run --release -- <args>`, is run as the wharf binary cargo built
//!   for the tests (`CARGO_BIN_EXE_wharf`, a build of the same sources) with `<args>` exactly as
//!   written, in a fresh working directory holding the repository's `config.toml`.
//! - The second, `./scripts/test.sh`, is the command that runs this test: it is checked to be the
//!   one `.ci/run` runs, not run again from here.
//! - Every other command is run with `sh -c` in that working directory, as written, with its output
//!   checked against the README's and against what a pull through wharf must show (`{}` from
//!   `/v2/`, `X-Cache: miss` and then `hit`, the image's files, a `cache="hit"` metric).
//!
//! There is no internet here, so three things are substituted, and nothing else:
//! - in `config.toml`, the Docker Hub upstream's `url` becomes a local distribution registry
//!   (`docker-registry`, plain HTTP, so `insecure = true` is added) holding a generated two-platform
//!   image as `library/alpine:latest`, the name the README pulls;
//! - the ports: `5000` and `9095` (the listener and the metrics listener, in `config.toml` and in
//!   the commands alike) become free ports, because other wharfs may be running on this machine;
//!   a command naming any other port than `config.toml` does still fails;
//! - the listener's address `0.0.0.0` becomes `127.0.0.1`, so the test is reachable only locally.
//!
//! Each of those replacements must match exactly once, so a change to `config.toml` that breaks the
//! Quick start fails here too. skopeo runs with a private `HOME` and no proxy variables, and every
//! command is bounded in time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::real::{self, Registry};
use common::served::{Served, BIN};
use sha2::{Digest as _, Sha256};

/// A fenced block of the Quick start: its info string (`sh`, `text`) and its lines.
#[derive(Debug, Clone)]
struct Block {
    lang: String,
    lines: Vec<String>,
}

/// A command block and the output the README shows for it.
#[derive(Debug)]
struct Step {
    commands: Vec<String>,
    expected: Option<Vec<String>>,
}

/// The fenced blocks between `## Quick start` and the next `## ` heading.
fn quick_start_blocks(readme: &str) -> Vec<Block> {
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim_end() != "## Quick start");
    assert!(
        lines.next().is_some(),
        "README.md has no \"## Quick start\" section"
    );
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in lines {
        if open.is_none() && line.starts_with("## ") {
            break;
        }
        match (&mut open, line.trim_end().strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    lines: Vec::new(),
                });
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => block.lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block in the Quick start");
    blocks
}

/// Pairs each `sh` block with the `text` block that follows it, if any.
fn steps(blocks: &[Block]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for block in blocks {
        match block.lang.as_str() {
            "sh" => steps.push(Step {
                commands: block
                    .lines
                    .iter()
                    .map(|l| l.trim())
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect(),
                expected: None,
            }),
            "text" => {
                let step = steps
                    .last_mut()
                    .filter(|s| s.expected.is_none())
                    .unwrap_or_else(|| {
                        panic!("a text block without a command before it: {block:?}")
                    });
                step.expected = Some(block.lines.clone());
            }
            other => panic!(
                "the Quick start has a {other:?} block; only sh and text are run and checked"
            ),
        }
    }
    steps
}

/// Whether `line` matches `pattern`, where `...` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("...");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Checks that every line the README shows (but `...`) is in `output`.
fn check_output(commands: &[String], expected: &[String], output: &str) {
    let got: Vec<&str> = output.lines().map(str::trim_end).collect();
    for want in expected.iter().map(|l| l.trim_end()) {
        if want.is_empty() || want == "..." {
            continue;
        }
        assert!(
            got.iter().any(|line| matches(want, line)),
            "the README says {commands:?} prints {want:?}; it printed:\n{output}"
        );
    }
}

/// Replaces `from` with `to` in `text`, which must hold `from` exactly once.
fn replace_once(text: &str, from: &str, to: &str, what: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "config.toml should hold {from:?} once ({what})"
    );
    text.replacen(from, to, 1)
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Runs `command` with `sh -c` in `dir`, with `home` as `HOME` and no proxy variables, bounded in
/// time; returns whether it succeeded and its standard output and error.
async fn run(command: &str, dir: &Path, home: &Path) -> (bool, String) {
    let mut child = tokio::process::Command::new("sh");
    child
        .args(["-c", command])
        .current_dir(dir)
        .env("HOME", home)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "REGISTRY_AUTH_FILE",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
    ] {
        child.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within 120 s"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The directory a `skopeo copy ... dir:DEST` command writes, relative to `cwd`.
fn skopeo_dest(command: &str, cwd: &Path) -> PathBuf {
    let dest = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dir:"))
        .unwrap_or_else(|| panic!("{command:?} copies to no dir: destination"));
    cwd.join(dest)
}

#[test]
fn the_readme_parser_finds_blocks_and_wildcards() {
    let readme = "# x\n\n## Quick start\n\n```sh\na\n# note\nb\n```\n\n```text\nout\n```\n\n```sh\nc\n```\n\n## Next\n\n```sh\nnot this\n```\n";
    let steps = steps(&quick_start_blocks(readme));
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].commands, ["a", "b"]);
    assert_eq!(steps[0].expected.as_deref(), Some(&["out".to_owned()][..]));
    assert_eq!(steps[1].commands, ["c"]);
    assert!(steps[1].expected.is_none());
    assert!(matches("Copying blob ...", "Copying blob sha256:abc"));
    assert!(matches("a...c...e", "abcde"));
    assert!(matches("x-cache: miss", "x-cache: miss"));
    assert!(!matches("x-cache: miss", "x-cache: hit"));
    assert!(!matches("x-cache: miss", "x-cache: missing"));
    assert!(!matches("a...b", "a"));
    assert!(!matches("ab...ba", "aba"));
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_table_of_contents_lists_every_section() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // Headings outside code blocks, after the contents: every `##`, and the `###` under Production.
    let mut want = Vec::new();
    let (mut fenced, mut after, mut section) = (false, false, "");
    for line in readme.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if fenced {
        } else if line == "## Contents" {
            after = true;
        } else if let Some(h) = line.strip_prefix("## ").filter(|_| after) {
            section = h;
            want.push(format!("- [{h}](#{})", anchor(h)));
        } else if let Some(h) = line
            .strip_prefix("### ")
            .filter(|_| after && section == "Production")
        {
            want.push(format!("  - [{h}](#{})", anchor(h)));
        }
    }
    let toc: Vec<String> = readme
        .lines()
        .skip_while(|l| *l != "## Contents")
        .skip(1)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(!want.is_empty(), "README.md has no \"## Contents\"");
    assert_eq!(
        toc, want,
        "README.md's contents should list every section, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = steps(&quick_start_blocks(&readme));
    assert!(
        steps.len() >= 3,
        "the Quick start should have the two commands and then the commands to try: {steps:?}"
    );

    // The two commands.
    let [serve] = &steps[0].commands[..] else {
        panic!("the first Quick start block should be one command: {steps:?}");
    };
    let args: Vec<&str> = serve
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| {
            panic!("the first command should be `cargo run --release -- ...`: {serve:?}")
        })
        .split_whitespace()
        .collect();
    assert_eq!(
        steps[1].commands,
        ["./scripts/test.sh"],
        "the second Quick start command runs the tests"
    );
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "./scripts/test.sh"),
        "CI (.ci/run) runs the README's test command:\n{ci}"
    );

    // The upstream: a local registry holding the image the README pulls.
    let registry = Registry::start(None).await;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (layout, index_digest) = common::images::multi_arch(&work.path().join("image"), "latest");
    real::push(
        &home,
        &format!("oci:{}:latest", layout.dir.display()),
        &format!("docker://127.0.0.1:{}/library/alpine:latest", registry.port),
        true,
    )
    .await;
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .dir
                .join("blobs/sha256")
                .join(index_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let platform_manifests: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();

    // config.toml as shipped, with the substitutions the module docs list.
    let port = common::free_port();
    let metrics_port = loop {
        let p = common::free_port();
        if p != port {
            break p;
        }
    };
    let mut config = std::fs::read_to_string(root.join("config.toml")).unwrap();
    config = replace_once(
        &config,
        "listen = \"0.0.0.0:5000\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        "[server] listen",
    );
    config = replace_once(
        &config,
        "listen = \"127.0.0.1:9095\"",
        &format!("listen = \"127.0.0.1:{metrics_port}\""),
        "[metrics] listen",
    );
    config = replace_once(
        &config,
        "url = \"https://registry-1.docker.io\"",
        &format!("url = \"{}\"\ninsecure = true", registry.url()),
        "the default upstream",
    );
    let cwd = work.path().join("wharf");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("config.toml"), config).unwrap();

    let mut command = Command::new(BIN);
    command
        .args(&args)
        .current_dir(&cwd)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let wharf = Served::spawn(command);
    assert_eq!(wharf.addr, format!("127.0.0.1:{port}"));
    eprintln!("$ {serve}\n{}", wharf.log.lock().trim_end());

    // Try it: every command as written (but the ports), its output checked.
    let mut transcript = String::new();
    let mut x_cache = Vec::new();
    let (mut base, mut pulled, mut metrics) = (false, false, false);
    for step in &steps[2..] {
        let mut output = String::new();
        for written in &step.commands {
            let command = written
                .replace(":5000", &format!(":{port}"))
                .replace(":9095", &format!(":{metrics_port}"));
            let (ok, out) = run(&command, &cwd, &home).await;
            transcript.push_str(&format!("$ {written}\n{out}"));
            if !out.ends_with('\n') {
                transcript.push('\n');
            }
            assert!(
                ok,
                "{written:?} failed:\n{out}\nwharf's log:\n{}",
                wharf.log.lock()
            );
            // What each kind of command must show, whatever the README says.
            if written.starts_with("curl") && written.ends_with("/v2/") {
                assert_eq!(out.trim(), "{}", "{written}");
                base = true;
            }
            if written.contains("x-cache") {
                x_cache.push(out.trim().to_ascii_lowercase());
            }
            if written.starts_with("skopeo copy") {
                let dest = skopeo_dest(written, &cwd);
                let manifest = std::fs::read(dest.join("manifest.json")).unwrap();
                assert!(
                    platform_manifests.contains(&sha(&manifest)),
                    "skopeo pulled a manifest of the image, for this platform"
                );
                pulled = true;
            }
            if written.contains(":9095/metrics") {
                assert!(out.contains("cache=\"hit\""), "{out}");
                metrics = true;
            }
            output.push_str(&out);
            output.push('\n');
        }
        if let Some(expected) = &step.expected {
            check_output(&step.commands, expected, &output);
        }
    }
    eprint!("{transcript}");
    assert!(
        base && pulled && metrics,
        "the Quick start should check /v2/, pull with skopeo and show the metrics: {steps:?}"
    );
    assert_eq!(
        x_cache.first().map(String::as_str),
        Some("x-cache: miss"),
        "the first X-Cache the Quick start shows is a miss: {x_cache:?}"
    );
    assert!(
        x_cache.iter().skip(1).any(|x| x == "x-cache: hit"),
        "a later X-Cache is a hit: {x_cache:?}"
    );
    // The pull really went through wharf to the substituted upstream.
    registry.sync_log().await;
    assert!(
        registry
            .requests()
            .iter()
            .any(|(m, p)| m == "GET" && p == "/v2/library/alpine/manifests/latest"),
        "{:?}",
        registry.requests()
    );

    // Ctrl-C: a clean stop, whose last line says so.
    wharf.signal("INT");
    let (code, log) = wharf.wait().await;
    assert_eq!(code, Some(0), "{log}");
    let last = log.lines().last().unwrap_or("");
    assert!(
        last.contains("stopped") && last.contains("drain_ms="),
        "wharf's last line should be `stopped`: {last:?}\n{log}"
    );
    assert!(log.contains("cache=\"miss\""), "{log}");
}
