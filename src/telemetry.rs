//! Logging setup: human-readable lines on stderr, filtered like `RUST_LOG` (default `info`).
//!
//! Only the binary calls [`init`]; tests that want logs can call it too, as it is idempotent.

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is not set: wharf's own events at info, libraries quieter.
pub const DEFAULT_FILTER: &str =
    "info,sled=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn";

/// Keeps the background log writer running; dropping it flushes what is buffered.
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global tracing subscriber: formatted events on stderr (coloured only on a
/// terminal), filtered by `RUST_LOG` or else [`DEFAULT_FILTER`]. An invalid `RUST_LOG` is reported
/// as a warning and the default is used. Calling it twice is harmless (the second call does
/// nothing).
///
/// Lines are written by a background thread, so a request never waits on a `write(2)` to stderr
/// (one per request line cost about a fifth of the small-request throughput). The writer applies
/// back-pressure rather than dropping lines when it falls behind. Keep the returned guard until
/// exit: dropping it flushes the buffer.
#[must_use]
pub fn init() -> LogGuard {
    let (filter, invalid) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(DEFAULT_FILTER), Some((value, error))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .is_ok();
    if let (true, Some((value, error))) = (installed, invalid) {
        tracing::warn!(rust_log = %value, %error, default = DEFAULT_FILTER, "RUST_LOG is not a valid filter; using the default");
    }
    LogGuard {
        _writer: installed.then_some(guard),
    }
}
