//! `atelier`: one binary for the whole platform. `atelier serve` runs every service
//! and the gateway in one process (each on its own port, talking real gRPC); `--target`
//! picks a subset, as one Deployment per target does in production. The client
//! commands (`login`, `process`, `watch`, ...) talk to a running platform over its
//! REST API (see [`cli`]).

mod admin;
mod backup;
mod cli;
mod serve;

/// mimalloc rather than the system allocator: a service allocates many small,
/// short-lived buffers across threads, where glibc's malloc spends measurably
/// more (about a tenth of the platform's CPU in the end-to-end benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use serve::Target;

#[derive(Parser)]
#[command(
    name = "atelier",
    version,
    about = "Atelier: run fal.ai models on your images",
    long_about = "Atelier: run fal.ai models on your images.\n\n\
With no configuration, `atelier serve` starts the whole platform on this machine \
(SQLite files and keys under ./data, the gateway on http://127.0.0.1:8080). \
Configuration comes from environment variables; see the README for the table.\n\n\
The client commands (login, upload, process, jobs, watch, download, keys) talk to a \
running platform: `atelier login`, then `atelier process photo.jpg --workflow esrgan-upscale`.",
    after_long_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Platform(Platform),
    #[command(flatten)]
    Client(cli::Command),
}

/// The commands that run (part of) the platform itself.
#[derive(Subcommand)]
enum Platform {
    /// Run services until SIGTERM or Ctrl-C
    Serve {
        /// Which services this process runs: all, or a comma-separated list
        #[arg(
            long,
            short,
            value_delimiter = ',',
            default_value = "all",
            env = "ATELIER_TARGET"
        )]
        target: Vec<Target>,
    },
    /// Run the fal.ai-compatible simulator on its own
    FalSim {
        /// Where to listen
        #[arg(long, default_value = "127.0.0.1:8790", env = "FAL_SIM_ADDR")]
        addr: std::net::SocketAddr,
        /// Serve HTTPS with a certificate made at start (for fal's official clients)
        #[arg(long)]
        tls: bool,
        /// Write the TLS certificate (PEM) here, for clients to trust
        #[arg(long, requires = "tls")]
        cert_out: Option<std::path::PathBuf>,
    },
    /// Write a consistent archive of the embedded platform (SQLite databases, local
    /// objects, keys) while it serves; or check one with --verify
    #[command(
        long_about = "Write a consistent archive of the embedded platform under DATA_DIR while it serves: \
every service's SQLite database, the local objects their rows name, and the keys needed to read them \
(JWT signing keys, the URL-signing key, STORAGE_ENCRYPTION_KEY_FILE when set, the generated service CA). \
The archive holds secrets: it is written 0600. With DATABASE_URL or S3_BUCKET set, use the \
production runbook (k8s/RUNBOOK-backup.md) instead."
    )]
    Backup {
        /// The archive to write (`.tar.gz`, or `.tar` uncompressed); default
        /// atelier-backup-<time>.tar.gz in the current directory
        #[arg(long, short, conflicts_with = "verify")]
        output: Option<std::path::PathBuf>,
        /// Check an archive instead: every file against its manifest's SHA-256
        #[arg(long, value_name = "ARCHIVE")]
        verify: Option<std::path::PathBuf>,
    },
    /// Restore an archive `atelier backup` wrote into a data directory
    Restore {
        /// The archive
        archive: std::path::PathBuf,
        /// The data directory to restore into (then run with DATA_DIR set to it)
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Replace a data directory that is not empty (stop its platform first)
        #[arg(long)]
        force: bool,
    },
    /// Make a user an administrator or take the role back (with the operator certificate)
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Apply pending database migrations and exit
    Migrate {
        /// Whose schemas to migrate: all, or a comma-separated list
        #[arg(long, short, value_delimiter = ',', default_value = "all")]
        target: Vec<Target>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Client commands keep stderr for their own messages and progress: no logging.
    let command = match cli.command {
        Command::Client(command) => return cli::run(command).await,
        Command::Platform(command) => command,
    };
    if let Err(err) = atelier_common::telemetry::init_logging() {
        eprintln!("atelier: {err:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match command {
        Platform::Serve { target } => serve::serve(&target).await,
        Platform::Migrate { target } => serve::migrate(&target).await,
        Platform::Backup {
            verify: Some(archive),
            ..
        } => backup::verify(&archive),
        Platform::Backup {
            output,
            verify: None,
        } => backup::backup(output).await,
        Platform::Restore {
            archive,
            data_dir,
            force,
        } => backup::restore(&archive, &data_dir, force).await,
        Platform::Admin { command } => admin::run(command).await,
        Platform::FalSim {
            addr,
            tls,
            cert_out,
        } => serve::fal_sim(addr, tls, cert_out).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "atelier stopped with an error");
            eprintln!("atelier: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
