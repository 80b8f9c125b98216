//! The supervisor: one event loop from start to outcome.
//!
//! Everything that can happen to kubexit arrives here, in one place and one
//! order: signals (including SIGCHLD, the news that a process ended),
//! changes in the graveyard, readiness probes, and timers. Between events
//! kubexit sleeps; nothing polls.
//!
//! The life of a supervision has three phases:
//!
//! 1. **Before the child.** The graveyard watch (needed only with
//!    dependencies in the graveyard) is armed *first*, then the
//!    dependencies' tombstones are read: a death that happens between the
//!    two is seen by both, one that happened earlier by the scan, so none is
//!    missed. A dead death dependency or a stop signal means the child never
//!    starts. With birth dependencies, kubexit then waits, event-driven and
//!    bounded by the birth timeout, until each one's tombstone says `Ready`;
//!    deaths and stop signals keep their meaning during the wait. The `Born`
//!    record is written before the child is started: a child never runs
//!    without its tombstone.
//! 2. **While the child runs.** Forwarded signals go to the child's process
//!    group; a stop signal (received, or sent because a death dependency
//!    died) starts the grace period, after which the group gets SIGKILL. The
//!    readiness probe runs until it first succeeds, and `Ready` is recorded.
//! 3. **After the child.** `Died` is written at once (dependents are
//!    waiting); then whatever the child left behind, in its group or adopted
//!    by kubexit, gets the stop signal and, after the grace period, SIGKILL,
//!    so kubexit leaves neither orphans nor zombies.
//!
//! The supervisor decides *what happened*; the outcome module decides what
//! that means for the exit status. Its own tombstone is written in one
//! place, [`OwnTombstone`].

pub mod outcome;

use std::ffi::OsString;
use std::io;
use std::time::Duration;

use jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::time::{Instant, sleep_until};

use crate::config::Config;
use crate::dependencies::Dependencies;
use crate::dependencies::births::{Births, Verdict};
use crate::duration::GoDuration;
use crate::graveyard::liveness::{LifeLock, Liveness};
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::Tombstone;
use crate::graveyard::{Change, Graveyard, Watch, WriteError};
use crate::process::child::{self, Child, Terminal};
use crate::process::reaper::{ChildStatus, Reaper};
use crate::process::signals::{SignalNumber, Signals};
use crate::readiness::{self, Readiness};
use crate::supervisor::outcome::{NeverStarted, Outcome};

/// How long kubexit waits for SIGKILLed leftovers to be reaped before it
/// gives up on them (a process stuck in the kernel cannot be hurried).
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// How often the birth wait says what it is still waiting for.
const BIRTH_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Runs one supervision to its outcome. `signals` must have been opened
/// before anything else, so that no signal is missed.
pub async fn supervise(config: &Config, signals: &Signals) -> Outcome {
    let graveyard = match Graveyard::open(&config.graveyard) {
        Ok(graveyard) => graveyard,
        Err(err) => return Outcome::NeverStarted(NeverStarted::Failure(err.to_string())),
    };
    let mut own = OwnTombstone::new(&graveyard, &config.name);
    let mut reaper = Reaper::new();
    let outcome = run(config, signals, &graveyard, &mut own, &mut reaper).await;
    own.died(&outcome);
    outcome
}

/// The sources of events shared by every phase.
struct Senses<'a> {
    signals: &'a Signals,
    graveyard: &'a Graveyard,
    /// None when kubexit has no dependency in the graveyard to watch (an
    /// inotify instance costs milliseconds to close at exit), or once the
    /// watch has failed.
    watch: Option<Watch>,
    deaths: Dependencies,
    liveness: Liveness,
}

/// What one graveyard or signal event means before the child starts.
enum Interrupt {
    Stop(Outcome),
    Continue,
}

impl Senses<'_> {
    /// Waits for the next batch of graveyard changes; pends forever without
    /// a watch.
    async fn changes(&mut self) -> Vec<Change> {
        let Some(watch) = &mut self.watch else {
            return std::future::pending().await;
        };
        match watch.next().await {
            Ok(mut changes) => {
                if changes.contains(&Change::Gone) {
                    self.rewatch();
                    // Whatever was written before the new watch was armed
                    // is read again, as after lost events.
                    changes.push(Change::Tick);
                }
                changes
            }
            Err(err) => {
                tracing::error!(
                    "cannot read graveyard events: {err}; deaths can no longer be seen"
                );
                self.watch = None;
                Vec::new()
            }
        }
    }

    /// Stops listening to the graveyard: once the child is stopping or has
    /// ended, no change there matters.
    fn quiet(&mut self) {
        if let Some(watch) = &mut self.watch {
            watch.quiet();
        }
    }

    /// Tells the liveness followers which dependencies' tombstones changed.
    /// Called once a death among the changes has been acted on: each poke
    /// wakes a thread, and on a small machine that thread would otherwise
    /// take the CPU the stop signal is waiting for.
    fn follow_liveness(&self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Entry(entry) => self.liveness.changed(entry),
                Change::Overflow | Change::Tick => self.liveness.changed_all(),
                Change::Gone => {}
            }
        }
    }

    /// The graveyard was removed or moved away: create it again and watch
    /// the new directory, so that deaths stay visible and kubexit's own
    /// record can be written again.
    fn rewatch(&mut self) {
        let dir = self.graveyard.dir().display();
        tracing::warn!("the graveyard {dir} was removed or moved away; creating it again");
        match self
            .graveyard
            .recreate()
            .and_then(|()| self.graveyard.watch())
        {
            Ok(watch) => self.watch = Some(watch),
            Err(err) => {
                tracing::error!("{err}; deaths can no longer be seen");
                self.watch = None;
            }
        }
    }

    /// The death dependency among `changes` that has died, if any.
    fn death_among(&mut self, changes: &[Change]) -> Option<Name> {
        for change in changes {
            match change {
                Change::Entry(entry) => {
                    if let Some(name) = self.deaths.matching(entry).cloned()
                        && self.deaths.look(self.graveyard, &name).is_dead()
                    {
                        return Some(name);
                    }
                }
                Change::Overflow | Change::Tick => {
                    if *change == Change::Overflow {
                        tracing::warn!(
                            "graveyard events were lost; reading every dependency again"
                        );
                    }
                    if let Some(name) = self.deaths.first_dead(self.graveyard) {
                        return Some(name);
                    }
                }
                Change::Gone => {}
            }
        }
        None
    }

    /// Handles signals received before the child exists: a stop signal
    /// ends everything; others have nobody to go to.
    fn before_child(
        &self,
        received: io::Result<Vec<SignalNumber>>,
        reaper: &mut Reaper,
    ) -> Interrupt {
        let received = match received {
            Ok(received) => received,
            Err(err) => {
                return Interrupt::Stop(Outcome::NeverStarted(NeverStarted::Failure(format!(
                    "cannot read signals: {err}"
                ))));
            }
        };
        for signal in received {
            if signal.known() == Some(Signal::SIGCHLD) {
                reaper.reap();
            } else if signal.is_stop() {
                tracing::info!(signal = %signal, "Received signal: {signal}");
                return Interrupt::Stop(Outcome::NeverStarted(NeverStarted::Signal(signal)));
            }
        }
        Interrupt::Continue
    }
}

async fn run(
    config: &Config,
    signals: &Signals,
    graveyard: &Graveyard,
    own: &mut OwnTombstone<'_>,
    reaper: &mut Reaper,
) -> Outcome {
    // Dependencies in the graveyard are watched; birth dependencies of the
    // Kubernetes API mode are the API's business.
    // The dependencies that live in the graveyard: death dependencies, and
    // birth dependencies unless the Kubernetes API judges them.
    let mut in_graveyard = config.death_deps.clone();
    if config.pod.is_none() {
        in_graveyard.extend(config.birth_deps.iter().cloned());
    }
    let watch = if in_graveyard.is_empty() {
        None
    } else {
        tracing::info!("Watching graveyard...");
        match graveyard.watch() {
            Ok(watch) => Some(watch),
            Err(err) => return Outcome::NeverStarted(NeverStarted::Failure(err.to_string())),
        }
    };
    let mut senses = Senses {
        signals,
        graveyard,
        watch,
        deaths: Dependencies::new(&config.death_deps),
        liveness: Liveness::follow(graveyard, &in_graveyard),
    };
    if let Some(dead) = senses.deaths.first_dead(graveyard) {
        tracing::info!(dependency = %dead, "Death dependency already dead: {dead}");
        return Outcome::NeverStarted(NeverStarted::DependencyDead(dead));
    }
    if let Interrupt::Stop(outcome) = senses.before_child(signals.drain(), reaper) {
        return outcome;
    }
    if !config.birth_deps.is_empty()
        && let Err(outcome) = await_births(config, &mut senses, reaper).await
    {
        return outcome;
    }

    let mut readiness = match Readiness::new(
        config.ready_probe.as_ref(),
        config.ready_period,
        config.ready_timeout,
    ) {
        Ok(readiness) => readiness,
        Err(err) => {
            let message = format!("cannot open the notify socket: {err}");
            return Outcome::NeverStarted(NeverStarted::Failure(message));
        }
    };
    if let Err(err) = own.born(readiness.is_ready()) {
        return Outcome::NeverStarted(NeverStarted::Failure(err.to_string()));
    }
    let terminal = Terminal::detect();
    tracing::info!("Starting: {}", shell_words(&config.command));
    let child = match child::spawn(&config.command, &readiness.child_env(), terminal) {
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
        .until_exit(&mut senses, &mut readiness, own, reaper)
        .await;
    readiness.abandon();
    senses.quiet();
    tracing::info!("Child Exited({})", status.code());
    let outcome = Outcome::Ended {
        status,
        stopped_for: running.stopped_for.take(),
    };
    // Dependents are waiting: the death is recorded before leftovers are
    // cleaned up.
    own.died(&outcome);
    clean_up_leftovers(config, signals, &running.child, reaper).await;
    terminal.reclaim();
    outcome
}

/// Phase 1b: waits until every birth dependency is ready.
async fn await_births(
    config: &Config,
    senses: &mut Senses<'_>,
    reaper: &mut Reaper,
) -> Result<(), Outcome> {
    let graveyard = senses.graveyard;
    let mut births = match Births::start(config, graveyard) {
        Ok(births) => births,
        Err(message) => {
            tracing::error!("{message}");
            return Err(Outcome::NeverStarted(NeverStarted::Failure(message)));
        }
    };
    let deadline = Instant::now() + config.birth_timeout;
    let mut next_report = Instant::now();
    loop {
        match births.verdict() {
            Verdict::AllReady => {
                tracing::info!(
                    "Birth dependencies ready: {}",
                    Name::display_list(&config.birth_deps)
                );
                return Ok(());
            }
            Verdict::Died(name) => {
                tracing::info!(dependency = %name, "Birth dependency died: {name}");
                return Err(Outcome::NeverStarted(NeverStarted::BirthDependencyDied(
                    name,
                )));
            }
            Verdict::Waiting => {}
        }
        tokio::select! {
            received = senses.signals.recv() => {
                if let Interrupt::Stop(outcome) = senses.before_child(received, reaper) {
                    return Err(outcome);
                }
            }
            changes = senses.changes() => {
                if let Some(dead) = senses.death_among(&changes) {
                    tracing::info!(dependency = %dead, "New death: {dead}");
                    return Err(Outcome::NeverStarted(NeverStarted::DependencyDead(dead)));
                }
                senses.follow_liveness(&changes);
                births.graveyard_changed(graveyard, &changes);
            }
            () = births.news() => {}
            () = sleep_until(next_report) => {
                tracing::info!("Waiting for birth dependencies: {}", births.report(graveyard));
                next_report = Instant::now() + BIRTH_REPORT_EVERY;
            }
            () = sleep_until(deadline) => {
                let report = format!(
                    "birth dependencies not ready after {}: {}",
                    GoDuration(config.birth_timeout),
                    births.report(graveyard)
                );
                tracing::error!("{report}");
                return Err(Outcome::NeverStarted(NeverStarted::BirthTimeout(report)));
            }
        }
    }
}

/// The state of phase 2.
struct Running<'a> {
    config: &'a Config,
    child: Child,
    /// When the grace period ends, once a stop signal has been sent.
    kill_at: Option<Instant>,
    killed: bool,
    stopped_for: Option<Name>,
}

impl Running<'_> {
    async fn until_exit(
        &mut self,
        senses: &mut Senses<'_>,
        readiness: &mut Readiness,
        own: &mut OwnTombstone<'_>,
        reaper: &mut Reaper,
    ) -> ChildStatus {
        loop {
            let kill_at = self.kill_at.filter(|_| !self.killed);
            tokio::select! {
                received = senses.signals.recv() => {
                    let received = match received {
                        Ok(received) => received,
                        Err(err) => return self.abandon(err, reaper),
                    };
                    for signal in received {
                        if signal.known() == Some(Signal::SIGCHLD) {
                            if reaper.child_has_exited() {
                                // Leftovers in the group hear it while the
                                // zombie still pins the group id.
                                let _ = self.child.signal_group(self.config.stop_signal);
                            }
                            if let Some(status) = reaper.reap() {
                                return status;
                            }
                        } else if signal.is_forwarded() {
                            self.forward(signal);
                        }
                    }
                }
                changes = senses.changes() => {
                    if changes.contains(&Change::Gone) {
                        own.restore();
                    }
                    if self.stopped_for.is_none()
                        && let Some(dead) = senses.death_among(&changes)
                    {
                        self.stop_for(dead);
                        // Nothing in the graveyard matters any more; in a
                        // fan-out, the siblings' own deaths would otherwise
                        // wake this kubexit again and again.
                        senses.quiet();
                        continue;
                    }
                    senses.follow_liveness(&changes);
                }
                event = readiness.next_event() => match event {
                    readiness::Event::Due => readiness.start_attempt(reaper),
                    readiness::Event::Ready => own.ready(),
                },
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

    fn stop_for(&mut self, dead: Name) {
        // The signal first, the log lines after: the reaction latency is
        // what dependents wait for (see BENCHMARKS.md).
        let sent = self.child.signal_group(self.config.stop_signal);
        tracing::info!(dependency = %dead, "New death: {dead}");
        tracing::info!("Terminating child process...");
        if let Err(err) = sent {
            tracing::error!("cannot signal the child: {err}");
        }
        self.stopped_for = Some(dead);
        self.start_grace_period();
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
            if let Some(status) = reaper.reap() {
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
    reaper.reap();
    if reaper.leftovers().is_empty() {
        return;
    }
    tracing::info!("Stopping processes the child left behind...");
    signal_leftovers(child, reaper, config.stop_signal);
    if wait_for_leftovers(signals, reaper, config.grace_period).await {
        return;
    }
    tracing::info!("Killing processes the child left behind...");
    signal_leftovers(child, reaper, SignalNumber::KILL);
    if !wait_for_leftovers(signals, reaper, REAP_AFTER_KILL).await {
        tracing::warn!("some processes the child left behind did not exit after SIGKILL");
    }
}

fn signal_leftovers(child: &Child, reaper: &Reaper, signal: SignalNumber) {
    let _ = child.signal_group(signal);
    for pid in reaper.leftovers() {
        let _ = child::signal_process(pid, signal);
    }
}

/// Reaps until no leftover is alive (true) or `limit` passes (false).
async fn wait_for_leftovers(signals: &Signals, reaper: &mut Reaper, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reaper.reap();
        if reaper.leftovers().is_empty() {
            return true;
        }
        tokio::select! {
            received = signals.recv() => {
                if received.is_err() {
                    return false;
                }
            }
            () = sleep_until(deadline) => {
                reaper.reap();
                return reaper.leftovers().is_empty();
            }
        }
    }
}

/// kubexit's own tombstone: the one place that writes it.
struct OwnTombstone<'a> {
    graveyard: &'a Graveyard,
    name: &'a Name,
    stone: Tombstone,
    written_death: bool,
    /// Held from before `Born` is written until kubexit ends.
    life: Option<LifeLock>,
}

impl<'a> OwnTombstone<'a> {
    fn new(graveyard: &'a Graveyard, name: &'a Name) -> OwnTombstone<'a> {
        OwnTombstone {
            graveyard,
            name,
            stone: Tombstone::default(),
            written_death: false,
            life: None,
        }
    }

    /// Records the birth (and readiness, when no probe is needed). Failure
    /// is fatal: a child never runs without its tombstone.
    fn born(&mut self, ready: bool) -> Result<(), WriteError> {
        let now = Timestamp::now();
        // The lock first: dependents may only judge a Born that a holder
        // backs (see the liveness module).
        match LifeLock::hold(self.graveyard, self.name, now) {
            Ok(lock) => self.life = Some(lock),
            Err(err) => tracing::warn!(
                "cannot hold the liveness lock: {err}; if kubexit is killed, dependents will not learn of it"
            ),
        }
        self.stone.born = Some(now);
        self.stone.ready = ready.then_some(now);
        tracing::info!(
            "Creating tombstone: {}",
            self.graveyard.path_of(self.name).display()
        );
        self.graveyard.write(self.name, &self.stone)
    }

    /// Writes the current record again, after the graveyard was recreated.
    fn restore(&mut self) {
        if let Err(err) = self.graveyard.write(self.name, &self.stone) {
            tracing::error!("{err}");
        }
    }

    /// Records readiness; a failed write is logged (dependents will time
    /// out and say so), the child keeps running.
    fn ready(&mut self) {
        if self.written_death {
            return;
        }
        self.stone.ready = Some(Timestamp::now());
        tracing::info!("Ready: {}", self.name);
        if let Err(err) = self.graveyard.write(self.name, &self.stone) {
            tracing::error!("{err}");
        }
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
            self.stone.ready = None;
        }
        self.stone.died = Some(Timestamp::now());
        self.stone.exit_code = Some(outcome.recorded_code());
        self.stone.reason = Some(outcome.to_string());
        tracing::info!(
            "Updating tombstone: {}",
            self.graveyard.path_of(self.name).display()
        );
        if let Err(err) = self.graveyard.write(self.name, &self.stone) {
            tracing::error!("{err}");
        }
    }
}

/// The command as one line for the log, quoting words that need it.
fn shell_words(command: &[OsString]) -> String {
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
