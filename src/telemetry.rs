//! Logging setup: human-readable lines (or JSON objects, `[log] format = "json"`) on stderr,
//! filtered like `RUST_LOG` (which wins over `[log] level`; default `info`).
//!
//! Only the binary calls [`init`]; tests that want logs can call it too, as it is idempotent.
//!
//! The filter sits behind a swap ([`SwapFilter`]) so that a configuration reload can change
//! `[log] level` ([`set_level`]) without a lock on the path of every event: each check loads the
//! filter in use (a few nanoseconds), and a change rebuilds tracing's per-callsite cache.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{level_directives, LogConfig, LogFormat};

/// The filter in use, when [`init`] installed the subscriber and `RUST_LOG` does not decide.
static FILTER: OnceLock<Arc<ArcSwap<EnvFilter>>> = OnceLock::new();

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
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).is_ok_and(|v| !v.trim().is_empty())
        && invalid.is_none();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let swap = Arc::new(ArcSwap::from_pointee(filter));
    let registry = tracing_subscriber::registry().with(SwapFilter(swap.clone()));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let installed = match config.format {
        LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .try_init()
            .is_ok(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
            .is_ok(),
    };
    if installed && !from_env {
        let _ = FILTER.set(swap);
    }
    if let (true, Some((value, error))) = (installed, invalid) {
        tracing::warn!(rust_log = %value, %error, default = %fallback, "RUST_LOG is not a valid filter; using the configured one");
    }
    LogGuard {
        _writer: installed.then_some(guard),
    }
}

/// Puts `[log] level` = `level` (`None`: the default) in use, for a configuration reload. Returns
/// whether it took effect: not when `RUST_LOG` decides the filter, nor when [`init`] did not
/// install the subscriber (tests, embedders).
pub fn set_level(level: Option<&str>) -> bool {
    let Some(swap) = FILTER.get() else {
        return false;
    };
    let text = level.map_or_else(|| DEFAULT_FILTER.to_owned(), level_directives);
    swap.store(Arc::new(EnvFilter::new(text)));
    // Callsites cached their interest under the old filter.
    tracing::callsite::rebuild_interest_cache();
    true
}

/// An [`EnvFilter`] that can be replaced while events flow: every call loads the filter in use
/// (lock-free) and hands over to it.
struct SwapFilter(Arc<ArcSwap<EnvFilter>>);

impl<S> Layer<S> for SwapFilter
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        <EnvFilter as Layer<S>>::register_callsite(&self.0.load(), metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        <EnvFilter as Layer<S>>::enabled(&self.0.load(), metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        <EnvFilter as Layer<S>>::max_level_hint(&self.0.load())
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.0.load().on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.load().on_record(id, values, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.load().on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.load().on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.load().on_close(id, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        <EnvFilter as Layer<S>>::event_enabled(&self.0.load(), event, ctx)
    }
}
