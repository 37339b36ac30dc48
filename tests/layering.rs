//! The direction of the house, checked on the source: `server/` (HTTP) -> `cache/` (policy) ->
//! `store/` (bytes and records) and `upstream/` (the registry client); `config/` and `oci/` at the
//! bottom. A module may not name a module above it, in code or in a `use` (comments are skipped).

use std::path::Path;

/// Each module and the modules it must never name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "oci",
        &[
            "config",
            "store",
            "upstream",
            "cache",
            "server",
            "airgap",
            "access",
            "telemetry",
            "tls",
        ],
    ),
    (
        "config",
        &[
            "store",
            "upstream",
            "cache",
            "server",
            "airgap",
            "telemetry",
            "tls",
        ],
    ),
    (
        "store",
        &["config", "upstream", "cache", "server", "airgap", "status"],
    ),
    (
        "upstream",
        &["store", "cache", "server", "airgap", "status"],
    ),
    ("cache", &["server", "airgap", "status"]),
    ("cluster", &["store", "cache", "server", "airgap", "status"]),
    (
        "activity",
        &[
            "config", "store", "upstream", "cache", "server", "airgap", "status", "metrics",
        ],
    ),
    // The object store's settings, shared by config/ (which parses them) and store/ (which uses
    // them): below both.
    (
        "bucket",
        &[
            "config", "store", "upstream", "cache", "cluster", "server", "airgap",
        ],
    ),
];

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_names_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        let mut files = Vec::new();
        let single = src.join(format!("{module}.rs"));
        if single.is_file() {
            files.push(single);
        } else {
            sources(&src.join(module), &mut files);
        }
        assert!(!files.is_empty(), "src/{module}/ has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for above in *forbidden {
                    if code.contains(&format!("crate::{above}::"))
                        || code.contains(&format!("crate::{above};"))
                        || code.contains(&format!("crate::{above}}}"))
                        || code.contains(&format!("crate::{above},"))
                    {
                        found.push(format!(
                            "{}:{}: {module} names {above}: {code}",
                            file.strip_prefix(&src).unwrap().display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}
