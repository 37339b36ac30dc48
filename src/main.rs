//! The `wharf` binary: parse the command line and hand over to the library: `serve` to
//! [`wharf::run`], every other command to [`wharf::cli`]. Nothing here is worth a unit test; the
//! tests run the binary to check the exit codes and messages.
//!
//! Exit codes: 0 after a clean shutdown (or for `--help`/`--version`), 64 (`EX_USAGE`) for a bad
//! command line or configuration, 1 when wharf fails while running (or `wharf check` found problems
//! it did not repair), 75 (`EX_TEMPFAIL`) when a maintenance command finds a wharf serving from
//! the same storage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use wharf::airgap::{export, prefetch, referrers};
use wharf::cache::check::CheckOptions;
use wharf::cli::{
    chain, check, gc, keygen, list_bundle, pin, pins, run_export, run_import, run_prefetch, setup,
    status, ExportExtras, Kind, PrefetchArgs, EX_USAGE,
};

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
    /// flushes its index and exits 0. SIGHUP reloads the configuration file (upstreams, allow
    /// lists, TTLs, pins, sync; a change to the listener or the storage is refused and logged),
    /// the TLS certificate and the htpasswd file.
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
    /// Check a configuration file as `wharf serve` would load it, without starting anything.
    ///
    /// Reads and validates the file and everything it names (password files and variables, the
    /// TLS certificate and key, the htpasswd file, CA files, sync lists), touching no storage and
    /// no running wharf. Prints "FILE: ok" and exits 0, or prints the one-line error `wharf serve`
    /// would print and exits 64. For CI, and for systemd's ExecReload before the SIGHUP. Keys that
    /// a running wharf cannot change (listen address, storage, ...) are only refused by the reload
    /// itself, which compares with the configuration in use.
    #[command(name = "check-config", after_help = AFTER_HELP)]
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
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
        /// Do not fetch the images' referrers (signatures, SBOMs, attestations).
        #[arg(long)]
        no_referrers: bool,
        /// Fetch only referrers of this type (artifactType, or the first layer's media type);
        /// repeat for several.
        #[arg(long, value_name = "TYPE", conflicts_with = "no_referrers")]
        referrers_type: Vec<String>,
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
        /// Leave out the images' referrers (signatures, SBOMs, attestations).
        #[arg(long)]
        no_referrers: bool,
        /// Take only referrers of this type (artifactType, or the first layer's media type);
        /// repeat for several.
        #[arg(long, value_name = "TYPE", conflicts_with = "no_referrers")]
        referrers_type: Vec<String>,
        /// Sign wharf-bundle.json with this Ed25519 private key (PEM; `wharf keygen` makes one).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
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
        /// Refuse the bundle unless it is signed by this key (a PEM public key, PREFIX.pub of
        /// `wharf keygen`); repeat for several; added to [import] trusted_keys.
        #[arg(long, value_name = "PUB")]
        trusted_key: Vec<PathBuf>,
        /// Print what the bundle holds (images, platforms, referrers, sizes, signer, whether the
        /// signature verifies) and store nothing.
        #[arg(long)]
        list: bool,
        /// The bundle.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Make an Ed25519 key pair to sign bundles with: PREFIX.key (private, mode 0600) for
    /// `wharf export --sign`, PREFIX.pub for [import] trusted_keys or `wharf import --trusted-key`.
    #[command(after_help = AFTER_HELP)]
    Keygen {
        /// Where to write the keys: PREFIX.key and PREFIX.pub (an existing key is not replaced).
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
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
    /// Ask a running wharf whether it is up: GET /healthz (or /readyz) on its metrics listener.
    ///
    /// For a container's HEALTHCHECK and for scripts where curl is not installed. The address is
    /// the configuration's [metrics] listen (0.0.0.0 and [::] are asked on loopback), or --url.
    /// Prints "URL: 200 ok" and exits 0 when the answer is 200; otherwise prints one line saying
    /// what came back (a status and its reason, no connection, no answer within --timeout) and
    /// exits 1. A bad configuration or URL, or metrics listen off, exits 64.
    #[command(after_help = AFTER_HELP)]
    Health {
        /// The configuration file whose [metrics] listen to ask.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// Ask this http:// URL instead (e.g. http://127.0.0.1:9095/healthz).
        #[arg(long, value_name = "URL", conflicts_with_all = ["ready", "config"])]
        url: Option<String>,
        /// Ask /readyz (the storage takes writes, no shutdown has begun) instead of /healthz.
        #[arg(long)]
        ready: bool,
        /// How long the whole request may take ("500ms", "2s").
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Show what the running wharf is doing: cache, hit ratio, upstreams, fills in flight, top
    /// repositories and images, pins, sync runs and recent errors (what /status.json serves).
    ///
    /// Asks the wharf serving the configured storage over its control socket; exits 75 when none
    /// answers.
    #[command(after_help = AFTER_HELP)]
    Status {
        /// The configuration file.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
        /// Print the report as JSON (the /status.json document) instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// The end of every help page: what an operator scripting or supervising wharf needs.
const AFTER_HELP: &str = "\
Exit codes: 0 success; 64 bad command line or configuration; 1 failure (or problems left by check);
75 the storage is in use by a running wharf.
Logs go to stderr ([log] format = \"json\" for JSON); RUST_LOG filters them (e.g. RUST_LOG=debug or
RUST_LOG=wharf=trace), over [log] level (default: info).";

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
        Command::CheckConfig { config } => check_config(&config),
        Command::Check {
            config,
            repair,
            verify,
        } => match setup(&config, Kind::Maintenance) {
            Ok((config, runtime, _log)) => {
                runtime.block_on(check(&config, CheckOptions { repair, verify }))
            }
            Err(code) => code,
        },
        Command::Gc { config, dry_run } => match setup(&config, Kind::Maintenance) {
            Ok((config, runtime, _log)) => runtime.block_on(gc(&config, dry_run)),
            Err(code) => code,
        },
        Command::Pin { config, images } => match setup(&config, Kind::Maintenance) {
            Ok((config, runtime, _log)) => runtime.block_on(pin(&config, &images, true)),
            Err(code) => code,
        },
        Command::Unpin { config, images } => match setup(&config, Kind::Maintenance) {
            Ok((config, runtime, _log)) => runtime.block_on(pin(&config, &images, false)),
            Err(code) => code,
        },
        Command::Pins { config } => match setup(&config, Kind::Maintenance) {
            Ok((config, runtime, _log)) => runtime.block_on(pins(&config)),
            Err(code) => code,
        },
        Command::Status { config, json } => match setup(&config, Kind::Maintenance) {
            Ok((config, runtime, _log)) => runtime.block_on(status(&config, json)),
            Err(code) => code,
        },
        Command::Prefetch {
            config,
            file,
            platform,
            no_pin,
            jobs,
            no_referrers,
            referrers_type,
            images,
        } => match setup(&config, Kind::Airgap) {
            Ok((loaded, runtime, _log)) => runtime.block_on(run_prefetch(
                &config,
                &loaded,
                PrefetchArgs {
                    file,
                    platform,
                    pin: !no_pin,
                    jobs,
                    referrers: referrer_options(no_referrers, referrers_type),
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
            no_referrers,
            referrers_type,
            sign,
            images,
        } => match setup(&config, Kind::Airgap) {
            Ok((config, runtime, _log)) => {
                let selection = if pinned {
                    export::Selection::Pinned
                } else if all {
                    export::Selection::All
                } else {
                    export::Selection::Images(images)
                };
                let extras = ExportExtras {
                    referrers: referrer_options(no_referrers, referrers_type),
                    sign,
                };
                runtime.block_on(run_export(
                    &config, selection, platform, since, &out, extras,
                ))
            }
            Err(code) => code,
        },
        Command::Import {
            config,
            no_pin,
            trusted_key,
            list,
            file,
        } => match setup(&config, Kind::Airgap) {
            Ok((config, runtime, _log)) if list => {
                runtime.block_on(list_bundle(&config, &file, &trusted_key))
            }
            Ok((config, runtime, _log)) => {
                runtime.block_on(run_import(&config, &file, !no_pin, &trusted_key))
            }
            Err(code) => code,
        },
        Command::Keygen { out } => keygen(&out),
        Command::Health {
            config,
            url,
            ready,
            timeout,
        } => wharf::health::command(&config, url.as_deref(), ready, timeout),
    }
}

/// `--no-referrers` and `--referrers-type` as the commands take them.
fn referrer_options(none: bool, types: Vec<String>) -> referrers::Options {
    if none {
        referrers::Options::none()
    } else {
        referrers::Options {
            enabled: true,
            types,
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    match wharf::Config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf: {e}");
            ExitCode::from(EX_USAGE)
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
    match runtime.block_on(wharf::run_with(config, wharf::RunOptions { offline })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}
