//! The supervisor: one event loop from start to outcome.
//!
//! Everything that can happen to kubexit arrives here, in one place and one
//! order: signals (including SIGCHLD, the news that a process ended),
//! changes to the dependencies (through the one dependency view), readiness
//! probes, and timers. Between events kubexit sleeps; nothing blocks the
//! loop. While the child runs and only the kernel can wake the loop (no
//! timer runs, no readiness is judged, no other task is alive), the loop
//! sleeps *at rest*: in `poll(2)` on the signal queue and the graveyard's
//! watch themselves rather than in the runtime, and graveyard news is read
//! and acted on as soon as `poll` returns. The reaction to a death is then
//! the least a supervisor can do, plus that one `poll`. News of no concern
//! (a sibling's temporary file, say) is read and dropped, and the loop
//! stays at rest; a signal is handed to the runtime, which finds it
//! waiting.
//!
//! The life of a supervision has three phases:
//!
//! 1. **Before the child.** The dependency view reads every dependency,
//!    judging liveness too, before anything else: a dead (or lost) death
//!    dependency or a stop signal means the child never starts. With birth
//!    dependencies, kubexit then listens (arms the watch, reads again) and
//!    waits, event-driven and bounded by the birth timeout, until each one
//!    is ready; deaths and stop signals keep their meaning during the wait.
//!    With death dependencies alone, it listens only once the child is
//!    started, so that the child does not wait for the watch, and acts on
//!    a death that came in between as the loop begins. The `Born` record
//!    is written before the child is started: a child never runs without
//!    its tombstone.
//! 2. **While the child runs.** Outside signals are forwarded to the
//!    child's process group (never the ones the kernel raised for kubexit's
//!    own writes). The death of a death dependency (any one of them, or,
//!    under the policy `all`, the last of them) begins the stop sequence.
//!    With `stop-after`, a stop signal from outside is held until the named
//!    processes have died, or a bound has passed, or a second one comes:
//!    a sidecar stays up while the main containers drain through it at pod
//!    deletion. The readiness probe runs until it first succeeds, and
//!    `Ready` is recorded.
//! 3. **After the child.** `Died` is written at once (dependents are
//!    waiting); then, together, the quit endpoints of sidecars nobody wraps
//!    are called, and whatever the child left behind is stopped by the same
//!    sequence, with the same deadline if one was running; the child's
//!    zombie is reaped last. kubexit leaves neither orphans nor zombies.
//!
//! Stop signals and the deadline belong to [`stop`]; the supervisor only
//! says when. It decides *what happened*; [`outcome`] decides what that
//! means for the exit status. Its own tombstone is written in one place,
//! [`record`].

pub mod outcome;
pub mod record;
pub mod stop;

use std::ffi::OsString;
use std::io;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use tokio::time::{Instant, sleep_until};

use crate::config::{Config, DeathPolicy};
use crate::dependencies::births::{Births, News};
use crate::dependencies::{Dependencies, Learnt, Role, Verdict};
use crate::duration::GoDuration;
use crate::graveyard::Graveyard;
use crate::graveyard::name::Name;
use crate::process::child::{self, Terminal};
use crate::process::reaper::{ChildStatus, Reaper};
use crate::process::signals::{Received, SignalNumber, Signals};
use crate::quit;
use crate::readiness::{Readiness, ReadinessEvent};
use crate::supervisor::outcome::{Listed, NeverStarted, Outcome};
use crate::supervisor::record::Record;
use crate::supervisor::stop::{CATCH_UP_EVERY, FIRST_LOOK, Stop};

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
        Err(err) => {
            quit::quit_all(&config.quit, config.quit_timeout).await;
            return Outcome::NeverStarted(NeverStarted::Failure(err.to_string()));
        }
    };
    let mut supervision = Supervision {
        config,
        signals,
        record: Record::new(&graveyard, &config.name),
        reaper: Reaper::new(),
        stop: Stop::new(config.stop_signal, config.grace_period),
        view: Dependencies::open(
            &graveyard,
            &[
                (&config.death_deps, Role::Death),
                (Births::in_graveyard(config), Role::Birth),
                (&config.stop_after, Role::StopAfter),
            ],
        ),
        deaths_seen: Vec::new(),
        stopped_for: Vec::new(),
        hold: None,
        terminal: None,
    };
    let outcome = supervision.run().await;
    // Dependents are waiting: the death is recorded first.
    supervision.record.died(&outcome);
    tokio::join!(
        quit::quit_all(&config.quit, config.quit_timeout),
        supervision.stop_leftovers()
    );
    if let Some(terminal) = supervision.terminal {
        terminal.reclaim();
    }
    outcome
}

/// Everything one supervision owns.
struct Supervision<'a> {
    config: &'a Config,
    signals: &'a Signals,
    record: Record,
    reaper: Reaper,
    stop: Stop,
    view: Dependencies,
    /// The death dependencies already seen dead (and said so).
    deaths_seen: Vec<Name>,
    /// The death dependencies whose deaths made kubexit stop the child.
    stopped_for: Vec<Name>,
    /// A stop signal from outside, held for the processes of `stop-after`.
    hold: Option<Hold>,
    /// The terminal, once the child has been given it.
    terminal: Option<Terminal>,
}

/// A stop signal held until the processes of `stop-after` have died.
struct Hold {
    signal: SignalNumber,
    until: Instant,
}

impl Supervision<'_> {
    async fn run(&mut self) -> Outcome {
        if let Some(dead) = self.deaths_that_stop() {
            tracing::info!(
                dependency = %Name::display_list(&dead),
                "Death dependency already dead: {}",
                Listed(&dead)
            );
            return Outcome::NeverStarted(NeverStarted::DependencyDead(dead));
        }
        let pending = self.signals.drain();
        if let Err(outcome) = self.before_child(pending) {
            return outcome;
        }
        let births = Births::wanted(self.config);
        if births {
            self.view.listen();
            if let Err(outcome) = self.await_births().await {
                return outcome;
            }
        }

        let mut readiness = match Readiness::new(
            self.config.ready_probe.as_ref(),
            self.config.ready_period,
            self.config.ready_timeout,
        ) {
            Ok(readiness) => readiness,
            Err(err) => {
                let message = format!("cannot open the notify socket: {err}");
                return Outcome::NeverStarted(NeverStarted::Failure(message));
            }
        };
        if let Err(err) = self.record.born(readiness.is_ready()).await {
            return Outcome::NeverStarted(NeverStarted::Failure(err.to_string()));
        }
        let terminal = Terminal::detect();
        tracing::info!("Starting: {}", shell_words(&self.config.command));
        let child = match child::spawn(&self.config.command, &readiness.child_env(), terminal) {
            Ok(child) => child,
            Err(err) => {
                return Outcome::NeverStarted(NeverStarted::Unstartable {
                    status: err.exit_status(),
                    message: err.to_string(),
                });
            }
        };
        self.terminal = Some(terminal);
        self.reaper.supervise(child.pid());
        if !births {
            // Only now: the child need not wait for the watch (see the
            // dependencies module). A death since the first look is found
            // by this one, and acted on as the loop begins.
            self.view.listen();
        }
        self.note_deaths();

        let status = self.until_exit(&mut readiness).await;
        readiness.abandon();
        self.view.quiet();
        tracing::info!("Child Exited({})", status.code());
        Outcome::Ended {
            status,
            stopped_for: std::mem::take(&mut self.stopped_for),
        }
    }

    /// The deaths that stop the child now, per the death policy: the first
    /// death under `any`, every one under `all` once the last has come.
    fn deaths_that_stop(&self) -> Option<Vec<Name>> {
        let dead = self.view.dead(Role::Death);
        let enough = match self.config.death_policy {
            DeathPolicy::Any => !dead.is_empty(),
            DeathPolicy::All => !dead.is_empty() && dead.len() == self.config.death_deps.len(),
        };
        if !enough {
            None
        } else if self.config.death_policy == DeathPolicy::Any {
            Some(dead[..1].to_vec())
        } else {
            Some(dead)
        }
    }

    /// Says the deaths not said yet, and, under the policy `all`, which are
    /// still awaited (in the log and in the tombstone's `Awaiting`).
    fn note_deaths(&mut self) {
        for dead in self.view.dead(Role::Death) {
            if !self.deaths_seen.contains(&dead) {
                tracing::info!(dependency = %dead, "New death: {dead}");
                self.deaths_seen.push(dead);
            }
        }
        if self.config.death_policy == DeathPolicy::All && self.config.death_deps.len() > 1 {
            let awaited = self.view.alive(Role::Death);
            if !awaited.is_empty() && !self.deaths_seen.is_empty() {
                tracing::info!(
                    "Still awaiting the deaths of: {}",
                    Name::display_list(&awaited)
                );
            }
            if self.hold.is_none() {
                let awaiting =
                    (!awaited.is_empty()).then(|| format!("the deaths of {}", Listed(&awaited)));
                self.record.awaiting(awaiting);
            }
        }
    }

    /// Handles signals received before the child exists: a stop signal
    /// ends everything; others have nobody to go to.
    fn before_child(&mut self, received: io::Result<Vec<Received>>) -> Result<(), Outcome> {
        let received = received.map_err(|err| {
            Outcome::NeverStarted(NeverStarted::Failure(format!("cannot read signals: {err}")))
        })?;
        for r in received.into_iter().filter(|r| !r.is_own()) {
            if r.signal.known() == Some(Signal::SIGCHLD) {
                self.reaper.reap();
            } else if r.signal.is_stop() {
                tracing::info!(signal = %r.signal, "Received signal: {}", r.signal);
                return Err(Outcome::NeverStarted(NeverStarted::Signal(r.signal)));
            }
        }
        Ok(())
    }

    /// Phase 1b: waits until every birth dependency is ready.
    async fn await_births(&mut self) -> Result<(), Outcome> {
        let mut births = Births::start(self.config).map_err(|message| {
            tracing::error!("{message}");
            Outcome::NeverStarted(NeverStarted::Failure(message))
        })?;
        let deadline = Instant::now() + self.config.birth_timeout;
        let mut next_report = Instant::now();
        loop {
            match births.verdict(&self.view) {
                Verdict::AllReady => {
                    tracing::info!(
                        "Birth dependencies ready: {}",
                        Name::display_list(&self.config.birth_deps)
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
                received = self.signals.recv() => self.before_child(received)?,
                _ = self.view.changed() => {
                    if let Some(dead) = self.deaths_that_stop() {
                        self.note_deaths();
                        return Err(Outcome::NeverStarted(NeverStarted::DependencyDead(dead)));
                    }
                    self.note_deaths();
                }
                news = births.news() => {
                    if let News::Due(i) = news {
                        births.start_attempt(i, &mut self.reaper);
                    }
                }
                () = sleep_until(next_report) => {
                    tracing::info!("Waiting for birth dependencies: {}", births.report(&self.view));
                    next_report = Instant::now() + BIRTH_REPORT_EVERY;
                }
                () = sleep_until(deadline) => {
                    let report = format!(
                        "birth dependencies not ready after {}: {}",
                        GoDuration(self.config.birth_timeout),
                        births.report(&self.view)
                    );
                    tracing::error!("{report}");
                    return Err(Outcome::NeverStarted(NeverStarted::BirthTimeout(report)));
                }
            }
        }
    }

    /// Phase 2: until the child exits.
    async fn until_exit(&mut self, readiness: &mut Readiness) -> ChildStatus {
        let mut next_catch_up = Instant::now();
        if let Some(dead) = self.deaths_that_stop() {
            // Died between the first look and the watch.
            self.stop_for(dead);
            next_catch_up = Instant::now() + FIRST_LOOK;
        }
        loop {
            let deadline = self.stop.deadline();
            let stopping = self.stop.is_stopping();
            let held_until = self.hold.as_ref().map(|hold| hold.until);
            if !stopping
                && held_until.is_none()
                && readiness.is_ready()
                && let Some(learnt) = self.at_rest()
            {
                if self.take_in(learnt, stopping) {
                    next_catch_up = Instant::now() + FIRST_LOOK;
                }
                continue;
            }
            tokio::select! {
                received = self.signals.recv() => {
                    let received = match received {
                        Ok(received) => received,
                        Err(err) => return self.abandon(err),
                    };
                    for r in received.into_iter().filter(|r| !r.is_own()) {
                        if r.signal.known() == Some(Signal::SIGCHLD) {
                            if let Some(status) = self.reaper.reap() {
                                return status;
                            }
                            self.stop.catch_up(&self.reaper);
                        } else if r.signal.is_forwarded() {
                            tracing::info!(signal = %r.signal, "Received signal: {}", r.signal);
                            self.pass_on(r.signal);
                        }
                    }
                }
                learnt = self.view.changed() => {
                    if self.take_in(learnt, stopping) {
                        next_catch_up = Instant::now() + FIRST_LOOK;
                    }
                }
                event = readiness.next_event() => match event {
                    ReadinessEvent::Due => readiness.start_attempt(&mut self.reaper),
                    ReadinessEvent::Ready => self.record.ready(),
                },
                () = sleep_until(held_until.unwrap_or_else(Instant::now)), if held_until.is_some() => {
                    tracing::warn!(
                        "Stop after: {} still running after {}; passing the stop signal on",
                        Listed(&self.view.alive(Role::StopAfter)),
                        GoDuration(self.config.stop_after_timeout)
                    );
                    self.release_hold();
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    tracing::info!("Killing child process...");
                    self.stop.kill(&self.reaper);
                }
                () = sleep_until(next_catch_up), if stopping => {
                    self.stop.catch_up(&self.reaper);
                    next_catch_up = Instant::now() + CATCH_UP_EVERY;
                }
            }
        }
    }

    /// Acts on what the view learnt. Whether that began the stop: the group
    /// is told, and the first look at the rest waits a moment for the child
    /// to end (see `stop`).
    fn take_in(&mut self, learnt: Learnt, stopping: bool) -> bool {
        if learnt == Learnt::Recreated {
            self.record.restore();
        }
        if !stopping && let Some(dead) = self.deaths_that_stop() {
            self.stop_for(dead);
            return true;
        }
        if !stopping {
            self.note_deaths();
        }
        if self.hold.is_some() && self.view.alive(Role::StopAfter).is_empty() {
            tracing::info!(
                "Stop after: {} died; passing the stop signal on",
                Listed(&self.view.dead(Role::StopAfter))
            );
            self.release_hold();
        }
        false
    }

    /// Waits at rest (see the module's essay); the caller has checked that
    /// no timer and no readiness is due. `None` when the loop may not wait
    /// so (another task is alive, the view polls or owes news), or when a
    /// signal woke it (or `poll` failed): that is the runtime's to hand
    /// over, and the edge-triggered registrations of both descriptors still
    /// hold it. Graveyard news of no concern is read, dropped, and waited
    /// past: nothing the loop checked before waiting has changed.
    fn at_rest(&mut self) -> Option<Learnt> {
        // No task is spawned while the child runs; this keeps it so for
        // any that ever is (a Kubernetes watch ended with the births is
        // aborted, and gone at the runtime's next turn).
        if tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            > 0
        {
            return None;
        }
        loop {
            let view = self.view.fd()?;
            let mut fds = [
                PollFd::new(self.signals.fd(), PollFlags::POLLIN),
                PollFd::new(view, PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) if fds[0].any() == Some(false) && fds[1].any() == Some(true) => {
                    if let Some(learnt) = self.view.changed_now() {
                        return Some(learnt);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                _ => return None,
            }
        }
    }

    /// A death dependency's death (or, under the policy `all`, the last of
    /// them) stops the child.
    fn stop_for(&mut self, dead: Vec<Name>) {
        // The signal first, the log lines after: the reaction is what
        // dependents wait for.
        self.stop.begin(&self.reaper);
        self.hold = None;
        self.note_deaths();
        tracing::info!("Terminating child process...");
        self.stopped_for = dead;
        // Nothing in the graveyard matters any more; in a fan-out, the
        // siblings' own deaths would otherwise wake this kubexit again and
        // again.
        self.view.quiet();
    }

    /// A signal from outside: forwarded, unless it is a stop signal that
    /// `stop-after` holds for processes still alive. A second stop signal
    /// during a hold is passed on at once.
    fn pass_on(&mut self, signal: SignalNumber) {
        if signal.is_stop() {
            if self.hold.take().is_some() {
                tracing::info!("Stop after: a second stop signal; passing it on now");
            } else if !self.stop.is_stopping() {
                let awaited = self.view.alive(Role::StopAfter);
                if !awaited.is_empty() {
                    tracing::info!(
                        "Stop after: holding {signal} until {} {} died (at most {}): \
                         they may still need this process while they stop",
                        Listed(&awaited),
                        if awaited.len() == 1 { "has" } else { "have" },
                        GoDuration(self.config.stop_after_timeout)
                    );
                    self.record.awaiting(Some(format!(
                        "the deaths of {} before stopping",
                        Listed(&awaited)
                    )));
                    self.hold = Some(Hold {
                        signal,
                        until: Instant::now() + self.config.stop_after_timeout,
                    });
                    return;
                }
            }
        }
        self.stop.forward(signal, &self.reaper);
    }

    /// Ends a hold: the held stop signal goes on to the child.
    fn release_hold(&mut self) {
        if let Some(hold) = self.hold.take() {
            self.record.awaiting(None);
            self.stop.forward(hold.signal, &self.reaper);
        }
    }

    /// The signal queue broke, so the child's exit can no longer be heard:
    /// end it and wait for it the blocking way, so its status is not lost.
    fn abandon(&mut self, err: io::Error) -> ChildStatus {
        tracing::error!("cannot read signals: {err}; killing the child");
        self.stop.kill(&self.reaper);
        loop {
            if let Some(status) = self.reaper.reap() {
                return status;
            }
            if let Some(child) = self.reaper.child() {
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
                let _ = waitid(Id::Pid(child), flags);
            }
        }
    }

    /// Phase 3: stop and reap whatever the child left behind, within the
    /// stop's deadline, then reap the child's zombie. Nothing to do for a
    /// child that never started.
    async fn stop_leftovers(&mut self) {
        self.reaper.reap();
        if self.reaper.has_leftovers() {
            if !self.stop.is_stopping() {
                tracing::info!("Stopping processes the child left behind...");
            }
            self.stop.begin_all(&self.reaper);
            self.await_leftovers().await;
        }
        self.reaper.release();
    }

    async fn await_leftovers(&mut self) {
        let mut next_catch_up = Instant::now() + CATCH_UP_EVERY;
        let mut give_up = self
            .stop
            .is_killed()
            .then(|| Instant::now() + REAP_AFTER_KILL);
        while self.reaper.has_leftovers() {
            let deadline = self.stop.deadline();
            tokio::select! {
                received = self.signals.recv() => {
                    let Ok(received) = received else { return };
                    for r in received.into_iter().filter(|r| !r.is_own()) {
                        if r.signal.known() == Some(Signal::SIGCHLD) {
                            self.reaper.reap();
                        } else if r.signal.is_forwarded() {
                            self.stop.forward(r.signal, &self.reaper);
                        }
                    }
                    self.stop.catch_up(&self.reaper);
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    tracing::info!("Killing processes the child left behind...");
                    self.stop.kill(&self.reaper);
                    give_up = Some(Instant::now() + REAP_AFTER_KILL);
                }
                () = sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                    tracing::warn!("some processes the child left behind did not exit after SIGKILL");
                    return;
                }
                () = sleep_until(next_catch_up) => {
                    self.reaper.reap();
                    self.stop.catch_up(&self.reaper);
                    next_catch_up = Instant::now() + CATCH_UP_EVERY;
                }
            }
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
