//! The operator's configuration file, in two stages.
//!
//! [`RawConfig`] mirrors the TOML exactly (serde, `deny_unknown_fields`, defaults). [`validate`] turns
//! it into a [`Config`] of checked, typed values; it is pure apart from reading the password sources
//! the file names, so unit tests drive it directly. Every refusal is one line that names the file, the
//! key and the fix, because the operator reads it in `journalctl` at 3 a.m.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::secret::{Credentials, Secret};

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
    /// `[[upstream]]`, in file order.
    pub upstreams: Vec<UpstreamConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The directory holding blobs, staging files and the index.
    pub path: PathBuf,
}

/// `[cache]`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long a tag's digest is trusted before the upstream is asked again.
    pub tag_ttl: Duration,
}

/// One `[[upstream]]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The registry name clients use (`docker.io`, `ghcr.io`, `localhost:5001`).
    pub name: String,
    /// Where the registry is.
    pub url: Url,
    /// Whether requests that name no registry go here.
    pub default: bool,
    /// Credentials for the registry (or its token realm).
    pub credentials: Option<Credentials>,
    /// Extra token-realm hosts that may receive the credentials.
    pub token_realms: Vec<String>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long the upstream may stay silent mid-response before the request (or fill) fails.
    pub timeout: Duration,
    /// How many blob fills may run against this upstream at once.
    pub max_fills: usize,
    /// How long a fill waits for a free slot before the request fails.
    pub fill_wait: Duration,
}

/// A configuration the operator must fix: one line with the file, the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", file.display(), what)]
pub struct ConfigError {
    file: PathBuf,
    what: String,
}

/// The file as written.
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "default_storage")]
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "default_tag_ttl")]
    tag_ttl: String,
}

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
}

fn default_listen() -> String {
    "0.0.0.0:5000".into()
}
fn default_storage() -> String {
    "./data".into()
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

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}
impl Default for RawStorage {
    fn default() -> Self {
        Self {
            path: default_storage(),
        }
    }
}
impl Default for RawCache {
    fn default() -> Self {
        Self {
            tag_ttl: default_tag_ttl(),
        }
    }
}

/// Where password values come from: the environment and files, abstracted so tests feed a map.
pub trait Sources {
    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// A file's contents.
    ///
    /// # Errors
    /// The I/O error.
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The real process environment and filesystem.
pub struct System;

impl Sources for System {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

// === impl Config ===

impl Config {
    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            what: format!(
                "cannot read the file ({}); create it (the repository's config.toml is a working default) or pass --config PATH",
                io_reason(&e)
            ),
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates configuration text; `file` is only used in messages.
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            what: toml_reason(text, &e),
        })?;
        validate(raw, file, sources)
    }

    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The `default = true` upstream.
    pub fn default_upstream(&self) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.default)
    }
}

impl UpstreamConfig {
    /// Whether this is Docker Hub, whose one-segment names get `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.name == "docker.io"
    }
}

/// Turns the file as written into checked values.
///
/// # Errors
/// The first problem found, as a [`ConfigError`].
pub fn validate(raw: RawConfig, file: &Path, sources: &dyn Sources) -> Result<Config, ConfigError> {
    let err = |key: &str, problem: String| ConfigError {
        file: file.to_owned(),
        what: format!("{key}: {problem}"),
    };
    let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
        err(
            "server.listen",
            format!(
                "{:?} is not an address with a port; use e.g. listen = \"0.0.0.0:5000\" or \"[::]:5000\"",
                raw.server.listen
            ),
        )
    })?;
    if raw.storage.path.trim().is_empty() {
        return Err(err(
            "storage.path",
            "is empty; set it to the cache directory, e.g. path = \"/var/lib/wharf\"".into(),
        ));
    }
    let tag_ttl =
        duration("cache.tag_ttl", &raw.cache.tag_ttl).map_err(|p| err("cache.tag_ttl", p))?;
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
        if let Some(other) = upstreams.iter().find(|o| o.name == name) {
            return Err(err(
                &key("name"),
                format!(
                    "{:?} is used by two upstreams; give each a different name",
                    other.name
                ),
            ));
        }
        let url_text = u.url.ok_or_else(|| {
            err(&key("url"), "is missing; set where the registry is, e.g. url = \"https://registry-1.docker.io\"".into())
        })?;
        let url = parse_upstream_url(&url_text).map_err(|p| err(&key("url"), p))?;
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
        let credentials = credentials(&u.username, &u.password_file, &u.password_env, sources)
            .map_err(|(k, p)| err(&key(k), p))?;
        for realm in &u.token_realms {
            if realm.is_empty() || realm.contains(['/', ':', ' ']) {
                return Err(err(
                    &key("token_realms"),
                    format!("{realm:?} is not a host name; list hosts only, e.g. token_realms = [\"auth.example.com\"]"),
                ));
            }
        }
        let connect_timeout = duration(&key("connect_timeout"), &u.connect_timeout)
            .map_err(|p| err(&key("connect_timeout"), p))?;
        let timeout = duration(&key("timeout"), &u.timeout).map_err(|p| err(&key("timeout"), p))?;
        let fill_wait =
            duration(&key("fill_wait"), &u.fill_wait).map_err(|p| err(&key("fill_wait"), p))?;
        if u.max_fills == 0 {
            return Err(err(
                &key("max_fills"),
                "must be at least 1; the default is 16".into(),
            ));
        }
        for (k, d) in [("connect_timeout", connect_timeout), ("timeout", timeout)] {
            if d.is_zero() {
                return Err(err(&key(k), "must be more than zero, e.g. \"10s\"".into()));
            }
        }
        upstreams.push(UpstreamConfig {
            name,
            url,
            default: u.default,
            credentials,
            token_realms: u
                .token_realms
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .collect(),
            connect_timeout,
            timeout,
            max_fills: u.max_fills,
            fill_wait,
        });
    }
    Ok(Config {
        file: file.to_owned(),
        server: ServerConfig { listen },
        storage: StorageConfig {
            path: PathBuf::from(raw.storage.path),
        },
        cache: CacheConfig { tag_ttl },
        upstreams,
    })
}

/// Parses a human duration: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`.
///
/// # Errors
/// A message saying what is wrong and what to write.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() || t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a duration; write it with a unit, e.g. \"30s\", \"5m\", \"1h\""
        ));
    }
    humantime::parse_duration(t).map_err(|_| {
        format!("{s:?} is not a duration; write it with a unit, e.g. \"30s\", \"5m\", \"1h\"")
    })
}

fn duration(_key: &str, s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

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
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e}); {example}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} is not an http(s) URL; {example}"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host; {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the URL here: it holds a secret.
        return Err(format!(
            "must not contain credentials; use username and password_file instead; {example}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return Err(format!(
            "{text:?} must be the registry's root, without path or query; {example}"
        ));
    }
    Ok(url)
}

type KeyProblem = (&'static str, String);

fn credentials(
    username: &Option<String>,
    password_file: &Option<PathBuf>,
    password_env: &Option<String>,
    sources: &dyn Sources,
) -> Result<Option<Credentials>, KeyProblem> {
    let password = match (password_file, password_env) {
        (Some(_), Some(_)) => {
            return Err((
                "password_env",
                "both password_file and password_env are set; keep one".into(),
            ))
        }
        (Some(path), None) => {
            let text = sources.read(path).map_err(|e| {
                (
                    "password_file",
                    format!(
                        "cannot read {} ({}); create it with the password on one line, readable by wharf only",
                        path.display(),
                        io_reason(&e)
                    ),
                )
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.is_empty() {
                return Err((
                    "password_file",
                    format!("{} is empty; put the password in it", path.display()),
                ));
            }
            Some(Secret::new(text))
        }
        (None, Some(var)) => {
            let value = sources.env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                (
                    "password_env",
                    format!("environment variable {var} is not set or empty; set it in wharf's environment (e.g. an EnvironmentFile= in the systemd unit)"),
                )
            })?;
            Some(Secret::new(value))
        }
        (None, None) => None,
    };
    match (username, password) {
        (Some(user), Some(password)) if !user.is_empty() => Ok(Some(Credentials {
            username: user.clone(),
            password,
        })),
        (Some(_), Some(_)) => Err(("username", "is empty; set the registry username".into())),
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

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// One line from toml's (multi-line) error: the dotted key or line, and what is wrong.
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let key = e.span().and_then(|span| key_at(text, span.start));
    let fix = if message.starts_with("unknown field") {
        "; remove or correct it (config.toml in the repository lists every key)"
    } else {
        ""
    };
    match (key, line) {
        (Some(key), _) => format!("{key}: {message}{fix}"),
        (None, Some(line)) => format!("line {line}: {message}{fix}"),
        (None, None) => format!("{message}{fix}"),
    }
}

/// The dotted key at a byte offset: the nearest `[table]` header above plus the key on that line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('['))?;
    let mut table: Option<String> = None;
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for l in before[..line_start].lines() {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let n = index
                .entry(name.to_owned())
                .and_modify(|c| *c += 1)
                .or_insert(0);
            table = Some(format!("{name}[{n}]"));
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = Some(name.to_owned());
        }
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

impl fmt::Display for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        env: HashMap<&'static str, &'static str>,
        files: HashMap<&'static str, &'static str>,
    }

    impl Sources for Fake {
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).map(|v| (*v).to_owned())
        }
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.files
                .get(path.to_str().unwrap_or(""))
                .map(|v| (*v).to_owned())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn fake() -> Fake {
        Fake {
            env: HashMap::from([("PW", "env-secret")]),
            files: HashMap::from([("/pw", "file-secret\n"), ("/empty", "\n")]),
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
        assert_eq!(config.server.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(config.storage.path, PathBuf::from("./data"));
        assert_eq!(config.cache.tag_ttl, Duration::from_secs(300));
        assert_eq!(config.upstreams.len(), 1);
        let up = &config.upstreams[0];
        assert_eq!(up.name, "docker.io");
        assert_eq!(up.url.as_str(), "https://registry-1.docker.io/");
        assert!(up.default && up.is_docker_hub());
        assert!(up.credentials.is_none());
        assert_eq!(
            config.default_upstream().map(|u| u.name.as_str()),
            Some("docker.io")
        );
    }

    #[test]
    fn credentials_from_file_and_env() {
        let c = load(&format!("{UP}username = \"u\"\npassword_file = \"/pw\"\n")).unwrap();
        assert_eq!(
            c.upstreams[0]
                .credentials
                .as_ref()
                .unwrap()
                .password
                .expose(),
            "file-secret"
        );
        let c = load(&format!("{UP}username = \"u\"\npassword_env = \"PW\"\n")).unwrap();
        assert_eq!(
            c.upstreams[0]
                .credentials
                .as_ref()
                .unwrap()
                .password
                .expose(),
            "env-secret"
        );
        assert!(!format!("{c:?}").contains("env-secret"));
    }

    #[test]
    fn refusals_name_the_key() {
        let two = "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\ndefault = true\n[[upstream]]\nname = \"b.io\"\nurl = \"https://b.io\"\ndefault = true\n";
        let dup = "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\n[[upstream]]\nname = \"a.io\"\nurl = \"https://b.io\"\n";
        let cases: Vec<(String, &str)> = vec![
            (
                format!("[server]\nlisen = \"x\"\n{UP}"),
                "server.lisen: unknown field",
            ),
            (
                format!("[server]\nlisten = \"nope\"\n{UP}"),
                "server.listen:",
            ),
            (format!("[storage]\npath = \"\"\n{UP}"), "storage.path:"),
            (format!("[cache]\ntag_ttl = \"5\"\n{UP}"), "cache.tag_ttl:"),
            (
                format!("[cache]\ntag_ttl = \"0s\"\n{UP}"),
                "cache.tag_ttl: must be more than zero",
            ),
            (String::new(), "upstream: no [[upstream]]"),
            (
                two.into(),
                "upstream[1].default: two upstreams have default = true (a.io and b.io)",
            ),
            (dup.into(), "upstream[1].name:"),
            (
                "[[upstream]]\nurl = \"https://a.io\"\n".into(),
                "upstream[0].name: is missing",
            ),
            (
                "[[upstream]]\nname = \"A.io\"\nurl = \"https://a.io\"\n".into(),
                "upstream[0].name:",
            ),
            (
                "[[upstream]]\nname = \"a.io/x\"\nurl = \"https://a.io\"\n".into(),
                "upstream[0].name:",
            ),
            (
                "[[upstream]]\nname = \"a.io\"\n".into(),
                "upstream[0].url: is missing",
            ),
            (
                "[[upstream]]\nname = \"a.io\"\nurl = \"ftp://a.io\"\n".into(),
                "upstream[0].url: \"ftp://a.io\" is not an http(s) URL",
            ),
            (
                "[[upstream]]\nname = \"a.io\"\nurl = \"not a url\"\n".into(),
                "upstream[0].url:",
            ),
            (
                "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io/v2/\"\n".into(),
                "upstream[0].url:",
            ),
            (
                "[[upstream]]\nname = \"a.io\"\nurl = \"https://u:hunter2@a.io\"\n".into(),
                "upstream[0].url: must not contain credentials",
            ),
            (
                format!("{UP}username = \"u\"\n"),
                "upstream[0].username: is set without a password",
            ),
            (
                format!("{UP}password_env = \"PW\"\n"),
                "upstream[0].username: is missing",
            ),
            (
                format!("{UP}username = \"u\"\npassword_env = \"PW\"\npassword_file = \"/pw\"\n"),
                "upstream[0].password_env: both",
            ),
            (
                format!("{UP}username = \"u\"\npassword_env = \"NOPE\"\n"),
                "upstream[0].password_env: environment variable NOPE",
            ),
            (
                format!("{UP}username = \"u\"\npassword_file = \"/missing\"\n"),
                "upstream[0].password_file: cannot read /missing (no such file)",
            ),
            (
                format!("{UP}username = \"u\"\npassword_file = \"/empty\"\n"),
                "upstream[0].password_file: /empty is empty",
            ),
            (
                format!("{UP}token_realms = [\"https://x\"]\n"),
                "upstream[0].token_realms:",
            ),
            (format!("{UP}max_fills = 0\n"), "upstream[0].max_fills:"),
            (format!("{UP}timeout = \"0s\"\n"), "upstream[0].timeout:"),
            (
                format!("{UP}colour = \"blue\"\n"),
                "upstream[0].colour: unknown field",
            ),
        ];
        for (text, want) in &cases {
            let got = load(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.starts_with("wharf.toml: "), "{text:?} -> {got}");
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
            assert!(!got.contains('\n'), "{got:?} is more than one line");
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
            ("1h30m", Some(Duration::from_secs(5400))),
            ("500ms", Some(Duration::from_millis(500))),
            ("", None),
            ("5", None),
            ("-1s", None),
            ("soon", None),
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
            ("Docker.io", false),
            ("a/b", false),
            ("", false),
            ("a:0", false),
            ("-a.io", false),
        ] {
            assert_eq!(valid_registry_name(name), ok, "{name:?}");
        }
    }
}
