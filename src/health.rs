//! `wharf health`: asks a running wharf's metrics listener for `/healthz` (or `/readyz`) and turns
//! the answer into an exit code, for a container's `HEALTHCHECK` and for scripts on hosts without
//! curl or wget (`debian:bookworm-slim` has neither).
//!
//! The probe is a hand-written HTTP/1.0 `GET` over a plain TCP connection: the admin listener
//! speaks nothing else (no TLS, no auth), and a hand-written request needs no HTTP client, honours
//! no `HTTP_PROXY` that a container's environment may set, and is bounded in every way: one
//! connection, one timeout around connect, write and read, and at most [`MAX_RESPONSE`] bytes read.
//!
//! Exit codes: 0 for a `200`, 1 for anything else (no connection, no answer in time, another status,
//! a reply that is not HTTP), [`crate::cli::EX_USAGE`] (64) for a bad configuration or URL.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::EX_USAGE;

/// The most bytes of a response read: the admin listener's health answers are a few dozen.
pub const MAX_RESPONSE: usize = 4096;

/// How much one read takes.
const CHUNK: usize = 1024;

/// The most characters of the body's first line that are printed.
const MAX_REASON: usize = 200;

/// Where the probe goes: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A host name or an IP address (IPv6 without brackets).
    host: String,
    /// The TCP port.
    port: u16,
    /// The path and query, starting with `/`.
    path: String,
}

/// Why no target could be made: a usage error (exit 64).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The configuration serves no metrics listener, so there is nothing to ask.
    #[error(
        "{file}: metrics.listen is off, so no /healthz is served to ask; \
         set [metrics] listen (e.g. \"0.0.0.0:9095\"), or pass --url"
    )]
    MetricsOff {
        /// The configuration file.
        file: String,
    },
    /// `--url` is not an `http://` URL with a host.
    #[error("--url {url}: {reason}; give one such as http://127.0.0.1:9095/healthz")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A probe that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The TCP connection could not be made (nothing listens, the host is unknown).
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection broke while sending or reading.
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// Nothing complete came back within the timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// What came back is not an HTTP response.
    #[error("not an HTTP response: {0}")]
    Malformed(String),
}

/// What the listener answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body's first line, trimmed and cut to a printable length.
    pub reason: String,
}

// === impl Target ===

impl Target {
    /// The metrics listener of the configuration at `config`: its `/healthz`, or `/readyz` when
    /// `ready`. A listener on the unspecified address (`0.0.0.0`, `[::]`, as in a container) is
    /// asked on the loopback address of the same family.
    ///
    /// # Errors
    /// [`TargetError::MetricsOff`] when the configuration serves no metrics listener.
    pub fn from_config(config: &crate::Config, ready: bool) -> Result<Self, TargetError> {
        let listen = config
            .metrics
            .listen
            .ok_or_else(|| TargetError::MetricsOff {
                file: config.file.display().to_string(),
            })?;
        let addr = probe_addr(listen);
        Ok(Self {
            host: addr.ip().to_string(),
            port: addr.port(),
            path: if ready { "/readyz" } else { "/healthz" }.to_owned(),
        })
    }

    /// The `http://` URL `url` (`http://host:port/path`; port 80 when left out, `/` when the path
    /// is).
    ///
    /// # Errors
    /// [`TargetError::BadUrl`] for anything else: another scheme, no host, user info, a fragment.
    pub fn from_url(url: &str) -> Result<Self, TargetError> {
        let bad = |reason: &str| TargetError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad(
                "only http:// is supported (the metrics listener has no TLS)",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("user:password@ is not supported"));
        }
        if parsed.fragment().is_some() {
            return Err(bad("a #fragment is not sent over HTTP"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("no host")),
        };
        let mut path = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(Self {
            host,
            port: parsed.port_or_known_default().unwrap_or(80),
            path,
        })
    }

    /// The `Host` header's value: the host, bracketed when it is an IPv6 address, and the port.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends `GET` and reads the answer, all within `timeout`.
    ///
    /// # Errors
    /// A [`ProbeError`] when no complete HTTP answer came back.
    pub async fn probe(&self, timeout: Duration) -> Result<Answer, ProbeError> {
        match tokio::time::timeout(timeout, self.exchange()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        }
    }

    async fn exchange(&self) -> Result<Answer, ProbeError> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(ProbeError::Connect)?;
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: wharf-health/{}\r\nAccept: */*\r\n\r\n",
            self.path,
            self.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(ProbeError::Io)?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; CHUNK];
        loop {
            if let Some(answer) = parse(&buf, false)? {
                return Ok(answer);
            }
            let room = MAX_RESPONSE - buf.len();
            if room == 0 {
                // Long enough to hold a status line and headers: answer with what came.
                return parse(&buf, true)?.ok_or_else(|| {
                    ProbeError::Malformed(format!("no end of headers in {MAX_RESPONSE} bytes"))
                });
            }
            let n = stream
                .read(&mut chunk[..room.min(CHUNK)])
                .await
                .map_err(ProbeError::Io)?;
            if n == 0 {
                return parse(&buf, true)?.ok_or_else(|| {
                    ProbeError::Malformed(if buf.is_empty() {
                        "the connection closed without a reply".to_owned()
                    } else {
                        format!("cut short after {} bytes", buf.len())
                    })
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// The address to connect to for a listener bound to `listen`: the loopback address of the same
/// family when it is the unspecified address (which accepts but cannot be connected to everywhere).
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// Reads the answer in `buf`: `None` while it is incomplete (the headers have not ended, or the
/// body is shorter than its `Content-Length`) unless `done` (the connection closed, or the read
/// limit was reached), in which case what is there counts.
fn parse(buf: &[u8], done: bool) -> Result<Option<Answer>, ProbeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if done && !buf.is_empty() && !buf.starts_with(b"HTTP/") {
            return Err(ProbeError::Malformed(printable(buf)));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let status = Some(code)
        .filter(|_| matches!(version, "HTTP/1.0" | "HTTP/1.1"))
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or_else(|| ProbeError::Malformed(printable(status_line.as_bytes())))?;
    let length = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    let body = &buf[end + 4..];
    if !done && length.is_none_or(|length| body.len() < length) {
        return Ok(None);
    }
    let body = length.map_or(body, |length| &body[..length.min(body.len())]);
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(Some(Answer {
        status,
        reason: printable(first),
    }))
}

/// `bytes` as one short printable line: control characters dropped, cut to [`MAX_REASON`].
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// `wharf health`: probes `url`, or the metrics listener of the configuration at `config`
/// (`/readyz` when `ready`), prints one line and returns the exit code: on stdout `URL: 200 ok`,
/// or on stderr `wharf: URL: ...` saying what went wrong.
pub fn command(config: &Path, url: Option<&str>, ready: bool, timeout: Duration) -> ExitCode {
    let target = match url {
        Some(url) => Target::from_url(url).map_err(|e| e.to_string()),
        None => crate::Config::load_offline(config)
            .map_err(|e| e.to_string())
            .and_then(|c| Target::from_config(&c, ready).map_err(|e| e.to_string())),
    };
    let target = match target {
        Ok(target) => target,
        Err(e) => {
            eprintln!("wharf: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(target.probe(timeout)) {
        Ok(Answer {
            status: 200,
            reason,
        }) => {
            println!("{target}: 200 {reason}");
            ExitCode::SUCCESS
        }
        Ok(Answer { status, reason }) => {
            eprintln!("wharf: {target}: {status} {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wharf: {target}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listeners_are_asked_on_loopback() {
        let cases = [
            ("0.0.0.0:9095", "127.0.0.1:9095"),
            ("[::]:9095", "[::1]:9095"),
            ("127.0.0.1:9095", "127.0.0.1:9095"),
            ("10.1.2.3:9095", "10.1.2.3:9095"),
            ("[fd00::1]:9095", "[fd00::1]:9095"),
        ];
        for (listen, want) in cases {
            let got = probe_addr(listen.parse().unwrap());
            assert_eq!(got, want.parse::<SocketAddr>().unwrap(), "{listen}");
        }
    }

    #[test]
    fn urls_parse_to_targets_or_say_what_is_wrong() {
        let ok = [
            (
                "http://127.0.0.1:9095/healthz",
                "http://127.0.0.1:9095/healthz",
            ),
            (
                "http://localhost/readyz?x=1",
                "http://localhost:80/readyz?x=1",
            ),
            ("http://[::1]:9095/healthz", "http://[::1]:9095/healthz"),
            ("http://127.0.0.1:9095", "http://127.0.0.1:9095/"),
        ];
        for (url, want) in ok {
            assert_eq!(Target::from_url(url).unwrap().to_string(), want, "{url}");
        }
        let bad = [
            ("https://127.0.0.1:9095/healthz", "only http://"),
            ("http://u:p@127.0.0.1:9095/healthz", "user:password@"),
            ("http://127.0.0.1:9095/healthz#x", "fragment"),
            ("127.0.0.1:9095/healthz", "--url 127.0.0.1:9095/healthz"),
            ("", "--url :"),
        ];
        for (url, want) in bad {
            let e = Target::from_url(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
            assert!(e.contains("http://127.0.0.1:9095/healthz"), "{e}");
        }
    }

    #[test]
    fn answers_parse_when_complete() {
        /// The bytes received, whether the connection closed, and the answer expected.
        type Case<'a> = (&'a [u8], bool, Option<(u16, &'a str)>);
        let cases: [Case<'_>; 8] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
                false,
                Some((200, "ok")),
            ),
            // The body has not all arrived.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\nok\n",
                false,
                None,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\nok\n",
                true,
                Some((200, "ok")),
            ),
            // No length: the body ends with the connection.
            (
                b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready: shutting down\n",
                false,
                None,
            ),
            (
                b"HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready: shutting down\nmore",
                true,
                Some((503, "not ready: shutting down")),
            ),
            (
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                false,
                Some((404, "")),
            ),
            (b"HTTP/1.1 200 OK\r\nconte", false, None),
            (
                b"HTTP/1.1 204\r\ncontent-length: 0\r\n\r\n",
                false,
                Some((204, "")),
            ),
        ];
        for (bytes, done, want) in cases {
            let got = parse(bytes, done).unwrap();
            let want = want.map(|(status, reason)| Answer {
                status,
                reason: reason.to_owned(),
            });
            assert_eq!(got, want, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn what_is_not_http_is_refused() {
        let cases: [(&[u8], bool); 5] = [
            (b"SSH-2.0-OpenSSH_9.2\r\n", true),
            (b"HTTP/1.1 2000 OK\r\n\r\n", false),
            (b"HTTP/1.1 abc OK\r\n\r\n", false),
            (b"HTTP/2 200\r\n\r\n", false),
            (b"HTTP/1.1 099 Low\r\n\r\n", false),
        ];
        for (bytes, done) in cases {
            let got = parse(bytes, done);
            assert!(
                matches!(got, Err(ProbeError::Malformed(_))),
                "{}: {got:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn reasons_are_one_short_printable_line() {
        let long = "x".repeat(1000);
        assert_eq!(printable(long.as_bytes()).len(), MAX_REASON);
        assert_eq!(printable(b" a\x1b[31mb\x07 "), "a[31mb");
    }
}
