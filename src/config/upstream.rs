//! `[[upstream]]`: the registries wharf mirrors, each with its URL, credentials, timeouts, fill
//! limits, TLS trust, allow list and redirect policy. Password values are read here, through
//! [`Sources`], and kept in a [`Secret`]: no message and no `Debug` output ever shows one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::{io_reason, KeyError};
use super::{duration, err, Sources};
use crate::access::allow::AllowList;
use crate::secret::{Credentials, Secret};
use crate::size::parse_size;

/// The largest `max_fills`: far beyond what one upstream should see, far below the semaphore's limit.
const MAX_FILLS: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
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
    /// This upstream is another wharf (`mirror_of_mirror`, default false): every request sent to
    /// it carries `?ns=<name>`, so the other wharf routes it to its upstream of the same name
    /// rather than to its default one. See [`UpstreamConfig::forward_ns`].
    pub mirror_of_mirror: bool,
}

/// One `[[upstream]]` as written. It holds no secret: only where the password is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Option<String>,
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) default: bool,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
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
}

impl fmt::Display for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

// === impl RawUpstream ===

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
        let url = checked_url(u.url, u.insecure, &key)?;
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

/// `url`: present, the registry's root, and https unless the upstream is `insecure`.
fn checked_url(url: Option<String>, insecure: bool, key: &KeyOf<'_>) -> Result<Url, KeyError> {
    let url_text = url.ok_or_else(|| {
        err(
            &key("url"),
            "is missing; set where the registry is, e.g. url = \"https://registry-1.docker.io\""
                .into(),
        )
    })?;
    let url = parse_upstream_url(&url_text).map_err(|p| err(&key("url"), p))?;
    if url.scheme() == "http" && !insecure {
        return Err(err(
            &key("url"),
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
