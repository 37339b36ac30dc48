//! Logging setup: human-readable lines (or JSON objects, `[log] format = "json"`) on stderr,
//! filtered like `RUST_LOG` (which wins over `[log] level`; default `info`).
//!
//! Only the binary calls [`init`]; tests that want logs can call it too, as it is idempotent.

use tracing_subscriber::EnvFilter;

use crate::config::{level_directives, LogConfig, LogFormat};

/// The filter used when neither `RUST_LOG` nor `[log] level` is set: wharf's own events at info,
/// libraries quieter.
pub const DEFAULT_FILTER: &str =
    "info,sled=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn";

/// Keeps the background log writer running; dropping it flushes what is buffered.
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global tracing subscriber: events on stderr as `config.format` says (coloured
/// text only on a terminal), filtered by `RUST_LOG`, else `config.filter`, else
/// [`DEFAULT_FILTER`]. An invalid `RUST_LOG` is reported as a warning and the next filter in line
/// is used. Calling it twice is harmless (the second call does nothing).
///
/// Lines are written by a background thread, so a request never waits on a `write(2)` to stderr
/// (one per request line cost about a fifth of the small-request throughput). The writer applies
/// back-pressure rather than dropping lines when it falls behind. Keep the returned guard until
/// exit: dropping it flushes the buffer.
#[must_use]
pub fn init(config: &LogConfig) -> LogGuard {
    let fallback = config
        .filter
        .as_deref()
        .map_or_else(|| DEFAULT_FILTER.to_owned(), level_directives);
    let (filter, invalid) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(&fallback), Some((value, error))),
        },
        _ => (EnvFilter::new(&fallback), None),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match config.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
            .is_ok(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
            .is_ok(),
    };
    if let (true, Some((value, error))) = (installed, invalid) {
        tracing::warn!(rust_log = %value, %error, default = %fallback, "RUST_LOG is not a valid filter; using the configured one");
    }
    LogGuard {
        _writer: installed.then_some(guard),
    }
}
