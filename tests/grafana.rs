//! The Grafana dashboard (`contrib/grafana/wharf.json`) asks only for metrics wharf exports: every
//! `wharf_*` name in its queries is in the exposition of a wharf that has seen a pull from a
//! rate-limited upstream, a shared store, a disk budget and a reload (families without a sample
//! are not exported), so a renamed metric cannot leave a panel empty.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use common::fake::Fake;
use common::{config_text, Up};
use wharf::cache::{Cache, Options};
use wharf::store::MemoryBlobStore;

/// The metric names a scrape can have: each `# TYPE` family with its sample suffixes.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// Every `wharf_*` identifier in the dashboard's queries and variables.
fn asked_for(dashboard: &serde_json::Value) -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::String(s) => {
                for (i, _) in s.match_indices("wharf_") {
                    let name: String = s[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(map) => map
                .iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "expr"
                            | "query"
                            | "definition"
                            | "targets"
                            | "panels"
                            | "templating"
                            | "list"
                    )
                })
                .for_each(|(_, v)| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(dashboard, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_asks_for_is_exported() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/wharf.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let asked = asked_for(&dashboard);
    assert!(asked.len() >= 20, "{asked:?}");

    let fake = Fake::start().await;
    fake.knobs().rate_limit = Some((100, 76));
    let img = fake.add_image("org/app", "1", 1, 1000, 3);
    let dir = tempfile::tempdir().unwrap();
    let up = Up {
        name: "upstream.test",
        url: fake.url(),
        default: true,
        extra: "",
    };
    let htpasswd = dir.path().join("htpasswd");
    let entry = |password: &str| format!("bench:{}\n", bcrypt::hash(password, 4).unwrap());
    std::fs::write(&htpasswd, entry("first")).unwrap();
    let text = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:0\"\n[auth]\nhtpasswd = '{}'\n",
        config_text(dir.path(), "5m", &[up])
            .replace("[storage]\n", "[storage]\nmax_size = \"1GiB\"\n"),
        htpasswd.display()
    );
    let config = wharf::Config::from_toml(&text, Path::new("test.toml")).unwrap();
    let cache = Cache::open_with(&config.storage.path, &Options::from_config(&config))
        .unwrap()
        .with_shared_store(
            Arc::new(MemoryBlobStore::new()),
            std::time::Duration::from_secs(30),
        );
    let running = wharf::start_with_cache(config, Arc::new(cache))
        .await
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    let client = common::client();
    for path in [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/blobs/{}", img.layers[0]),
    ] {
        let res = client
            .get(format!("{base}{path}"))
            .basic_auth("bench", Some("first"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
    }
    // A changed htpasswd file is reloaded within the reloader's poll interval.
    std::fs::write(&htpasswd, format!("{}{}", entry("first"), entry("second"))).unwrap();
    let admin = running.metrics_addr().unwrap();
    let scrape = || async {
        client
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    common::pulls::wait_for("the htpasswd reload to be counted", || async {
        scrape().await.contains("wharf_reloads_total")
    })
    .await;
    let exposition = scrape().await;
    let have = exported(&exposition);
    let missing: Vec<&String> = asked.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\n{exposition}"
    );
    drop(dir);
}
