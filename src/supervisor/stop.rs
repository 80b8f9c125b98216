//! The stop sequence: the one owner of stopping. It sends the stop signals
//! and SIGKILL, and keeps every moment of a stop: the first look, the looks
//! for newcomers, the deadline, and the give-up. The supervisor's loop only
//! asks it when to wake next ([`Stop::wake_at`], one instant or none),
//! wakes it then ([`Stop::wake`]), and tells it of every SIGCHLD
//! ([`Stop::catch_up`]) and every signal from outside ([`Stop::forward`]).
//!
//! Stopping means the child and everything it started: its process group,
//! and every process descended from the child or adopted by kubexit along
//! the way (the processes the [`Reaper`] calls stoppable, and their
//! descendants), but never the processes kubexit inherited before it began,
//! nor its own helpers. One sequence serves every reason to stop (a death
//! dependency died, the child left processes behind when it exited):
//!
//! 1. **The stop signal, once to each process.** The child's group gets it
//!    in one `kill(-pgid)`, which the kernel delivers atomically with
//!    respect to forks in progress, before any look at /proc, with the
//!    moment marked ([`Mark`]); then kubexit gives way: it yields its CPU,
//!    so that a child woken on the same CPU handles the signal first, and
//!    lowers its own priority by [`GIVE_WAY_BY`] nice levels (never its
//!    child's), so that other supervisors sharing the CPU make their own
//!    reactions before kubexit goes on with its bookkeeping. In front of
//!    that `kill`, the sequence itself reads the clock twice (through the
//!    vDSO, no system call) and marks the moment with one `pread`; it
//!    allocates nothing. Every other stoppable process gets the signal at
//!    the first look, [`FIRST_LOOK`] later (or at the next SIGCHLD): a
//!    child that ends promptly, with nothing left behind, spares kubexit
//!    the walk of /proc altogether (the reaper sees that nothing is left).
//!    At that and every later look, a member of the group that was there
//!    at the moment counts as told, and one that appeared since (forked by
//!    a handler of the signal) is told. Each process is remembered by pid
//!    *and* start time, so none is told twice, and each is signalled as the
//!    process it was seen to be: through a pidfd, checked against the start
//!    time, so that a pid the kernel has handed to a stranger since the
//!    look is not hit (where the kernel has no pidfds, a narrow race stays:
//!    see [`child::signal_process`]). The group id is safe to signal
//!    because the reaper keeps the child's zombie until the sequence is
//!    over. The mark can misjudge in two ways, both named in [`Mark`]: a
//!    process forked between the mark and the `kill(-pgid)` is taken for a
//!    newcomer and gets the signal twice (a window as narrow as a system
//!    call), and within one clock tick tens of thousands of forks could
//!    move the pids so far round that a newcomer passes for one told.
//! 2. **Newcomers when they appear.** A process that appears after the
//!    stop signal (forked by a process that ignored it, or adopted when its
//!    parent ended) gets it when kubexit next looks: at every SIGCHLD and
//!    every [`CATCH_UP_EVERY`] while stopping.
//! 3. **One deadline**, counted from the first stop signal, whatever asked
//!    for it; when it passes, one SIGKILL sweep (the group, then every
//!    stoppable process), and from then on newcomers get SIGKILL too.
//! 4. **The give-up.** The child is waited for until it ends, however long
//!    that takes: its status is the outcome (a child that SIGKILL does not
//!    end, stuck in the kernel or beyond kubexit's permission to signal,
//!    keeps kubexit waiting: `tests/suite/processes.rs`,
//!    `a_child_that_sigkill_cannot_end_is_waited_for_past_the_give_up`).
//!    What the child left behind is waited for [`GIVE_UP_AFTER_KILL`]
//!    after the sweep (or after the child's exit, if that came later); then
//!    kubexit names in its log the processes still alive, and the sequence
//!    is over: kubexit exits without them (`tests/suite/processes.rs`,
//!    `a_leftover_that_outlives_sigkill_is_named_and_given_up_on`).
//!
//! Signals from outside are forwarded to the child's group as they come
//! ([`Stop::forward`]): that is the sender's will, not kubexit's sequence.
//! A forwarded stop signal starts the deadline, and a forwarded copy of the
//! configured stop signal counts as that group having been told.

use std::collections::HashSet;
use std::time::Duration;

use nix::libc;
use tokio::time::Instant;

use crate::duration::GoDuration;
use crate::process::child;
use crate::process::reaper::Reaper;
use crate::process::signals::SignalNumber;
use crate::process::table::{self, Mark, Moments, Process};

/// How many nice levels kubexit lowers its own priority by once it has
/// sent the stop signal: what is left for it to do (log, record `Died`,
/// reap, exit) is bookkeeping, and on a CPU it shares with other
/// supervisors, a fan-out where one death stops many, their reactions
/// should come first. Ten levels leave it about a tenth of a CPU against
/// one busy process of default priority, and the deadline's SIGKILL stays
/// on time when the child keeps every CPU busy (`tests/suite/stopping.rs`). A
/// priority is only ever lowered, so no privilege is needed, and a kubexit
/// started at a lower priority still lowers its own from there.
pub const GIVE_WAY_BY: i32 = 10;

/// How often newcomers are looked for while stopping.
pub const CATCH_UP_EVERY: Duration = Duration::from_millis(100);

/// How long after the group's stop signal the other stoppable processes
/// are looked for, unless a SIGCHLD comes first.
pub const FIRST_LOOK: Duration = Duration::from_millis(10);

/// How long after the SIGKILL sweep (or after the child's exit, if that
/// came later) kubexit waits for what the child left behind to end, before
/// it gives up on it: a process stuck in the kernel, or one kubexit may
/// not signal, cannot be hurried.
pub const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Who has been told what.
#[derive(Default)]
struct Told {
    /// The child's group got this signal in one `kill(-pgid)`, at this
    /// moment: its members then count as told.
    group: Option<Mark>,
    processes: HashSet<Process>,
}

/// The state of the one stop sequence of a supervision.
pub struct Stop {
    signal: SignalNumber,
    grace: Duration,
    /// The one deadline, from the first stop signal on; kept after the
    /// SIGKILL sweep, so that no later stop signal starts another.
    deadline: Option<Instant>,
    /// kubexit's own sequence has begun (not only a forwarded signal).
    begun: bool,
    killed: bool,
    /// The child has exited; what is stopped is what it left behind.
    leftovers: bool,
    /// When newcomers are next looked for: the first look, then every
    /// [`CATCH_UP_EVERY`], once kubexit's own sequence or the sweep has
    /// begun.
    next_look: Option<Instant>,
    /// When kubexit gives up on the leftovers still alive.
    give_up: Option<Instant>,
    given_up: bool,
    stopped: Told,
    swept: Told,
    moments: Moments,
}

impl Stop {
    pub fn new(signal: SignalNumber, grace: Duration) -> Stop {
        Stop {
            signal,
            grace,
            deadline: None,
            begun: false,
            killed: false,
            leftovers: false,
            next_look: None,
            give_up: None,
            given_up: false,
            stopped: Told::default(),
            swept: Told::default(),
            moments: Moments::open(),
        }
    }

    /// Whether a stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.deadline.is_some()
    }

    /// Whether kubexit has given up on the leftovers still alive.
    pub fn has_given_up(&self) -> bool {
        self.given_up
    }

    /// When the sequence next has something to do, for [`Stop::wake`]:
    /// the SIGKILL sweep, a look for newcomers, or the give-up. `None`
    /// while nothing is due but what signals bring.
    pub fn wake_at(&self) -> Option<Instant> {
        let sweep = self.deadline.filter(|_| !self.killed);
        [sweep, self.next_look, self.give_up]
            .into_iter()
            .flatten()
            .min()
    }

    /// The moment [`Stop::wake_at`] named has come: does what is due.
    pub fn wake(&mut self, reaper: &Reaper) {
        let now = Instant::now();
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.give_up) {
            self.give_up_on_leftovers(reaper);
        } else if due(self.deadline) && !self.killed {
            if self.leftovers {
                tracing::info!("Killing processes the child left behind...");
            } else {
                tracing::info!("Killing child process...");
            }
            self.kill(reaper);
        } else if due(self.next_look) {
            self.next_look = Some(now + CATCH_UP_EVERY);
            self.tell(reaper);
        }
    }

    /// kubexit's own decision to stop: the stop signal to the child's group
    /// at once, if not told yet, and the deadline, if not running already.
    /// The other stoppable processes are told at the first look,
    /// [`FIRST_LOOK`] later (or at the next SIGCHLD); when there was no
    /// group to tell, they are told now.
    pub fn begin(&mut self, reaper: &Reaper) {
        let now = self.start();
        if self.tell_group(reaper) {
            self.next_look = Some(now + FIRST_LOOK);
        } else {
            self.tell_others(reaper);
            self.next_look = Some(now + CATCH_UP_EVERY);
        }
    }

    /// kubexit's own decision to stop what the child left behind, once it
    /// has exited: the stop signal to every stoppable process not told yet
    /// at once (there is no child to wait for), and the deadline, if not
    /// running already. After a sweep already made, the give-up counts
    /// from now.
    pub fn begin_leftovers(&mut self, reaper: &Reaper) {
        let now = self.start();
        self.leftovers = true;
        self.tell(reaper);
        self.next_look = Some(now + CATCH_UP_EVERY);
        if self.killed {
            self.give_up = Some(now + GIVE_UP_AFTER_KILL);
        }
    }

    /// The deadline, if not running already; now, which it counts from.
    fn start(&mut self) -> Instant {
        let now = Instant::now();
        self.deadline.get_or_insert(now + self.grace);
        self.begun = true;
        now
    }

    /// A process ended (SIGCHLD): once kubexit's own sequence or the sweep
    /// has begun, processes that appeared since the last look get the
    /// current signal (the stop signal, or SIGKILL after the sweep).
    pub fn catch_up(&mut self, reaper: &Reaper) {
        if self.begun || self.killed {
            self.tell(reaper);
        }
    }

    /// SIGKILL to everyone, once: the deadline has passed, or the child
    /// can no longer be heard (its signal queue broke). From here on,
    /// newcomers get SIGKILL too.
    pub fn kill(&mut self, reaper: &Reaper) {
        let now = Instant::now();
        self.killed = true;
        self.deadline.get_or_insert(now);
        self.tell(reaper);
        self.next_look = Some(now + CATCH_UP_EVERY);
        if self.leftovers {
            self.give_up = Some(now + GIVE_UP_AFTER_KILL);
        }
    }

    /// The leftovers outlived the sweep by [`GIVE_UP_AFTER_KILL`]: they are
    /// named, and the sequence is over.
    fn give_up_on_leftovers(&mut self, reaper: &Reaper) {
        self.given_up = true;
        self.give_up = None;
        self.next_look = None;
        let alive: Vec<String> = table::descendants(&reaper.stoppable())
            .iter()
            .map(|(process, _)| process.pid.to_string())
            .collect();
        tracing::warn!(
            "some processes the child left behind did not exit after SIGKILL; \
             giving up on them after {}: {}",
            GoDuration(GIVE_UP_AFTER_KILL),
            if alive.is_empty() {
                "none is seen alive any more".to_owned()
            } else {
                format!("pid {}", alive.join(", "))
            }
        );
    }

    /// Passes a signal from outside to the child's group.
    pub fn forward(&mut self, signal: SignalNumber, reaper: &Reaper) {
        let Some(group) = reaper.child() else {
            return;
        };
        // Marked only when this forward counts as the group told.
        let counts = signal == self.signal && !self.killed && self.stopped.group.is_none();
        let mark = counts.then(|| self.moments.now());
        if let Err(err) = child::signal_group_of(group, signal) {
            tracing::error!("cannot forward {signal} to the child: {err}");
        }
        if mark.is_some() {
            self.stopped.group = mark;
        }
        if signal.is_stop() {
            self.deadline
                .get_or_insert_with(|| Instant::now() + self.grace);
        }
    }

    fn tell(&mut self, reaper: &Reaper) {
        self.tell_group(reaper);
        self.tell_others(reaper);
    }

    /// The current signal to the child's group, if it has not had it: in
    /// one call, before any look at /proc, since that is the reaction
    /// dependents wait for. The moment is marked just before, so that later
    /// looks tell who was in the group then (and got it) from who appeared
    /// since (forked by a handler of this very signal, say). Then, the first
    /// time, kubexit gives way ([`give_way`]). Whether the group was told
    /// now.
    fn tell_group(&mut self, reaper: &Reaper) -> bool {
        let (signal, told) = self.current();
        let Some(group) = reaper.child() else {
            return false;
        };
        if told.group.is_some() {
            return false;
        }
        let mark = self.moments.now();
        if let Err(err) = child::signal_group_of(group, signal) {
            tracing::error!("cannot send {signal} to the child: {err}");
        }
        let (_, told) = self.current();
        told.group = Some(mark);
        if !self.killed {
            give_way();
        }
        tracing::debug!("sent {signal} to process group {group}");
        true
    }

    /// The current signal to every stoppable process not told yet, each
    /// as the process it was seen to be (see [`child::signal_process`]).
    fn tell_others(&mut self, reaper: &Reaper) {
        let group = reaper.child();
        let (signal, told) = self.current();
        for (process, stat) in table::descendants(&reaper.stoppable()) {
            if !told.processes.insert(process) {
                continue;
            }
            let got_it = told.group.is_some_and(|mark| {
                group.is_some_and(|g| g.as_raw() == stat.pgrp) && !mark.precedes(&process)
            });
            if !got_it {
                let _ = child::signal_process(process, signal);
                tracing::debug!("sent {signal} to process {}", process.pid);
            }
        }
    }

    /// The signal due now, and who has had it.
    fn current(&mut self) -> (SignalNumber, &mut Told) {
        if self.killed {
            (SignalNumber::KILL, &mut self.swept)
        } else {
            (self.signal, &mut self.stopped)
        }
    }
}

/// Yields the CPU, then lowers kubexit's priority by [`GIVE_WAY_BY`], right
/// after the stop signal: on a busy machine the child may have been woken
/// on this CPU, and it goes first (the yield comes before the two calls
/// that change the priority, so that they do not delay it); other
/// supervisors may be waiting for the CPU to make their own reactions.
/// Only kubexit's thread is lowered (Linux keeps a nice level per thread);
/// the child and its group keep theirs. A failure leaves the priority as
/// it was, which is only slower.
fn give_way() {
    // SAFETY: sched_yield and nice take no pointers; nice changes only the
    // calling thread's priority.
    unsafe {
        libc::sched_yield();
        libc::nice(GIVE_WAY_BY);
    }
}
