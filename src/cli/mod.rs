//! The command line: from the process's arguments to an exit status.
//!
//! [`run`] reads the arguments, sets up the log (in the user's format even
//! for a configuration error; a usage error that clap refuses, such as an
//! unknown flag, is clap's message), and runs one of kubexit's modes:
//! supervising a command (the configuration, then the supervisor's event
//! loop, then the exit status and the termination message), or one of the
//! modes that do something else and exit: the status view (`--status`),
//! self-install (`--install`), and the subcommands `inject`, `uninject` and
//! `webhook`. The subcommands are told apart first, and run with signals
//! as the process got them (the webhook blocks its own before it serves).
//! For everything else signals are blocked before the arguments are read,
//! for the supervisor's sake; `--status` and `--install` unblock them
//! again, so that Ctrl-C interrupts them as it would any command.

pub mod exit;
#[cfg(feature = "inject")]
mod inject;
pub mod install;
pub mod log;
pub mod status;
#[cfg(feature = "webhook")]
mod webhook;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::exit::{EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{Args, Config, ProcessEnvironment, Reporting};
use crate::process::signals::{self, Signals};
use crate::supervisor;

/// Runs kubexit with the process's arguments and environment.
pub fn run() -> ExitCode {
    // `kubexit inject` (or `webhook`), only where upstream's command line
    // cannot mean a child (no KUBEXIT_NAME): see the inject command's docs.
    if let Some(status) = subcommand() {
        return status;
    }
    // The supervisor's start-up draws its small blocks from the arena.
    crate::memory::keep_on_this_thread();
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
            log::init(&reporting.log, name);
            return refuse(&reporting, &err.to_string());
        }
    };
    log::init(&reporting.log, name);

    if args.install.is_some() || args.status {
        // Not supervising: signals get their default actions back.
        signals::unblock_all();
    }
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
        return status::main(&args);
    }

    let config = match Config::from_args(args, &ProcessEnvironment) {
        Ok(config) => config,
        Err(err) => return refuse(&reporting, &err.to_string()),
    };
    log::together(|| config.log_summary());

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
    // Whatever still runs in the runtime's blocking pool (a name lookup of
    // the Kubernetes client, say) is not waited for: the outcome is known.
    runtime.shutdown_background();
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

/// The words that name a subcommand.
const SUBCOMMANDS: [&str; 3] = ["inject", "uninject", "webhook"];

/// Whether this command line is the subcommand rather than a child named
/// `inject`: only when kubexit is not configured to supervise.
fn is_subcommand(first: Option<&OsString>, kubexit_name: Option<&OsString>) -> bool {
    kubexit_name.is_none() && first.is_some_and(|word| SUBCOMMANDS.iter().any(|n| word == n))
}

/// Runs `kubexit inject`, `kubexit uninject` or `kubexit webhook` when the
/// process's command line is one, and returns its exit status; `None`
/// otherwise.
fn subcommand() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if !is_subcommand(args.first(), std::env::var_os("KUBEXIT_NAME").as_ref()) {
        return None;
    }
    if args[0] == "webhook" {
        #[cfg(feature = "webhook")]
        return Some(webhook::main(args.into_iter()));
        #[cfg(not(feature = "webhook"))]
        return Some(not_in_this_build(&args[0], "webhook"));
    }
    #[cfg(feature = "inject")]
    return Some(inject::main(args.into_iter()));
    #[cfg(not(feature = "inject"))]
    return Some(not_in_this_build(&args[0], "inject"));
}

/// A subcommand of the default build, asked of a build without it.
#[cfg(not(all(feature = "inject", feature = "webhook")))]
fn not_in_this_build(word: &OsString, feature: &str) -> ExitCode {
    eprintln!(
        "Error: `kubexit {}` is not in this build of kubexit (built without the cargo feature \
         `{feature}`, as the slim build is); use the default build. To run a command named {0} \
         under kubexit instead, set KUBEXIT_NAME.",
        word.to_string_lossy()
    );
    ExitCode::from(EXIT_CONFIG)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unconfigured_kubexit_takes_inject_as_the_subcommand() {
        let inject = OsString::from("inject");
        let name = OsString::from("app");
        assert!(is_subcommand(Some(&inject), None));
        assert!(is_subcommand(Some(&OsString::from("uninject")), None));
        assert!(is_subcommand(Some(&OsString::from("webhook")), None));
        assert!(!is_subcommand(
            Some(&OsString::from("webhook")),
            Some(&name)
        ));
        assert!(!is_subcommand(Some(&inject), Some(&name)));
        assert!(!is_subcommand(Some(&OsString::from("--name")), None));
        assert!(!is_subcommand(Some(&OsString::from("injection")), None));
        assert!(!is_subcommand(None, None));
    }
}
