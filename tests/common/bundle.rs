//! Air-gap bundles in the tests: a command-line configuration, the wharf binary run on it, and
//! tar archives read and written entry by entry.

use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

/// A configuration with one upstream, `upstream.test`, storage in `dir/data`.
pub fn write_config(dir: &Path, url: &str, upstream_extra: &str, extra: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"{url}\"\ninsecure = true\n{upstream_extra}\n{extra}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Runs the binary without blocking the runtime (an in-process wharf may be serving): exit code,
/// stdout, stderr.
pub async fn wharf(args: &[&str], config: &Path) -> (i32, String, String) {
    wharf_with_stdin(args, config, None).await.0
}

/// As [`wharf`], with `stdin` fed to the process; also returns stdout's raw bytes.
pub async fn wharf_with_stdin(
    args: &[&str],
    config: &Path,
    stdin: Option<Vec<u8>>,
) -> ((i32, String, String), Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        let mut input = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let _ = input.write_all(&bytes).await;
        });
    }
    let out = child.wait_with_output().await.unwrap();
    (
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        out.stdout,
    )
}

/// The entries of a tar file, in order: (path, data).
pub fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    entries_of(&std::fs::read(path).unwrap())
}

pub fn entries_of(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, data)
        })
        .collect()
}

/// Writes a tar of `entries` (directories end with `/`).
pub fn write_tar(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        } else {
            h.set_size(data.len() as u64);
        }
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}
