//! Logging setup: human-readable lines on stderr, filtered like `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is not set: wharf's own events at info, libraries quieter.
pub const DEFAULT_FILTER: &str =
    "info,sled=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn";

/// Installs the global tracing subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
