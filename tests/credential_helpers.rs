//! Credentials that change while wharf runs: a Docker credential helper whose credential the
//! registry (Basic) or its token realm (Bearer) stops accepting, a password_file rewritten, helpers
//! that hang, fail or print garbage, and an upstream with fallback URLs.
//!
//! The fake helpers are the scripts in tests/helpers/, copied into a temp dir next to their state
//! (`current`: the password to hand out; `mode`; `runs`: one line per run, which the tests count).

mod common;

use std::path::{Path, PathBuf};

use common::fake::{AuthMode, Fake};
use common::{client, Up, Wharf};

/// Copies the helper script `name` into `dir`, executable; returns its path.
fn install_helper(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name);
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

/// How many times the helper in `dir` ran.
fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn wharf_with(up: &Fake, extra: &str) -> Wharf {
    Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: up.url(),
            default: true,
            extra,
        }],
    )
    .await
}

async fn get(w: &Wharf, path: &str) -> (u16, String) {
    let res = client().get(w.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

fn basic(user: &str, pass: &str) -> AuthMode {
    AuthMode::Basic {
        user: user.into(),
        pass: pass.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_rotate_three_times_without_a_restart() {
    common::real::capture_logs();
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 8, 2000, 7);
    up.knobs().auth = basic("robot", "pw-0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("current"), "pw-0").unwrap();
    let helper = install_helper(dir.path(), "rotating.sh");
    let w = wharf_with(
        &up,
        &format!("credential_helper = \"{}\"", helper.display()),
    )
    .await;

    let (status, _) = get(&w, "/v2/org/app/manifests/1").await;
    assert_eq!(status, 200);
    assert_eq!(runs(dir.path()), 1);
    let (status, _) = get(&w, &format!("/v2/org/app/blobs/{}", img.layers[0])).await;
    assert_eq!(status, 200);
    assert_eq!(
        runs(dir.path()),
        1,
        "the credential is reused, not fetched per request"
    );

    for rotation in 1..=3 {
        let pw = format!("pw-{rotation}");
        std::fs::write(dir.path().join("current"), &pw).unwrap();
        up.knobs().auth = basic("robot", &pw);
        for layer in &img.layers[rotation * 2 - 1..=rotation * 2] {
            let (status, body) = get(&w, &format!("/v2/org/app/blobs/{layer}")).await;
            assert_eq!(status, 200, "rotation {rotation}: {body}");
        }
        assert_eq!(
            runs(dir.path()),
            1 + rotation,
            "one run per rotation (after the refusal), not per request"
        );
    }
    // The server was asked with the host of the upstream's URL.
    let log = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert!(
        log.lines().all(|l| l == format!("run {}", up.addr)),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_realm_credentials_rotate_three_times_without_a_restart() {
    let up = Fake::start().await;
    let images: Vec<_> = (0..4)
        .map(|i| up.add_image(&format!("org/app{i}"), "1", 1, 1000, i))
        .collect();
    up.knobs().auth = AuthMode::Bearer {
        creds: Some(("robot".into(), "pw-0".into())),
        realm: None,
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("current"), "pw-0").unwrap();
    let helper = install_helper(dir.path(), "rotating.sh");
    let w = wharf_with(
        &up,
        &format!("credential_helper = \"{}\"", helper.display()),
    )
    .await;
    for (i, img) in images.iter().enumerate() {
        if i > 0 {
            let pw = format!("pw-{i}");
            std::fs::write(dir.path().join("current"), &pw).unwrap();
            up.knobs().auth = AuthMode::Bearer {
                creds: Some(("robot".into(), pw)),
                realm: None,
            };
        }
        // A new repository is a new scope: its token is asked for with the credential in hand.
        let (status, body) = get(&w, &format!("/v2/org/app{i}/manifests/1")).await;
        assert_eq!(status, 200, "rotation {i}: {body}");
        let (status, _) = get(&w, &format!("/v2/org/app{i}/blobs/{}", img.layers[0])).await;
        assert_eq!(status, 200);
        assert_eq!(runs(dir.path()), 1 + i, "rotation {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_run_the_helper_once() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 8, 1000, 3);
    up.knobs().auth = basic("robot", "pw-0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("current"), "pw-0").unwrap();
    let helper = install_helper(dir.path(), "rotating.sh");
    let w = wharf_with(
        &up,
        &format!("credential_helper = \"{}\"", helper.display()),
    )
    .await;
    let base = w.base.clone();
    let tasks: Vec<_> = img
        .layers
        .iter()
        .map(|layer| {
            let url = format!("{base}/v2/org/app/blobs/{layer}");
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(runs(dir.path()), 1, "runs never overlap: waiters share one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_helpers_are_clear_errors_and_cached_pulls_still_work() {
    for mode in ["hang", "fail", "garbage"] {
        let up = Fake::start().await;
        let img = up.add_image("org/app", "1", 2, 1000, 5);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mode"), mode).unwrap();
        let helper = install_helper(dir.path(), "broken.sh");
        let w = wharf_with(
            &up,
            &format!(
                "credential_helper = \"{}\"\ncredential_timeout = \"1s\"",
                helper.display()
            ),
        )
        .await;
        // Cached while the registry asked for nothing.
        let cached = format!("/v2/org/app/blobs/{}", img.layers[0]);
        assert_eq!(get(&w, &cached).await.0, 200, "{mode}");
        up.knobs().auth = basic("robot", "pw");
        let uncached = format!("/v2/org/app/blobs/{}", img.layers[1]);
        for attempt in 0..2 {
            let (status, body) = get(&w, &uncached).await;
            assert_eq!(status, 503, "{mode}: {body}");
            assert!(body.contains("UNAVAILABLE"), "{mode}: {body}");
            assert!(body.contains("upstream upstream.test"), "{mode}: {body}");
            assert!(
                body.contains(&format!("credential helper {}", helper.display())),
                "{mode}: {body}"
            );
            assert_eq!(
                runs(dir.path()),
                1,
                "{mode}: attempt {attempt} ran it again"
            );
        }
        let (status, _) = get(&w, &cached).await;
        assert_eq!(status, 200, "{mode}: cached content is still served");
        if mode == "hang" {
            assert!(get(&w, &uncached)
                .await
                .1
                .contains("did not answer within 1 s"));
        }
        if mode == "garbage" {
            assert!(get(&w, &uncached)
                .await
                .1
                .contains("printed no usable credential"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_without_credentials_means_anonymous() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 1, 1000, 9);
    up.knobs().auth = AuthMode::Bearer {
        creds: None,
        realm: None,
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mode"), "notfound").unwrap();
    let helper = install_helper(dir.path(), "broken.sh");
    let w = wharf_with(
        &up,
        &format!("credential_helper = \"{}\"", helper.display()),
    )
    .await;
    let (status, body) = get(&w, &format!("/v2/org/app/blobs/{}", img.layers[0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(runs(dir.path()), 1);
    assert_eq!(
        up.state.token_auth.lock().clone(),
        vec![None],
        "no Authorization to the realm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_password_file_is_used_without_a_restart() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 3, 1000, 11);
    up.knobs().auth = basic("alice", "old-pw");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "old-pw\n").unwrap();
    let w = wharf_with(
        &up,
        &format!(
            "username = \"alice\"\npassword_file = \"{}\"",
            file.display()
        ),
    )
    .await;
    assert_eq!(
        get(&w, &format!("/v2/org/app/blobs/{}", img.layers[0]))
            .await
            .0,
        200
    );
    // Rotated: the registry's refusal makes wharf read the file again.
    std::fs::write(&file, "new-pw\n").unwrap();
    up.knobs().auth = basic("alice", "new-pw");
    let (status, body) = get(&w, &format!("/v2/org/app/blobs/{}", img.layers[1])).await;
    assert_eq!(status, 200, "{body}");
    // Rotated again, and reloaded (as the 5 s file watch or SIGHUP does): the next request
    // sends the new password up front.
    std::fs::write(&file, "newer-password\n").unwrap();
    up.knobs().auth = basic("alice", "newer-password");
    let outcomes = w.running.as_ref().unwrap().reload().await;
    assert!(
        outcomes.contains(&wharf::reload::Outcome::Reloaded("upstream password_file")),
        "{outcomes:?}"
    );
    let before = up.seen().len();
    let (status, _) = get(&w, &format!("/v2/org/app/blobs/{}", img.layers[2])).await;
    assert_eq!(status, 200);
    let sent: Vec<_> = up.seen()[before..]
        .iter()
        .map(|s| s.authorization.clone())
        .collect();
    assert_eq!(sent.len(), 1, "no 401 first: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_urls_skip_a_failing_url_and_return_to_it() {
    let first = Fake::start().await;
    let second = Fake::start().await;
    let img = first.add_image("org/app", "1", 1, 1000, 13);
    second.add_image("org/app", "1", 1, 1000, 13);
    let manifest = "/v2/org/app/manifests/1".to_owned();
    let blob = format!("/v2/org/app/blobs/{}", img.layers[0]);
    for path in [&manifest, &blob] {
        first.knobs().status.insert(path.clone(), (503, None));
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[cache]\ntag_ttl = \"1s\"\n[[upstream]]\nname = \"upstream.test\"\nurls = [\"{}\", \"{}\"]\nurl_backoff = \"4s\"\ninsecure = true\ndefault = true\n",
        dir.path().join("data").display(),
        first.url(),
        second.url()
    );
    let w = Wharf::start_text(dir, &text).await;
    let asked = |f: &Fake, p: &str| f.seen().iter().filter(|s| s.path == p).count();

    // The first URL fails: the second serves the tag and the blob.
    assert_eq!(get(&w, &manifest).await.0, 200);
    assert_eq!(asked(&first, &manifest), 1);
    assert!(asked(&second, &manifest) >= 1);
    assert_eq!(get(&w, &blob).await.0, 200);
    assert_eq!(
        asked(&first, &blob),
        0,
        "a backed-off URL is not tried first"
    );
    assert_eq!(asked(&second, &blob), 1);

    // It comes back: after the back-off, tag lookups go to it again.
    first.knobs().status.clear();
    let before = asked(&second, &manifest);
    let mut back = false;
    for _ in 0..60 {
        assert_eq!(get(&w, &manifest).await.0, 200);
        if asked(&first, &manifest) > 1 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(back, "tag lookups never returned to the first URL");
    let after_return = asked(&second, &manifest);
    assert!(
        after_return > before,
        "the second URL served while the first was backed off"
    );
    assert_eq!(get(&w, &manifest).await.0, 200);
    assert_eq!(
        asked(&second, &manifest),
        after_return,
        "the first URL is first again"
    );
}

/// The ```toml blocks of the README's section on cloud registries.
fn readme_snippets() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("## Cloud registries and expiring credentials")
        .expect("the README has the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section
        .split("```toml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_cloud_registry_snippets_load_and_their_helpers_run() {
    use base64::Engine as _;
    use wharf::config::CredentialSource;

    let snippets = readme_snippets();
    assert_eq!(
        snippets.len(),
        6,
        "ECR, GAR, ACR, GHCR twice, fallback URLs"
    );
    let dir = tempfile::tempdir().unwrap();
    // The files the GHCR snippets name, and a test PATH with the fake helper under each name.
    let token = dir.path().join("ghcr.token");
    std::fs::write(&token, "ghp_fake\n").unwrap();
    let docker_config = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("my-bot:ghp_fake");
    std::fs::write(
        &docker_config,
        format!(r#"{{"auths":{{"https://ghcr.io":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let path_dir = tempfile::tempdir().unwrap();
    std::fs::write(path_dir.path().join("current"), "cloud-secret").unwrap();

    let mut helpers = Vec::new();
    let mut files = Vec::new();
    for snippet in &snippets {
        let text = format!(
            "[storage]\npath = \"{}\"\n{}",
            dir.path().join("data").display(),
            snippet
                .replace("/etc/wharf/ghcr.token", token.to_str().unwrap())
                .replace("/root/.docker/config.json", docker_config.to_str().unwrap())
        );
        let config = wharf::Config::from_toml(&text, Path::new("README.md"))
            .unwrap_or_else(|e| panic!("{snippet}\n{e}"));
        let u = &config.upstreams[0];
        match &u.credential_source {
            Some(CredentialSource::Helper(h)) => {
                // A helper name, found on PATH as docker-credential-<name>.
                let program = h.program.to_str().unwrap();
                assert!(
                    program.starts_with("docker-credential-") && !program.contains('/'),
                    "{program}"
                );
                let on_path = path_dir.path().join(program);
                std::fs::copy(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/rotating.sh"),
                    &on_path,
                )
                .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&on_path, std::fs::Permissions::from_mode(0o755)).unwrap();
                let creds = wharf::upstream::credentials::run_helper(
                    &on_path,
                    &h.server,
                    std::time::Duration::from_secs(20),
                    &h.name,
                    &u.name,
                )
                .await
                .unwrap()
                .unwrap();
                assert_eq!(creds.password.expose(), "cloud-secret");
                // The helper is asked for the registry's host.
                assert_eq!(h.server, u.url.host_str().unwrap());
                let log = std::fs::read_to_string(path_dir.path().join("runs")).unwrap();
                assert_eq!(
                    log.lines().last(),
                    Some(format!("run {}", h.server).as_str())
                );
                assert!(u.credential_ttl < std::time::Duration::from_secs(3 * 3600));
                helpers.push(h.name.clone());
            }
            Some(CredentialSource::PasswordFile { username, .. }) => {
                assert_eq!(username, "my-bot");
                let creds = u.credentials.as_ref().unwrap();
                assert_eq!(creds.password.expose(), "ghp_fake");
                files.push("password_file");
            }
            Some(CredentialSource::AuthFile { .. }) => {
                let creds = u.credentials.as_ref().unwrap();
                assert_eq!(
                    (creds.username.as_str(), creds.password.expose()),
                    ("my-bot", "ghp_fake")
                );
                files.push("auth_file");
            }
            None => {
                assert_eq!(u.fallback_urls.len(), 1, "{snippet}");
                files.push("urls");
            }
        }
    }
    assert_eq!(helpers, ["ecr-login", "gcr", "acr-env"]);
    assert_eq!(files, ["password_file", "auth_file", "urls"]);
}

/// `user:pass` as an htpasswd line (bcrypt), from Apache's `htpasswd`.
fn htpasswd_line(user: &str, pass: &str) -> String {
    common::real::require("htpasswd");
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Pulls `repo:tag` through wharf: the manifest and every blob it names.
async fn pull_through(w: &Wharf, repo: &str, tag: &str) -> Result<usize, String> {
    let res = client()
        .get(w.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    if res.status() != 200 {
        return Err(format!(
            "manifest: {} {}",
            res.status(),
            res.text().await.unwrap()
        ));
    }
    let manifest: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_owned());
    }
    for d in &digests {
        let res = client()
            .get(w.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .await
            .unwrap();
        if res.status() != 200 {
            return Err(format!(
                "blob {d}: {} {}",
                res.status(),
                res.text().await.unwrap()
            ));
        }
    }
    Ok(digests.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_registry_changes_its_password_and_wharf_follows_without_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_line("robot", "first-pass")).unwrap();
    let registry = common::real::Registry::start_htpasswd(&htpasswd).await;
    let (one, _) = common::images::single(&work.path().join("one"), "1", 21, 2);
    let (two, _) = common::images::single(&work.path().join("two"), "1", 22, 2);
    for (layout, repo) in [(&one, "e2e/one"), (&two, "e2e/two")] {
        common::real::push_with(
            &home,
            &format!("oci:{}:1", layout.dir.display()),
            &format!("docker://127.0.0.1:{}/{repo}:1", registry.port),
            false,
            Some("robot:first-pass"),
        )
        .await;
    }
    let pw = work.path().join("password");
    std::fs::write(&pw, "first-pass\n").unwrap();
    let w = Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: registry.url(),
            default: true,
            extra: &format!("username = \"robot\"\npassword_file = \"{}\"", pw.display()),
        }],
    )
    .await;
    assert_eq!(pull_through(&w, "e2e/one", "1").await, Ok(3));

    // The password changes at the registry and in the password file together.
    std::fs::write(&htpasswd, htpasswd_line("robot", "second-pass")).unwrap();
    std::fs::write(&pw, "second-pass\n").unwrap();
    // distribution 2.8 looks at its htpasswd file's modification time on every request, so it
    // takes the new password at once: no restart of the registry (and never of wharf).
    let probe = |pass: &str| {
        reqwest::Client::new()
            .get(format!("{}/v2/", registry.url()))
            .basic_auth("robot", Some(pass))
            .send()
    };
    assert_eq!(probe("second-pass").await.unwrap().status(), 200);
    assert_eq!(probe("first-pass").await.unwrap().status(), 401);
    assert_eq!(pull_through(&w, "e2e/two", "1").await, Ok(3));
    // Content pulled before the change is still served.
    assert_eq!(pull_through(&w, "e2e/one", "1").await, Ok(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_config_file_is_read_again_when_it_changes() {
    use base64::Engine as _;
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 2, 1000, 17);
    up.knobs().auth = basic("robot", "login-1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    let write = |user: &str, pass: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        // As `docker login 127.0.0.1:PORT` writes it.
        let text = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, up.addr);
        std::fs::write(&file, text).unwrap();
    };
    write("robot", "login-1");
    let w = wharf_with(&up, &format!("auth_file = \"{}\"", file.display())).await;
    let blob = |i: usize| format!("/v2/org/app/blobs/{}", img.layers[i]);
    assert_eq!(get(&w, &blob(0)).await.0, 200);
    // A new login rewrites the file; the registry takes only the new password.
    write("robot", "login-2");
    up.knobs().auth = basic("robot", "login-2");
    let (status, body) = get(&w, &blob(1)).await;
    assert_eq!(status, 200, "{body}");
}
