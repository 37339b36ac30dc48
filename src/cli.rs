//! What the `wharf` commands other than `serve` do, once the command line is parsed: open the
//! storage (or reach the wharf serving it), run the library's work, print the report and pick the
//! exit code. The binary (`main.rs`) only parses the command line and calls these; the tests run the
//! binary to check what they print and return.
//!
//! The maintenance commands (`check`, `gc`) open the storage directly and print their report on
//! stdout; the work itself is in [`crate::cache`]. The air-gap commands (`prefetch`, `export`,
//! `import`) and `pin`, `unpin`, `pins` open the storage too when no wharf serves it, and otherwise
//! ask the wharf that does over its control socket ([`crate::airgap::control`]), printing the same
//! either way. `status` only asks the running wharf.
//!
//! Exit codes: 0 success, [`EX_USAGE`] (64) for a bad configuration, 1 for a failure (or problems
//! `check` found and did not repair), [`EX_TEMPFAIL`] (75) when a command that needs the storage to
//! itself finds a wharf serving from it.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::airgap::client::Client;
use crate::airgap::{bundle, export, import, pins, prefetch, referrers, refs, report, sign};
use crate::cache::check::{self, CheckOptions, Progress};
use crate::cache::gc::GcOptions;
use crate::cache::{Cache, OpenError};
use crate::size::format_size;

/// The BSD `sysexits.h` code for a usage error, which is what a bad configuration is.
pub const EX_USAGE: u8 = 64;

/// The `sysexits.h` code for a temporary failure: the storage is in use by a running wharf.
pub const EX_TEMPFAIL: u8 = 75;

/// What a command needs before it runs: the configuration (read without passwords), logging, and a
/// runtime; or the exit code when one cannot be had.
pub type Setup = Result<
    (
        crate::Config,
        tokio::runtime::Runtime,
        crate::telemetry::LogGuard,
    ),
    ExitCode,
>;

/// The kinds of command, by what they need from [`setup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `check`, `gc`, `pin`, `unpin`, `pins`: logging as configured, a single-threaded runtime.
    Maintenance,
    /// `prefetch`, `export`, `import`: logging at warn unless RUST_LOG says otherwise (the command
    /// prints its own progress), and a runtime with a few threads (downloads, hashing and writing
    /// overlap).
    Airgap,
}

/// Loads the configuration at `path` and starts logging and a runtime for a command of `kind`.
pub fn setup(path: &Path, kind: Kind) -> Setup {
    let config = crate::Config::load_offline(path).map_err(|e| {
        eprintln!("wharf: {e}");
        ExitCode::from(EX_USAGE)
    })?;
    let (log, runtime) = match kind {
        Kind::Maintenance => (
            crate::telemetry::init(&config.log),
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        ),
        Kind::Airgap => (
            crate::telemetry::init(&crate::config::LogConfig {
                format: config.log.format,
                filter: Some("warn".into()),
            }),
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        ),
    };
    let runtime = runtime.map_err(|e| {
        eprintln!("wharf: cannot start the async runtime: {}", chain(&e));
        ExitCode::FAILURE
    })?;
    Ok((config, runtime, log))
}

/// Opens the cache for a maintenance command; the exit code on failure.
fn open_cache(config: &crate::Config) -> Result<Arc<Cache>, ExitCode> {
    match Cache::open_for(config) {
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

/// `wharf check`: reconciles the index with the stored files (repairing with `--repair`, hashing
/// every blob with `--verify`) and prints what it found.
pub async fn check(config: &crate::Config, options: CheckOptions) -> ExitCode {
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
    let mut problems = report.problems();
    if let crate::config::Backend::S3(s3) = &config.storage.backend {
        match check_shared(s3, options, &bar).await {
            Some(n) => problems += n,
            None => return ExitCode::FAILURE,
        }
    }
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

/// The shared object store's part of `wharf check`: lists the bucket (and with `--verify` hashes
/// every object, removing bad ones with `--repair`) and prints its lines; the problems found, or
/// `None` (after printing why) when the store cannot be read.
async fn check_shared(
    s3: &crate::config::S3Config,
    options: CheckOptions,
    bar: &Bar,
) -> Option<u64> {
    let store = match crate::store::S3BlobStore::new(s3) {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "wharf: shared store s3://{}/{}: {}",
                s3.bucket,
                s3.prefix,
                chain(&e)
            );
            return None;
        }
    };
    let report = match check::shared(&store, options, bar).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "wharf: shared store s3://{}/{}: {}",
                s3.bucket,
                s3.prefix,
                chain(&e)
            );
            return None;
        }
    };
    println!("shared store s3://{}/{}", s3.bucket, s3.prefix);
    let mut lines = vec![("ok", report.ok)];
    if options.verify {
        lines.push(("hash mismatches", report.hash_mismatch));
    }
    for (what, tally) in lines {
        println!(
            "{what:<18} {:>9} {:>10}  ({} bytes)",
            tally.count,
            format_size(tally.bytes),
            tally.bytes
        );
    }
    Some(report.hash_mismatch.count)
}

/// `wharf gc`: removes manifests unpulled for the retention and the blobs nothing refers to
/// (listing them only, with `--dry-run`).
pub async fn gc(config: &crate::Config, dry_run: bool) -> ExitCode {
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
    if let Some(shared) = &report.shared {
        print_shared_gc(shared, verb, dry_run);
    }
    if let Err(e) = cache.index().flush().await {
        eprintln!("wharf: cannot flush the index: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Prints what `wharf gc` did in the shared object store.
fn print_shared_gc(shared: &crate::cache::gc::SharedGc, verb: &str, dry_run: bool) {
    if !shared.listed {
        println!("gc: the shared object store cannot be listed; nothing removed there");
        return;
    }
    for item in &shared.removed {
        println!(
            "{verb} {} {} {} from the shared store (stored {})",
            if item.manifest { "manifest" } else { "blob" },
            item.digest,
            format_size(item.size),
            item.last_used.map_or_else(
                || "at an unknown time".to_owned(),
                |t| humantime::format_rfc3339_seconds(t).to_string()
            ),
        );
    }
    let bytes: u64 = shared.removed.iter().map(|i| i.size).sum();
    println!(
        "gc: shared store: {verb} {} of {} objects, {} ({bytes} bytes){}",
        shared.removed.len(),
        shared.objects,
        format_size(bytes),
        if dry_run {
            " (dry run: nothing was removed)"
        } else {
            ""
        },
    );
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
fn open_target(config: &crate::Config) -> Result<Target, ExitCode> {
    match Cache::open_for(config) {
        Ok(cache) => Ok(Target::Local(Arc::new(cache))),
        Err(OpenError::Locked { .. }) => Ok(Target::Remote(Client::new(&config.storage.path))),
        Err(e) => {
            eprintln!("wharf: {}", chain(&e));
            Err(ExitCode::FAILURE)
        }
    }
}

/// The exit code for a request the running wharf could not take: 75 when it does not answer.
fn remote_failure(e: &crate::airgap::client::ClientError) -> ExitCode {
    eprintln!("wharf: {e}");
    if matches!(e, crate::airgap::client::ClientError::Connect { .. }) {
        ExitCode::from(EX_TEMPFAIL)
    } else {
        ExitCode::FAILURE
    }
}

/// `wharf pin` / `wharf unpin`: adds or removes pins, in the storage or through the running wharf.
pub async fn pin(config: &crate::Config, images: &[String], pin: bool) -> ExitCode {
    let mut parsed = Vec::with_capacity(images.len());
    for text in images {
        match crate::config::resolve_image(text, &config.upstreams) {
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

/// `wharf pins`: lists the pins and what each keeps.
pub async fn pins(config: &crate::Config) -> ExitCode {
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

/// `wharf status`: asks the wharf serving the configured storage for its status report over the
/// control socket, and prints it as tables (coloured on a terminal) or, with `json`, as the JSON
/// `/status.json` serves. Exit 75 (with one line naming the socket) when no wharf answers there.
pub async fn status(config: &crate::Config, json: bool) -> ExitCode {
    use std::io::IsTerminal as _;
    let client = Client::new(&config.storage.path);
    let report = match client.status().await {
        Ok(report) => report,
        Err(crate::airgap::client::ClientError::Connect { source, .. }) => {
            eprintln!(
                "wharf: no wharf is running on this storage: its control socket {} does not answer ({source}); start wharf serve with --config {}",
                client.socket().display(),
                config.file.display()
            );
            return ExitCode::from(EX_TEMPFAIL);
        }
        Err(e) => return remote_failure(&e),
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("wharf: cannot write the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let colour = std::io::stdout().is_terminal();
        print!("{}", crate::status::table::render(&report, colour));
    }
    ExitCode::SUCCESS
}

/// `wharf prefetch`'s arguments.
pub struct PrefetchArgs {
    /// `--file`: a list of references, one per line.
    pub file: Option<PathBuf>,
    /// `--platform os/arch[/variant],...`.
    pub platform: Option<String>,
    /// Pin what was fetched (not `--no-pin`).
    pub pin: bool,
    /// `--jobs`: downloads at once.
    pub jobs: usize,
    /// `--no-referrers`, `--referrers-type`.
    pub referrers: referrers::Options,
    /// References on the command line.
    pub images: Vec<String>,
}

/// `wharf prefetch`: pulls the listed images into the cache (through the running wharf when one
/// serves the storage), with progress on a terminal and a summary.
pub async fn run_prefetch(path: &Path, config: &crate::Config, args: PrefetchArgs) -> ExitCode {
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
        referrers: args.referrers,
    };
    let mut view = report::PrefetchView::new(report::terminal());
    let summary = match open_target(config) {
        Ok(Target::Local(cache)) => {
            // This process fetches: it needs the upstreams' passwords and CA files.
            let full = match crate::Config::load_fetching(path) {
                Ok(full) => full,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let app = match crate::app_with_cache(&full, cache) {
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
            // Downloads whose clients are done are committed (and shared) before the storage is
            // let go.
            app.cache.settled().await;
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

/// `wharf export`'s referrers and signing options.
pub struct ExportExtras {
    /// `--no-referrers`, `--referrers-type`.
    pub referrers: referrers::Options,
    /// `--sign KEY`: the private key file.
    pub sign: Option<PathBuf>,
}

/// `wharf export`: writes the selected images as an OCI layout bundle (a tar) to `out`.
pub async fn run_export(
    config: &crate::Config,
    selection: export::Selection,
    platform: Option<String>,
    since: Option<PathBuf>,
    out: &Path,
    extras: ExportExtras,
) -> ExitCode {
    let sign = match extras.sign.as_deref().map(sign::SigningKey::read) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            eprintln!("wharf: --sign {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let signer = match sign.as_ref().map(sign::SigningKey::public) {
        Some(Ok(public)) => Some(sign::key_id(&public)),
        Some(Err(e)) => {
            eprintln!("wharf: --sign: {e}");
            return ExitCode::from(EX_USAGE);
        }
        None => None,
    };
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
        referrers: extras.referrers,
        sign,
    };
    let signed = |summary: String| match &signer {
        Some(id) => format!("{summary}signed by {id}\n"),
        None => summary,
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
            let app = match crate::app_with_cache(config, cache) {
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
            print_summary(&signed(summary), to_stdout);
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
                    print_summary(&signed(summary), to_stdout);
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
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, crate::airgap::client::ClientError>>,
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
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, crate::airgap::client::ClientError>>,
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

/// The keys a bundle must be signed with: `[import] trusted_keys` and `--trusted-key` files.
fn trusted_keys(
    config: &crate::Config,
    files: &[PathBuf],
) -> Result<Vec<sign::TrustedKey>, ExitCode> {
    let mut keys: Vec<sign::TrustedKey> = config
        .import
        .trusted_keys
        .iter()
        .map(|k| sign::TrustedKey {
            key: k.key,
            source: k.path.display().to_string(),
        })
        .collect();
    for file in files {
        match sign::TrustedKey::read(file) {
            Ok(key) => keys.push(key),
            Err(e) => {
                eprintln!("wharf: --trusted-key {e}");
                return Err(ExitCode::from(EX_USAGE));
            }
        }
    }
    Ok(keys)
}

/// `wharf keygen --out PREFIX`: makes a key pair to sign bundles with.
pub fn keygen(out: &Path) -> ExitCode {
    match sign::keygen(out) {
        Ok(id) => {
            println!(
                "wrote {0}.key (private, mode 0600: keep it on the connected side) and {0}.pub (copy it to the air-gapped wharf's [import] trusted_keys); key id {id}",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `wharf import --list FILE`: what a bundle holds and whether its signature verifies, storing
/// nothing. Exits 1 when trusted keys are configured and the signature does not verify with one.
pub async fn list_bundle(config: &crate::Config, file: &Path, trusted: &[PathBuf]) -> ExitCode {
    let keys = match trusted_keys(config, trusted) {
        Ok(keys) => keys,
        Err(code) => return code,
    };
    let head = match bundle::read_head(file).await {
        Ok(head) => head,
        Err(e) => {
            eprintln!("wharf: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verdict = sign::verify(&head.json, head.sig.as_deref(), &keys);
    report::print_bundle_list(&head.manifest, &file.display().to_string(), &verdict, &keys);
    if !keys.is_empty() && !verdict.is_verified() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `wharf import`: verifies a bundle and makes its images visible, all or nothing.
pub async fn run_import(
    config: &crate::Config,
    file: &Path,
    pin: bool,
    trusted: &[PathBuf],
) -> ExitCode {
    let trusted = match trusted_keys(config, trusted) {
        Ok(keys) => keys,
        Err(code) => return code,
    };
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
            let app = match crate::app_with_cache(config, cache) {
                Ok(app) => app,
                Err(e) => {
                    eprintln!("wharf: {}", chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            let result = import::run(&app, input, import::Options { pin, trusted })
                .await
                .map_err(|e| e.to_string());
            // What was imported is uploaded to the shared store before the process exits.
            app.cache.settled().await;
            let _ = app.cache.flush_access();
            result
        }
        Ok(Target::Remote(client)) => match client.import(input, pin, &trusted).await {
            Ok(report) => Ok(report),
            Err(e @ crate::airgap::client::ClientError::Connect { .. }) => {
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

/// An error and its sources on one line, `anyhow`'s `{:#}` style. A source whose message the text
/// already ends with is skipped, because some errors print their source in their own message.
pub fn chain(error: &dyn Error) -> String {
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
