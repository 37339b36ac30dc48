//! The maintenance commands with the real binary, on caches with planted faults: `wharf check`
//! (report, `--verify`, `--repair`), `wharf gc` (`--dry-run`, retention, pins, unreferenced
//! blobs), `wharf pin` / `unpin` / `pins`, and the refusal of check and gc while a wharf serves the
//! storage.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::fake::{digest_of, random_bytes, Fake};
use common::{client, files_under};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

fn write_config(dir: &Path, upstream: &str, extra: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{upstream}\"\ndefault = true\ninsecure = true\n{extra}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

async fn serve(config: &Path) -> wharf::Running {
    wharf::start(wharf::Config::load(config).unwrap())
        .await
        .unwrap()
}

/// Pulls each path through a wharf serving `config`, then stops it.
async fn pull_all(config: &Path, paths: &[String]) {
    let w = serve(config).await;
    for path in paths {
        let res = client()
            .get(format!("http://{}{path}", w.local_addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        res.bytes().await.unwrap();
    }
    w.fills_settled().await;
    w.shutdown().await.unwrap();
}

/// Runs the binary: exit code, stdout, stderr.
fn wharf(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `wharf check` report row: (count, bytes).
fn row(report: &str, what: &str) -> (u64, u64) {
    let line = report
        .lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what:?} row in:\n{report}"));
    let rest = line[what.len()..].split_whitespace().collect::<Vec<_>>();
    let count = rest[0].parse().unwrap();
    let bytes = rest
        .iter()
        .find_map(|t| t.strip_prefix('('))
        .unwrap()
        .parse()
        .unwrap();
    (count, bytes)
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = &digest[7..];
    dir.join("data/blobs/sha256").join(&hex[..2]).join(hex)
}

/// Every file under the storage with its contents' digest: a before/after picture.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    files_under(&dir.join("data"), "")
        .into_iter()
        .filter(|p| !p.starts_with(dir.join("data/index")))
        .map(|p| {
            let d = digest_of(&std::fs::read(&p).unwrap());
            (p, d)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_planted_faults_changes_nothing_then_repairs_them() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, 300 * 1024, 1);
    let blobs: Vec<(String, Bytes)> = (0..3)
        .map(|i| {
            let b = random_bytes(300 * 1024, 10 + i);
            (up.add_blob(b.clone()), b)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &up.url(), "");
    let mut paths = vec!["/v2/org/app/manifests/1".to_owned()];
    paths.extend(
        std::iter::once(&img.config)
            .chain(&img.layers)
            .chain(blobs.iter().map(|(d, _)| d))
            .map(|d| format!("/v2/org/app/blobs/{d}")),
    );
    pull_all(&config, &paths).await;
    let (code, out, _) = wharf(&["check"], &config);
    assert_eq!((code, row(&out, "ok").0), (0, 6), "{out}");
    assert!(out.contains("no problems found"), "{out}");

    // The faults: a record without its file, a flipped byte, a truncated file, an intact orphan,
    // a corrupt orphan, a staging leftover and a stray file.
    std::fs::remove_file(blob_path(dir.path(), &blobs[0].0)).unwrap();
    let flipped = blob_path(dir.path(), &blobs[1].0);
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&flipped, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(blob_path(dir.path(), &blobs[2].0))
        .unwrap()
        .set_len(1000)
        .unwrap();
    let orphan = random_bytes(5000, 20);
    let orphan_digest = up.add_blob(orphan.clone());
    let orphan_path = blob_path(dir.path(), &orphan_digest);
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, &orphan).unwrap();
    let liar_digest = digest_of(b"what the name says");
    let liar_path = blob_path(dir.path(), &liar_digest);
    std::fs::create_dir_all(liar_path.parent().unwrap()).unwrap();
    std::fs::write(&liar_path, b"something else").unwrap();
    std::fs::write(dir.path().join("data/tmp/77-1.partial"), b"half").unwrap();
    std::fs::write(dir.path().join("data/blobs/README"), b"hello").unwrap();

    // A plain check reports and changes nothing.
    let before = snapshot(dir.path());
    let (code, out, _) = wharf(&["check"], &config);
    assert_eq!(code, 1, "problems left unrepaired: {out}");
    // The flipped file has the right size: only hashing finds it.
    assert_eq!(row(&out, "ok").0, 4);
    assert_eq!(row(&out, "missing files"), (1, 300 * 1024));
    assert_eq!(row(&out, "size mismatches"), (1, 1000));
    assert_eq!(row(&out, "orphan files"), (2, 5000 + 14));
    assert_eq!(row(&out, "staging leftovers"), (1, 4));
    assert_eq!(row(&out, "stray files"), (1, 5));
    assert!(!out.contains("hash mismatches"), "{out}");
    assert!(
        out.contains("6 problems found; run `wharf check --repair`"),
        "{out}"
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "check without --repair changed files"
    );

    // --verify hashes: the flipped byte shows.
    let (code, out, _) = wharf(&["check", "--verify"], &config);
    assert_eq!(code, 1);
    assert_eq!(row(&out, "ok").0, 3);
    assert_eq!(row(&out, "hash mismatches"), (1, 300 * 1024));
    assert_eq!(row(&out, "orphans intact"), (1, 5000));
    assert_eq!(snapshot(dir.path()), before);

    // --repair fixes it all; a second check finds nothing.
    let (code, out, err) = wharf(&["check", "--repair", "--verify"], &config);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("7 problems found and repaired"), "{out}");
    let (code, out, _) = wharf(&["check", "--verify"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no problems found"), "{out}");
    assert_eq!(
        row(&out, "ok").0,
        4,
        "three good blobs and the adopted orphan"
    );
    assert!(!liar_path.exists() && !flipped.exists());

    // The adopted orphan is served from the cache; the bad ones are fetched again.
    let w = serve(&config).await;
    let base = format!("http://{}", w.local_addr());
    let res = client()
        .get(format!("{base}/v2/org/app/blobs/{orphan_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    assert!(res.bytes().await.unwrap() == orphan);
    for (digest, bytes) in &blobs {
        let res = client()
            .get(format!("{base}/v2/org/app/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "miss");
        assert!(res.bytes().await.unwrap() == *bytes);
    }

    // While a wharf serves the storage, check and gc refuse with exit 75 and one line (pin and
    // pins ask the running wharf instead: tests/airgap.rs).
    for args in [&["check"][..], &["gc"]] {
        let (code, out, err) = wharf(args, &config);
        assert_eq!(code, 75, "{args:?}: {out}{err}");
        assert!(err.contains("in use by"), "{args:?}: {err}");
        assert!(
            err.contains(&dir.path().join("data").display().to_string()),
            "{err}"
        );
    }
    // A second server refuses too, naming the storage, before touching anything in it.
    let before = snapshot(dir.path());
    let (code, _, err) = wharf(&["serve"], &config);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by another wharf"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_expired_manifests_and_unreferenced_blobs_but_keeps_pins() {
    let up = Fake::start().await;
    let old = up.add_image("org/old", "1", 2, 100 * 1024, 1);
    let new = up.add_image("org/new", "1", 1, 100 * 1024, 2);
    let keep = up.add_image("org/keep", "1", 1, 100 * 1024, 3);
    let loose = up.add_blob(random_bytes(100 * 1024, 4));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &up.url(),
        "[gc]\nmanifest_retention = \"30d\"\n[[pin]]\nimage = \"upstream.test/org/new:1\"",
    );
    let mut paths = Vec::new();
    for (repo, img) in [("org/old", &old), ("org/new", &new), ("org/keep", &keep)] {
        paths.push(format!("/v2/{repo}/manifests/1"));
        for blob in std::iter::once(&img.config).chain(&img.layers) {
            paths.push(format!("/v2/{repo}/blobs/{blob}"));
        }
    }
    paths.push(format!("/v2/org/app/blobs/{loose}"));
    pull_all(&config, &paths).await;

    // Pins from the command line; bad references are refused.
    let (code, out, err) = wharf(&["pin", "upstream.test/org/keep:1"], &config);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pinned upstream.test/org/keep:1") && out.contains("keeps 3 blobs"),
        "{out}"
    );
    let (code, _, err) = wharf(&["pin", "quay.io/org/keep:1"], &config);
    assert_eq!(code, 64);
    assert!(err.contains("not an [[upstream]] name"), "{err}");
    let (code, out, _) = wharf(&["pins"], &config);
    assert_eq!(code, 0);
    assert!(
        out.contains("upstream.test/org/keep:1\tcommand\tsha256:"),
        "{out}"
    );
    assert!(
        out.contains("upstream.test/org/new:1\tconfig\tsha256:"),
        "{out}"
    );
    let (code, out, _) = wharf(&["unpin", "upstream.test/org/new:1"], &config);
    assert_eq!(
        code, 1,
        "a configuration pin is removed from the file, not here"
    );
    assert!(out.contains("[[pin]]"), "{out}");

    // The old and the kept image were last pulled 100 days ago.
    {
        use wharf::store::MetaStore as _;
        let index = wharf::cache::Index::open(&dir.path().join("data/index")).unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(100 * 86_400);
        let micros = long_ago.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let aged: Vec<_> = [&old, &keep]
            .iter()
            .map(|img| (img.manifest_digest.parse().unwrap(), micros))
            .collect();
        assert_eq!(index.record_access(&aged).unwrap(), 2);
        index.flush().await.unwrap();
    }
    let doomed: Vec<&String> = std::iter::once(&old.manifest_digest)
        .chain(std::iter::once(&old.config))
        .chain(&old.layers)
        .chain(std::iter::once(&loose))
        .collect();

    let before = snapshot(dir.path());
    let (code, out, err) = wharf(&["gc", "--dry-run"], &config);
    assert_eq!(code, 0, "{err}");
    for digest in &doomed {
        assert!(
            out.lines()
                .any(|l| l.starts_with("would remove") && l.contains(digest.as_str())),
            "{digest} in {out}"
        );
    }
    assert!(
        out.contains(&format!("would remove manifest {}", old.manifest_digest)),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("would remove"))
            .count(),
        5,
        "{out}"
    );
    assert!(
        out.contains("1 tags dropped") && out.contains("dry run"),
        "{out}"
    );
    assert_eq!(snapshot(dir.path()), before, "a dry run removed something");

    let (code, out, err) = wharf(&["gc"], &config);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("removed")).count(),
        5,
        "{out}"
    );
    for digest in &doomed {
        assert!(
            !blob_path(dir.path(), digest).exists(),
            "{digest} survived gc"
        );
    }
    for img in [&new, &keep] {
        for digest in std::iter::once(&img.manifest_digest)
            .chain(std::iter::once(&img.config))
            .chain(&img.layers)
        {
            assert!(
                blob_path(dir.path(), digest).exists(),
                "{digest} was removed"
            );
        }
    }
    let (code, out, _) = wharf(&["check", "--verify"], &config);
    assert_eq!(code, 0, "{out}");
    assert_eq!(row(&out, "ok").0, 6);
    {
        use wharf::store::MetaStore as _;
        let index = wharf::cache::Index::open(&dir.path().join("data/index")).unwrap();
        let tag: wharf::oci::Tag = "1".parse().unwrap();
        let repo = |r: &str| r.parse::<wharf::oci::RepoName>().unwrap();
        assert!(index
            .tag("upstream.test", &repo("org/old"), &tag)
            .unwrap()
            .is_none());
        assert!(index
            .tag("upstream.test", &repo("org/new"), &tag)
            .unwrap()
            .is_some());
    }
    let (code, out, _) = wharf(&["unpin", "upstream.test/org/keep:1"], &config);
    assert_eq!((code, out.trim()), (0, "unpinned upstream.test/org/keep:1"));
    // Unpinned and long unused: the next gc takes it.
    let (code, out, _) = wharf(&["gc"], &config);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("removed manifest {}", keep.manifest_digest)),
        "{out}"
    );
}
