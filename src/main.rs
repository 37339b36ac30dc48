//! The `wharf` binary: parse the command line, load the configuration, start logging and the
//! runtime, and hand over to the library. Nothing here is worth a unit test; `tests/config.rs`
//! runs the binary to check the exit codes and messages.
//!
//! Exit codes: 0 after a clean shutdown (or for `--help`/`--version`), 64 (`EX_USAGE`) for a bad
//! command line or configuration, 1 when wharf fails while running (or `wharf check` found problems
//! it did not repair), 75 (`EX_TEMPFAIL`) when a maintenance command finds a wharf serving from
//! the same storage.
//!
//! The maintenance commands (`check`, `gc`, `pin`, `unpin`, `pins`) open the storage directly and
//! print their report on stdout; the work itself is in the library (`wharf::cache`).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use wharf::cache::check::{self, CheckOptions, Progress};
use wharf::cache::gc::GcOptions;
use wharf::cache::{Cache, OpenError, PinSource};
use wharf::size::format_size;

/// wharf: a pull-through caching mirror for OCI / Docker container registries.
///
/// Point Docker, containerd, Podman, CRI-O or skopeo at wharf instead of the registry: it serves what
/// it has from its own disk, fetches what it lacks from the configured upstream registries, and keeps
/// content only after its sha256 digest and size have been verified.
///
/// Start it with `wharf serve --config /etc/wharf/config.toml`; without --config it reads
/// ./config.toml from the working directory. The commented config.toml in the repository lists
/// every key with its default.
#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about,
    long_about,
    propagate_version = true,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the registry mirror until SIGINT or SIGTERM.
    ///
    /// Reads the configuration file (--config, default ./config.toml), listens on its [server]
    /// listen address, caches under [storage] path, and fetches misses from its [[upstream]]
    /// registries. Passwords come from the files or environment variables the file names, never
    /// from the file itself.
    ///
    /// A bad configuration is refused before anything starts, with one line on stderr naming the
    /// file, the key and the fix, and exit code 64. On SIGINT or SIGTERM wharf stops accepting
    /// connections, lets open responses and downloads finish (up to [server] shutdown_grace),
    /// flushes its index and exits 0. SIGHUP reloads the TLS certificate and the htpasswd file.
    /// Under systemd (Type=notify) it reports readiness through $NOTIFY_SOCKET.
    #[command(after_help = AFTER_HELP)]
    Serve {
        /// The configuration file (TOML). A relative path is relative to the working directory.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// Never contact any upstream: serve only what the cache holds (as `offline = true` on
        /// every [[upstream]]). For air-gapped sites, or to ride out an upstream outage.
        #[arg(long)]
        offline: bool,
    },
    /// Check that the cache's index and files agree, and optionally repair them.
    ///
    /// Reports, with counts and bytes: blobs that are fine, staging files left by a crash, index
    /// records whose file is missing, files of the wrong size, files without an index record
    /// (orphans), stray files, and with --verify files whose content does not hash to their
    /// digest. Changes nothing without --repair. Exits 1 when problems were found and not
    /// repaired, 75 when a wharf is serving from the storage (stop it first).
    #[command(after_help = AFTER_HELP)]
    Check {
        /// The configuration file whose [storage] path to check.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// Fix what is found: drop records of missing files, remove bad and stray files and
        /// staging leftovers, adopt orphans that hash to their names and remove the others.
        #[arg(long)]
        repair: bool,
        /// Hash every blob (reads all of them: slow on a large cache).
        #[arg(long)]
        verify: bool,
    },
    /// Remove manifests not pulled for [gc] manifest_retention, and blobs no remaining manifest
    /// refers to. Pinned images stay.
    ///
    /// Prints each removed manifest and blob with its size, then a summary. Exits 75 when a wharf
    /// is serving from the storage (stop it first).
    #[command(after_help = AFTER_HELP)]
    Gc {
        /// The configuration file (its [storage] path and [gc] manifest_retention).
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pin images: keep them and everything they refer to out of eviction and gc.
    ///
    /// IMAGE names the registry by its [[upstream]] name: docker.io/library/nginx:1.27,
    /// ghcr.io/org/app@sha256:... A tag pin follows the tag. Writes to the index, so no wharf may
    /// be serving from the storage (exit 75); for permanent pins, [[pin]] in the configuration is
    /// the alternative.
    #[command(after_help = AFTER_HELP)]
    Pin {
        /// The configuration file.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// The images to pin.
        #[arg(value_name = "IMAGE", required = true)]
        images: Vec<String>,
    },
    /// Unpin images pinned with `wharf pin` ([[pin]] entries are removed from the configuration).
    #[command(after_help = AFTER_HELP)]
    Unpin {
        /// The configuration file.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// The images to unpin.
        #[arg(value_name = "IMAGE", required = true)]
        images: Vec<String>,
    },
    /// List the pinned images, who pinned them, and what of them is cached.
    #[command(after_help = AFTER_HELP)]
    Pins {
        /// The configuration file.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
    },
}

/// The end of every help page: what an operator scripting or supervising wharf needs.
const AFTER_HELP: &str = "\
Exit codes: 0 success; 64 bad command line or configuration; 1 failure (or problems left by check);
75 the storage is in use by a running wharf.
Logs go to stderr ([log] format = \"json\" for JSON); RUST_LOG filters them (e.g. RUST_LOG=debug or
RUST_LOG=wharf=trace), over [log] level (default: info).";

/// The BSD `sysexits.h` code for a usage error, which is what a bad configuration is.
const EX_USAGE: u8 = 64;

/// The `sysexits.h` code for a temporary failure: the storage is in use by a running wharf.
const EX_TEMPFAIL: u8 = 75;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version "fail" to stdout with code 0; real mistakes go to stderr.
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve { config, offline } => serve(&config, offline),
        Command::Check {
            config,
            repair,
            verify,
        } => match maintenance(&config) {
            Ok((config, runtime, _log)) => {
                runtime.block_on(check(&config, CheckOptions { repair, verify }))
            }
            Err(code) => code,
        },
        Command::Gc { config, dry_run } => match maintenance(&config) {
            Ok((config, runtime, _log)) => runtime.block_on(gc(&config, dry_run)),
            Err(code) => code,
        },
        Command::Pin { config, images } => match maintenance(&config) {
            Ok((config, runtime, _log)) => runtime.block_on(pin(&config, &images, true)),
            Err(code) => code,
        },
        Command::Unpin { config, images } => match maintenance(&config) {
            Ok((config, runtime, _log)) => runtime.block_on(pin(&config, &images, false)),
            Err(code) => code,
        },
        Command::Pins { config } => match maintenance(&config) {
            Ok((config, runtime, _log)) => runtime.block_on(pins(&config)),
            Err(code) => code,
        },
    }
}

/// For a maintenance command: the configuration (read without passwords), a small runtime, and
/// logging; or the exit code when one cannot be had.
fn maintenance(
    path: &Path,
) -> Result<
    (
        wharf::Config,
        tokio::runtime::Runtime,
        wharf::telemetry::LogGuard,
    ),
    ExitCode,
> {
    let config = wharf::Config::load_offline(path).map_err(|e| {
        eprintln!("wharf: {e}");
        ExitCode::from(EX_USAGE)
    })?;
    let log = wharf::telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("wharf: cannot start the async runtime: {}", chain(&e));
            ExitCode::FAILURE
        })?;
    Ok((config, runtime, log))
}

/// Opens the cache for a maintenance command; the exit code on failure.
fn open_cache(config: &wharf::Config) -> Result<Arc<Cache>, ExitCode> {
    match Cache::open_with(
        &config.storage.path,
        &wharf::cache::Options::from_config(config),
    ) {
        Ok(cache) => Ok(Arc::new(cache)),
        Err(e @ OpenError::Locked { .. }) => {
            eprintln!("wharf: {e}");
            Err(ExitCode::from(EX_TEMPFAIL))
        }
        Err(e) => {
            eprintln!("wharf: {}", chain(&e));
            Err(ExitCode::FAILURE)
        }
    }
}

async fn check(config: &wharf::Config, options: CheckOptions) -> ExitCode {
    let root = &config.storage.path;
    let bar = Bar::new();
    let report = match check::run(root, options, &bar).await {
        Ok(report) => report,
        Err(e @ check::CheckError::Locked { .. }) => {
            eprintln!("wharf: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
        Err(e) => {
            eprintln!("wharf: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    println!("storage {}", root.display());
    for (what, tally) in report.lines() {
        println!(
            "{what:<18} {:>9} {:>10}  ({} bytes)",
            tally.count,
            format_size(tally.bytes),
            tally.bytes
        );
    }
    let problems = report.problems();
    match (problems, options.repair) {
        (0, _) => {
            println!("no problems found");
            ExitCode::SUCCESS
        }
        (n, true) => {
            println!("{n} problems found and repaired");
            ExitCode::SUCCESS
        }
        (n, false) => {
            println!("{n} problems found; run `wharf check --repair` to fix them");
            ExitCode::FAILURE
        }
    }
}

async fn gc(config: &wharf::Config, dry_run: bool) -> ExitCode {
    let cache = match open_cache(config) {
        Ok(cache) => cache,
        Err(code) => return code,
    };
    let options = GcOptions {
        retention: config.gc.manifest_retention,
        dry_run,
    };
    let report = match cache.gc(options).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("wharf: gc failed: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    for item in &report.removed {
        let last = item.last_used.map_or_else(
            || "never recorded".to_owned(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        );
        println!(
            "{verb} {} {} {} (last used {last})",
            if item.manifest { "manifest" } else { "blob" },
            item.digest,
            format_size(item.size),
        );
    }
    let manifests = report.removed.iter().filter(|i| i.manifest).count();
    println!(
        "gc: {verb} {manifests} manifests and {} blobs, {} ({} bytes); {} tags dropped; {} left because in use; {} blobs, {} stored{}",
        report.removed.len() - manifests,
        format_size(report.bytes()),
        report.bytes(),
        report.tags_dropped,
        report.in_use,
        report.usage_after.entries,
        format_size(report.usage_after.bytes),
        if dry_run { " (dry run: nothing was removed)" } else { "" },
    );
    if let Err(e) = cache.index().flush().await {
        eprintln!("wharf: cannot flush the index: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn pin(config: &wharf::Config, images: &[String], pin: bool) -> ExitCode {
    let mut parsed = Vec::with_capacity(images.len());
    for text in images {
        match wharf::config::resolve_image(text, &config.upstreams) {
            Ok(image) => parsed.push(image),
            Err(e) => {
                eprintln!("wharf: {e}");
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    let cache = match open_cache(config) {
        Ok(cache) => cache,
        Err(code) => return code,
    };
    let mut code = ExitCode::SUCCESS;
    for image in &parsed {
        let result = if pin {
            cache.pin(image).map(|new| {
                if new {
                    format!("pinned {image}")
                } else {
                    format!("{image} was already pinned")
                }
            })
        } else {
            cache.unpin(image).map(|was| match was {
                Some(PinSource::Command) => format!("unpinned {image}"),
                Some(PinSource::Config) => {
                    code = ExitCode::FAILURE;
                    format!(
                        "{image} is pinned by a [[pin]] entry in {}; remove it there",
                        config.file.display()
                    )
                }
                None => format!("{image} was not pinned"),
            })
        };
        match result {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("wharf: {}", chain(&e));
                return ExitCode::FAILURE;
            }
        }
        if pin {
            match cache.pin_status(image).await {
                Ok(status) if status.root.is_some() && status.blobs > 0 => println!(
                    "  keeps {} blobs, {} cached now",
                    status.blobs,
                    format_size(status.bytes)
                ),
                Ok(_) => println!("  not cached yet: it is kept once pulled through wharf"),
                Err(e) => eprintln!("wharf: {}", chain(&e)),
            }
        }
    }
    if let Err(e) = cache.index().flush().await {
        eprintln!("wharf: cannot flush the index: {e}");
        return ExitCode::FAILURE;
    }
    code
}

async fn pins(config: &wharf::Config) -> ExitCode {
    let cache = match open_cache(config) {
        Ok(cache) => cache,
        Err(code) => return code,
    };
    let pins = match cache.index().pins() {
        Ok(pins) => pins,
        Err(e) => {
            eprintln!("wharf: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    if pins.is_empty() {
        println!("no pinned images");
    }
    for (image, source) in pins {
        let kept = match cache.pin_status(&image).await {
            Ok(status) => match status.root {
                Some(root) if status.blobs > 0 => format!(
                    "{root}: {} blobs, {}",
                    status.blobs,
                    format_size(status.bytes)
                ),
                _ => "not cached".to_owned(),
            },
            Err(e) => format!("unknown ({})", chain(&e)),
        };
        println!("{image}\t{}\t{kept}", source.as_str());
    }
    ExitCode::SUCCESS
}

/// Progress of `wharf check`: a bar on stderr when it is a terminal, one line per phase otherwise.
struct Bar {
    bar: parking_lot::Mutex<Option<indicatif::ProgressBar>>,
    terminal: bool,
}

impl Bar {
    fn new() -> Self {
        Self {
            bar: parking_lot::Mutex::new(None),
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

impl Progress for Bar {
    fn phase(&self, name: &'static str, total: u64, bytes: bool) {
        if !self.terminal {
            let what = if bytes {
                format_size(total)
            } else {
                format!("{total} items")
            };
            eprintln!("wharf check: {name} ({what})");
            return;
        }
        let template = if bytes {
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})"
        } else {
            "{msg} [{bar:40}] {pos}/{len} ({eta})"
        };
        let bar = indicatif::ProgressBar::new(total).with_message(name);
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        *self.bar.lock() = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &*self.bar.lock() {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().take() {
            bar.finish_and_clear();
        }
    }
}

fn serve(path: &Path, offline: bool) -> ExitCode {
    let mut config = match wharf::Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wharf: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if offline {
        config.set_offline();
    }
    let _log = wharf::telemetry::init(&config.log);
    // File reads run on the blocking pool; they are short (page-cache copies), so a few threads
    // keep up, and each extra thread costs memory (a glibc arena, buffers in flight).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wharf::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources on one line, `anyhow`'s `{:#}` style. A source whose message the text
/// already ends with is skipped, because some errors print their source in their own message.
fn chain(error: &dyn Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out.replace('\n', " ")
}
