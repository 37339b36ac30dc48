//! The `wharf` binary: parse the command line, load the configuration, start logging and the
//! runtime, and hand over to the library. Exit codes: 0 after a clean shutdown, 64 for a bad command
//! line or configuration, 1 when wharf fails while running.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// wharf: a pull-through caching mirror for OCI / Docker container registries.
///
/// Point Docker, containerd, Podman, CRI-O or skopeo at wharf instead of the registry: it serves what
/// it has from its own disk, fetches what it lacks from the configured upstream, and keeps content
/// only after its sha256 digest and size have been verified.
///
/// Exit codes: 0 clean shutdown; 64 bad command line or configuration; 1 failure while running.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the registry mirror until SIGINT or SIGTERM.
    ///
    /// Listens on [server] listen, caches under [storage] path, and fetches misses from the
    /// [[upstream]] registries of the configuration file (see the commented config.toml in the
    /// repository for every key). A bad configuration is refused with one line naming the file, the
    /// key and the fix, and exit code 64. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to
    /// change what is logged.
    Serve {
        /// The configuration file.
        #[arg(long, short, value_name = "PATH", default_value = "./config.toml")]
        config: PathBuf,
    },
}

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve { config } => serve(&config),
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match wharf::Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wharf: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    wharf::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wharf::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {}", wharf::server::response::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
