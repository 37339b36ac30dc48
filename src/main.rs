//! The `wharf` binary: parse the command line, load the configuration, start logging and the
//! runtime, and hand over to the library. Nothing here is worth a unit test; `tests/config.rs`
//! runs the binary to check the exit codes and messages.
//!
//! Exit codes: 0 after a clean shutdown (or for `--help`/`--version`), 64 (`EX_USAGE`) for a bad
//! command line or configuration, 1 when wharf fails while running (or `wharf check` found problems
//! it did not repair), 75 (`EX_TEMPFAIL`) when a maintenance command finds a wharf serving from
//! the same storage.
//!
//! The maintenance commands (`check`, `gc`) open the storage directly and print their report on
//! stdout; the work itself is in the library (`wharf::cache`). The air-gap commands (`prefetch`,
//! `export`, `import`) and `pin`, `unpin`, `pins` open the storage too when no wharf serves it,
//! and otherwise ask the wharf that does over its control socket (`wharf::airgap`), printing the
//! same either way.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{ArgGroup, Parser, Subcommand};
use futures_util::StreamExt;
use wharf::airgap::client::Client;
use wharf::airgap::{bundle, export, import, pins, prefetch, refs, report};
use wharf::cache::check::{self, CheckOptions, Progress};
use wharf::cache::gc::GcOptions;
use wharf::cache::{Cache, OpenError};
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
    /// Pull whole images into the cache ahead of time, and pin them.
    ///
    /// IMAGE names the registry by its [[upstream]] name: docker.io/library/nginx:1.27,
    /// ghcr.io/org/app@sha256:... (Docker Hub short names such as nginx:1.27 work when an upstream
    /// is named docker.io). Every platform of a multi-platform image is fetched unless --platform
    /// says otherwise. What is cached already is skipped, so an interrupted prefetch is simply run
    /// again. Works whether or not a wharf serves the storage: when one does, it does the work
    /// (over <storage>/admin.sock). Prints a progress bar per image on a terminal, a line per image
    /// otherwise, and a summary; exits 1 if any image failed (after doing the others).
    #[command(after_help = AFTER_HELP)]
    Prefetch {
        /// The configuration file (its upstreams and [storage] path).
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// A file of images, one per line; # starts a comment.
        #[arg(long, value_name = "LIST")]
        file: Option<PathBuf>,
        /// Only these platforms of a multi-platform image, comma-separated: linux/amd64,linux/arm64
        /// (os/architecture[/variant]).
        #[arg(long, value_name = "PLATFORMS")]
        platform: Option<String>,
        /// Do not pin the images.
        #[arg(long)]
        no_pin: bool,
        /// How many blobs to download at once.
        #[arg(long, value_name = "N", default_value_t = prefetch::DEFAULT_JOBS, value_parser = clap::value_parser!(usize))]
        jobs: usize,
        /// The images.
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Write cached images into a bundle (an OCI image layout in a tar) to carry to an
    /// air-gapped wharf.
    ///
    /// The bundle holds the images named (or every pinned image, or every cached tag and pin),
    /// their manifests and blobs, index.json naming each image by its full reference, and
    /// wharf-bundle.json with every file's sha256 and size. It is written to FILE.partial and
    /// renamed when complete (--out - writes to stdout). With --since PREV.tar, blobs PREV holds
    /// are left out: import PREV first. skopeo reads a full bundle as
    /// oci-archive:FILE:docker.io/library/nginx:1.27. Works whether or not a wharf serves the
    /// storage.
    #[command(
        after_help = AFTER_HELP,
        group(ArgGroup::new("what").required(true).args(["images", "pinned", "all"]))
    )]
    Export {
        /// The configuration file (its [storage] path and upstream names).
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// Where to write the bundle; - for stdout.
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
        /// Export every pinned image.
        #[arg(long)]
        pinned: bool,
        /// Export every cached tag and every pinned image (platforms that are not cached are left
        /// out, and listed).
        #[arg(long)]
        all: bool,
        /// Only these platforms of a multi-platform image, comma-separated.
        #[arg(long, value_name = "PLATFORMS")]
        platform: Option<String>,
        /// Leave out what this earlier bundle holds (an incremental bundle).
        #[arg(long, value_name = "PREV.tar")]
        since: Option<PathBuf>,
        /// The images.
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Read a bundle made by `wharf export` into the cache, and pin its images.
    ///
    /// Every blob is verified against its digest and the bundle's checksums, and every manifest's
    /// references must be in the bundle or already cached, before anything becomes visible; tags
    /// are set last. A bad bundle is refused with one line naming the bad entry, and the cache is
    /// left as it was. Importing twice changes nothing. FILE - reads stdin. Works whether or not a
    /// wharf serves the storage.
    #[command(after_help = AFTER_HELP)]
    Import {
        /// The configuration file (its [storage] path and upstream names).
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// Do not pin the imported images.
        #[arg(long)]
        no_pin: bool,
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Pin images: keep them and everything they refer to out of eviction and gc.
    ///
    /// IMAGE names the registry by its [[upstream]] name: docker.io/library/nginx:1.27,
    /// ghcr.io/org/app@sha256:... A tag pin follows the tag. While a wharf serves the storage, it
    /// records the pin (over its control socket); for permanent pins, [[pin]] in the configuration
    /// is the alternative.
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
        Command::Prefetch {
            config,
            file,
            platform,
            no_pin,
            jobs,
            images,
        } => match airgap_command(&config) {
            Ok((loaded, runtime, _log)) => runtime.block_on(run_prefetch(
                &config,
                &loaded,
                PrefetchArgs {
                    file,
                    platform,
                    pin: !no_pin,
                    jobs,
                    images,
                },
            )),
            Err(code) => code,
        },
        Command::Export {
            config,
            out,
            pinned,
            all,
            platform,
            since,
            images,
        } => match airgap_command(&config) {
            Ok((config, runtime, _log)) => {
                let selection = if pinned {
                    export::Selection::Pinned
                } else if all {
                    export::Selection::All
                } else {
                    export::Selection::Images(images)
                };
                runtime.block_on(run_export(&config, selection, platform, since, &out))
            }
            Err(code) => code,
        },
        Command::Import {
            config,
            no_pin,
            file,
        } => match airgap_command(&config) {
            Ok((config, runtime, _log)) => runtime.block_on(run_import(&config, &file, !no_pin)),
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

/// Where a command does its work: on the storage it opened, or through the wharf serving it.
enum Target {
    /// No wharf serves the storage: this process holds it.
    Local(Arc<Cache>),
    /// A wharf serves it: ask it over its control socket.
    Remote(Client),
}

/// Opens the storage, or finds that a running wharf holds it (its index is locked); the exit
/// code on failure.
fn open_target(config: &wharf::Config) -> Result<Target, ExitCode> {
    match Cache::open_with(
        &config.storage.path,
        &wharf::cache::Options::from_config(config),
    ) {
        Ok(cache) => Ok(Target::Local(Arc::new(cache))),
        Err(OpenError::Locked { .. }) => Ok(Target::Remote(Client::new(&config.storage.path))),
        Err(e) => {
            eprintln!("wharf: {}", chain(&e));
            Err(ExitCode::FAILURE)
        }
    }
}

/// The exit code for a request the running wharf could not take: 75 when it does not answer.
fn remote_failure(e: &wharf::airgap::client::ClientError) -> ExitCode {
    eprintln!("wharf: {e}");
    if matches!(e, wharf::airgap::client::ClientError::Connect { .. }) {
        ExitCode::from(EX_TEMPFAIL)
    } else {
        ExitCode::FAILURE
    }
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
    let output = match open_target(config) {
        Ok(Target::Local(cache)) => {
            pins::pin(&cache, &parsed, pin, &config.file.display().to_string()).await
        }
        Ok(Target::Remote(client)) => {
            let texts = parsed.iter().map(ToString::to_string).collect();
            match client.pin(texts, pin).await {
                Ok(output) => output,
                Err(e) => return remote_failure(&e),
            }
        }
        Err(code) => return code,
    };
    output.print();
    if output.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn pins(config: &wharf::Config) -> ExitCode {
    let output = match open_target(config) {
        Ok(Target::Local(cache)) => pins::list(&cache).await,
        Ok(Target::Remote(client)) => match client.pins().await {
            Ok(output) => output,
            Err(e) => return remote_failure(&e),
        },
        Err(code) => return code,
    };
    output.print();
    if output.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// For an air-gap command: the configuration (read without passwords), a runtime with a few
/// threads (downloads, hashing and writing overlap), and logging at warn unless RUST_LOG says
/// otherwise (the command prints its own progress).
fn airgap_command(
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
    let log = wharf::telemetry::init(&wharf::config::LogConfig {
        format: config.log.format,
        filter: Some("warn".into()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("wharf: cannot start the async runtime: {}", chain(&e));
            ExitCode::FAILURE
        })?;
    Ok((config, runtime, log))
}

/// `wharf prefetch`'s arguments.
struct PrefetchArgs {
    file: Option<PathBuf>,
    platform: Option<String>,
    pin: bool,
    jobs: usize,
    images: Vec<String>,
}

async fn run_prefetch(path: &Path, config: &wharf::Config, args: PrefetchArgs) -> ExitCode {
    let mut images = Vec::new();
    for text in &args.images {
        match refs::resolve(text, &config.upstreams) {
            Ok(image) if !images.contains(&image) => images.push(image),
            Ok(_) => {}
            Err(e) => {
                eprintln!("wharf: {e}");
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    if let Some(file) = &args.file {
        let listed = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|text| refs::parse_list(&text, &config.upstreams));
        match listed {
            Ok(listed) => {
                for image in listed {
                    if !images.contains(&image) {
                        images.push(image);
                    }
                }
            }
            Err(e) => {
                eprintln!("wharf: {}: {e}", file.display());
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    if images.is_empty() {
        eprintln!("wharf: no images to prefetch: name them as arguments or in a --file list");
        return ExitCode::from(EX_USAGE);
    }
    let platforms = match args.platform.as_deref().map(refs::Platform::parse_list) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("wharf: --platform: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if args.jobs == 0 {
        eprintln!("wharf: --jobs must be at least 1");
        return ExitCode::from(EX_USAGE);
    }
    let options = prefetch::Options {
        platforms,
        pin: args.pin,
        jobs: args.jobs,
    };
    let mut view = report::PrefetchView::new(report::terminal());
    let summary = match open_target(config) {
        Ok(Target::Local(cache)) => {
            // This process fetches: it needs the upstreams' passwords and CA files.
            let full = match wharf::Config::load_fetching(path) {
                Ok(full) => full,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let app = match wharf::app_with_cache(&full, cache) {
                Ok(app) => Arc::new(app),
                Err(e) => {
                    eprintln!("wharf: {}", chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            let background = app.cache.spawn_background();
            let (events, mut rx) = prefetch::Events::channel(256);
            let task = tokio::spawn(prefetch::run(app.clone(), images, options, events));
            while let Some(event) = rx.recv().await {
                view.event(&event);
            }
            let summary = task.await.unwrap_or_default();
            // Downloads whose clients are done are committed before the storage is let go.
            app.cache.inflight().idle().await;
            background.stop().await;
            if let Err(e) = app.cache.flush_access() {
                eprintln!("wharf: cannot write access times: {e}");
            }
            if let Err(e) = app.cache.index().flush().await {
                eprintln!("wharf: cannot flush the index: {e}");
                return ExitCode::FAILURE;
            }
            summary
        }
        Ok(Target::Remote(client)) => {
            let texts = images.iter().map(ToString::to_string).collect();
            let events = match client.prefetch(texts, options).await {
                Ok(events) => events,
                Err(e) => return remote_failure(&e),
            };
            tokio::pin!(events);
            let mut summary = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(prefetch::Event::Summary { summary: s }) => {
                        view.finish();
                        summary = Some(s);
                    }
                    Ok(event) => view.event(&event),
                    Err(e) => {
                        view.finish();
                        return remote_failure(&e);
                    }
                }
            }
            let Some(summary) = summary else {
                view.finish();
                eprintln!("wharf: the running wharf stopped before the prefetch finished (shutting down?); run it again");
                return ExitCode::FAILURE;
            };
            summary
        }
        Err(code) => return code,
    };
    report::print_prefetch_summary(&summary);
    if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn run_export(
    config: &wharf::Config,
    selection: export::Selection,
    platform: Option<String>,
    since: Option<PathBuf>,
    out: &Path,
) -> ExitCode {
    let selection = match selection {
        export::Selection::Images(texts) => {
            let mut canonical = Vec::with_capacity(texts.len());
            for text in &texts {
                match refs::resolve(text, &config.upstreams) {
                    Ok(image) => canonical.push(image.to_string()),
                    Err(e) => {
                        eprintln!("wharf: {e}");
                        return ExitCode::from(EX_USAGE);
                    }
                }
            }
            export::Selection::Images(canonical)
        }
        other => other,
    };
    let platforms = match platform.as_deref().map(refs::Platform::parse_list) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("wharf: --platform: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let base = match &since {
        None => None,
        Some(prev) => match bundle::read_manifest(prev).await {
            Ok(m) => Some(export::Base {
                since: bundle::Since {
                    file: prev.file_name().map_or_else(
                        || prev.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    ),
                    created: m.created.clone(),
                },
                known: m.known_digests(),
            }),
            Err(e) => {
                eprintln!("wharf: --since {e}");
                return ExitCode::from(EX_USAGE);
            }
        },
    };
    let request = export::Request {
        selection,
        platforms,
        since: base,
    };
    let to_stdout = out.as_os_str() == "-";
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("wharf: not writing a tar to a terminal; redirect stdout, or give --out FILE");
        return ExitCode::from(EX_USAGE);
    }
    let shown = if to_stdout {
        "stdout".to_owned()
    } else {
        out.display().to_string()
    };
    let terminal = report::terminal();
    match open_target(config) {
        Ok(Target::Local(cache)) => {
            let app = match wharf::app_with_cache(config, cache) {
                Ok(app) => app,
                Err(e) => {
                    eprintln!("wharf: {}", chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            let plan = match export::plan(&app, &request, &config.storage.path).await {
                Ok(plan) => plan,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return ExitCode::FAILURE;
                }
            };
            for warning in &plan.warnings {
                eprintln!("wharf: warning: {warning}");
            }
            let bar = report::byte_bar(terminal, Some(plan.len()), &format!("export {shown}"));
            let progress = |n| {
                if let Some(bar) = &bar {
                    bar.inc(n);
                }
            };
            let written = if to_stdout {
                export::write(&app, &plan, tokio::io::stdout(), progress)
                    .await
                    .map(|_| ())
            } else {
                match export::OutFile::create(out).await {
                    Ok((partial, file)) => match export::write(&app, &plan, file, progress).await {
                        Ok(file) => partial
                            .commit(file)
                            .await
                            .map_err(export::ExportError::Write),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(export::ExportError::Write(e)),
                }
            };
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            // The manifests read count as uses, for eviction.
            let _ = app.cache.flush_access();
            if let Err(e) = written {
                eprintln!("wharf: export failed, nothing was written to {shown}: {e}");
                return ExitCode::FAILURE;
            }
            let summary = summary_text(|w| {
                report::print_export_summary(&plan.manifest, &shown, plan.len(), w)
            });
            print_summary(&summary, to_stdout);
            ExitCode::SUCCESS
        }
        Ok(Target::Remote(client)) => {
            let export = match client.export(&request).await {
                Ok(export) => export,
                Err(e) => return remote_failure(&e),
            };
            for warning in &export.warnings {
                eprintln!("wharf: warning: {warning}");
            }
            let (len, body) = (export.len, export.body);
            let bar = report::byte_bar(terminal, len, &format!("export {shown}"));
            let result = receive_export(body, out, to_stdout, len, bar.as_ref()).await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            match result {
                Ok((manifest, bytes)) => {
                    let summary =
                        summary_text(|w| report::print_export_summary(&manifest, &shown, bytes, w));
                    print_summary(&summary, to_stdout);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wharf: export failed, nothing was written to {shown}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(code) => code,
    }
}

/// Text a report function writes.
fn summary_text(print: impl FnOnce(&mut dyn std::io::Write)) -> String {
    let mut buf = Vec::new();
    print(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A summary on stdout, or on stderr when stdout carries the bundle.
fn print_summary(text: &str, stdout_is_data: bool) {
    if stdout_is_data {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

/// Writes a bundle the running wharf streams to `out` (or stdout); returns its
/// `wharf-bundle.json` and its length.
async fn receive_export(
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, wharf::airgap::client::ClientError>>,
    out: &Path,
    to_stdout: bool,
    len: Option<u64>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(bundle::BundleManifest, u64), String> {
    if to_stdout {
        let mut stdout = tokio::io::stdout();
        return pump(body, &mut stdout, len, bar).await;
    }
    let (partial, mut file) = export::OutFile::create(out)
        .await
        .map_err(|e| e.to_string())?;
    let received = pump(body, &mut file, len, bar).await?;
    partial.commit(file).await.map_err(|e| e.to_string())?;
    Ok(received)
}

/// Copies the streamed bundle into `sink`, reading its `wharf-bundle.json` on the way.
async fn pump<W: tokio::io::AsyncWrite + Unpin>(
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, wharf::airgap::client::ClientError>>,
    sink: &mut W,
    len: Option<u64>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(bundle::BundleManifest, u64), String> {
    use tokio::io::AsyncWriteExt;
    let mut head = bundle::Head::default();
    let mut written = 0u64;
    tokio::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        head.feed(&chunk);
        sink.write_all(&chunk).await.map_err(|e| e.to_string())?;
        written += chunk.len() as u64;
        if let Some(bar) = bar {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(len) = len.filter(|l| *l != written) {
        return Err(format!(
            "the running wharf sent {written} of {len} bytes (see its log)"
        ));
    }
    sink.flush().await.map_err(|e| e.to_string())?;
    Ok((head.manifest()?, written))
}

async fn run_import(config: &wharf::Config, file: &Path, pin: bool) -> ExitCode {
    let from_stdin = file.as_os_str() == "-";
    let shown = if from_stdin {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    };
    let (input, len): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if from_stdin {
        (Box::new(tokio::io::stdin()), None)
    } else {
        match tokio::fs::File::open(file).await {
            Ok(f) => {
                let len = f.metadata().await.ok().map(|m| m.len());
                (Box::new(f), len)
            }
            Err(e) => {
                eprintln!("wharf: {shown}: cannot open it: {e}");
                return ExitCode::from(EX_USAGE);
            }
        }
    };
    let bar = report::byte_bar(report::terminal(), len, &format!("import {shown}"));
    let input = report::Counted::new(input, bar.clone());
    let result = match open_target(config) {
        Ok(Target::Local(cache)) => {
            let app = match wharf::app_with_cache(config, cache) {
                Ok(app) => app,
                Err(e) => {
                    eprintln!("wharf: {}", chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            let result = import::run(&app, input, import::Options { pin })
                .await
                .map_err(|e| e.to_string());
            let _ = app.cache.flush_access();
            result
        }
        Ok(Target::Remote(client)) => match client.import(input, pin).await {
            Ok(report) => Ok(report),
            Err(e @ wharf::airgap::client::ClientError::Connect { .. }) => {
                return remote_failure(&e)
            }
            Err(e) => Err(e.to_string()),
        },
        Err(code) => return code,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => {
            report::print_import_report(&report, &shown);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf: {shown}: {e}; nothing was imported");
            ExitCode::FAILURE
        }
    }
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
