//! `[[upstream]]`: the registries wharf mirrors, each with its URL (or URLs, tried in order),
//! credentials, timeouts, fill limits, TLS trust, allow list and redirect policy. Password values
//! are read here, through [`Sources`], and kept in a [`Secret`]: no message and no `Debug` output
//! ever shows one.
//!
//! Credentials come from one of: `username` with `password_file` (read again by the upstream
//! client when the file changes) or `password_env`; `credential_helper` (a Docker credential
//! helper, which the upstream client runs: nothing here runs a process); or `auth_file` (Docker's
//! `config.json` or Podman's `auth.json`, resolved here for the upstream's host by
//! [`super::docker_auth`], and read again by the client when it changes).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::docker_auth::{self, DockerAuth};
use super::error::{io_reason, KeyError};
use super::{duration, err, secret_file, Sources};
use crate::access::allow::AllowList;
use crate::secret::{Credentials, Secret};
use crate::size::parse_size;

/// The largest `max_fills`: far beyond what one upstream should see, far below the semaphore's limit.
const MAX_FILLS: usize = 4096;

/// One `[[upstream]]`, checked. Comparable, so a reload can tell an unchanged upstream (whose
/// client, with its credential and URL state, is then kept) from a changed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The registry name clients use (`docker.io`, `ghcr.io`, `localhost:5001`): lower-case
    /// `host[:port]`, unique among the upstreams.
    pub name: String,
    /// Where the registry is: http or https, no userinfo, query or fragment, path empty or `/`
    /// (`url`, or the first of `urls`).
    pub url: Url,
    /// More places the same registry is served from, tried in order after `url` when the ones
    /// before fail (the rest of `urls`; empty with `url`). Checked as `url` is.
    pub fallback_urls: Vec<Url>,
    /// How long a URL of `urls` that failed (no connection, a timeout, a 5xx) is skipped
    /// (`url_backoff`, default `30s`).
    pub url_backoff: Duration,
    /// Whether requests that name no registry go here; at most one upstream sets it.
    pub default: bool,
    /// Credentials for the registry (or its token realm), from `username` plus `password_file` or
    /// `password_env`, or the `auths` entry of `auth_file`, as read at start.
    pub credentials: Option<Credentials>,
    /// Where credentials that may change while wharf runs come from (`password_file`,
    /// `credential_helper`, `auth_file`); `None` for none or `password_env`.
    pub credential_source: Option<CredentialSource>,
    /// How long a credential from a helper is used before the helper is run again
    /// (`credential_ttl`, default `10m`).
    pub credential_ttl: Duration,
    /// How long a credential helper may run before it is killed (`credential_timeout`, default
    /// `30s`).
    pub credential_timeout: Duration,
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
    /// This upstream is another wharf (`mirror_of_mirror`, default false): every request sent to
    /// it carries `?ns=<name>`, so the other wharf routes it to its upstream of the same name
    /// rather than to its default one. See [`UpstreamConfig::forward_ns`].
    pub mirror_of_mirror: bool,
}

/// Where an upstream's credentials come from when they may change while wharf runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `username` and `password_file`: the file is read again when it changes.
    PasswordFile {
        /// The user name.
        username: String,
        /// The file, one password (or token) on a line.
        path: PathBuf,
    },
    /// `credential_helper`: a Docker credential helper is run for the credential.
    Helper(CredentialHelper),
    /// `auth_file`: Docker's `config.json` or Podman's `auth.json`, read again when it changes.
    AuthFile {
        /// The file.
        path: PathBuf,
        /// The host its entries are looked up for (the first URL's `host[:port]`; Docker Hub's
        /// name for Docker Hub).
        host: String,
        /// What it said for the host at start; `None` when it was not read (the offline
        /// commands read no secret).
        entry: Option<DockerAuth>,
    },
}

/// A Docker credential helper (the `docker-credential-helpers` protocol: `get`, the server on
/// standard input, `{"Username","Secret"}` on standard output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialHelper {
    /// As configured: a name (`ecr-login`) or an absolute path, for messages.
    pub name: String,
    /// What is run: `docker-credential-<name>`, looked up on `PATH` when it is run, or the
    /// absolute path.
    pub program: PathBuf,
    /// What the helper is asked for on standard input: the first URL's `host[:port]`
    /// (`https://index.docker.io/v1/` for Docker Hub, as Docker asks).
    pub server: String,
}

/// One `[[upstream]]` as written. It holds no secret: only where the password is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Option<String>,
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) default: bool,
    pub(super) urls: Option<Vec<String>>,
    #[serde(default = "default_url_backoff")]
    pub(super) url_backoff: String,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) credential_helper: Option<String>,
    pub(super) auth_file: Option<PathBuf>,
    #[serde(default = "default_credential_ttl")]
    pub(super) credential_ttl: String,
    #[serde(default = "default_credential_timeout")]
    pub(super) credential_timeout: String,
    #[serde(default)]
    pub(super) token_realms: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    pub(super) connect_timeout: String,
    #[serde(default = "default_timeout")]
    pub(super) timeout: String,
    #[serde(default = "default_max_fills")]
    pub(super) max_fills: usize,
    #[serde(default = "default_fill_wait")]
    pub(super) fill_wait: String,
    #[serde(default)]
    pub(super) offline: bool,
    #[serde(default)]
    pub(super) insecure: bool,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) allow: Option<Vec<String>>,
    #[serde(default)]
    pub(super) redirect_hosts: Vec<String>,
    #[serde(default = "default_min_rate")]
    pub(super) min_rate: String,
    #[serde(default = "default_min_rate_window")]
    pub(super) min_rate_window: String,
    #[serde(default)]
    pub(super) mirror_of_mirror: bool,
}

// === impl UpstreamConfig ===

impl UpstreamConfig {
    /// Whether this is Docker Hub, whose one-segment repository names get `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.name == "docker.io"
    }

    /// The registry name to send as `?ns=` on every request to this upstream: its own name when
    /// it is another wharf (`mirror_of_mirror = true`), which routes by that name; `None` for a
    /// plain registry, which is sent no extra query.
    pub fn forward_ns(&self) -> Option<&str> {
        self.mirror_of_mirror.then_some(self.name.as_str())
    }

    /// Every URL of the registry, in the order they are tried: `url`, then `fallback_urls`.
    pub fn urls(&self) -> impl Iterator<Item = &Url> {
        std::iter::once(&self.url).chain(&self.fallback_urls)
    }
}

impl fmt::Display for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

// === impl RawUpstream ===

fn default_url_backoff() -> String {
    "30s".into()
}
fn default_credential_ttl() -> String {
    "10m".into()
}
fn default_credential_timeout() -> String {
    "30s".into()
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
fn default_min_rate() -> String {
    "64KiB".into()
}
fn default_min_rate_window() -> String {
    "30s".into()
}

/// Checks every `[[upstream]]`, in file order: at least one, names unique, one default at most.
///
/// # Errors
/// The first key refused.
pub(super) fn validate_all(
    raw: Vec<RawUpstream>,
    sources: &dyn Sources,
) -> Result<Vec<UpstreamConfig>, KeyError> {
    if raw.is_empty() {
        return Err(err(
            "upstream",
            "no [[upstream]] is configured; add one, e.g. [[upstream]] name = \"docker.io\" url = \"https://registry-1.docker.io\" default = true".into(),
        ));
    }
    let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(raw.len());
    for (i, u) in raw.into_iter().enumerate() {
        let upstream = u.validate(i, &upstreams, sources)?;
        upstreams.push(upstream);
    }
    Ok(upstreams)
}

impl RawUpstream {
    /// Checks `upstream[i]` against the ones before it (`upstreams`), reading its password and CA
    /// file through `sources`.
    ///
    /// # Errors
    /// The first key refused.
    fn validate(
        self,
        i: usize,
        upstreams: &[UpstreamConfig],
        sources: &dyn Sources,
    ) -> Result<UpstreamConfig, KeyError> {
        let u = self;
        let key = |k: &str| format!("upstream[{i}].{k}");
        let name = checked_name(u.name, upstreams, &key)?;
        let (url, fallback_urls) = checked_urls(u.url, u.urls, u.insecure, &key)?;
        let url_backoff = duration(&key("url_backoff"), &u.url_backoff)?;
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
        let mut credentials = credentials(
            u.username.as_deref(),
            u.password_file.as_deref(),
            u.password_env.as_deref(),
            sources,
        )
        .map_err(|(k, p)| err(&key(k), p))?;
        let mut credential_source = match (&u.password_file, &u.username) {
            (Some(path), Some(username)) => Some(CredentialSource::PasswordFile {
                username: username.clone(),
                path: path.clone(),
            }),
            _ => None,
        };
        let server = helper_server(&name, &url);
        let others = credentials.is_some();
        match (&u.credential_helper, &u.auth_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    &key("auth_file"),
                    "both credential_helper and auth_file are set; keep one".into(),
                ))
            }
            (Some(_), None) | (None, Some(_)) if others => {
                let k = if u.credential_helper.is_some() {
                    "credential_helper"
                } else {
                    "auth_file"
                };
                return Err(err(
                    &key(k),
                    format!("is set together with username and a password; keep one way to get credentials (remove username, password_file and password_env, or {k})"),
                ));
            }
            (Some(helper), None) => {
                credential_source = Some(CredentialSource::Helper(
                    credential_helper(helper, server)
                        .map_err(|p| err(&key("credential_helper"), p))?,
                ));
            }
            (None, Some(path)) => {
                let entry = auth_file_entry(path, &server, sources)
                    .map_err(|p| err(&key("auth_file"), p))?;
                if let Some(DockerAuth::Credentials(c)) = &entry {
                    credentials = Some(c.clone());
                }
                credential_source = Some(CredentialSource::AuthFile {
                    path: path.clone(),
                    host: server,
                    entry,
                });
            }
            (None, None) => {}
        }
        let credential_ttl = positive(&key("credential_ttl"), &u.credential_ttl, "10m")?;
        let credential_timeout =
            positive(&key("credential_timeout"), &u.credential_timeout, "30s")?;
        let token_realms = checked_token_realms(&u.token_realms, &key)?;
        let (connect_timeout, timeout) = timeouts(&u.connect_timeout, &u.timeout, &key)?;
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
        let redirect_hosts = checked_redirect_hosts(&u.redirect_hosts, &key)?;
        let (min_rate, min_rate_window) = min_rate(&u.min_rate, &u.min_rate_window, &key)?;
        Ok(UpstreamConfig {
            name,
            url,
            fallback_urls,
            url_backoff,
            default: u.default,
            credentials,
            credential_source,
            credential_ttl,
            credential_timeout,
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
            mirror_of_mirror: u.mirror_of_mirror,
        })
    }
}

/// Builds the dotted key of one of this upstream's keys (`upstream[1].url`).
type KeyOf<'a> = dyn Fn(&str) -> String + 'a;

/// `name`: present, a registry host name, and not the name of an earlier upstream.
fn checked_name(
    name: Option<String>,
    upstreams: &[UpstreamConfig],
    key: &KeyOf<'_>,
) -> Result<String, KeyError> {
    let name = name.ok_or_else(|| {
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
            format!(
                "{name:?} is also the name of upstream[{j}]; give each upstream a different name"
            ),
        ));
    }
    Ok(name)
}

/// `url` or `urls` (one of them): the first URL and the fallbacks.
fn checked_urls(
    url: Option<String>,
    urls: Option<Vec<String>>,
    insecure: bool,
    key: &KeyOf<'_>,
) -> Result<(Url, Vec<Url>), KeyError> {
    let Some(urls) = urls else {
        return Ok((checked_url(url, insecure, "url", key)?, Vec::new()));
    };
    if url.is_some() {
        return Err(err(
            &key("urls"),
            "both url and urls are set; keep one (urls = [\"https://mirror.gcr.io\", \"https://registry-1.docker.io\"] lists the registry's URLs in the order they are tried)".into(),
        ));
    }
    let mut checked = Vec::with_capacity(urls.len());
    for text in urls {
        let u = checked_url(Some(text), insecure, "urls", key)?;
        if checked.contains(&u) {
            return Err(err(
                &key("urls"),
                format!("lists {u} twice; list each URL once"),
            ));
        }
        checked.push(u);
    }
    let mut checked = checked.into_iter();
    let first = checked.next().ok_or_else(|| {
        err(
            &key("urls"),
            "lists no URL; list the registry's URLs in the order they are tried, e.g. urls = [\"https://mirror.gcr.io\", \"https://registry-1.docker.io\"]".into(),
        )
    })?;
    Ok((first, checked.collect()))
}

/// One URL (of `url` or `urls`, named by `k`): present, the registry's root, and https unless
/// the upstream is `insecure`.
fn checked_url(
    url: Option<String>,
    insecure: bool,
    k: &str,
    key: &KeyOf<'_>,
) -> Result<Url, KeyError> {
    let url_text = url.ok_or_else(|| {
        err(
            &key(k),
            "is missing; set where the registry is, e.g. url = \"https://registry-1.docker.io\""
                .into(),
        )
    })?;
    let url = parse_upstream_url(&url_text).map_err(|p| err(&key(k), p))?;
    if url.scheme() == "http" && !insecure {
        return Err(err(
            &key(k),
            format!("{url_text:?} is plain HTTP, so pulls and credentials would cross the network unencrypted; use https://, or set insecure = true on this upstream for a lab registry"),
        ));
    }
    Ok(url)
}

/// `token_realms`: host names only, lower-cased.
fn checked_token_realms(realms: &[String], key: &KeyOf<'_>) -> Result<Vec<String>, KeyError> {
    let mut token_realms = Vec::with_capacity(realms.len());
    for realm in realms {
        if realm.is_empty() || realm.contains(['/', ':', ' ', '@']) {
            return Err(err(
                &key("token_realms"),
                format!("{realm:?} is not a host name; list hosts only, e.g. token_realms = [\"auth.example.com\"]"),
            ));
        }
        token_realms.push(realm.to_ascii_lowercase());
    }
    Ok(token_realms)
}

/// A duration of more than zero.
fn positive(key: &str, text: &str, example: &str) -> Result<Duration, KeyError> {
    let d = duration(key, text)?;
    if d.is_zero() {
        let k = key.rsplit('.').next().unwrap_or(key);
        return Err(err(
            key,
            format!("must be more than zero; use e.g. {k} = \"{example}\""),
        ));
    }
    Ok(d)
}

/// What a credential helper is asked for, and what `auth_file` is looked up by: the first URL's
/// `host[:port]`, or Docker Hub's server name (`https://index.docker.io/v1/`) for Docker Hub.
fn helper_server(name: &str, url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let hub = ["registry-1.docker.io", "index.docker.io", "docker.io"];
    if name == "docker.io" || hub.contains(&host.as_str()) {
        return "https://index.docker.io/v1/".into();
    }
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// Whether `name` can follow `docker-credential-`: letters, digits, `-`, `_` and `.`, not
/// starting with a dot (so never a path).
pub(super) fn valid_helper_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `credential_helper`: a helper name (`ecr-login` runs `docker-credential-ecr-login` from
/// `PATH`) or an absolute path to the helper.
fn credential_helper(text: &str, server: String) -> Result<CredentialHelper, String> {
    let program = if text.starts_with('/') {
        PathBuf::from(text)
    } else if valid_helper_name(text) {
        PathBuf::from(format!("docker-credential-{text}"))
    } else {
        return Err(format!(
            "{text:?} is not a helper name or an absolute path; give the part after docker-credential- (credential_helper = \"ecr-login\" runs docker-credential-ecr-login from PATH) or the helper's absolute path"
        ));
    };
    Ok(CredentialHelper {
        name: text.to_owned(),
        program,
        server,
    })
}

/// `auth_file`: read (unless secrets are not wanted) and resolved for `host`. A file that has
/// nothing for the host is refused: the upstream would be pulled from anonymously.
fn auth_file_entry(
    path: &Path,
    host: &str,
    sources: &dyn Sources,
) -> Result<Option<DockerAuth>, String> {
    if !sources.wants_secrets() {
        return Ok(None);
    }
    let text = sources.read_secret(path).map_err(|e| {
        format!(
            "cannot read {} ({}); give Docker's config.json or Podman's auth.json, readable by wharf",
            path.display(),
            io_reason(&e)
        )
    })?;
    match docker_auth::resolve(&text, host) {
        Ok(Some(entry)) => Ok(Some(entry)),
        Ok(None) => Err(format!(
            "{} has no entry for {host} (in auths, credHelpers or credsStore); log in to it (docker login / podman login --authfile) or remove auth_file",
            path.display()
        )),
        Err(problem) => Err(format!(
            "{} {problem}; fix the file or log in again",
            path.display()
        )),
    }
}

/// `connect_timeout` and `timeout`: durations of more than zero.
fn timeouts(
    connect_timeout: &str,
    timeout: &str,
    key: &KeyOf<'_>,
) -> Result<(Duration, Duration), KeyError> {
    let connect_timeout = duration(&key("connect_timeout"), connect_timeout)?;
    let timeout = duration(&key("timeout"), timeout)?;
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
    Ok((connect_timeout, timeout))
}

/// `redirect_hosts`: host names or IP addresses (brackets dropped), lower-cased.
fn checked_redirect_hosts(hosts: &[String], key: &KeyOf<'_>) -> Result<Vec<String>, KeyError> {
    let mut redirect_hosts = Vec::with_capacity(hosts.len());
    for host in hosts {
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
    Ok(redirect_hosts)
}

/// `min_rate` (a size per second, `/s` optional) and `min_rate_window` (at least a second).
fn min_rate(rate: &str, window: &str, key: &KeyOf<'_>) -> Result<(u64, Duration), KeyError> {
    let min_rate = parse_size(rate.trim_end_matches("/s")).map_err(|p| {
        err(
            &key("min_rate"),
            format!("{p} (bytes per second), or \"0\" to turn the check off"),
        )
    })?;
    let min_rate_window = duration(&key("min_rate_window"), window)?;
    if min_rate_window < Duration::from_secs(1) {
        return Err(err(
            &key("min_rate_window"),
            "must be at least one second; use e.g. min_rate_window = \"30s\"".into(),
        ));
    }
    Ok((min_rate, min_rate_window))
}

/// An upstream's `ca_file`: PEM certificates, at least one, that all parse.
pub(super) fn ca_bundle(path: &Path, sources: &dyn Sources) -> Result<Vec<u8>, String> {
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
    secret_file::from_file(sources.read_secret(path), path, "password")
        .map_err(|reason| ("password_file", reason))
}

fn password_from_env(var: &str, sources: &dyn Sources) -> Result<Secret, KeyProblem> {
    if !secret_file::is_env_name(var) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::{assert_refusals, load, UP};
    use super::*;
    use crate::Config;

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
    fn credential_sources() {
        let plain = load(UP).unwrap();
        let u = &plain.upstreams[0];
        assert_eq!(u.credential_source, None);
        assert_eq!(u.credential_ttl, Duration::from_secs(600));
        assert_eq!(u.credential_timeout, Duration::from_secs(30));
        assert!(u.fallback_urls.is_empty());
        assert_eq!(u.url_backoff, Duration::from_secs(30));

        let file = load(&format!("{UP}username = \"u\"\npassword_file = \"/pw\"\n")).unwrap();
        assert_eq!(
            file.upstreams[0].credential_source,
            Some(CredentialSource::PasswordFile {
                username: "u".into(),
                path: "/pw".into()
            })
        );
        let env = load(&format!("{UP}username = \"u\"\npassword_env = \"PW\"\n")).unwrap();
        assert_eq!(env.upstreams[0].credential_source, None);

        let ecr = "[[upstream]]\nname = \"ecr.test\"\nurl = \"https://1.dkr.ecr.eu-west-1.amazonaws.com:8443\"\ncredential_helper = \"ecr-login\"\ncredential_ttl = \"1h\"\ncredential_timeout = \"5s\"\n";
        let c = load(ecr).unwrap();
        let u = &c.upstreams[0];
        assert_eq!(
            u.credential_source,
            Some(CredentialSource::Helper(CredentialHelper {
                name: "ecr-login".into(),
                program: "docker-credential-ecr-login".into(),
                server: "1.dkr.ecr.eu-west-1.amazonaws.com:8443".into(),
            }))
        );
        assert_eq!(u.credential_ttl, Duration::from_secs(3600));
        assert_eq!(u.credential_timeout, Duration::from_secs(5));
        assert!(u.credentials.is_none());

        let hub = load(&format!("{UP}credential_helper = \"/opt/bin/helper\"\n")).unwrap();
        match &hub.upstreams[0].credential_source {
            Some(CredentialSource::Helper(h)) => {
                assert_eq!(h.program, Path::new("/opt/bin/helper"));
                assert_eq!(h.server, "https://index.docker.io/v1/");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_files() {
        let mut sources = super::super::test_support::fake();
        sources.files.insert(
            "/docker.json",
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6ZmlsZS1zZWNyZXQ="}},"credHelpers":{"ghcr.io":"gh"}}"#.into(),
        );
        let text = format!("{UP}auth_file = \"/docker.json\"\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\nauth_file = \"/docker.json\"\n");
        let c = Config::from_toml_with(&text, Path::new("wharf.toml"), &sources).unwrap();
        let hub = &c.upstreams[0];
        let creds = hub.credentials.as_ref().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.expose()),
            ("alice", "file-secret")
        );
        assert!(matches!(
            &hub.credential_source,
            Some(CredentialSource::AuthFile { host, entry: Some(DockerAuth::Credentials(_)), .. })
                if host == "https://index.docker.io/v1/"
        ));
        assert!(!format!("{c:?}").contains("file-secret"));
        let gh = &c.upstreams[1];
        assert!(gh.credentials.is_none());
        assert!(matches!(
            &gh.credential_source,
            Some(CredentialSource::AuthFile { host, entry: Some(DockerAuth::Helper(h)), .. })
                if host == "ghcr.io" && h == "gh"
        ));
        // Nothing for the host: refused, naming the file and the host.
        let quay = "[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\nauth_file = \"/docker.json\"\n";
        let got = Config::from_toml_with(quay, Path::new("wharf.toml"), &sources)
            .unwrap_err()
            .to_string();
        assert!(
            got.contains("upstream[0].auth_file: /docker.json has no entry for quay.io"),
            "{got}"
        );
    }

    #[test]
    fn fallback_urls() {
        let c = load("[[upstream]]\nname = \"docker.io\"\nurls = [\"https://mirror.gcr.io\", \"https://registry-1.docker.io\"]\nurl_backoff = \"1m\"\n").unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.url.as_str(), "https://mirror.gcr.io/");
        let all: Vec<_> = u.urls().map(Url::as_str).collect();
        assert_eq!(
            all,
            ["https://mirror.gcr.io/", "https://registry-1.docker.io/"]
        );
        assert_eq!(u.url_backoff, Duration::from_secs(60));
    }

    #[test]
    fn mirror_of_mirror_forwards_the_name() {
        let plain = load(UP).unwrap();
        assert!(!plain.upstreams[0].mirror_of_mirror);
        assert_eq!(plain.upstreams[0].forward_ns(), None);
        let tiered = load(&format!("{UP}mirror_of_mirror = true\n")).unwrap();
        let u = &tiered.upstreams[0];
        assert!(u.mirror_of_mirror);
        assert_eq!(u.forward_ns(), Some(u.name.as_str()));
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

    #[test]
    fn upstream_refusals_name_the_key() {
        let two = "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\ndefault = true\n[[upstream]]\nname = \"b.io\"\nurl = \"https://b.io\"\ndefault = true\n";
        let dup = "[[upstream]]\nname = \"a.io\"\nurl = \"https://a.io\"\n[[upstream]]\nname = \"a.io\"\nurl = \"https://b.io\"\n";
        let up = |rest: &str| format!("[[upstream]]\nname = \"a.io\"\n{rest}\n");
        let cases: Vec<(String, &str)> = vec![
            // Values.
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
            // Credential helpers and Docker config files.
            (
                format!("{UP}credential_helper = \"../x\"\n"),
                "upstream[0].credential_helper: \"../x\" is not a helper name or an absolute path",
            ),
            (format!("{UP}credential_helper = \"\"\n"), "upstream[0].credential_helper:"),
            (
                format!("{UP}credential_helper = \"ecr-login\"\nusername = \"u\"\npassword_env = \"PW\"\n"),
                "upstream[0].credential_helper: is set together with username and a password; keep one way",
            ),
            (
                format!("{UP}auth_file = \"/pw\"\nusername = \"u\"\npassword_file = \"/pw\"\n"),
                "upstream[0].auth_file: is set together with username and a password",
            ),
            (
                format!("{UP}auth_file = \"/pw\"\ncredential_helper = \"pass\"\n"),
                "upstream[0].auth_file: both credential_helper and auth_file are set; keep one",
            ),
            (
                format!("{UP}auth_file = \"/missing\"\n"),
                "upstream[0].auth_file: cannot read /missing (no such file)",
            ),
            (
                format!("{UP}auth_file = \"/pw\"\n"),
                "upstream[0].auth_file: /pw is not a Docker config file",
            ),
            (
                format!("{UP}credential_helper = \"pass\"\ncredential_ttl = \"0s\"\n"),
                "upstream[0].credential_ttl: must be more than zero",
            ),
            (format!("{UP}credential_timeout = \"0s\"\n"), "upstream[0].credential_timeout: must be more than zero"),
            (format!("{UP}credential_ttl = \"soon\"\n"), "upstream[0].credential_ttl: \"soon\" is not a duration"),
            // Fallback URLs.
            (format!("{UP}urls = [\"https://a.io\"]\n"), "upstream[0].urls: both url and urls are set; keep one"),
            ("[[upstream]]\nname = \"a.io\"\nurls = []\n".into(), "upstream[0].urls: lists no URL"),
            (
                "[[upstream]]\nname = \"a.io\"\nurls = [\"https://a.io\", \"http://b.io\"]\n".into(),
                "upstream[0].urls: \"http://b.io\" is plain HTTP",
            ),
            (
                "[[upstream]]\nname = \"a.io\"\nurls = [\"https://a.io\", \"https://a.io/\"]\n".into(),
                "upstream[0].urls: lists https://a.io/ twice",
            ),
            ("[[upstream]]\nname = \"a.io\"\nurls = [\"ftp://x\"]\n".into(), "upstream[0].urls: \"ftp://x\" is not an http(s) URL"),
            (format!("{UP}url_backoff = \"x\"\n"), "upstream[0].url_backoff: \"x\" is not a duration"),
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
            (
                format!("{UP}mirror_of_mirror = \"yes\"\n"),
                "upstream[0].mirror_of_mirror: is a string, expected a boolean",
            ),
            (format!("{UP}ca_file = \"/missing\"\n"), "upstream[0].ca_file: cannot read /missing (no such file)"),
            (format!("{UP}ca_file = \"/pw\"\n"), "upstream[0].ca_file: /pw holds no certificate"),
            (format!("{UP}allow = []\n"), "upstream[0].allow: lists no pattern"),
            (format!("{UP}allow = [\"Org/*\"]\n"), "upstream[0].allow: \"Org/*\" has 'O'"),
            (format!("{UP}allow = \"org/*\"\n"), "upstream[0].allow: is a string, expected a list"),
        ];
        assert_refusals(&cases);
    }
}
