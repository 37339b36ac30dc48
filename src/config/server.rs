//! `[server]`, `[metrics]` and `[log]`: the listener (address, TLS, timeouts, connection caps), the
//! metrics and health listener, and the log's format and filter.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{io_reason, KeyError};
use super::{duration, err, pem, Sources};

/// The largest `max_connections`: beyond what one process's file table should hold.
const MAX_CONNECTIONS: usize = 1_000_000;

/// Directives appended to a bare `[log] level` ("debug"), so the libraries stay at warn.
pub const LIBRARY_DIRECTIVES: &str =
    "sled=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn";

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
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

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`listen`); `None` (the key left out,
    /// or `"off"`) serves none of them.
    pub listen: Option<SocketAddr>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
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

/// `[server]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    #[serde(default = "default_shutdown_grace")]
    pub(super) shutdown_grace: String,
    #[serde(default = "default_header_read_timeout")]
    pub(super) header_read_timeout: String,
    #[serde(default = "default_idle_timeout")]
    pub(super) idle_timeout: String,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub(super) max_connections_per_ip: usize,
}

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

/// `[log]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "default_log_format")]
    pub(super) format: String,
    pub(super) level: Option<String>,
}

// === impl RawServer ===

fn default_listen() -> String {
    "0.0.0.0:5000".into()
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

impl RawServer {
    /// Checks `[server]`, reading the TLS pair (when set) through `sources`.
    ///
    /// # Errors
    /// The first key refused.
    pub(super) fn validate(self, sources: &dyn Sources) -> Result<ServerConfig, KeyError> {
        let raw = self;
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            err(
                "server.listen",
                format!(
                    "{:?} is not an IP address with a port; use e.g. listen = \"0.0.0.0:5000\" or \"[::]:5000\"",
                    raw.listen
                ),
            )
        })?;
        let tls = tls_files(raw.tls_cert, raw.tls_key, sources)
            .map_err(|(k, p)| err(&format!("server.{k}"), p))?;
        let shutdown_grace = duration("server.shutdown_grace", &raw.shutdown_grace)?;
        let header_read_timeout = duration("server.header_read_timeout", &raw.header_read_timeout)?;
        let idle_timeout = duration("server.idle_timeout", &raw.idle_timeout)?;
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
        if !(1..=MAX_CONNECTIONS).contains(&raw.max_connections) {
            return Err(err(
                "server.max_connections",
                format!(
                    "{} is out of range; use 1 to {MAX_CONNECTIONS} (the default is 10000)",
                    raw.max_connections
                ),
            ));
        }
        if raw.max_connections_per_ip > raw.max_connections {
            return Err(err(
                "server.max_connections_per_ip",
                format!(
                    "{} is more than max_connections ({}); use at most that, or 0 for no per-address cap",
                    raw.max_connections_per_ip, raw.max_connections
                ),
            ));
        }
        Ok(ServerConfig {
            listen,
            tls,
            shutdown_grace,
            header_read_timeout,
            idle_timeout,
            max_connections: raw.max_connections,
            max_connections_per_ip: raw.max_connections_per_ip,
        })
    }
}

/// A problem with one of the listener's TLS keys: the key's last segment and the message.
type KeyProblem = (&'static str, String);

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
    pem::certified_key(cert_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| {
        let path = if e.key() == "tls_cert" { &cert } else { &key };
        (e.key(), format!("{} {e}; {}", path.display(), e.fix()))
    })?;
    Ok(Some(TlsFiles { cert, key }))
}

// === impl RawMetrics ===

impl RawMetrics {
    /// Checks `[metrics]`: an address, or none; never the listener's own.
    ///
    /// # Errors
    /// The key refused.
    pub(super) fn validate(self, server_listen: SocketAddr) -> Result<MetricsConfig, KeyError> {
        let listen = match self.listen.as_deref().map(str::trim) {
            None | Some("off") => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                err(
                    "metrics.listen",
                    format!("{text:?} is not an IP address with a port; use e.g. listen = \"127.0.0.1:9095\", or \"off\""),
                )
            })?),
        };
        if listen.is_some_and(|m| m == server_listen && m.port() != 0) {
            return Err(err(
                "metrics.listen",
                "is the same address as server.listen; give the metrics their own port, e.g. listen = \"127.0.0.1:9095\"".into(),
            ));
        }
        Ok(MetricsConfig { listen })
    }
}

// === impl RawLog ===

fn default_log_format() -> String {
    "text".into()
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: None,
        }
    }
}

impl RawLog {
    /// Checks `[log]`: a known format, and a level or filter `tracing` accepts.
    ///
    /// # Errors
    /// The first key refused.
    pub(super) fn validate(self) -> Result<LogConfig, KeyError> {
        let format = match self.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(err(
                    "log.format",
                    format!("{other:?} is not a log format; use \"text\" or \"json\""),
                ))
            }
        };
        if let Some(level) = &self.level {
            let directives = level_directives(level);
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
        Ok(LogConfig {
            format,
            filter: self.level,
        })
    }
}

/// The filter directives for a `[log] level` value: a bare level ("debug") applies to wharf and
/// keeps the libraries at warn ([`LIBRARY_DIRECTIVES`]); anything else
/// ("info,wharf::upstream=trace") is used as written.
pub fn level_directives(level: &str) -> String {
    let level = level.trim();
    if level
        .parse::<tracing_subscriber::filter::LevelFilter>()
        .is_ok()
    {
        format!("{level},{LIBRARY_DIRECTIVES}")
    } else {
        level.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_refusals, UP};
    use super::*;

    #[test]
    fn server_refusals_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            // Values.
            (
                format!("[server]\nlisten = \"nope\"\n{UP}"),
                "server.listen: \"nope\" is not an IP address with a port",
            ),
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
            (format!("[metrics]\nlisten = \"9095\"\n{UP}"), "metrics.listen: \"9095\" is not an IP address with a port"),
            (
                format!("[server]\nlisten = \"127.0.0.1:5000\"\n[metrics]\nlisten = \"127.0.0.1:5000\"\n{UP}"),
                "metrics.listen: is the same address as server.listen",
            ),
            (format!("[log]\nformat = \"xml\"\n{UP}"), "log.format: \"xml\" is not a log format; use \"text\" or \"json\""),
            (format!("[log]\nlevel = \"loud\"\n{UP}"), "log.level: \"loud\" is not a log filter"),
            (format!("[log]\nlevel = \"\"\n{UP}"), "log.level: \"\" is not a log filter"),
            (format!("[log]\nlevel = \"wharf=loud\"\n{UP}"), "log.level: \"wharf=loud\" is not a log filter"),
        ];
        assert_refusals(&cases);
    }

    #[test]
    fn bare_levels_keep_libraries_quiet() {
        assert_eq!(
            level_directives("debug"),
            format!("debug,{LIBRARY_DIRECTIVES}")
        );
        assert_eq!(
            level_directives(" WARN "),
            format!("WARN,{LIBRARY_DIRECTIVES}")
        );
        assert_eq!(
            level_directives("info,wharf::upstream=trace"),
            "info,wharf::upstream=trace"
        );
    }
}
