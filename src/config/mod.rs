//! The operator's configuration file, in two stages.
//!
//! [`RawConfig`] mirrors the TOML exactly (serde, `deny_unknown_fields` at every level, defaults).
//! [`validate`] turns it into a [`Config`] of checked, typed values, section by section: each
//! section's raw struct checks its own keys (`RawServer::validate`, `RawStorage::validate`, ...)
//! and returns a [`KeyError`] naming the key, the problem and the fix. It is pure apart from
//! reading the password sources the file names, and those come through the [`Sources`] trait, so
//! unit tests drive it with a map. [`Config::load`] is the only function that touches the
//! filesystem for the file itself. Every refusal is one line that names the file, the key and the
//! fix ([`ConfigError`]), because the operator reads it in `journalctl` at 3 a.m.; no refusal and
//! no `Debug` output ever contains a password.
//!
//! One file per section: `server.rs` (`[server]`, `[metrics]`, `[log]`), `storage.rs` (`[storage]`,
//! `[gc]`), `cache.rs`, `upstream.rs`, `auth.rs`, `airgap.rs` (`[[pin]]`, `[[sync]]`); `pem.rs`
//! checks the listener's certificate pair and `error.rs` holds the one-line error. Their public
//! types are re-exported here, so every caller names them `crate::config::Foo`. Nothing here
//! imports from the modules that use the configuration (`airgap`, `telemetry`, `tls`, ...):
//! image references and platforms come from [`crate::oci`].

mod airgap;
mod auth;
mod cache;
mod cluster;
mod docker_auth;
mod error;
mod pem;
mod secret_file;
mod server;
mod storage;
mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::airgap::{resolve_image, ImportConfig, SyncConfig, TrustedKeyFile};
pub use self::auth::AuthConfig;
pub use self::cache::CacheConfig;
pub use self::cluster::{ClusterConfig, PeerSource, MIN_SECRET_LEN};
pub use self::docker_auth::{resolve as resolve_docker_auth, DockerAuth, IDENTITY_TOKEN_USER};
pub use self::error::{ConfigError, KeyError, TomlError, TomlLocation};
pub use self::pem::{
    certified_key, ed25519_public_key, PublicKeyError, TlsError, ED25519_SPKI_PREFIX,
};
pub use self::server::{
    level_directives, LogConfig, LogFormat, MetricsConfig, ServerConfig, TlsFiles,
    LIBRARY_DIRECTIVES,
};
pub use self::storage::{Backend, GcConfig, S3Config, StorageConfig};
pub use self::upstream::{CredentialHelper, CredentialSource, UpstreamConfig};

use self::airgap::{RawImport, RawPin, RawSync};
use self::auth::RawAuth;
use self::cache::RawCache;
use self::cluster::RawCluster;
use self::server::{RawLog, RawMetrics, RawServer};
use self::storage::{RawGc, RawStorage};
use self::upstream::RawUpstream;
use crate::oci::ImageRef;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[[upstream]]`, in file order; never empty.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[auth]`: who may use the mirror.
    pub auth: AuthConfig,
    /// `[metrics]`: the Prometheus and health listener.
    pub metrics: MetricsConfig,
    /// `[log]`: the log's format and filter.
    pub log: LogConfig,
    /// `[gc]`: what `wharf gc` removes.
    pub gc: GcConfig,
    /// `[[pin]]`: images kept out of eviction and `wharf gc`, each naming a configured upstream
    /// (Docker Hub names normalised with `library/`), without duplicates.
    pub pins: Vec<ImageRef>,
    /// `[[sync]]`: image lists kept fresh in the background while wharf serves.
    pub sync: Vec<SyncConfig>,
    /// `[import]`: the keys a bundle must be signed with.
    pub import: ImportConfig,
    /// `[cluster]`: the replicas this one shares upstream fetches with; `None` when it runs alone.
    pub cluster: Option<ClusterConfig>,
}

/// The file as written. Build it with serde (`toml::from_str`) and check it with [`validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    gc: RawGc,
    #[serde(default)]
    pin: Vec<RawPin>,
    #[serde(default)]
    sync: Vec<RawSync>,
    #[serde(default)]
    import: RawImport,
    cluster: Option<RawCluster>,
}

/// Where password values come from: the environment and files, abstracted so tests feed a map
/// (as linkerd's `Strings` does) instead of mutating the process environment.
pub trait Sources {
    /// An environment variable, `None` when unset or not Unicode.
    fn env(&self, name: &str) -> Option<String>;
    /// A file's contents.
    ///
    /// # Errors
    /// The I/O error.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// A password file's contents (the same as [`Sources::read`] unless passwords are not wanted).
    ///
    /// # Errors
    /// The I/O error.
    fn read_secret(&self, path: &Path) -> std::io::Result<String> {
        self.read(path)
    }
    /// An environment variable that even the offline commands need (the object store's
    /// credentials: `wharf gc` and `check` list the bucket); the same as [`Sources::env`] unless
    /// passwords are not wanted.
    fn env_always(&self, name: &str) -> Option<String> {
        self.env(name)
    }
    /// Whether secrets are wanted at all: `false` for the offline commands, which skip
    /// credential files they would only throw away (`auth_file`).
    fn wants_secrets(&self) -> bool {
        true
    }
}

/// The real process environment and filesystem.
#[derive(Debug, Clone, Copy)]
pub struct System;

/// Password sources for commands that never use them: every variable and password file reads as
/// a placeholder (the credentials are dropped right after validation). Other files are read.
struct NoSecrets;

impl Sources for NoSecrets {
    fn env(&self, _: &str) -> Option<String> {
        Some("unused".into())
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn read_secret(&self, _: &Path) -> std::io::Result<String> {
        Ok("unused".into())
    }

    fn env_always(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn wants_secrets(&self) -> bool {
        false
    }
}

/// What a command needs of the file, which decides what is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `wharf serve`: everything.
    Serve,
    /// A command that fetches from upstreams but serves nothing (`wharf prefetch`): passwords and
    /// upstream CA files, not the listener's TLS files or the htpasswd file.
    Fetch,
    /// A command that never contacts an upstream: none of those files.
    Offline,
}

// === impl Config ===

impl Config {
    /// Marks every upstream offline (`wharf serve --offline`).
    pub fn set_offline(&mut self) {
        for u in &mut self.upstreams {
            u.offline = true;
        }
    }

    /// Reads and validates the file at `path`, and the password files and variables it names.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::unreadable(
                path,
                &e,
                "create it (the repository's config.toml is a working default) or pass --config PATH",
            )
        })?;
        Self::from_toml(&text, path)
    }

    /// Reads and validates the file at `path` for a maintenance command (`wharf check`, `gc`, `pin`,
    /// `export`, `import`) that never contacts an upstream and serves nothing: password files and
    /// variables, the listener's TLS files, the htpasswd file and upstream CA files are not read,
    /// so the command works in a shell that lacks the server's environment and rights. Everything
    /// else is checked as usual.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn load_offline(path: &Path) -> Result<Self, ConfigError> {
        let text = read_for_command(path)?;
        let mut config = Self::from_toml_for(&text, path, &NoSecrets, Purpose::Offline)?;
        for u in &mut config.upstreams {
            u.credentials = None;
            u.credential_source = None;
        }
        config.set_offline();
        Ok(config)
    }

    /// Reads and validates the file at `path` for a command that fetches from the upstreams but
    /// serves nothing (`wharf prefetch` when no wharf serves the storage): passwords and upstream
    /// CA files are read as for `serve`; the listener's TLS files and the htpasswd file are not.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn load_fetching(path: &Path) -> Result<Self, ConfigError> {
        let text = read_for_command(path)?;
        Self::from_toml_for(&text, path, &System, Purpose::Fetch)
    }

    /// Parses and validates configuration text, reading passwords from the process environment and
    /// the filesystem; `file` is only used in messages.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, file, &System)
    }

    /// As [`Config::from_toml`], reading passwords through `sources`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn from_toml_with(
        text: &str,
        file: &Path,
        sources: &dyn Sources,
    ) -> Result<Self, ConfigError> {
        Self::from_toml_for(text, file, sources, Purpose::Serve)
    }

    fn from_toml_for(
        text: &str,
        file: &Path,
        sources: &dyn Sources,
        purpose: Purpose,
    ) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            file: file.to_owned(),
            error: TomlError::new(text, &e),
        })?;
        if purpose != Purpose::Serve {
            // Files only the listener needs: a command does not serve.
            raw.server.tls_cert = None;
            raw.server.tls_key = None;
            raw.auth.htpasswd = None;
        }
        if purpose == Purpose::Offline {
            for u in &mut raw.upstream {
                u.ca_file = None;
            }
            // A command that contacts nothing has no use for the peers, nor their secret.
            raw.cluster = None;
        }
        validate(raw, file, sources)
    }

    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The `default = true` upstream, if any.
    pub fn default_upstream(&self) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.default)
    }
}

/// The file's text, for a command (not `serve`).
fn read_for_command(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::unreadable(
            path,
            &e,
            "pass the server's configuration with --config PATH",
        )
    })
}

// === impl System ===

impl Sources for System {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

// === validation ===

/// Turns the file as written into checked values, one section after another (in the order the
/// file documents them), so the first problem found is the one reported.
///
/// # Errors
/// The first problem found, as a [`ConfigError`].
pub fn validate(raw: RawConfig, file: &Path, sources: &dyn Sources) -> Result<Config, ConfigError> {
    let in_file = |e: KeyError| e.in_file(file);
    let server = raw.server.validate(sources).map_err(in_file)?;
    let storage = raw.storage.validate(sources).map_err(in_file)?;
    let gc = raw.gc.validate().map_err(in_file)?;
    let cache = raw.cache.validate().map_err(in_file)?;
    let upstreams = upstream::validate_all(raw.upstream, sources).map_err(in_file)?;
    let auth = raw.auth.validate(sources).map_err(in_file)?;
    let metrics = raw.metrics.validate(server.listen).map_err(in_file)?;
    let log = raw.log.validate().map_err(in_file)?;
    let registries: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let pins = airgap::pins(raw.pin, &registries).map_err(in_file)?;
    let sync = airgap::sync(raw.sync, &registries, sources).map_err(in_file)?;
    let import = raw.import.validate(sources).map_err(in_file)?;
    let cluster = raw
        .cluster
        .map(|c| c.validate(sources))
        .transpose()
        .map_err(in_file)?;
    Ok(Config {
        file: file.to_owned(),
        server,
        storage,
        cache,
        upstreams,
        auth,
        metrics,
        log,
        gc,
        pins,
        sync,
        import,
        cluster,
    })
}

/// Parses a human duration: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"`. A bare number is refused,
/// because its unit would be a guess.
///
/// # Errors
/// A message saying what is wrong and what to write.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{s:?} is not a duration; write it with a unit, e.g. \"30s\", \"5m\", \"1h30m\"")
    };
    let t = s.trim();
    if t.is_empty() || t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    humantime::parse_duration(t).map_err(|_| bad())
}

/// A section's refusal of `key`: `message` is `<problem>; <fix>`.
fn err(key: &str, message: String) -> KeyError {
    KeyError::new(key, message)
}

/// A duration key, refused with [`parse_duration`]'s message.
fn duration(key: &str, text: &str) -> Result<Duration, KeyError> {
    parse_duration(text).map_err(|p| err(key, p))
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{load, pems, UP};
    use super::*;

    #[test]
    fn repository_default_config_parses() {
        let config =
            Config::from_toml(include_str!("../../config.toml"), Path::new("config.toml")).unwrap();
        assert_eq!(config.file, PathBuf::from("config.toml"));
        assert_eq!(config.server.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(config.storage.path, PathBuf::from("./data"));
        assert_eq!(config.cache.tag_ttl, Duration::from_secs(300));
        assert_eq!(config.upstreams.len(), 1);
        let up = &config.upstreams[0];
        assert_eq!(up.name, "docker.io");
        assert_eq!(up.url.as_str(), "https://registry-1.docker.io/");
        assert!(up.default && up.is_docker_hub());
        assert!(up.credentials.is_none());
        assert!(up.token_realms.is_empty());
        assert_eq!(up.connect_timeout, Duration::from_secs(10));
        assert_eq!(up.timeout, Duration::from_secs(60));
        assert_eq!(
            config.default_upstream().map(|u| u.name.as_str()),
            Some("docker.io")
        );
        assert!(config.upstream("docker.io").is_some());
        assert!(config.upstream("ghcr.io").is_none());
    }

    #[test]
    fn repository_default_config_documents_every_key() {
        let documented = include_str!("../../config.toml");
        // The valid keys come from the unknown-key refusal itself, so a new key cannot be missed.
        for table in [
            "",
            "[server]\n",
            "[storage]\n",
            "[storage.s3]\n",
            "[cache]\n",
            "[[upstream]]\n",
            "[auth]\n",
            "[metrics]\n",
            "[log]\n",
            "[gc]\n",
            "[[pin]]\n",
            "[[sync]]\n",
            "[cluster]\n",
        ] {
            let got = load(&format!("{table}no_such_key = 1\n"))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            let (_, valid) = got.split_once("valid keys here are ").unwrap();
            for key in valid.split(", ") {
                let written = if table.is_empty() {
                    documented.contains(&format!("[{key}]"))
                        || documented.contains(&format!("[[{key}]]"))
                } else {
                    // A key that is a table of its own (`[storage] s3`) is shown as its header.
                    let header = format!("[{}.{key}]", table.trim().trim_matches(['[', ']']));
                    documented.contains(&format!("\n{key} = "))
                        || documented.contains(&format!("\n# {key} = "))
                        || documented.contains(&format!("\n{header}"))
                        || documented.contains(&format!("\n# {header}"))
                };
                assert!(written, "config.toml does not show {table:?} key {key}");
            }
        }
    }

    #[test]
    fn defaults_when_keys_are_left_out() {
        let config =
            load("[[upstream]]\nname = \"upstream.test\"\nurl = \"https://127.0.0.1:9\"\n")
                .unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(config.server.tls, None);
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.auth.htpasswd, None);
        assert_eq!(config.metrics.listen, None);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.filter, None);
        assert_eq!(config.storage.path, PathBuf::from("./data"));
        assert_eq!(config.cache.tag_ttl, Duration::from_secs(300));
        let up = &config.upstreams[0];
        assert!(!up.default && !up.is_docker_hub());
        assert_eq!(config.default_upstream().map(|u| &u.name), None);
        assert_eq!(up.connect_timeout, Duration::from_secs(10));
        assert_eq!(up.timeout, Duration::from_secs(60));
        assert_eq!(up.max_fills, 16);
        assert_eq!(up.fill_wait, Duration::from_secs(30));
        assert!(!up.insecure && up.ca_pem.is_none() && up.allow.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
            [server]
            listen = "[::1]:5555"
            tls_cert = "/tls/cert.pem"
            tls_key = "/tls/key.pem"
            shutdown_grace = "1m"
            [auth]
            htpasswd = "/htpasswd"
            [metrics]
            listen = "127.0.0.1:9095"
            [log]
            format = "json"
            level = "debug"
            [storage]
            path = "/var/lib/wharf"
            [cache]
            tag_ttl = "1h30m"
            [[upstream]]
            name = "docker.io"
            url = "https://registry-1.docker.io/"
            default = true
            allow = ["nginx", "org/**"]
            [[upstream]]
            name = "localhost:5001"
            url = "http://127.0.0.1:5001"
            insecure = true
            ca_file = "/ca.pem"
            username = "bot"
            password_env = "PW"
            token_realms = ["Auth.Example.com"]
            connect_timeout = "2s"
            timeout = "500ms"
            max_fills = 3
            fill_wait = "0s"
        "#;
        let c = load(text).unwrap();
        assert_eq!(c.server.listen, "[::1]:5555".parse().unwrap());
        assert_eq!(c.storage.path, PathBuf::from("/var/lib/wharf"));
        assert_eq!(c.cache.tag_ttl, Duration::from_secs(5400));
        let up = c.upstream("localhost:5001").unwrap();
        assert_eq!(up.url.as_str(), "http://127.0.0.1:5001/");
        let creds = up.credentials.as_ref().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.expose()),
            ("bot", "env-secret")
        );
        assert_eq!(up.token_realms, ["auth.example.com"]);
        assert_eq!(up.connect_timeout, Duration::from_secs(2));
        assert_eq!(up.timeout, Duration::from_millis(500));
        assert_eq!(up.max_fills, 3);
        assert_eq!(up.fill_wait, Duration::ZERO);
        assert_eq!(c.default_upstream().unwrap().name, "docker.io");
        assert_eq!(
            c.server.tls,
            Some(TlsFiles {
                cert: "/tls/cert.pem".into(),
                key: "/tls/key.pem".into()
            })
        );
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(60));
        assert_eq!(c.auth.htpasswd, Some(PathBuf::from("/htpasswd")));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9095".parse().unwrap()));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.filter.as_deref(), Some("debug"));
        assert!(up.insecure);
        assert_eq!(up.ca_pem.as_deref(), Some(pems().0.as_bytes()));
        let hub = c.upstream("docker.io").unwrap();
        assert!(!hub.insecure);
        let allow = hub.allow.as_ref().unwrap();
        assert!(allow.allows("library/nginx") && allow.allows("org/a/b"));
        assert!(!allow.allows("library/redis"));
        let printed = format!("{c:?}");
        assert!(!printed.contains("env-secret"), "{printed}");
        assert!(printed.contains("bot"));
    }

    #[test]
    fn maintenance_commands_need_no_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        std::fs::write(
            &path,
            format!("{UP}username = \"u\"\npassword_env = \"WHARF_NOT_SET_ANYWHERE\"\n"),
        )
        .unwrap();
        assert!(Config::load(&path).is_err());
        let c = Config::load_offline(&path).unwrap();
        assert!(c.upstreams[0].credentials.is_none() && c.upstreams[0].offline);
        std::fs::write(&path, format!("{UP}[storage]\nmax_size = \"x\"\n")).unwrap();
        let e = Config::load_offline(&path).unwrap_err().to_string();
        assert!(e.contains("storage.max_size"), "{e}");
    }

    #[test]
    fn commands_do_not_read_the_files_only_serving_needs() {
        // Files the operator's shell may not be able to read (or that exist only under systemd's
        // LoadCredential=): the listener's TLS pair, the htpasswd file, an upstream CA.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        let list = dir.path().join("sync.list");
        std::fs::write(&list, "upstream.test/org/app:1\n").unwrap();
        std::fs::write(
            &path,
            format!(
                "[server]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n[auth]\nhtpasswd = \"/nonexistent/htpasswd\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"https://u.test\"\nca_file = \"/nonexistent/ca.pem\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n[[sync]]\nfile = '{}'\n",
                list.display()
            ),
        )
        .unwrap();
        assert!(Config::load(&path).is_err());
        let c = Config::load_offline(&path).unwrap();
        assert!(c.server.tls.is_none() && c.auth.htpasswd.is_none());
        assert!(c.upstreams[0].ca_pem.is_none() && c.upstreams[0].credentials.is_none());
        // The sync list is not a secret: it is read and checked.
        assert_eq!(c.sync[0].file.as_deref(), Some(list.as_path()));
        std::fs::write(&list, "quay.io/x:1\n").unwrap();
        let e = Config::load_offline(&path).unwrap_err().to_string();
        assert!(e.contains("sync[0].file") && e.contains("line 1"), "{e}");
        // A command that fetches reads the passwords and the CA, not the listener's files.
        std::fs::write(&list, "upstream.test/org/app:1\n").unwrap();
        let e = Config::load_fetching(&path).unwrap_err().to_string();
        assert!(e.contains("upstream[0].ca_file"), "{e}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let got = Config::load(&path).unwrap_err();
        assert_eq!(got.file(), path);
        let got = got.to_string();
        assert!(
            got.starts_with(&format!(
                "{}: cannot read the file (no such file)",
                path.display()
            )),
            "{got}"
        );
        assert!(got.contains("--config PATH"), "{got}");
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("30s", Some(Duration::from_secs(30))),
            ("5m", Some(Duration::from_secs(300))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1h30m", Some(Duration::from_secs(5400))),
            ("500ms", Some(Duration::from_millis(500))),
            (" 10s ", Some(Duration::from_secs(10))),
            ("", None),
            ("  ", None),
            ("5", None),
            ("-1s", None),
            ("soon", None),
            ("5 parsecs", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "{input:?}");
        }
    }
}
