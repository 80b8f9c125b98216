//! The supervisor: one event loop from start to outcome.
//!
//! Everything that can happen to kubexit arrives here, in one place and one
//! order: signals (including SIGCHLD, the news that a child ended), changes
//! in the graveyard, and the grace-period timer. Between events kubexit
//! sleeps; nothing polls.
//!
//! The life of a supervision has three phases:
//!
//! 1. **Before the child.** The graveyard watch is armed *first*, then the
//!    death dependencies' tombstones are read: a death that happens between
//!    the two is seen by both, one that happened earlier by the scan, so none
//!    is missed. A dead dependency or a stop signal here means the child
//!    never starts. The `Born` record is written before the child is
//!    started: a child never runs without its tombstone.
//! 2. **While the child runs.** Forwarded signals go to the child's process
//!    group; a stop signal (received, or sent because a death dependency
//!    died) starts the grace period, after which the group gets SIGKILL.
//! 3. **After the child.** `Died` is written at once (dependents are
//!    waiting); then whatever the child left behind, in its group or adopted
//!    by kubexit, gets the stop signal and, after the grace period, SIGKILL,
//!    so kubexit leaves neither orphans nor zombies.
//!
//! The supervisor decides *what happened*; the outcome module decides what
//! that means for the exit status.

use std::io;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::{Instant, sleep_until};

use crate::child::{self, Child, Terminal};
use crate::config::Config;
use crate::dependencies::Dependencies;
use crate::graveyard::{Change, Graveyard, Watch};
use crate::outcome::{NeverStarted, Outcome};
use crate::reaper::{self, ChildStatus, Reaper};
use crate::signals::{SignalNumber, Signals};
use crate::tombstone::Tombstone;

/// How long kubexit waits for SIGKILLed leftovers to be reaped before it
/// gives up on them (a process stuck in the kernel cannot be hurried).
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Runs one supervision to its outcome. `signals` must have been opened
/// before anything else, so that no signal is missed.
pub async fn supervise(config: &Config, signals: &Signals) -> Outcome {
    let graveyard = match Graveyard::open(&config.graveyard) {
        Ok(graveyard) => graveyard,
        Err(err) => return Outcome::NeverStarted(NeverStarted::Failure(err.to_string())),
    };
    let mut own = OwnTombstone::new(&graveyard, config);
    let outcome = run(config, signals, &graveyard, &mut own).await;
    own.died(&outcome);
    outcome
}

async fn run(
    config: &Config,
    signals: &Signals,
    graveyard: &Graveyard,
    own: &mut OwnTombstone<'_>,
) -> Outcome {
    let mut reaper = Reaper::new();

    tracing::info!("Watching graveyard...");
    let mut watch = match graveyard.watch() {
        Ok(watch) => watch,
        Err(err) => return Outcome::NeverStarted(NeverStarted::Failure(err.to_string())),
    };
    let mut deaths = Dependencies::new(&config.death_deps);
    if let Some(dead) = deaths.first_dead(graveyard) {
        tracing::info!(dependency = %dead, "Death dependency already dead: {dead}");
        return Outcome::NeverStarted(NeverStarted::DependencyDead(dead));
    }
    if let Some(signal) = pending_stop_signal(signals) {
        return Outcome::NeverStarted(NeverStarted::Signal(signal));
    }

    if let Err(err) = own.born() {
        return Outcome::NeverStarted(NeverStarted::Failure(err.to_string()));
    }
    let terminal = Terminal::detect();
    tracing::info!("Starting: {}", shell_words(&config.command));
    let child = match child::spawn(&config.command, terminal) {
        Ok(child) => child,
        Err(err) => {
            return Outcome::NeverStarted(NeverStarted::Unstartable {
                status: err.exit_status(),
                message: err.to_string(),
            });
        }
    };
    reaper.supervise(child.pid());

    let mut running = Running {
        config,
        child,
        kill_at: None,
        killed: false,
        stopped_for: None,
    };
    let status = running
        .until_exit(signals, graveyard, &mut watch, &mut deaths, &mut reaper)
        .await;
    tracing::info!("Child Exited({})", status.code());
    let outcome = Outcome::Ended {
        status,
        stopped_for: running.stopped_for.take(),
    };
    // Dependents are waiting: the death is recorded before leftovers are
    // cleaned up.
    own.died(&outcome);
    clean_up_leftovers(config, signals, &running.child, &mut reaper).await;
    terminal.reclaim();
    outcome
}

/// A stop signal that arrived before the child started, if any. Other
/// signals received so early have nobody to be forwarded to.
fn pending_stop_signal(signals: &Signals) -> Option<SignalNumber> {
    let pending = match signals.drain() {
        Ok(pending) => pending,
        Err(err) => {
            tracing::error!("cannot read signals: {err}");
            return None;
        }
    };
    let stop = pending.into_iter().find(|s| s.is_stop())?;
    tracing::info!(signal = %stop, "Received signal: {stop}");
    Some(stop)
}

/// The state of phase 2.
struct Running<'a> {
    config: &'a Config,
    child: Child,
    /// When the grace period ends, once a stop signal has been sent.
    kill_at: Option<Instant>,
    killed: bool,
    stopped_for: Option<crate::name::Name>,
}

impl Running<'_> {
    async fn until_exit(
        &mut self,
        signals: &Signals,
        graveyard: &Graveyard,
        watch: &mut Watch,
        deaths: &mut Dependencies,
        reaper: &mut Reaper,
    ) -> ChildStatus {
        let mut watching = !deaths.names().is_empty();
        loop {
            let kill_at = self.kill_at.filter(|_| !self.killed);
            tokio::select! {
                received = signals.recv() => {
                    let received = match received {
                        Ok(received) => received,
                        Err(err) => return self.abandon(err, reaper),
                    };
                    for signal in received {
                        if signal.known() == Some(nix::sys::signal::Signal::SIGCHLD) {
                            if reaper.child_has_exited() {
                                // Leftovers in the group hear it while the
                                // zombie still pins the group id.
                                let _ = self.child.signal_group(self.config.stop_signal);
                            }
                            if let Some(status) = reaper.reap().child {
                                return status;
                            }
                        } else if signal.is_forwarded() {
                            self.forward(signal);
                        }
                    }
                }
                changes = watch.next(), if watching => {
                    match changes {
                        Ok(changes) => self.on_changes(&changes, graveyard, deaths),
                        Err(err) => {
                            tracing::error!("cannot read graveyard events: {err}; deaths can no longer be seen");
                            watching = false;
                        }
                    }
                }
                () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                    tracing::info!("Killing child process...");
                    self.killed = true;
                    if let Err(err) = self.child.signal_group(SignalNumber::KILL) {
                        tracing::error!("cannot kill the child: {err}");
                    }
                }
            }
        }
    }

    fn forward(&mut self, signal: SignalNumber) {
        tracing::info!(signal = %signal, "Received signal: {signal}");
        if let Err(err) = self.child.signal_group(signal) {
            tracing::error!("cannot forward {signal} to the child: {err}");
        }
        if signal.is_stop() {
            self.start_grace_period();
        }
    }

    fn on_changes(&mut self, changes: &[Change], graveyard: &Graveyard, deaths: &mut Dependencies) {
        if self.stopped_for.is_some() {
            return;
        }
        let mut dead = None;
        for change in changes {
            match change {
                Change::Entry(entry) => {
                    if let Some(name) = deaths.matching(entry).cloned() {
                        if deaths.look(graveyard, &name).is_dead() {
                            dead = Some(name);
                            break;
                        }
                    }
                }
                Change::Overflow => {
                    tracing::warn!(
                        "graveyard events were lost; reading every death dependency again"
                    );
                    dead = deaths.first_dead(graveyard);
                    if dead.is_some() {
                        break;
                    }
                }
                Change::Gone => {
                    tracing::error!(
                        "the graveyard {} was removed or moved; deaths can no longer be seen",
                        graveyard.dir().display()
                    );
                }
            }
        }
        if let Some(name) = dead {
            tracing::info!(dependency = %name, "New death: {name}");
            tracing::info!("Terminating child process...");
            if let Err(err) = self.child.signal_group(self.config.stop_signal) {
                tracing::error!("cannot signal the child: {err}");
            }
            self.stopped_for = Some(name);
            self.start_grace_period();
        }
    }

    fn start_grace_period(&mut self) {
        if self.kill_at.is_none() {
            self.kill_at = Some(Instant::now() + self.config.grace_period);
        }
    }

    /// The signal queue broke, so the child's exit can no longer be heard:
    /// end it and wait for it the blocking way, so its status is not lost.
    fn abandon(&mut self, err: io::Error, reaper: &mut Reaper) -> ChildStatus {
        tracing::error!("cannot read signals: {err}; killing the child");
        let _ = self.child.signal_group(SignalNumber::KILL);
        loop {
            if let Some(status) = reaper.reap().child {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Phase 3: stop and reap whatever the child left behind.
async fn clean_up_leftovers(
    config: &Config,
    signals: &Signals,
    child: &Child,
    reaper: &mut Reaper,
) {
    if !reaper.reap().others_remain {
        return;
    }
    tracing::info!("Stopping processes the child left behind...");
    signal_leftovers(child, config.stop_signal);
    if wait_for_no_children(signals, reaper, config.grace_period).await {
        return;
    }
    tracing::info!("Killing processes the child left behind...");
    signal_leftovers(child, SignalNumber::KILL);
    if !wait_for_no_children(signals, reaper, REAP_AFTER_KILL).await {
        tracing::warn!("some processes the child left behind did not exit after SIGKILL");
    }
}

fn signal_leftovers(child: &Child, signal: SignalNumber) {
    let _ = child.signal_group(signal);
    for pid in reaper::adopted_children().unwrap_or_default() {
        let _ = child::signal_process(pid, signal);
    }
}

/// Reaps until kubexit has no children left (true) or `limit` passes (false).
async fn wait_for_no_children(signals: &Signals, reaper: &mut Reaper, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !reaper.reap().others_remain {
            return true;
        }
        tokio::select! {
            received = signals.recv() => {
                if received.is_err() {
                    return false;
                }
            }
            () = sleep_until(deadline) => return !reaper.reap().others_remain,
        }
    }
}

/// kubexit's own tombstone: the one place that writes it.
struct OwnTombstone<'a> {
    graveyard: &'a Graveyard,
    config: &'a Config,
    stone: Tombstone,
    written_death: bool,
}

impl<'a> OwnTombstone<'a> {
    fn new(graveyard: &'a Graveyard, config: &'a Config) -> OwnTombstone<'a> {
        OwnTombstone {
            graveyard,
            config,
            stone: Tombstone::default(),
            written_death: false,
        }
    }

    fn born(&mut self) -> Result<(), crate::graveyard::WriteError> {
        self.stone.born = Some(Timestamp::now());
        tracing::info!(
            "Creating tombstone: {}",
            self.config.tombstone_path().display()
        );
        self.graveyard.write(&self.config.name, &self.stone)
    }

    /// Records the death once; later calls do nothing. A write failure is
    /// logged, not fatal: the exit status still tells the truth.
    fn died(&mut self, outcome: &Outcome) {
        if self.written_death {
            return;
        }
        self.written_death = true;
        if matches!(outcome, Outcome::NeverStarted(_)) {
            // Upstream leaves no Born line for a child that never ran.
            self.stone.born = None;
        }
        self.stone.died = Some(Timestamp::now());
        self.stone.exit_code = Some(outcome.recorded_code());
        self.stone.reason = Some(outcome.to_string());
        tracing::info!(
            "Updating tombstone: {}",
            self.config.tombstone_path().display()
        );
        if let Err(err) = self.graveyard.write(&self.config.name, &self.stone) {
            tracing::error!("{err}");
        }
    }
}

/// The command as one line for the log, quoting words that need it.
fn shell_words(command: &[std::ffi::OsString]) -> String {
    command
        .iter()
        .map(|word| {
            let word = word.to_string_lossy();
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                word.into_owned()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
