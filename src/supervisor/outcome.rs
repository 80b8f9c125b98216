//! The outcome: how a supervision ended, and what that means to the world.
//!
//! The supervisor reports what happened as an [`Outcome`]; this module alone
//! turns it into the three things others see: kubexit's exit status, the
//! `ExitCode` recorded in the tombstone, and the reason in words. Keeping the
//! mapping in one place is what keeps the README's exit-status table true.
//!
//! | what happened                                  | exit status                  | ExitCode |
//! |------------------------------------------------|------------------------------|----------|
//! | child exited with n                            | n                            | n        |
//! | child killed by signal N                       | 128+N                        | 128+N    |
//! | kubexit stopped it: a death dependency died    | policy (0, or child's status)| child's  |
//! | never started: a death dependency already dead | policy (0 under `child`)     | -1       |
//! | never started: stop signal N                   | 128+N                        | -1       |
//! | never started: command not found / not exec.   | 127 / 126                    | -1       |
//! | never started: birth timeout, birth dep died   | 1                            | -1       |
//! | never started: kubexit could not go on         | 1                            | -1       |
//!
//! Configuration errors (exit 2) happen before there is a name to write a
//! tombstone under, so they never reach this module.

use std::fmt;

use crate::config::StoppedExitCode;
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::NEVER_STARTED;
use crate::process::reaper::ChildStatus;
use crate::process::signals::SignalNumber;

/// How supervision ended.
#[derive(Debug)]
pub enum Outcome {
    /// The child ran and ended; `stopped_for` names the death dependencies
    /// whose deaths made kubexit stop it (one under the policy `any`, every
    /// one under `all`), if that is what happened.
    Ended {
        status: ChildStatus,
        stopped_for: Vec<Name>,
    },
    /// The child was never started.
    NeverStarted(NeverStarted),
}

/// Why the child was never started.
#[derive(Debug)]
pub enum NeverStarted {
    /// The death dependencies that stop the child (per the policy) were
    /// already dead.
    DependencyDead(Vec<Name>),
    /// kubexit was asked to stop before the child started.
    Signal(SignalNumber),
    /// The command could not be executed; the status follows the shell's
    /// convention (127 not found, 126 not executable).
    Unstartable { status: u8, message: String },
    /// The birth dependencies were not all ready in time; the text names
    /// each one still awaited and its state.
    BirthTimeout(String),
    /// A birth dependency died before the child could start.
    BirthDependencyDied(Name),
    /// kubexit itself could not go on (the graveyard cannot be used, say).
    Failure(String),
}

impl Outcome {
    /// kubexit's exit status.
    pub fn exit_status(&self, policy: StoppedExitCode) -> u8 {
        match self {
            Outcome::Ended {
                stopped_for,
                status,
            } if !stopped_for.is_empty() => match policy {
                StoppedExitCode::Code(code) => code,
                StoppedExitCode::Child => status_byte(*status),
            },
            Outcome::Ended { status, .. } => status_byte(*status),
            Outcome::NeverStarted(why) => match why {
                NeverStarted::DependencyDead(_) => match policy {
                    StoppedExitCode::Code(code) => code,
                    // There is no child status to pass through.
                    StoppedExitCode::Child => 0,
                },
                NeverStarted::Signal(signal) => status_byte(ChildStatus::Signaled(signal.0)),
                NeverStarted::Unstartable { status, .. } => *status,
                NeverStarted::BirthTimeout(_)
                | NeverStarted::BirthDependencyDied(_)
                | NeverStarted::Failure(_) => 1,
            },
        }
    }

    /// The `ExitCode` recorded in the tombstone.
    pub fn recorded_code(&self) -> i32 {
        match self {
            Outcome::Ended { status, .. } => status.code(),
            Outcome::NeverStarted(_) => NEVER_STARTED,
        }
    }
}

/// Exit codes are a byte; signal deaths (128+N) fit, and an out-of-range
/// value can only come from a bug, so it is saturated rather than wrapped.
fn status_byte(status: ChildStatus) -> u8 {
    u8::try_from(status.code()).unwrap_or(u8::MAX)
}

/// The reason in words, for the tombstone's `Reason` key and the last log
/// line.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ended {
                status,
                stopped_for,
            } if !stopped_for.is_empty() => write!(
                f,
                "stopped because {} died; the child {}",
                Listed(stopped_for),
                Ended(*status)
            ),
            Outcome::Ended { status, .. } => write!(f, "the child {}", Ended(*status)),
            Outcome::NeverStarted(NeverStarted::DependencyDead(dead)) => {
                let noun = if dead.len() == 1 {
                    "death dependency"
                } else {
                    "death dependencies"
                };
                write!(f, "never started: {noun} {} had already died", Listed(dead))
            }
            Outcome::NeverStarted(NeverStarted::Signal(signal)) => {
                write!(f, "never started: kubexit received {signal}")
            }
            Outcome::NeverStarted(NeverStarted::BirthDependencyDied(dependency)) => {
                write!(
                    f,
                    "never started: birth dependency {dependency} died before it was ready"
                )
            }
            Outcome::NeverStarted(NeverStarted::Unstartable { message, .. })
            | Outcome::NeverStarted(NeverStarted::BirthTimeout(message))
            | Outcome::NeverStarted(NeverStarted::Failure(message)) => {
                write!(f, "never started: {message}")
            }
        }
    }
}

/// Names as a list in words: `a`, `a and b`, `a, b and c`.
pub struct Listed<'a>(pub &'a [Name]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.0;
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == names.len() { " and " } else { ", " })?;
            }
            write!(f, "{name}")?;
        }
        Ok(())
    }
}

struct Ended(ChildStatus);

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ChildStatus::Exited(code) => write!(f, "exited with status {code}"),
            ChildStatus::Signaled(signal) => write!(f, "was killed by {}", SignalNumber(signal)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Name {
        Name::new(n).unwrap()
    }

    const ZERO: StoppedExitCode = StoppedExitCode::Code(0);

    #[test]
    fn a_child_that_ends_on_its_own_passes_its_status_through() {
        let exited = Outcome::Ended {
            status: ChildStatus::Exited(3),
            stopped_for: Vec::new(),
        };
        assert_eq!((exited.exit_status(ZERO), exited.recorded_code()), (3, 3));
        let killed = Outcome::Ended {
            status: ChildStatus::Signaled(9),
            stopped_for: Vec::new(),
        };
        assert_eq!(
            (killed.exit_status(ZERO), killed.recorded_code()),
            (137, 137)
        );
        assert_eq!(killed.to_string(), "the child was killed by SIGKILL");
    }

    #[test]
    fn a_child_stopped_for_a_death_follows_the_policy_but_records_the_truth() {
        let stopped = Outcome::Ended {
            status: ChildStatus::Signaled(15),
            stopped_for: vec![name("db")],
        };
        assert_eq!(stopped.exit_status(ZERO), 0);
        assert_eq!(stopped.exit_status(StoppedExitCode::Code(7)), 7);
        assert_eq!(stopped.exit_status(StoppedExitCode::Child), 143);
        assert_eq!(stopped.recorded_code(), 143);
        assert_eq!(
            stopped.to_string(),
            "stopped because db died; the child was killed by SIGTERM"
        );
        let all = Outcome::Ended {
            status: ChildStatus::Exited(0),
            stopped_for: vec![name("app"), name("worker"), name("cron")],
        };
        assert_eq!(
            all.to_string(),
            "stopped because app, worker and cron died; the child exited with status 0"
        );
    }

    #[test]
    fn a_child_that_never_started_records_minus_one() {
        let cases = [
            (NeverStarted::DependencyDead(vec![name("db")]), 0),
            (NeverStarted::Signal(SignalNumber::TERM), 143),
            (
                NeverStarted::Unstartable {
                    status: 127,
                    message: "nope".into(),
                },
                127,
            ),
            (NeverStarted::Failure("broken".into()), 1),
            (NeverStarted::BirthTimeout("db (born, not ready)".into()), 1),
            (NeverStarted::BirthDependencyDied(name("db")), 1),
        ];
        for (why, status) in cases {
            let outcome = Outcome::NeverStarted(why);
            assert_eq!(outcome.exit_status(ZERO), status, "{outcome}");
            assert_eq!(outcome.recorded_code(), -1);
        }
    }
}
