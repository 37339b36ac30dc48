//! The `wharf` binary: parse the command line, load the configuration, start logging and the
//! runtime, and hand over to the library. Nothing here is worth a unit test; `tests/config.rs`
//! runs the binary to check the exit codes and messages.
//!
//! Exit codes: 0 after a clean shutdown (or for `--help`/`--version`), 64 (`EX_USAGE`) for a bad
//! command line or configuration, 1 when wharf fails while running.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

/// The end of every help page: what an operator scripting or supervising wharf needs.
const AFTER_HELP: &str = "\
Exit codes: 0 clean shutdown; 64 bad command line or configuration; 1 failure while running.
Logs go to stderr ([log] format = \"json\" for JSON); RUST_LOG filters them (e.g. RUST_LOG=debug or
RUST_LOG=wharf=trace), over [log] level (default: info).";

/// The BSD `sysexits.h` code for a usage error, which is what a bad configuration is.
const EX_USAGE: u8 = 64;

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
