//! The supervisor: one event loop from start to outcome.
//!
//! Everything that can happen to kubexit arrives here, in one place and one
//! order: signals (including SIGCHLD, the news that a process ended),
//! changes to the dependencies (through the one dependency view), readiness
//! probes, and timers. Between events kubexit sleeps. What the loop does on
//! an event is its own short work (system calls on the graveyard, on /proc
//! and on the child's group); whatever may wait on the world (a name
//! lookup, a probe's connection or file, a Kubernetes watch, a quit
//! endpoint) runs beside it and is heard as an event, so no event waits
//! behind another. The graveyard's own files are read and written on the
//! loop, and processes are started on it (the child, an `exec:` probe's
//! command: `posix_spawn` returns once the new process has executed its
//! program): on a filesystem that hangs (a hard NFS mount whose server has
//! gone), kubexit waits as every process using it does. While the child
//! runs and only the kernel can wake the loop (no timer runs, no readiness
//! is judged, no other task is alive), the loop sleeps *at rest*: in
//! `poll(2)` on the signal queue and the graveyard's watch themselves
//! rather than in the runtime, and graveyard news is read and acted on as
//! soon as `poll` returns. The reaction to a death is then the least a
//! supervisor can do, plus that one `poll`. News of no concern (a
//! sibling's temporary file, say) is read and dropped, and the loop stays
//! at rest; a signal is handed to the runtime, which finds it waiting.
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
//!    is written before the child is started: a child is never started
//!    before its tombstone is written.
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
//!    waiting, and the other users of a shared sidecar judge by it); then,
//!    together, the quit endpoints of sidecars nobody wraps are asked (those
//!    that are this kubexit's to ask, the last one out of the processes
//!    sharing them, after waiting at most the quit timeout for those of
//!    `KUBEXIT_QUIT_AFTER` that have said nothing yet: see `quit::sharing`),
//!    and whatever the child left behind is stopped by the same sequence,
//!    with the same deadline if one was running; the child's zombie is
//!    reaped last.
//!
//! Phases 2 and 3 are one loop ([`Supervision::turn`]): only its end
//! differs (the child's exit; nothing left behind alive, or the stop
//! sequence giving up). When kubexit exits, every process that ended
//! under it has been reaped, and nothing the child left behind is alive,
//! with one exception: a leftover that SIGKILL has not ended 5 s after the
//! sweep (stuck in the kernel, or beyond kubexit's permission to signal) is
//! named in the log and given up on (`tests/suite/processes.rs`,
//! `a_leftover_that_outlives_sigkill_is_named_and_given_up_on`). Processes
//! kubexit inherited before it began (`sh -c 'logger & exec kubexit app'`)
//! are not the child's: they are reaped if they end, and never stopped
//! (`children_kubexit_inherited_are_not_stopped_as_leftovers`). Either may
//! still run when kubexit exits: the kernel hands them to kubexit's parent,
//! which reaps them when they end; as PID 1, kubexit's exit ends its PID
//! namespace, and the kernel kills them.
//!
//! Stopping belongs to [`stop`]: its signals, SIGKILL and every moment of
//! it; the loop asks it when to wake and tells it what came. The
//! supervisor decides *what happened*; [`outcome`] decides what that means
//! for the exit status. Its own tombstone is written in one place,
//! [`record`].

pub mod outcome;
pub mod record;
pub mod stop;

use std::ffi::OsString;
use std::io;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
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
use crate::quit::sharing::{self, Users};
use crate::readiness::{Readiness, ReadinessEvent};
use crate::supervisor::outcome::{Listed, NeverStarted, Outcome};
use crate::supervisor::record::Record;
use crate::supervisor::stop::Stop;

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
        record: Record::new(&graveyard, &config.name, &config.quit),
        reaper: Reaper::new(),
        stop: Stop::new(config.stop_signal, config.grace_period),
        view: Dependencies::open(
            &graveyard,
            &[
                (&config.death_deps, Role::Death),
                (Births::in_graveyard(config), Role::Birth),
                (&config.stop_after, Role::StopAfter),
            ],
            config.restart_policy,
        ),
        deaths_seen: Vec::new(),
        restarts_seen: Vec::new(),
        stopped_for: Vec::new(),
        hold: None,
        terminal: None,
        deaf: false,
    };
    let outcome = supervision.run().await;
    // Dependents are waiting: the death is recorded first.
    supervision
        .record
        .died(&outcome, outcome.exit_status(config.stopped_exit_code));
    tokio::join!(
        quit_sidecars(config, &graveyard),
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
    /// The death dependencies seen dead and to be restarted in place (and
    /// said so), until they live again.
    restarts_seen: Vec<Name>,
    /// The death dependencies whose deaths made kubexit stop the child.
    stopped_for: Vec<Name>,
    /// A stop signal from outside, held for the processes of `stop-after`.
    hold: Option<Hold>,
    /// The terminal, once the child has been given it.
    terminal: Option<Terminal>,
    /// The signal queue broke: it is read no more, and SIGCHLD is not
    /// heard (see [`Supervision::abandon`]).
    deaf: bool,
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
        let restarting = self.view.restarting(Role::Death);
        for (name, status) in &restarting {
            if !self.restarts_seen.contains(name) {
                let ended = status
                    .map(|s| format!(" with status {s}"))
                    .unwrap_or_default();
                tracing::info!(
                    dependency = %name,
                    "{name} ended{ended}, and the kubelet starts it again (restartPolicy {}): \
                     not a death for good, the child keeps running",
                    self.config.restart_policy
                );
                self.restarts_seen.push(name.clone());
            }
        }
        self.restarts_seen
            .retain(|seen| restarting.iter().any(|(name, _)| name == seen));
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
        if let Some(dead) = self.deaths_that_stop() {
            // Died between the first look and the watch.
            self.stop_for(dead);
        }
        loop {
            if let Some(status) = self.turn(Some(&mut *readiness)).await {
                return status;
            }
        }
    }

    /// One turn of the event loop, the same while the child runs
    /// (`readiness` is its) and after it (`None`): waits for the next
    /// event and acts on it. Signals throughout; graveyard news,
    /// readiness and a held stop signal while the child runs; and whatever
    /// the stop sequence asks to be woken for. The child's status, the
    /// first time its exit is seen.
    async fn turn(&mut self, mut readiness: Option<&mut Readiness>) -> Option<ChildStatus> {
        let child_runs = readiness.is_some();
        let stopping = self.stop.is_stopping();
        let held_until = self.hold.as_ref().map(|hold| hold.until);
        if readiness.as_ref().is_some_and(|r| r.is_ready())
            && !stopping
            && held_until.is_none()
            && let Some(learnt) = self.at_rest()
        {
            self.take_in(learnt, stopping);
            return None;
        }
        // A hold matters only while the child runs.
        let held_until = held_until.filter(|_| child_runs);
        let wake = self.stop.wake_at();
        tokio::select! {
            received = self.signals.recv(), if !self.deaf => match received {
                Ok(received) => return self.hear(received, child_runs),
                Err(err) => self.abandon(err, child_runs),
            },
            learnt = self.view.changed(), if child_runs => self.take_in(learnt, stopping),
            event = readiness_event(readiness.as_deref_mut()) => match event {
                ReadinessEvent::Due => {
                    if let Some(readiness) = readiness {
                        readiness.start_attempt(&mut self.reaper);
                    }
                }
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
            () = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                // What ended since the last look is reaped first: the
                // child's exit ends its phase, and a leftover reaped is
                // not looked for.
                if let Some(status) = self.reaper.reap() {
                    return Some(status);
                }
                self.stop.wake(&self.reaper);
            }
        }
        None
    }

    /// Acts on signals received: SIGCHLD reaps (the child's status, the
    /// first time its exit is seen) and lets the stop sequence look for
    /// newcomers; signals from outside go on to the child's group.
    fn hear(&mut self, received: Vec<Received>, child_runs: bool) -> Option<ChildStatus> {
        for r in received.into_iter().filter(|r| !r.is_own()) {
            if r.signal.known() == Some(Signal::SIGCHLD) {
                if let Some(status) = self.reaper.reap() {
                    return Some(status);
                }
                self.stop.catch_up(&self.reaper);
            } else if r.signal.is_forwarded() {
                if child_runs {
                    tracing::info!(signal = %r.signal, "Received signal: {}", r.signal);
                    self.pass_on(r.signal);
                } else {
                    self.stop.forward(r.signal, &self.reaper);
                }
            }
        }
        None
    }

    /// Acts on what the view learnt.
    fn take_in(&mut self, learnt: Learnt, stopping: bool) {
        if learnt == Learnt::Recreated {
            self.record.restore();
        }
        if !stopping && let Some(dead) = self.deaths_that_stop() {
            self.stop_for(dead);
            return;
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

    /// The signal queue broke, so no SIGCHLD can be heard any more: the
    /// queue is read no more, and the stop sequence's looks reap instead.
    /// While the child runs, it is killed (the sweep's looks then see its
    /// exit, so its status is not lost); after it, the leftovers are
    /// stopped by the sequence's clock alone.
    fn abandon(&mut self, err: io::Error, child_runs: bool) {
        self.deaf = true;
        if child_runs {
            tracing::error!("cannot read signals: {err}; killing the child");
            self.stop.kill(&self.reaper);
        } else {
            tracing::error!("cannot read signals: {err}");
        }
    }

    /// Phase 3: stop and reap whatever the child left behind, within the
    /// stop's deadline (or until the stop sequence gives up on it), then
    /// reap the child's zombie. Nothing to stop for a child that never
    /// started.
    async fn stop_leftovers(&mut self) {
        self.reaper.reap();
        if self.reaper.has_leftovers() {
            if !self.stop.is_stopping() {
                tracing::info!("Stopping processes the child left behind...");
            }
            self.stop.begin_leftovers(&self.reaper);
            while !self.stop.has_given_up() && self.reaper.has_leftovers() {
                self.turn(None).await;
            }
        }
        self.reaper.release();
    }
}

/// Phase 3's quit: the endpoints that are this kubexit's to ask (it is the
/// last one out of those who share them), asked once its death is recorded.
async fn quit_sidecars(config: &Config, graveyard: &Graveyard) {
    if config.quit.is_empty() {
        return;
    }
    let users = Users {
        graveyard,
        me: &config.name,
        after: &config.quit_after,
        restarts: config.restart_policy,
    };
    let mine = sharing::mine(&users, &config.quit, config.quit_timeout).await;
    quit::quit_all(&mine, config.quit_timeout).await;
}

/// The next readiness event, while the child runs; pends forever after.
async fn readiness_event(readiness: Option<&mut Readiness>) -> ReadinessEvent {
    match readiness {
        Some(readiness) => readiness.next_event().await,
        None => std::future::pending().await,
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
