//! The operator's configuration file, in two stages.
//!
//! [`RawConfig`] mirrors the TOML exactly (serde, `deny_unknown_fields` at every level, defaults).
//! [`validate`] turns it into a [`Config`] of checked, typed values. It is pure apart from reading the
//! password sources the file names, and those come through the [`Sources`] trait, so unit tests drive
//! it with a map. [`Config::load`] is the only function that touches the filesystem for the file
//! itself. Every refusal is one line that names the file, the key and the fix, because the operator
//! reads it in `journalctl` at 3 a.m.; no refusal and no `Debug` output ever contains a password.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::access::allow::AllowList;
use crate::airgap::refs::{self, Platform};
use crate::oci::ImageRef;
use crate::secret::{Credentials, Secret};
use crate::size::parse_size;

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
}

/// One `[[sync]]`.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The images listed in the entry (`images`), each naming a configured upstream (Docker Hub
    /// short names accepted).
    pub images: Vec<ImageRef>,
    /// A file of more images, one per line with `#` comments (`file`), read again at every run.
    /// It was read and checked when the configuration was loaded.
    pub file: Option<PathBuf>,
    /// How often the entry runs (`interval`, default `6h`, at least `1s`).
    pub interval: Duration,
    /// Only these platforms of a multi-platform image (`platforms`); `None` for all.
    pub platforms: Option<Vec<Platform>>,
    /// Pin the images (`pin`, default true), as `wharf prefetch` does.
    pub pin: bool,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (`listen`, default `0.0.0.0:5000`).
    pub listen: SocketAddr,
    /// HTTPS on the listener (`tls_cert` and `tls_key`, both or neither); plain HTTP when `None`.
    /// Both files were read and checked (they parse, and the key matches the certificate).
    pub tls: Option<TlsFiles>,
    /// How long a SIGTERM waits for open responses and blob fills before exiting
    /// (`shutdown_grace`, default `30s`).
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers, from the connection's start or
    /// the end of its previous response (`header_read_timeout`, default `10s`).
    pub header_read_timeout: Duration,
    /// How long a connection may stay idle (no request in progress) before it is closed: HTTP/1.1
    /// keep-alive and HTTP/2 alike (`idle_timeout`, default `60s`).
    pub idle_timeout: Duration,
    /// How many client connections may be open at once; more wait in the listen backlog
    /// (`max_connections`, default 10000).
    pub max_connections: usize,
    /// How many of them one client address may hold (`max_connections_per_ip`, default 2000;
    /// 0: no per-address cap). High by default, because behind a load balancer or NAT many nodes
    /// share one address.
    pub max_connections_per_ip: usize,
}

/// The PEM files of the listener's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`tls_cert`).
    pub cert: PathBuf,
    /// The private key of the leaf (`tls_key`).
    pub key: PathBuf,
}

/// `[auth]`.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// An htpasswd file of bcrypt entries (`htpasswd`): when set, every `/v2/` request needs HTTP
    /// Basic credentials from it. The file was read and checked.
    pub htpasswd: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`listen`); `None` (the key left out,
    /// or `"off"`) serves none of them.
    pub listen: Option<SocketAddr>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Human-readable lines or JSON objects (`format`, default `"text"`).
    pub format: LogFormat,
    /// The filter, in `RUST_LOG` syntax (`level`, default `info`); `RUST_LOG` overrides it.
    pub filter: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2024-05-01T10:00:00Z  INFO request method=GET ...`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The directory holding blobs, staging files and the index (`path`, default `./data`). A relative
    /// path is relative to the process's working directory, not to the configuration file.
    pub path: PathBuf,
    /// The most bytes of blobs and manifests to keep (`max_size`, a human size; absent: no limit).
    pub max_size: Option<u64>,
    /// Eviction starts above this percentage of `max_size` (`high_watermark`, default 95).
    pub high_watermark: u8,
    /// Eviction stops at or below this percentage of `max_size` (`low_watermark`, default 85;
    /// below `high_watermark`).
    pub low_watermark: u8,
    /// The free space to leave on the storage's filesystem: downloads that would go below it are
    /// streamed without caching (`min_free`, default `256MiB`).
    pub min_free: u64,
    /// After a write error (disk full, I/O error, read-only filesystem), how long misses are
    /// streamed without caching before writing is tried again (`write_error_pause`, default `30s`,
    /// more than zero).
    pub write_error_pause: Duration,
}

/// `[gc]`.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// `wharf gc` removes manifests not pulled for this long (`manifest_retention`, default `90d`,
    /// more than zero).
    pub manifest_retention: Duration,
}

/// `[cache]`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long a tag's digest is trusted before the upstream is asked again (`tag_ttl`, default
    /// `5m`); never zero.
    pub tag_ttl: Duration,
    /// Whether a cached tag is served (with a `Warning` header) when the upstream cannot be asked
    /// (`serve_stale`, default true).
    pub serve_stale: bool,
    /// How long an upstream's "no such tag" is remembered (`negative_ttl`, default `30s`; `0s` turns
    /// it off).
    pub negative_ttl: Duration,
}

/// One `[[upstream]]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The registry name clients use (`docker.io`, `ghcr.io`, `localhost:5001`): lower-case
    /// `host[:port]`, unique among the upstreams.
    pub name: String,
    /// Where the registry is: http or https, no userinfo, query or fragment, path empty or `/`.
    pub url: Url,
    /// Whether requests that name no registry go here; at most one upstream sets it.
    pub default: bool,
    /// Credentials for the registry (or its token realm), from `username` plus `password_file` or
    /// `password_env`.
    pub credentials: Option<Credentials>,
    /// Extra token-realm hosts (lower case) that may receive the credentials.
    pub token_realms: Vec<String>,
    /// How long connecting may take (`connect_timeout`, default `10s`).
    pub connect_timeout: Duration,
    /// The overall deadline of a small document (manifest, token, tag list, referrers: body
    /// included) and of any response's headers, and how long a blob body may stay silent before
    /// the fill fails (`timeout`, default `60s`).
    pub timeout: Duration,
    /// How many blob fills may run against this upstream at once (`max_fills`, default 16).
    pub max_fills: usize,
    /// How long a fill waits for a free slot before the request fails (`fill_wait`, default `30s`;
    /// zero means "do not wait").
    pub fill_wait: Duration,
    /// Never contact this upstream: serve only what is cached (`offline`, default false). The
    /// command line's `--offline` sets it on every upstream.
    pub offline: bool,
    /// Accept any certificate (self-signed, expired, another host's) and allow a plain `http://`
    /// URL (`insecure`, default false). For lab registries only.
    pub insecure: bool,
    /// Extra trusted CA certificates for this upstream, PEM (the contents of `ca_file`), on top of
    /// the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Which repositories clients may pull (`allow`); `None` allows all.
    pub allow: Option<AllowList>,
    /// Hosts (lower case names or IP addresses) that redirects may lead to even when they resolve
    /// to a loopback, private, link-local or unique-local address (`redirect_hosts`, default
    /// none): for a registry whose storage sits on an internal network.
    pub redirect_hosts: Vec<String>,
    /// The slowest a blob may arrive, in bytes per second averaged over `min_rate_window`, before
    /// the fill is cut and resumed (`min_rate`, default `64KiB`; 0 turns the check off).
    pub min_rate: u64,
    /// The window `min_rate` is measured over (`min_rate_window`, default `30s`).
    pub min_rate_window: Duration,
}

/// A configuration the operator must fix. Its `Display` is one line:
/// `<file>: <key>: <problem>; <fix>` (or `<file>: line N: ...` when the key cannot be told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", file.display(), what)]
pub struct ConfigError {
    file: PathBuf,
    what: String,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    images: Option<Vec<String>>,
    file: Option<PathBuf>,
    #[serde(default = "default_sync_interval")]
    interval: String,
    platforms: Option<Vec<String>>,
    #[serde(default = "default_true")]
    pin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default = "default_shutdown_grace")]
    shutdown_grace: String,
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout: String,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: String,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    max_connections_per_ip: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    htpasswd: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "default_log_format")]
    format: String,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "default_storage")]
    path: String,
    max_size: Option<String>,
    #[serde(default = "default_high_watermark")]
    high_watermark: u64,
    #[serde(default = "default_low_watermark")]
    low_watermark: u64,
    #[serde(default = "default_min_free")]
    min_free: String,
    #[serde(default = "default_write_error_pause")]
    write_error_pause: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGc {
    #[serde(default = "default_manifest_retention")]
    manifest_retention: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "default_tag_ttl")]
    tag_ttl: String,
    #[serde(default = "default_true")]
    serve_stale: bool,
    #[serde(default = "default_negative_ttl")]
    negative_ttl: String,
}

/// One `[[upstream]]` as written. It holds no secret: only where the password is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Option<String>,
    url: Option<String>,
    #[serde(default)]
    default: bool,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    #[serde(default)]
    token_realms: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_max_fills")]
    max_fills: usize,
    #[serde(default = "default_fill_wait")]
    fill_wait: String,
    #[serde(default)]
    offline: bool,
    #[serde(default)]
    insecure: bool,
    ca_file: Option<PathBuf>,
    allow: Option<Vec<String>>,
    #[serde(default)]
    redirect_hosts: Vec<String>,
    #[serde(default = "default_min_rate")]
    min_rate: String,
    #[serde(default = "default_min_rate_window")]
    min_rate_window: String,
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

/// The largest `max_connections`: beyond what one process's file table should hold.
const MAX_CONNECTIONS: usize = 1_000_000;

/// The largest `max_fills`: far beyond what one upstream should see, far below the semaphore's limit.
const MAX_FILLS: usize = 4096;

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
            ConfigError::new(
                path,
                format!(
                    "cannot read the file ({}); create it (the repository's config.toml is a working default) or pass --config PATH",
                    io_reason(&e)
                ),
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
        let mut raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::new(file, toml_reason(text, &e)))?;
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
        ConfigError::new(
            path,
            format!(
                "cannot read the file ({}); pass the server's configuration with --config PATH",
                io_reason(&e)
            ),
        )
    })
}

// === impl UpstreamConfig ===

impl UpstreamConfig {
    /// Whether this is Docker Hub, whose one-segment repository names get `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.name == "docker.io"
    }
}

impl fmt::Display for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

// === impl ConfigError ===

impl ConfigError {
    fn new(file: &Path, what: String) -> Self {
        Self {
            file: file.to_owned(),
            what,
        }
    }

    /// The file the problem is in.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

// === impl RawServer, RawStorage, RawCache ===

fn default_listen() -> String {
    "0.0.0.0:5000".into()
}
fn default_storage() -> String {
    "./data".into()
}
fn default_true() -> bool {
    true
}
fn default_negative_ttl() -> String {
    "30s".into()
}
fn default_tag_ttl() -> String {
    "5m".into()
}
fn default_connect_timeout() -> String {
    "10s".into()
}
fn default_timeout() -> String {
    "60s".into()
}
fn default_max_fills() -> usize {
    16
}
fn default_fill_wait() -> String {
    "30s".into()
}
fn default_shutdown_grace() -> String {
    "30s".into()
}
fn default_header_read_timeout() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> usize {
    2_000
}
fn default_min_rate() -> String {
    "64KiB".into()
}
fn default_min_rate_window() -> String {
    "30s".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_high_watermark() -> u64 {
    95
}
fn default_low_watermark() -> u64 {
    85
}
fn default_min_free() -> String {
    "256MiB".into()
}
fn default_write_error_pause() -> String {
    "30s".into()
}
fn default_manifest_retention() -> String {
    "90d".into()
}
fn default_sync_interval() -> String {
    "6h".into()
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
            shutdown_grace: default_shutdown_grace(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: None,
        }
    }
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            path: default_storage(),
            max_size: None,
            high_watermark: default_high_watermark(),
            low_watermark: default_low_watermark(),
            min_free: default_min_free(),
            write_error_pause: default_write_error_pause(),
        }
    }
}

impl Default for RawGc {
    fn default() -> Self {
        Self {
            manifest_retention: default_manifest_retention(),
        }
    }
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            tag_ttl: default_tag_ttl(),
            serve_stale: true,
            negative_ttl: default_negative_ttl(),
        }
    }
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

/// Turns the file as written into checked values.
///
/// # Errors
/// The first problem found, as a [`ConfigError`].
pub fn validate(raw: RawConfig, file: &Path, sources: &dyn Sources) -> Result<Config, ConfigError> {
    let err = |key: &str, problem: String| ConfigError::new(file, format!("{key}: {problem}"));
    let duration = |key: &str, text: &str| parse_duration(text).map_err(|p| err(key, p));

    let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
        err(
            "server.listen",
            format!(
                "{:?} is not an IP address with a port; use e.g. listen = \"0.0.0.0:5000\" or \"[::]:5000\"",
                raw.server.listen
            ),
        )
    })?;
    let tls = tls_files(raw.server.tls_cert, raw.server.tls_key, sources)
        .map_err(|(k, p)| err(&format!("server.{k}"), p))?;
    let shutdown_grace = duration("server.shutdown_grace", &raw.server.shutdown_grace)?;
    let header_read_timeout = duration(
        "server.header_read_timeout",
        &raw.server.header_read_timeout,
    )?;
    let idle_timeout = duration("server.idle_timeout", &raw.server.idle_timeout)?;
    for (k, d, example) in [
        ("header_read_timeout", header_read_timeout, "10s"),
        ("idle_timeout", idle_timeout, "60s"),
    ] {
        if d.is_zero() {
            return Err(err(
                &format!("server.{k}"),
                format!("must be more than zero; use e.g. {k} = \"{example}\""),
            ));
        }
    }
    if !(1..=MAX_CONNECTIONS).contains(&raw.server.max_connections) {
        return Err(err(
            "server.max_connections",
            format!(
                "{} is out of range; use 1 to {MAX_CONNECTIONS} (the default is 10000)",
                raw.server.max_connections
            ),
        ));
    }
    if raw.server.max_connections_per_ip > raw.server.max_connections {
        return Err(err(
            "server.max_connections_per_ip",
            format!(
                "{} is more than max_connections ({}); use at most that, or 0 for no per-address cap",
                raw.server.max_connections_per_ip, raw.server.max_connections
            ),
        ));
    }
    let storage = storage(raw.storage, &err)?;
    let manifest_retention = duration("gc.manifest_retention", &raw.gc.manifest_retention)?;
    if manifest_retention.is_zero() {
        return Err(err(
            "gc.manifest_retention",
            "must be more than zero; use e.g. manifest_retention = \"90d\"".into(),
        ));
    }
    let tag_ttl = duration("cache.tag_ttl", &raw.cache.tag_ttl)?;
    let negative_ttl = duration("cache.negative_ttl", &raw.cache.negative_ttl)?;
    if tag_ttl.is_zero() {
        return Err(err(
            "cache.tag_ttl",
            "must be more than zero; use e.g. tag_ttl = \"5m\"".into(),
        ));
    }
    if raw.upstream.is_empty() {
        return Err(err(
            "upstream",
            "no [[upstream]] is configured; add one, e.g. [[upstream]] name = \"docker.io\" url = \"https://registry-1.docker.io\" default = true".into(),
        ));
    }

    let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(raw.upstream.len());
    for (i, u) in raw.upstream.into_iter().enumerate() {
        let key = |k: &str| format!("upstream[{i}].{k}");
        let name = u.name.ok_or_else(|| {
            err(
                &key("name"),
                "is missing; set the registry name clients use, e.g. name = \"docker.io\"".into(),
            )
        })?;
        if !valid_registry_name(&name) {
            return Err(err(
                &key("name"),
                format!("{name:?} is not a registry host name; use lower-case host[:port], e.g. \"ghcr.io\" or \"localhost:5001\""),
            ));
        }
        if let Some(j) = upstreams.iter().position(|o| o.name == name) {
            return Err(err(
                &key("name"),
                format!("{name:?} is also the name of upstream[{j}]; give each upstream a different name"),
            ));
        }
        let url_text = u.url.ok_or_else(|| {
            err(
                &key("url"),
                "is missing; set where the registry is, e.g. url = \"https://registry-1.docker.io\""
                    .into(),
            )
        })?;
        let url = parse_upstream_url(&url_text).map_err(|p| err(&key("url"), p))?;
        if url.scheme() == "http" && !u.insecure {
            return Err(err(
                &key("url"),
                format!("{url_text:?} is plain HTTP, so pulls and credentials would cross the network unencrypted; use https://, or set insecure = true on this upstream for a lab registry"),
            ));
        }
        let ca_pem = match &u.ca_file {
            Some(path) => Some(ca_bundle(path, sources).map_err(|p| err(&key("ca_file"), p))?),
            None => None,
        };
        let allow = match &u.allow {
            Some(patterns) => Some(
                AllowList::parse(patterns, name == "docker.io")
                    .map_err(|p| err(&key("allow"), p))?,
            ),
            None => None,
        };
        if u.default {
            if let Some(other) = upstreams.iter().find(|o| o.default) {
                return Err(err(
                    &key("default"),
                    format!(
                        "two upstreams have default = true ({} and {name}); set it on one only",
                        other.name
                    ),
                ));
            }
        }
        let credentials = credentials(
            u.username.as_deref(),
            u.password_file.as_deref(),
            u.password_env.as_deref(),
            sources,
        )
        .map_err(|(k, p)| err(&key(k), p))?;
        let mut token_realms = Vec::with_capacity(u.token_realms.len());
        for realm in &u.token_realms {
            if realm.is_empty() || realm.contains(['/', ':', ' ', '@']) {
                return Err(err(
                    &key("token_realms"),
                    format!("{realm:?} is not a host name; list hosts only, e.g. token_realms = [\"auth.example.com\"]"),
                ));
            }
            token_realms.push(realm.to_ascii_lowercase());
        }
        let connect_timeout = duration(&key("connect_timeout"), &u.connect_timeout)?;
        let timeout = duration(&key("timeout"), &u.timeout)?;
        for (k, d, example) in [
            ("connect_timeout", connect_timeout, "10s"),
            ("timeout", timeout, "60s"),
        ] {
            if d.is_zero() {
                return Err(err(
                    &key(k),
                    format!("must be more than zero; use e.g. {k} = \"{example}\""),
                ));
            }
        }
        if !(1..=MAX_FILLS).contains(&u.max_fills) {
            return Err(err(
                &key("max_fills"),
                format!(
                    "{} is out of range; use 1 to {MAX_FILLS} (the default is 16)",
                    u.max_fills
                ),
            ));
        }
        let fill_wait = duration(&key("fill_wait"), &u.fill_wait)?;
        let mut redirect_hosts = Vec::with_capacity(u.redirect_hosts.len());
        for host in &u.redirect_hosts {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let is_ip = bare.parse::<std::net::IpAddr>().is_ok();
            if bare.is_empty() || (!is_ip && bare.contains(['/', ':', ' ', '@'])) {
                return Err(err(
                    &key("redirect_hosts"),
                    format!("{host:?} is not a host name or IP address; list hosts only, e.g. redirect_hosts = [\"storage.internal\", \"10.0.0.5\"]"),
                ));
            }
            redirect_hosts.push(bare.to_ascii_lowercase());
        }
        let min_rate = crate::size::parse_size(u.min_rate.trim_end_matches("/s")).map_err(|p| {
            err(
                &key("min_rate"),
                format!("{p} (bytes per second), or \"0\" to turn the check off"),
            )
        })?;
        let min_rate_window = duration(&key("min_rate_window"), &u.min_rate_window)?;
        if min_rate_window < Duration::from_secs(1) {
            return Err(err(
                &key("min_rate_window"),
                "must be at least one second; use e.g. min_rate_window = \"30s\"".into(),
            ));
        }
        upstreams.push(UpstreamConfig {
            name,
            url,
            default: u.default,
            credentials,
            token_realms,
            connect_timeout,
            timeout,
            max_fills: u.max_fills,
            fill_wait,
            offline: u.offline,
            insecure: u.insecure,
            ca_pem,
            allow,
            redirect_hosts,
            min_rate,
            min_rate_window,
        });
    }

    let htpasswd = match raw.auth.htpasswd {
        Some(path) => {
            let text = sources.read(&path).map_err(|e| {
                err(
                    "auth.htpasswd",
                    format!(
                        "cannot read {} ({}); create it with htpasswd -B -c {} USER",
                        path.display(),
                        io_reason(&e),
                        path.display()
                    ),
                )
            })?;
            crate::access::htpasswd::parse(&text)
                .map_err(|e| err("auth.htpasswd", format!("{}: {e}", path.display())))?;
            Some(path)
        }
        None => None,
    };
    let metrics_listen = match raw.metrics.listen.as_deref().map(str::trim) {
        None | Some("off") => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            err(
                "metrics.listen",
                format!("{text:?} is not an IP address with a port; use e.g. listen = \"127.0.0.1:9095\", or \"off\""),
            )
        })?),
    };
    if metrics_listen.is_some_and(|m| m == listen && m.port() != 0) {
        return Err(err(
            "metrics.listen",
            "is the same address as server.listen; give the metrics their own port, e.g. listen = \"127.0.0.1:9095\"".into(),
        ));
    }
    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(err(
                "log.format",
                format!("{other:?} is not a log format; use \"text\" or \"json\""),
            ))
        }
    };
    if let Some(level) = &raw.log.level {
        let directives = crate::telemetry::level_directives(level);
        // A lone word that is not a level would be read as a target name, silencing the rest.
        let lone_word = !level.contains(['=', ',']);
        if level.trim().is_empty()
            || (lone_word
                && level
                    .trim()
                    .parse::<tracing_subscriber::filter::LevelFilter>()
                    .is_err())
            || tracing_subscriber::EnvFilter::try_new(&directives).is_err()
        {
            return Err(err(
                "log.level",
                format!("{level:?} is not a log filter; use a level (error, warn, info, debug, trace) or RUST_LOG syntax, e.g. \"info,wharf::upstream=debug\""),
            ));
        }
    }

    let pins = pins(raw.pin, &upstreams, &err)?;
    let sync = sync(raw.sync, &upstreams, sources, &err)?;

    Ok(Config {
        file: file.to_owned(),
        server: ServerConfig {
            listen,
            tls,
            shutdown_grace,
            header_read_timeout,
            idle_timeout,
            max_connections: raw.server.max_connections,
            max_connections_per_ip: raw.server.max_connections_per_ip,
        },
        storage,
        gc: GcConfig { manifest_retention },
        pins,
        sync,
        cache: CacheConfig {
            tag_ttl,
            serve_stale: raw.cache.serve_stale,
            negative_ttl,
        },
        upstreams,
        auth: AuthConfig { htpasswd },
        metrics: MetricsConfig {
            listen: metrics_listen,
        },
        log: LogConfig {
            format,
            filter: raw.log.level,
        },
    })
}

/// `tls_cert` and `tls_key`: both or neither, readable, and a usable pair.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sources: &dyn Sources,
) -> Result<Option<TlsFiles>, KeyProblem> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(("tls_key", "is missing but tls_cert is set; set both (the certificate's private key, PEM) or neither (plain HTTP)".into())),
        (None, Some(_)) => return Err(("tls_cert", "is missing but tls_key is set; set both (the certificate chain, PEM, leaf first) or neither (plain HTTP)".into())),
        (Some(cert), Some(key)) => (cert, key),
    };
    let read = |k: &'static str, path: &Path| {
        sources.read(path).map_err(|e| {
            (
                k,
                format!(
                    "cannot read {} ({}); give a PEM file wharf can read",
                    path.display(),
                    io_reason(&e)
                ),
            )
        })
    };
    let cert_pem = read("tls_cert", &cert)?;
    let key_pem = read("tls_key", &key)?;
    crate::tls::certified_key(cert_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| {
        let path = if e.key() == "tls_cert" { &cert } else { &key };
        (e.key(), format!("{} {e}; {}", path.display(), e.fix()))
    })?;
    Ok(Some(TlsFiles { cert, key }))
}

/// An upstream's `ca_file`: PEM certificates, at least one, that all parse.
fn ca_bundle(path: &Path, sources: &dyn Sources) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    let fix = "give a PEM file of the CA certificates that sign the registry's certificate";
    let text = sources
        .read(path)
        .map_err(|e| format!("cannot read {} ({}); {fix}", path.display(), io_reason(&e)))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM ({e}); {fix}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (-----BEGIN CERTIFICATE-----); {fix}",
            path.display()
        ));
    }
    if let Err(e) = reqwest::Certificate::from_pem_bundle(text.as_bytes()) {
        return Err(format!("{}: {e}; {fix}", path.display()));
    }
    Ok(text.into_bytes())
}

/// `[storage]`: the path, the size budget and its watermarks, the free-space floor.
fn storage(
    raw: RawStorage,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<StorageConfig, ConfigError> {
    if raw.path.trim().is_empty() {
        return Err(err(
            "storage.path",
            "is empty; set it to the cache directory, e.g. path = \"/var/lib/wharf\"".into(),
        ));
    }
    let max_size = match raw.max_size.as_deref() {
        None => None,
        Some(text) => {
            let size = parse_size(text).map_err(|p| err("storage.max_size", p))?;
            if size == 0 {
                return Err(err(
                    "storage.max_size",
                    "must be more than zero; use e.g. max_size = \"50GiB\", or leave it out for no limit".into(),
                ));
            }
            Some(size)
        }
    };
    for (key, value) in [
        ("high_watermark", raw.high_watermark),
        ("low_watermark", raw.low_watermark),
    ] {
        if !(1..=100).contains(&value) {
            return Err(err(
                &format!("storage.{key}"),
                format!("{value} is not a percentage of max_size; use 1 to 100 (defaults: high 95, low 85)"),
            ));
        }
    }
    if raw.low_watermark >= raw.high_watermark {
        return Err(err(
            "storage.low_watermark",
            format!(
                "{} is not below high_watermark ({}); eviction stops at the low watermark, so set it lower, e.g. 85 with 95",
                raw.low_watermark, raw.high_watermark
            ),
        ));
    }
    let min_free = parse_size(&raw.min_free).map_err(|p| err("storage.min_free", p))?;
    let write_error_pause =
        parse_duration(&raw.write_error_pause).map_err(|p| err("storage.write_error_pause", p))?;
    if write_error_pause.is_zero() {
        return Err(err(
            "storage.write_error_pause",
            "must be more than zero; use e.g. write_error_pause = \"30s\"".into(),
        ));
    }
    Ok(StorageConfig {
        path: PathBuf::from(raw.path),
        max_size,
        // Both checked to be 1..=100 above.
        high_watermark: u8::try_from(raw.high_watermark).unwrap_or(100),
        low_watermark: u8::try_from(raw.low_watermark).unwrap_or(100),
        min_free,
        write_error_pause,
    })
}

/// `[[pin]]`: each image names a configured upstream; Docker Hub names get `library/`.
fn pins(
    raw: Vec<RawPin>,
    upstreams: &[UpstreamConfig],
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<ImageRef>, ConfigError> {
    let mut pins: Vec<ImageRef> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let key = format!("pin[{i}].image");
        let example = "e.g. image = \"docker.io/library/nginx:1.27\"";
        let text = p.image.ok_or_else(|| {
            err(
                &key,
                format!("is missing; name the image with its registry, {example}"),
            )
        })?;
        let image =
            resolve_image(&text, upstreams).map_err(|p| err(&key, format!("{p}; {example}")))?;
        if !pins.contains(&image) {
            pins.push(image);
        }
    }
    Ok(pins)
}

/// `[[sync]]`: images (inline and from a file, all resolved against the upstreams), an interval of
/// at least a second, platforms.
fn sync(
    raw: Vec<RawSync>,
    upstreams: &[UpstreamConfig],
    sources: &dyn Sources,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<SyncConfig>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("sync[{i}].{k}");
        if s.images.is_none() && s.file.is_none() {
            return Err(err(
                &format!("sync[{i}]"),
                "lists no images; set images = [\"docker.io/library/nginx:1.27\"] or file = \"/etc/wharf/sync.list\" (one image per line)".into(),
            ));
        }
        let mut images: Vec<ImageRef> = Vec::new();
        for text in s.images.iter().flatten() {
            let image = refs::resolve(text, upstreams).map_err(|p| {
                err(
                    &key("images"),
                    format!("{p}; e.g. images = [\"docker.io/library/nginx:1.27\"]"),
                )
            })?;
            if !images.contains(&image) {
                images.push(image);
            }
        }
        if let Some(path) = &s.file {
            let text = sources.read(path).map_err(|e| {
                err(
                    &key("file"),
                    format!(
                        "cannot read {} ({}); create it with one image per line (# for comments)",
                        path.display(),
                        io_reason(&e)
                    ),
                )
            })?;
            refs::parse_list(&text, upstreams)
                .map_err(|p| err(&key("file"), format!("{} {p}", path.display())))?;
        }
        let interval = parse_duration(&s.interval).map_err(|p| err(&key("interval"), p))?;
        if interval < Duration::from_secs(1) {
            return Err(err(
                &key("interval"),
                "must be at least 1s; use e.g. interval = \"6h\"".into(),
            ));
        }
        let platforms = match &s.platforms {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(err(
                    &key("platforms"),
                    "is empty; list platforms, e.g. platforms = [\"linux/amd64\", \"linux/arm64\"], or leave it out for all".into(),
                ))
            }
            Some(list) => Some(
                list.iter()
                    .map(|p| p.parse::<Platform>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(&key("platforms"), e.to_string()))?,
            ),
        };
        out.push(SyncConfig {
            images,
            file: s.file,
            interval,
            platforms,
            pin: s.pin,
        });
    }
    Ok(out)
}

/// Parses an image reference whose registry must be the name of one of `upstreams`, and applies
/// Docker Hub's `library/` normalisation when it names Docker Hub. Used for `[[pin]]` and the
/// command line (`wharf pin IMAGE`).
///
/// # Errors
/// A message naming the reference and what is wrong with it (without a fix: callers add theirs).
pub fn resolve_image(text: &str, upstreams: &[UpstreamConfig]) -> Result<ImageRef, String> {
    let image: ImageRef = text
        .parse()
        .map_err(|e| format!("{text:?} is not an image reference ({e})"))?;
    let Some(upstream) = upstreams.iter().find(|u| u.name == image.registry) else {
        let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        return Err(format!(
            "{text:?} names registry {:?}, which is not an [[upstream]] name; start the image with one of: {}",
            image.registry,
            names.join(", ")
        ));
    };
    Ok(if upstream.is_docker_hub() {
        image.with_library_prefix()
    } else {
        image
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

/// A registry name as clients write it: lower-case DNS labels and an optional non-zero port.
fn valid_registry_name(name: &str) -> bool {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (name, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

fn parse_upstream_url(text: &str) -> Result<Url, String> {
    let example = "use e.g. url = \"https://registry-1.docker.io\"";
    // A URL with userinfo holds a password: never echo it, whatever else is wrong with it.
    let shown = if text.contains('@') {
        "the URL".to_owned()
    } else {
        format!("{text:?}")
    };
    let url = Url::parse(text).map_err(|e| format!("{shown} is not a URL ({e}); {example}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "must not contain credentials; use username and password_file instead; {example}"
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown} is not an http(s) URL; {example}"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown} has no host; {example}"));
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return Err(format!(
            "{shown} must be the registry's root, without path, query or fragment; {example}"
        ));
    }
    Ok(url)
}

/// A problem with one key of an `[[upstream]]`: the key's last segment and the message.
type KeyProblem = (&'static str, String);

/// `username` plus one password source, or nothing. Messages name the file or variable, never
/// the value.
fn credentials(
    username: Option<&str>,
    password_file: Option<&Path>,
    password_env: Option<&str>,
    sources: &dyn Sources,
) -> Result<Option<Credentials>, KeyProblem> {
    let password = match (password_file, password_env) {
        (Some(_), Some(_)) => {
            return Err((
                "password_env",
                "both password_file and password_env are set; keep one".into(),
            ))
        }
        (Some(path), None) => Some(password_from_file(path, sources)?),
        (None, Some(var)) => Some(password_from_env(var, sources)?),
        (None, None) => None,
    };
    match (username, password) {
        (Some(""), _) => Err(("username", "is empty; set the registry username".into())),
        (Some(user), Some(password)) => Ok(Some(Credentials {
            username: user.to_owned(),
            password,
        })),
        (Some(_), None) => Err((
            "username",
            "is set without a password; add password_file = \"/etc/wharf/NAME.password\" or password_env = \"VAR\"".into(),
        )),
        (None, Some(_)) => Err((
            "username",
            "is missing but a password is configured; add username = \"...\"".into(),
        )),
        (None, None) => Ok(None),
    }
}

fn password_from_file(path: &Path, sources: &dyn Sources) -> Result<Secret, KeyProblem> {
    let text = sources.read_secret(path).map_err(|e| {
        (
            "password_file",
            format!(
                "cannot read {} ({}); create it with the password on one line, readable by wharf only",
                path.display(),
                io_reason(&e)
            ),
        )
    })?;
    // One trailing line ending, as `echo` and editors write it; anything else is the password.
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err((
            "password_file",
            format!("{} is empty; put the password in it", path.display()),
        ));
    }
    Ok(Secret::new(text))
}

fn password_from_env(var: &str, sources: &dyn Sources) -> Result<Secret, KeyProblem> {
    let is_name = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_name {
        // Likely the password itself pasted into the wrong key: do not echo it.
        return Err((
            "password_env",
            "is not an environment variable name; give the variable's name (letters, digits and _), e.g. password_env = \"WHARF_DOCKER_IO_PASSWORD\", not the password".into(),
        ));
    }
    let value = sources.env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
        (
            "password_env",
            format!("environment variable {var} is not set or empty; set it in wharf's environment (e.g. an EnvironmentFile= in the systemd unit)"),
        )
    })?;
    Ok(Secret::new(value))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

// === TOML errors ===

/// toml's error as one line: the dotted key (or the line number), what is wrong, and the fix.
///
/// toml's own `Display` spans several lines and quotes the source, and its messages quote values;
/// only the message's shape and the span are used here, so no value from the file is repeated.
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let at = e.span().map(|span| char_floor(text, span.start));
    let (named, problem, fix) = describe(&message);
    let key = at.and_then(|at| key_path(text, at, named.as_deref()));
    let fix = fix.unwrap_or_else(|| {
        // Checked here because it needs the key: `[upstream]` written with one pair of brackets.
        if key.as_deref() == Some("upstream") {
            "write each upstream as [[upstream]], with two pairs of brackets".into()
        } else {
            type_fix(&message, key.as_deref())
        }
    });
    match (key, at) {
        (Some(key), _) => format!("{key}: {problem}; {fix}"),
        (None, Some(at)) => format!(
            "line {}: {problem}; {fix}",
            text[..at].matches('\n').count() + 1
        ),
        (None, None) => format!("{problem}; {fix}"),
    }
}

/// From toml's message: the key the span points at (when the message names it), the problem, and
/// the fix when it does not depend on the key.
fn describe(message: &str) -> (Option<String>, String, Option<String>) {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let fix = if valid.is_empty() {
            "remove it".to_owned()
        } else {
            format!("valid keys here are {}", valid.join(", "))
        };
        return (Some(field.to_owned()), "unknown key".into(), Some(fix));
    }
    if let Some(rest) = message.strip_prefix("duplicate key `") {
        let field = rest.split_once('`').map_or(rest, |(f, _)| f);
        return (
            Some(field.to_owned()),
            "is set twice".into(),
            Some("keep one".into()),
        );
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // "integer `5000`, expected a string": name the kinds, never the value.
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, "?"));
            let found = found.split(['`', '"']).next().unwrap_or(found).trim();
            let problem = if prefix.starts_with("invalid type") {
                format!("is {}, expected {}", plain(found), plain(expected))
            } else {
                format!("is out of range for {}", plain(expected))
            };
            return (None, problem, None);
        }
    }
    (
        None,
        message.to_owned(),
        Some("fix the TOML syntax (see https://toml.io)".into()),
    )
}

/// A serde type description in the operator's words.
fn plain(kind: &str) -> String {
    let kind = kind.trim();
    let bare = kind.trim_start_matches("a ").trim_start_matches("an ");
    match bare {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        "string" => "a string".into(),
        "boolean" => "a boolean".into(),
        "integer" | "usize" | "u16" | "u32" | "u64" | "i64" => "a whole number".into(),
        "floating point" => "a number with a fraction".into(),
        _ if bare.starts_with("struct ") => "a table".into(),
        _ => kind.into(),
    }
}

/// The fix for a type mismatch, which depends on what was expected and, for durations, on the key.
fn type_fix(message: &str, key: Option<&str>) -> String {
    let expected = message.rsplit_once(", expected ").map_or("", |(_, e)| e);
    let last = key.and_then(|k| k.rsplit('.').next()).unwrap_or("");
    match plain(expected).as_str() {
        "a string"
            if matches!(
                last,
                "tag_ttl"
                    | "negative_ttl"
                    | "connect_timeout"
                    | "timeout"
                    | "fill_wait"
                    | "shutdown_grace"
                    | "header_read_timeout"
                    | "idle_timeout"
                    | "min_rate_window"
                    | "write_error_pause"
                    | "manifest_retention"
                    | "interval"
            ) =>
        {
            format!("durations are quoted strings with a unit, e.g. {last} = \"30s\"")
        }
        "a string" if matches!(last, "max_size" | "min_free" | "min_rate") => {
            format!("sizes are quoted strings with a unit, e.g. {last} = \"50GiB\"")
        }
        "a string" => "put the value in double quotes".into(),
        "a list" => "use a list, e.g. [\"auth.example.com\"]".into(),
        "a whole number" => "write a whole number without quotes, e.g. 16".into(),
        "a boolean" => "write true or false, without quotes".into(),
        _ => "see the commented config.toml in the repository for every key".into(),
    }
}

/// The dotted key path (`server.listen`, `upstream[1].colour`) at byte offset `at`: the `[table]`
/// or `[[array]]` header above it plus the key on its line. `named` is the key the span starts at,
/// when toml's message names it. Best effort: `None` sends the caller to a line number.
fn key_path(text: &str, at: usize, named: Option<&str>) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let prefix = &text[line_start..at];
    let mut path;
    if line.trim_start().starts_with('[') {
        // The span is in a table header: the header alone says where.
        let header = prefix.trim_start().trim_start_matches('[');
        path = match named {
            Some(field) => {
                let mut p = segments(header);
                p.push(field.to_owned());
                p
            }
            None => segments(header_name(line)?.0),
        };
    } else {
        path = table_at(&text[..line_start]);
        path.extend(inline_path(prefix, named)?);
    }
    (!path.is_empty()).then(|| path.join("."))
}

/// The table the line after `before` is in, as path segments; `[[name]]` becomes `name[index]`.
fn table_at(before: &str) -> Vec<String> {
    let mut table = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in before.lines() {
        let Some((name, array)) = header_name(line) else {
            continue;
        };
        table = segments(name);
        if array {
            let n = counts
                .entry(table.join("."))
                .and_modify(|c| *c += 1)
                .or_insert(0);
            if let Some(last) = table.last_mut() {
                *last = format!("{last}[{n}]");
            }
        }
    }
    table
}

/// The name inside a `[table]` or `[[array]]` header line, and whether it is an array.
fn header_name(line: &str) -> Option<(&str, bool)> {
    let line = line.trim_start();
    if let Some(rest) = line.strip_prefix("[[") {
        return rest.split_once("]]").map(|(name, _)| (name, true));
    }
    let rest = line.strip_prefix('[')?;
    rest.split_once(']').map(|(name, _)| (name, false))
}

/// The key path within one line up to the span: dotted keys and inline tables
/// (`server = { listen = ` gives `server.listen`).
fn inline_path(prefix: &str, named: Option<&str>) -> Option<Vec<String>> {
    let parts: Vec<&str> = prefix.split('{').collect();
    let last = parts.len() - 1;
    let mut path = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let item = part.rsplit(',').next().unwrap_or(part);
        match named {
            Some(field) if i == last => {
                path.extend(segments(item));
                path.push(field.to_owned());
            }
            _ => path.extend(segments(item.split_once('=')?.0)),
        }
    }
    Some(path)
}

/// `a . "b"` → `["a", "b"]`.
fn segments(key: &str) -> Vec<String> {
    key.split('.')
        .map(|s| s.trim().trim_matches(['"', '\'']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The largest char boundary at or below `at`, within `text`.
fn char_floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        env: HashMap<&'static str, &'static str>,
        files: HashMap<&'static str, String>,
    }

    impl Sources for Fake {
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).map(|v| (*v).to_owned())
        }
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.files
                .get(path.to_str().unwrap_or(""))
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    /// A certificate and its key, another key, made once.
    fn pems() -> &'static (String, String, String) {
        static PEMS: std::sync::OnceLock<(String, String, String)> = std::sync::OnceLock::new();
        PEMS.get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["wharf.test".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let other = rcgen::KeyPair::generate().unwrap();
            (cert.pem(), key.serialize_pem(), other.serialize_pem())
        })
    }

    fn fake() -> Fake {
        let (cert, key, other_key) = pems();
        let bcrypt = "alice:$2y$05$EZG4xhUA92UnLFhvFGPVr.x8YeYSraDvJIyr7tE7BTMQaf4LP0.gu\n";
        Fake {
            env: HashMap::from([("PW", "env-secret"), ("EMPTY", "")]),
            files: HashMap::from([
                ("/pw", "file-secret\n".into()),
                ("/crlf", "file-secret\r\n".into()),
                ("/bare", "file-secret".into()),
                ("/two", "file-secret\n\n".into()),
                ("/empty", "\n".into()),
                ("/tls/cert.pem", cert.clone()),
                ("/tls/key.pem", key.clone()),
                ("/tls/other-key.pem", other_key.clone()),
                ("/ca.pem", cert.clone()),
                ("/htpasswd", bcrypt.into()),
                ("/htpasswd-md5", format!("{bcrypt}bob:$apr1$hunter2$xyz\n")),
            ]),
        }
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, Path::new("wharf.toml"), &fake())
    }

    const UP: &str = "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n";

    #[test]
    fn repository_default_config_parses() {
        let config =
            Config::from_toml(include_str!("../config.toml"), Path::new("config.toml")).unwrap();
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
        let documented = include_str!("../config.toml");
        // The valid keys come from the unknown-key refusal itself, so a new key cannot be missed.
        for table in [
            "",
            "[server]\n",
            "[storage]\n",
            "[cache]\n",
            "[[upstream]]\n",
            "[auth]\n",
            "[metrics]\n",
            "[log]\n",
            "[gc]\n",
            "[[pin]]\n",
            "[[sync]]\n",
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
                    documented.contains(&format!("\n{key} = "))
                        || documented.contains(&format!("\n# {key} = "))
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
    fn lifecycle_defaults_and_keys() {
        let c = load(UP).unwrap();
        assert_eq!(c.storage.max_size, None);
        assert_eq!(
            (c.storage.high_watermark, c.storage.low_watermark),
            (95, 85)
        );
        assert_eq!(c.storage.min_free, 256 << 20);
        assert_eq!(c.storage.write_error_pause, Duration::from_secs(30));
        assert_eq!(c.gc.manifest_retention, Duration::from_secs(90 * 86_400));
        assert!(c.pins.is_empty());

        let text = format!(
            r#"
            [storage]
            max_size = "1.5GiB"
            high_watermark = 90
            low_watermark = 50
            min_free = "0"
            write_error_pause = "2s"
            [gc]
            manifest_retention = "12h"
            [[pin]]
            image = "docker.io/nginx:1.27"
            [[pin]]
            image = "docker.io/library/nginx:1.27"
            [[pin]]
            image = "ghcr.io/org/app@sha256:{}"
            {UP}
            [[upstream]]
            name = "ghcr.io"
            url = "https://ghcr.io"
            "#,
            "ab".repeat(32)
        );
        let c = load(&text).unwrap();
        assert_eq!(c.storage.max_size, Some(3 << 29));
        assert_eq!(
            (c.storage.high_watermark, c.storage.low_watermark),
            (90, 50)
        );
        assert_eq!(c.storage.min_free, 0);
        assert_eq!(c.storage.write_error_pause, Duration::from_secs(2));
        assert_eq!(c.gc.manifest_retention, Duration::from_secs(12 * 3600));
        let pins: Vec<String> = c.pins.iter().map(ToString::to_string).collect();
        assert_eq!(
            pins,
            [
                "docker.io/library/nginx:1.27".to_owned(),
                format!("ghcr.io/org/app@sha256:{}", "ab".repeat(32))
            ]
        );
    }

    #[test]
    fn password_sources() {
        let cases = [
            ("password_env = \"PW\"", "env-secret"),
            ("password_file = \"/pw\"", "file-secret"),
            ("password_file = \"/crlf\"", "file-secret"),
            ("password_file = \"/bare\"", "file-secret"),
            ("password_file = \"/two\"", "file-secret\n"),
        ];
        for (source, want) in cases {
            let c = load(&format!("{UP}username = \"u\"\n{source}\n")).unwrap();
            let creds = c.upstreams[0].credentials.as_ref().unwrap();
            assert_eq!(creds.password.expose(), want, "{source}");
            assert!(!format!("{c:?}").contains("file-secret"), "{source}");
        }
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
    fn sync_entries() {
        let text = format!(
            "{UP}[[sync]]\nimages = [\"nginx:1.27\", \"docker.io/library/nginx:1.27\", \"redis@sha256:{}\"]\ninterval = \"30m\"\nplatforms = [\"linux/amd64\", \"linux/arm/v7\"]\npin = false\n[[sync]]\nfile = \"/pw\"\n",
            "ab".repeat(32)
        );
        let mut sources = fake();
        sources.files.insert("/list", "# ship\nnginx:1\n".into());
        let c = Config::from_toml_with(
            &text.replace("/pw", "/list"),
            Path::new("wharf.toml"),
            &sources,
        )
        .unwrap();
        let s = &c.sync[0];
        let images: Vec<String> = s.images.iter().map(ToString::to_string).collect();
        assert_eq!(
            images,
            [
                "docker.io/library/nginx:1.27".to_owned(),
                format!("docker.io/library/redis@sha256:{}", "ab".repeat(32))
            ]
        );
        assert_eq!(s.interval, Duration::from_secs(1800));
        assert_eq!(
            s.platforms
                .as_ref()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm/v7"]
        );
        assert!(!s.pin);
        let s = &c.sync[1];
        assert!(s.images.is_empty() && s.pin && s.platforms.is_none());
        assert_eq!(s.file.as_deref(), Some(Path::new("/list")));
        assert_eq!(s.interval, Duration::from_secs(6 * 3600));
        assert!(load(UP).unwrap().sync.is_empty());

        for (body, want) in [
            ("interval = \"1h\"", "sync[0]: lists no images; set images ="),
            (
                "images = [\"quay.io/a:1\"]",
                "sync[0].images: \"quay.io/a:1\" names registry \"quay.io\", which is not an [[upstream]] name",
            ),
            ("file = \"/missing\"", "sync[0].file: cannot read /missing (no such file)"),
            ("file = \"/htpasswd\"", "sync[0].file: /htpasswd line 1:"),
            ("images = [\"nginx\"]\ninterval = \"500ms\"", "sync[0].interval: must be at least 1s"),
            ("images = [\"nginx\"]\ninterval = \"6\"", "sync[0].interval: \"6\" is not a duration"),
            ("images = [\"nginx\"]\ninterval = 6", "sync[0].interval: is a whole number, expected a string; durations are quoted"),
            ("images = [\"nginx\"]\nplatforms = []", "sync[0].platforms: is empty"),
            ("images = [\"nginx\"]\nplatforms = [\"linux\"]", "sync[0].platforms: \"linux\" is not a platform"),
            ("images = [\"nginx\"]\nevery = \"1h\"", "sync[0].every: unknown key; valid keys here are images, file, interval, platforms, pin"),
        ] {
            let e = load(&format!("{UP}[[sync]]\n{body}\n")).unwrap_err().to_string();
            assert!(e.starts_with("wharf.toml: "), "{e}");
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn password_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "disk-secret\r\n").unwrap();
        let text = format!(
            "{UP}username = \"u\"\npassword_file = '{}'\n",
            path.display()
        );
        let c = Config::from_toml(&text, Path::new("wharf.toml")).unwrap();
        let creds = c.upstreams[0].credentials.as_ref().unwrap();
        assert_eq!(creds.password.expose(), "disk-secret");
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
    fn refusals_name_the_key() {
        let two = "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\ndefault = true\n[[upstream]]\nname = \"b.io\"\nurl = \"https://b.io\"\ndefault = true\n";
        let dup = "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\n[[upstream]]\nname = \"a.io\"\nurl = \"https://b.io\"\n";
        let up = |rest: &str| format!("[[upstream]]\nname = \"a.io\"\n{rest}\n");
        let cases: Vec<(String, &str)> = vec![
            // Unknown keys at every level, however the TOML is written.
            (
                format!("[server]\nlisen = \"x\"\n{UP}"),
                "server.lisen: unknown key; valid keys here are listen",
            ),
            (
                format!("server.lisen = \"x\"\n{UP}"),
                "server.lisen: unknown key; valid keys here are listen",
            ),
            (
                format!("server = {{ lisen = \"x\" }}\n{UP}"),
                "server.lisen: unknown key; valid keys here are listen",
            ),
            (
                format!("[storage]\npth = \"x\"\n{UP}"),
                "storage.pth: unknown key; valid keys here are path",
            ),
            (
                format!("[cache]\nttl = \"5m\"\n{UP}"),
                "cache.ttl: unknown key; valid keys here are tag_ttl",
            ),
            (
                format!("[servr]\nlisten = \"x\"\n{UP}"),
                "servr: unknown key; valid keys here are server, storage, cache, upstream",
            ),
            (
                format!("[server.tls]\ncert = \"x\"\n{UP}"),
                "server.tls: unknown key; valid keys here are listen",
            ),
            (
                format!("{UP}colour = \"blue\"\n"),
                "upstream[0].colour: unknown key; valid keys here are name, url, default,",
            ),
            (
                format!("{UP}[[upstream]]\nname = \"b.io\"\npassword = \"hunter2\"\n"),
                "upstream[1].password: unknown key;",
            ),
            // Wrong types and TOML syntax.
            (
                format!("[server]\nlisten = 5000\n{UP}"),
                "server.listen: is a whole number, expected a string; put the value in double quotes",
            ),
            (
                format!("[cache]\ntag_ttl = 300\n{UP}"),
                "cache.tag_ttl: is a whole number, expected a string; durations are quoted strings",
            ),
            (
                format!("[server]\nlisten = \"a:1\"\nlisten = \"b:1\"\n{UP}"),
                "server.listen: is set twice; keep one",
            ),
            (
                "[upstream]\nname = \"a.io\"\n".into(),
                "upstream: is a table, expected a list; write each upstream as [[upstream]]",
            ),
            (up("url = \"https://a.io\"\ndefault = \"yes\""), "upstream[0].default: is a string, expected a boolean"),
            (format!("{UP}max_fills = -1\n"), "upstream[0].max_fills: is out of range"),
            (
                format!("{UP}token_realms = \"hunter2\"\n"),
                "upstream[0].token_realms: is a string, expected a list",
            ),
            ("[server\n".into(), "line 1: invalid table header"),
            // Values.
            (
                format!("[server]\nlisten = \"nope\"\n{UP}"),
                "server.listen: \"nope\" is not an IP address with a port",
            ),
            (format!("[storage]\npath = \"\"\n{UP}"), "storage.path: is empty"),
            (format!("[storage]\npath = \"  \"\n{UP}"), "storage.path: is empty"),
            (
                format!("[cache]\ntag_ttl = \"5\"\n{UP}"),
                "cache.tag_ttl: \"5\" is not a duration",
            ),
            (
                format!("[cache]\ntag_ttl = \"0s\"\n{UP}"),
                "cache.tag_ttl: must be more than zero",
            ),
            (String::new(), "upstream: no [[upstream]] is configured"),
            ("[server]\n".into(), "upstream: no [[upstream]] is configured"),
            (
                two.into(),
                "upstream[1].default: two upstreams have default = true (a.io and b.io); set it on one only",
            ),
            (dup.into(), "upstream[1].name: \"a.io\" is also the name of upstream[0]"),
            ("[[upstream]]\nurl = \"https://a.io\"\n".into(), "upstream[0].name: is missing"),
            (
                "[[upstream]]\nname = \"\"\nurl = \"https://a.io\"\n".into(),
                "upstream[0].name: \"\" is not a registry host name",
            ),
            (
                "[[upstream]]\nname = \"Docker.io\"\nurl = \"https://a.io\"\n".into(),
                "upstream[0].name: \"Docker.io\" is not a registry host name",
            ),
            (
                "[[upstream]]\nname = \"a.io/x\"\nurl = \"https://a.io\"\n".into(),
                "upstream[0].name: \"a.io/x\" is not a registry host name",
            ),
            (up(""), "upstream[0].url: is missing"),
            (
                up("url = \"ftp://x\""),
                "upstream[0].url: \"ftp://x\" is not an http(s) URL; use e.g. url = \"https://registry-1.docker.io\"",
            ),
            (up("url = \"not a url\""), "upstream[0].url: \"not a url\" is not a URL"),
            (up("url = \"https://a.io/v2/\""), "upstream[0].url: \"https://a.io/v2/\" must be the registry's root"),
            (up("url = \"https://a.io/?x=1\""), "upstream[0].url:"),
            (up("url = \"https://a.io/#x\""), "upstream[0].url:"),
            (
                up("url = \"https://u:hunter2@a.io\""),
                "upstream[0].url: must not contain credentials",
            ),
            (
                up("url = \"ftp://u:hunter2@a.io\""),
                "upstream[0].url: must not contain credentials",
            ),
            (up("url = \"https://u:hunter2@\""), "upstream[0].url: the URL is not a URL"),
            // Credentials.
            (
                format!("{UP}username = \"u\"\n"),
                "upstream[0].username: is set without a password",
            ),
            (
                format!("{UP}username = \"\"\npassword_env = \"PW\"\n"),
                "upstream[0].username: is empty",
            ),
            (
                format!("{UP}password_env = \"PW\"\n"),
                "upstream[0].username: is missing but a password is configured",
            ),
            (
                format!("{UP}password_file = \"/pw\"\n"),
                "upstream[0].username: is missing but a password is configured",
            ),
            (
                format!("{UP}username = \"u\"\npassword_env = \"PW\"\npassword_file = \"/pw\"\n"),
                "upstream[0].password_env: both password_file and password_env are set",
            ),
            (
                format!("{UP}username = \"u\"\npassword_env = \"NOPE\"\n"),
                "upstream[0].password_env: environment variable NOPE is not set or empty",
            ),
            (
                format!("{UP}username = \"u\"\npassword_env = \"EMPTY\"\n"),
                "upstream[0].password_env: environment variable EMPTY is not set or empty",
            ),
            (
                format!("{UP}username = \"u\"\npassword_env = \"hunter2!\"\n"),
                "upstream[0].password_env: is not an environment variable name",
            ),
            (
                format!("{UP}username = \"u\"\npassword_file = \"/missing\"\n"),
                "upstream[0].password_file: cannot read /missing (no such file)",
            ),
            (
                format!("{UP}username = \"u\"\npassword_file = \"/empty\"\n"),
                "upstream[0].password_file: /empty is empty",
            ),
            // The rest of an upstream.
            (
                format!("{UP}token_realms = [\"https://x\"]\n"),
                "upstream[0].token_realms: \"https://x\" is not a host name",
            ),
            (format!("{UP}token_realms = [\"\"]\n"), "upstream[0].token_realms:"),
            (format!("{UP}connect_timeout = \"soon\"\n"), "upstream[0].connect_timeout: \"soon\" is not a duration"),
            (format!("{UP}connect_timeout = \"0s\"\n"), "upstream[0].connect_timeout: must be more than zero"),
            (format!("{UP}timeout = \"0s\"\n"), "upstream[0].timeout: must be more than zero"),
            (format!("{UP}timeout = \"-1s\"\n"), "upstream[0].timeout: \"-1s\" is not a duration"),
            (format!("{UP}fill_wait = \"\"\n"), "upstream[0].fill_wait: \"\" is not a duration"),
            (format!("{UP}max_fills = 0\n"), "upstream[0].max_fills: 0 is out of range"),
            (format!("{UP}max_fills = 100000\n"), "upstream[0].max_fills: 100000 is out of range"),
            // Upstream TLS and allow lists.
            (
                up("url = \"http://a.io\""),
                "upstream[0].url: \"http://a.io\" is plain HTTP, so pulls and credentials would cross the network unencrypted; use https://, or set insecure = true",
            ),
            (format!("{UP}insecure = \"yes\"\n"), "upstream[0].insecure: is a string, expected a boolean"),
            (format!("{UP}ca_file = \"/missing\"\n"), "upstream[0].ca_file: cannot read /missing (no such file)"),
            (format!("{UP}ca_file = \"/pw\"\n"), "upstream[0].ca_file: /pw holds no certificate"),
            (format!("{UP}allow = []\n"), "upstream[0].allow: lists no pattern"),
            (format!("{UP}allow = [\"Org/*\"]\n"), "upstream[0].allow: \"Org/*\" has 'O'"),
            (format!("{UP}allow = \"org/*\"\n"), "upstream[0].allow: is a string, expected a list"),
            // The listener's TLS.
            (
                format!("[server]\ntls_cert = \"/tls/cert.pem\"\n{UP}"),
                "server.tls_key: is missing but tls_cert is set; set both",
            ),
            (
                format!("[server]\ntls_key = \"/tls/key.pem\"\n{UP}"),
                "server.tls_cert: is missing but tls_key is set; set both",
            ),
            (
                format!("[server]\ntls_cert = \"/nope.pem\"\ntls_key = \"/tls/key.pem\"\n{UP}"),
                "server.tls_cert: cannot read /nope.pem (no such file)",
            ),
            (
                format!("[server]\ntls_cert = \"/tls/cert.pem\"\ntls_key = \"/tls/other-key.pem\"\n{UP}"),
                "server.tls_key: /tls/other-key.pem holds a private key that does not match the certificate in tls_cert",
            ),
            (
                format!("[server]\ntls_cert = \"/tls/key.pem\"\ntls_key = \"/tls/key.pem\"\n{UP}"),
                "server.tls_cert: /tls/key.pem holds no PEM certificate",
            ),
            (
                format!("[server]\ntls_cert = \"/tls/cert.pem\"\ntls_key = \"/tls/cert.pem\"\n{UP}"),
                "server.tls_key: /tls/cert.pem holds no PEM private key",
            ),
            (format!("[server]\nshutdown_grace = 30\n{UP}"), "server.shutdown_grace: is a whole number, expected a string; durations are quoted strings"),
            (format!("[server]\nshutdown_grace = \"soon\"\n{UP}"), "server.shutdown_grace: \"soon\" is not a duration"),
            // Access, metrics, logs.
            (format!("[auth]\nhtpasswd = \"/missing\"\n{UP}"), "auth.htpasswd: cannot read /missing (no such file); create it with htpasswd -B -c /missing USER"),
            (
                format!("[auth]\nhtpasswd = \"/htpasswd-md5\"\n{UP}"),
                "auth.htpasswd: /htpasswd-md5: line 2: user \"bob\" has an MD5 ($apr1$) hash; only bcrypt is accepted",
            ),
            (format!("[auth]\nusers = \"x\"\n{UP}"), "auth.users: unknown key; valid keys here are htpasswd"),
            (format!("[metrics]\nlisten = \"9095\"\n{UP}"), "metrics.listen: \"9095\" is not an IP address with a port"),
            (
                format!("[server]\nlisten = \"127.0.0.1:5000\"\n[metrics]\nlisten = \"127.0.0.1:5000\"\n{UP}"),
                "metrics.listen: is the same address as server.listen",
            ),
            (format!("[log]\nformat = \"xml\"\n{UP}"), "log.format: \"xml\" is not a log format; use \"text\" or \"json\""),
            (format!("[log]\nlevel = \"loud\"\n{UP}"), "log.level: \"loud\" is not a log filter"),
            (format!("[log]\nlevel = \"\"\n{UP}"), "log.level: \"\" is not a log filter"),
            (format!("[log]\nlevel = \"wharf=loud\"\n{UP}"), "log.level: \"wharf=loud\" is not a log filter"),
            // Storage budget, gc and pins.
            (
                format!("[storage]\nmax_size = \"lots\"\n{UP}"),
                "storage.max_size: \"lots\" is not a size; write a number and a unit",
            ),
            (
                format!("[storage]\nmax_size = 50\n{UP}"),
                "storage.max_size: is a whole number, expected a string; sizes are quoted strings with a unit",
            ),
            (format!("[storage]\nmax_size = \"0GiB\"\n{UP}"), "storage.max_size: must be more than zero"),
            (
                format!("[storage]\nhigh_watermark = 101\n{UP}"),
                "storage.high_watermark: 101 is not a percentage of max_size; use 1 to 100",
            ),
            (format!("[storage]\nlow_watermark = 0\n{UP}"), "storage.low_watermark: 0 is not a percentage"),
            (
                format!("[storage]\nlow_watermark = 95\n{UP}"),
                "storage.low_watermark: 95 is not below high_watermark (95)",
            ),
            (
                format!("[storage]\nhigh_watermark = 80\n{UP}"),
                "storage.low_watermark: 85 is not below high_watermark (80)",
            ),
            (format!("[storage]\nmin_free = \"-1\"\n{UP}"), "storage.min_free: \"-1\" is not a size"),
            (
                format!("[storage]\nwrite_error_pause = \"0s\"\n{UP}"),
                "storage.write_error_pause: must be more than zero",
            ),
            (format!("[gc]\nmanifest_retention = \"90\"\n{UP}"), "gc.manifest_retention: \"90\" is not a duration"),
            (format!("[gc]\nmanifest_retention = \"0d\"\n{UP}"), "gc.manifest_retention: must be more than zero"),
            (format!("[gc]\nkeep = 1\n{UP}"), "gc.keep: unknown key; valid keys here are manifest_retention"),
            (format!("{UP}[[pin]]\n"), "pin[0].image: is missing"),
            (
                format!("{UP}[[pin]]\nimage = \"nginx:1\"\n"),
                "pin[0].image: \"nginx:1\" is not an image reference (no registry",
            ),
            (
                format!("{UP}[[pin]]\nimage = \"quay.io/a/b:1\"\n"),
                "pin[0].image: \"quay.io/a/b:1\" names registry \"quay.io\", which is not an [[upstream]] name; start the image with one of: docker.io",
            ),
            (
                format!("{UP}[[pin]]\nimage = \"docker.io/a/b:1\"\ntag = \"x\"\n"),
                "pin[0].tag: unknown key; valid keys here are image",
            ),
        ];
        for (text, want) in &cases {
            let got = load(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.starts_with("wharf.toml: "), "{text:?} -> {got}");
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
            assert!(!got.contains('\n'), "{got:?} is more than one line");
            assert!(got.contains("; "), "{got:?} has no fix");
            assert!(
                !got.contains("hunter2") && !got.contains("secret"),
                "{got:?} leaks a secret"
            );
        }
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

    #[test]
    fn registry_names() {
        for (name, ok) in [
            ("docker.io", true),
            ("localhost:5001", true),
            ("upstream.test", true),
            ("registry-1.docker.io", true),
            ("Docker.io", false),
            ("a/b", false),
            ("", false),
            ("a:0", false),
            ("a:", false),
            ("a:99999", false),
            ("-a.io", false),
            ("a..io", false),
            ("a_b.io", false),
        ] {
            assert_eq!(valid_registry_name(name), ok, "{name:?}");
        }
    }
}
