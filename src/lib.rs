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
pub mod liveness;
pub mod log;
pub mod name;
pub mod notify;
pub mod outcome;
pub mod probe;
pub mod readiness;
pub mod reaper;
pub mod signals;
pub mod supervisor;
pub mod tls;
pub mod tombstone;

use std::process::ExitCode;

use clap::Parser;

use crate::config::{Args, Config, ProcessEnvironment};
use crate::signals::Signals;

/// Exit status for a configuration error, as upstream.
pub const EXIT_CONFIG: u8 = 2;
/// Exit status when kubexit itself fails.
pub const EXIT_FAILURE: u8 = 1;

/// Runs kubexit with the process's arguments and environment.
pub fn run() -> ExitCode {
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
    log::init(tracing::Level::INFO);
    let config = match Config::from_args(args, &ProcessEnvironment) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
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
    tracing::info!("Exiting with status {status}: {outcome}");
    ExitCode::from(status)
}
