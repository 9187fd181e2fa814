//! The client commands of `atelier`: sign in, upload, run workflows on files with
//! live progress, follow and download jobs, manage API keys, all over the gateway's
//! REST API.
//!
//! Every command takes `--url` (or `ATELIER_URL`; else the server `atelier login`
//! saved; else `http://127.0.0.1:8080`), `--json` (one JSON document on stdout) and
//! `--quiet`. Progress and messages go to stderr; progress bars only when stderr is
//! a terminal and neither `--json` nor `--quiet` is given.
//!
//! Exit codes (see [`Exit`]): 0 success; 1 unexpected error; 2 usage error; 3 not
//! signed in, credentials refused, or not allowed; 4 not found (job, workflow, image, local file);
//! 5 a job failed or was cancelled; 6 the server cannot be reached; 7 the server
//! refused the input (invalid parameters, not an image, too large); 8 over a rate
//! limit or quota.

mod api;
mod auth;
mod config;
mod error;
mod events;
mod files;
mod jobs;
mod keys;
mod params;
mod process;
mod progress;

use std::path::PathBuf;

use clap::{Args, Subcommand};
pub use error::Exit;
use error::{CliError, Result};
use serde_json::Value;

/// What `atelier --help` says of exit codes.
pub const EXIT_CODES_HELP: &str = "Exit codes of the client commands:
  0  success
  1  unexpected error
  2  usage error (the command line is wrong)
  3  not signed in, credentials refused, or not allowed (key scope, plan)
  4  not found: no such job, workflow, image or local file
  5  a job failed or was cancelled
  6  the server cannot be reached
  7  the server refused the input (invalid parameters, not an image, too large)
  8  over a rate limit or a quota of your plan";

/// Options every client command takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// The gateway's URL [default: the one `atelier login` saved, else http://127.0.0.1:8080]
    #[arg(long, env = "ATELIER_URL", global = true)]
    pub url: Option<String>,
    /// Print one machine-readable JSON document on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress and no messages on stderr (errors still)
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Sign in (email and password, or an API key) and keep the credentials
    Login(auth::LoginArgs),
    /// Create an account and sign in
    Signup(auth::SignupArgs),
    /// Sign out and forget the saved credentials
    Logout(auth::LogoutArgs),
    /// Show who you are signed in as
    Whoami(CommonOnly),
    /// Upload images; prints their ids
    Upload(process::UploadArgs),
    /// List the workflows and their parameters
    Workflows(CommonOnly),
    /// Run a workflow on files: upload, process with live progress, download the results
    Process(process::ProcessArgs),
    /// List your jobs, newest first
    Jobs(jobs::JobsArgs),
    /// Follow a job live until it is final
    Watch(jobs::WatchArgs),
    /// Download a completed job's results
    Download(jobs::DownloadArgs),
    /// Manage API keys
    Keys(keys::KeysArgs),
}

#[derive(Args, Debug)]
pub struct CommonOnly {
    #[command(flatten)]
    pub common: Common,
}

/// Runs a client command; the process's exit code.
pub async fn run(command: Command) -> std::process::ExitCode {
    let result = match command {
        Command::Login(args) => auth::login(args).await,
        Command::Signup(args) => auth::signup(args).await,
        Command::Logout(args) => auth::logout(args).await,
        Command::Whoami(args) => auth::whoami(args.common).await,
        Command::Upload(args) => process::upload(args).await,
        Command::Workflows(args) => jobs::workflows(args.common).await,
        Command::Process(args) => process::process(args).await,
        Command::Jobs(args) => jobs::jobs(args).await,
        Command::Watch(args) => jobs::watch(args).await,
        Command::Download(args) => jobs::download(args).await,
        Command::Keys(args) => keys::keys(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("atelier: {err}");
            std::process::ExitCode::from(err.exit.code())
        }
    }
}

/// Prints `value` as the command's JSON document.
fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| CliError::unexpected(format!("cannot encode the output: {err}")))?;
    println!("{text}");
    Ok(())
}

/// Prints `rows` as a table with a header, columns padded to their widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (index, (cell, width)) in cells.zip(&widths).enumerate() {
            if index + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// Each of `files` as given, or "not found" (exit 4) for the first that is not a
/// readable file.
fn check_files(files: &[PathBuf]) -> Result<()> {
    for file in files {
        match std::fs::metadata(file) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(CliError::new(
                    Exit::NotFound,
                    format!("{}: not a file", file.display()),
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(CliError::new(
                    Exit::NotFound,
                    format!("{}: no such file", file.display()),
                ));
            }
            Err(err) => {
                return Err(CliError::unexpected(format!("{}: {err}", file.display())));
            }
        }
    }
    Ok(())
}

/// Reads stdin whole (for `--password-stdin`, `--key-stdin`), without the line end.
fn read_stdin_secret(what: &str) -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|err| CliError::unexpected(format!("reading the {what} from stdin: {err}")))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(CliError::usage(format!("no {what} on stdin")));
    }
    Ok(secret)
}
