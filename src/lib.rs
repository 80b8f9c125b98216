//! kubexit: a command supervisor for coordinated start-up and termination.
//!
//! `kubexit CMD ARGS...` runs one command, records its life as a tombstone
//! in a shared directory (the graveyard), and stops it when a process it
//! depends on dies. Data flows one way through the modules:
//!
//! ```text
//! command line + environment ─▶ config ─▶ supervisor (one event loop) ─▶ outcome
//!                                            │  ▲                          │
//!                 signals, reaper, child ────┘  └─ graveyard, dependencies  └─▶ tombstone + exit status
//! ```
//!
//! [`run`] is the whole program; `main.rs` only calls it.

pub mod birth;
pub mod child;
pub mod config;
pub mod dependencies;
pub mod duration;
pub mod graveyard;
pub mod inject;
pub mod install;
pub mod json;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod liveness;
pub mod log;
pub mod name;
pub mod notify;
pub mod outcome;
pub mod probe;
pub mod readiness;
pub mod reaper;
pub mod signals;
pub mod status;
pub mod supervisor;
pub mod tls;
pub mod tombstone;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Args, Config, ProcessEnvironment, Reporting};
use crate::graveyard::Graveyard;
use crate::signals::Signals;

/// Exit status for a configuration error, as upstream.
pub const EXIT_CONFIG: u8 = 2;
/// Exit status when kubexit itself fails.
pub const EXIT_FAILURE: u8 = 1;

/// Runs kubexit with the process's arguments and environment.
pub fn run() -> ExitCode {
    // `kubexit inject`, only where upstream's command line cannot mean a
    // child (no KUBEXIT_NAME): see the inject module.
    if let Some(status) = inject::subcommand() {
        return status;
    }
    // First of all, before any thread exists: from here on no signal can
    // kill kubexit half-way; each waits in the queue for the event loop.
    if let Err(err) = signals::block_all() {
        eprintln!("Error: cannot block signals: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            // --help and --version print to stdout and exit 0; usage
            // errors print to stderr and exit 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(EXIT_CONFIG));
        }
    };
    let name = args.name.as_ref().map(|n| n.to_string_lossy().into_owned());
    let reporting = match Reporting::from_args(&args, &ProcessEnvironment) {
        Ok(reporting) => reporting,
        Err(err) => {
            let reporting = Reporting::default();
            log::init(&reporting, name);
            return refuse(&reporting, &err.to_string());
        }
    };
    log::init(&reporting, name);

    if let Some(dir) = &args.install {
        return match install::install(dir) {
            Ok(path) => {
                tracing::info!("Installed kubexit to {}", path.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!("{err}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    if args.status {
        return print_status(&args);
    }

    let config = match Config::from_args(args, &ProcessEnvironment) {
        Ok(config) => config,
        Err(err) => return refuse(&reporting, &err.to_string()),
    };
    config.log_summary();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the event loop: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let outcome = runtime.block_on(async {
        match Signals::open() {
            Ok(signals) => Some(supervisor::supervise(&config, &signals).await),
            Err(err) => {
                tracing::error!("cannot open the signal queue: {err}");
                None
            }
        }
    });
    let Some(outcome) = outcome else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let status = outcome.exit_status(config.stopped_exit_code);
    tracing::info!(status, "Exiting with status {status}: {outcome}");
    write_termination_message(
        &reporting,
        &format!("{}: {outcome} (exit status {status})", config.name),
    );
    ExitCode::from(status)
}

/// A configuration error: said in the log and the termination message,
/// exit status 2.
fn refuse(reporting: &Reporting, message: &str) -> ExitCode {
    tracing::error!("{message}");
    write_termination_message(reporting, &format!("configuration error: {message}"));
    ExitCode::from(EXIT_CONFIG)
}

/// `kubexit --status`: the graveyard's tombstones on stdout.
fn print_status(args: &Args) -> ExitCode {
    let graveyard = match config::status_graveyard(args) {
        Ok(dir) if dir.is_dir() => Graveyard::open(&dir),
        Ok(dir) => {
            tracing::error!(
                "the graveyard {} does not exist; set KUBEXIT_GRAVEYARD or --graveyard",
                dir.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let entries = graveyard
        .map_err(|e| e.to_string())
        .and_then(|g| status::collect(&g).map_err(|e| e.to_string()));
    match entries {
        Ok(entries) => {
            let text = if args.json {
                status::json(&entries)
            } else {
                status::table(&entries, &tombstone::local_zone())
            };
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!("cannot read the graveyard: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// One line saying why kubexit exited, where Kubernetes shows it
/// (`kubectl describe pod`: the container's last state, "Message").
/// Failures are only logged: the exit status matters more.
fn write_termination_message(reporting: &Reporting, message: &str) {
    let Some(path) = reporting.termination_path() else {
        return;
    };
    if let Err(err) = std::fs::write(&path, format!("{message}\n")) {
        tracing::warn!(
            "cannot write the termination message to {}: {err}",
            path.display()
        );
    }
}
