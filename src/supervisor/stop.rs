//! The stop sequence: the one place that sends stop signals and keeps the
//! deadline.
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
//!    reactions before kubexit goes on with its bookkeeping. Every other
//!    stoppable process gets it by pid at the first look, [`FIRST_LOOK`]
//!    later (or at the next SIGCHLD): a child that ends promptly, with
//!    nothing left behind, spares kubexit the walk of /proc altogether (the
//!    reaper sees that nothing is left).
//!    At that and every later look, a member of the group that was there
//!    at the moment counts as told, and one that appeared since (forked by
//!    a handler of the signal) is told. Each process is remembered by pid
//!    *and* start time, so none is told twice and a reused pid is never
//!    taken for a process already told, nor signalled in its place (see
//!    [`child::signal_process`]). The group id is safe to signal
//!    because the reaper keeps the child's zombie until the sequence is
//!    over. (One race stays open, narrow as a system call: a process forked
//!    between the mark and the `kill(-pgid)` is taken for a newcomer and
//!    gets the signal twice.)
//! 2. **Newcomers when they appear.** A process that appears after the
//!    stop signal (forked by a process that ignored it, or adopted when its
//!    parent ended) gets it when kubexit next looks: at every SIGCHLD and
//!    every [`CATCH_UP_EVERY`] while stopping.
//! 3. **One deadline**, counted from the first stop signal, whatever asked
//!    for it; when it passes, one SIGKILL sweep (the group, then every
//!    stoppable process), and from then on newcomers get SIGKILL too. A
//!    stop never takes longer than the grace period plus reaping.
//!
//! Signals from outside are forwarded to the child's group as they come
//! ([`Stop::forward`]): that is the sender's will, not kubexit's sequence.
//! A forwarded stop signal starts the deadline, and a forwarded copy of the
//! configured stop signal counts as that group having been told.

use std::collections::HashSet;
use std::time::Duration;

use nix::libc;
use tokio::time::Instant;

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
/// on time when the child keeps every CPU busy (`tests/stopping.rs`). A
/// priority is only ever lowered, so no privilege is needed, and a kubexit
/// started at a lower priority still lowers its own from there.
pub const GIVE_WAY_BY: i32 = 10;

/// How often newcomers are looked for while stopping.
pub const CATCH_UP_EVERY: Duration = Duration::from_millis(100);

/// How long after the group's stop signal the other stoppable processes
/// are looked for, unless a SIGCHLD comes first.
pub const FIRST_LOOK: Duration = Duration::from_millis(10);

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
    deadline: Option<Instant>,
    /// kubexit's own sequence has begun (not only a forwarded signal).
    begun: bool,
    killed: bool,
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
            stopped: Told::default(),
            swept: Told::default(),
            moments: Moments::open(),
        }
    }

    /// Whether a stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.deadline.is_some()
    }

    /// Whether the SIGKILL sweep has been made.
    pub fn is_killed(&self) -> bool {
        self.killed
    }

    /// When the SIGKILL sweep is due; `None` before a stop and after it.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| !self.killed)
    }

    /// kubexit's own decision to stop: the stop signal to the child's group
    /// at once, if not told yet, and the deadline, if not running already.
    /// The other stoppable processes are told at the next
    /// [`Stop::catch_up`], which the caller makes within [`FIRST_LOOK`];
    /// when there was no group to tell, they are told now.
    pub fn begin(&mut self, reaper: &Reaper) {
        self.start();
        if !self.tell_group(reaper) {
            self.tell_others(reaper);
        }
    }

    /// kubexit's own decision to stop what the child left behind, once it
    /// has exited: the stop signal to every stoppable process not told yet
    /// at once (there is no child to wait for), and the deadline, if not
    /// running already.
    pub fn begin_all(&mut self, reaper: &Reaper) {
        self.start();
        self.tell(reaper);
    }

    fn start(&mut self) {
        self.deadline
            .get_or_insert_with(|| Instant::now() + self.grace);
        self.begun = true;
    }

    /// Once kubexit's own sequence has begun: processes that appeared since
    /// the last look get the current signal (the stop signal, or SIGKILL
    /// after the sweep).
    pub fn catch_up(&mut self, reaper: &Reaper) {
        if self.begun || self.killed {
            self.tell(reaper);
        }
    }

    /// The deadline has passed: SIGKILL to everyone, once.
    pub fn kill(&mut self, reaper: &Reaper) {
        self.killed = true;
        self.tell(reaper);
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
