//! The reaper: the one place that calls `waitpid`.
//!
//! SIGCHLD is coalesced by the kernel (ten children exiting at once may
//! raise it once), so every wake-up reaps in a loop until nothing is left to
//! collect. Whatever exits is reaped, not just the supervised child: as PID 1
//! kubexit inherits every orphan of its container, and otherwise it registers
//! as a child subreaper so that the grandchildren the child abandons become
//! kubexit's to reap and to stop. Either way, whatever has ended when
//! kubexit exits has been reaped ([`Reaper::release`] reaps last); a child
//! still running then (one kubexit inherited, or one the stop sequence gave
//! up on) passes to kubexit's parent, which reaps it.
//!
//! Not every child of kubexit is the supervised child's doing: a process
//! started before kubexit was exec'd into (`sh -c 'logger & exec kubexit
//! app'`, a shell's process substitution) is kubexit's child from the start.
//! Those are noted, by pid, when the reaper is created and are never
//! counted as leftovers: kubexit reaps them if they end, but does not stop
//! them. Once one is reaped its pid is forgotten, since the kernel may hand
//! it to a process the child leaves behind.
//!
//! **The supervised child is reaped last.** Its pid is also the id of its
//! process group, where leftovers may live on. Once a pid is reaped the
//! kernel may give it to a new process, so signalling the group after that
//! could reach strangers. So the child's exit is only *seen*
//! (`waitid(WNOWAIT)`), its status taken, and its zombie kept until
//! [`Reaper::release`]: while it stands, its pid and group id cannot be
//! reused, and a signal to the group reaches only the group. Meanwhile the
//! other children are reaped one by one, by pid, never with
//! `waitpid(-1)`, which could take the zombie.

use std::collections::HashMap;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::process::table;

/// How the supervised child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    Exited(i32),
    Signaled(i32),
}

impl ChildStatus {
    /// The number recorded in the tombstone and, unless a policy says
    /// otherwise, kubexit's own exit status: the code, or 128+N for signal N
    /// (the shell's convention).
    pub fn code(self) -> i32 {
        match self {
            ChildStatus::Exited(code) => code,
            ChildStatus::Signaled(signal) => 128 + signal,
        }
    }

    fn of(status: WaitStatus) -> Option<(Pid, ChildStatus)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, ChildStatus::Exited(code))),
            WaitStatus::Signaled(pid, signal, _) => {
                Some((pid, ChildStatus::Signaled(signal as i32)))
            }
            _ => None,
        }
    }
}

/// Reaps children; knows which one is the supervised child and which
/// children kubexit inherited.
pub struct Reaper {
    /// The supervised child, until its zombie is released.
    child: Option<Pid>,
    /// Its status, once it has exited (its zombie still held).
    ended: Option<ChildStatus>,
    inherited: Vec<Pid>,
    /// Helper processes of kubexit's own (exec probes), whose status is
    /// handed to whoever started them.
    watched: HashMap<Pid, oneshot::Sender<ChildStatus>>,
    /// The last look found the child's zombie and no other child: nothing
    /// can be left, nor appear (see [`Reaper::reap`]).
    alone: bool,
}

impl Reaper {
    /// Becomes the reaper of orphaned descendants: as PID 1 that is already
    /// the case; otherwise the subreaper flag makes it so.
    pub fn new() -> Reaper {
        if std::process::id() != 1 {
            let _ = nix::sys::prctl::set_child_subreaper(true);
        }
        Reaper {
            child: None,
            ended: None,
            inherited: table::own_children(),
            watched: HashMap::new(),
            alone: false,
        }
    }

    pub fn supervise(&mut self, child: Pid) {
        self.child = Some(child);
    }

    /// The supervised child, until it is released: its pid is its process
    /// group's id, and safe to signal.
    pub fn child(&self) -> Option<Pid> {
        self.child
    }

    /// Hands the exit status of `pid`, one of kubexit's own helper
    /// processes, to the returned receiver when it is reaped. Call it right
    /// after spawning, before the event loop can reap.
    pub fn watch(&mut self, pid: Pid) -> oneshot::Receiver<ChildStatus> {
        let (sender, receiver) = oneshot::channel();
        self.watched.insert(pid, sender);
        self.alone = false;
        receiver
    }

    /// Reaps every child that has exited, without blocking, except the
    /// supervised child, whose exit is only seen; returns its status the
    /// first time it is seen.
    pub fn reap(&mut self) -> Option<ChildStatus> {
        let was_seen = self.ended.is_some();
        if self.alone {
            return None;
        }
        if let (Some(child), None) = (self.child, self.ended) {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            if let Ok(status) = waitid(Id::Pid(child), flags)
                && let Some((_, status)) = ChildStatus::of(status)
            {
                self.ended = Some(status);
            }
        }
        match self.child {
            None => self.reap_any(),
            Some(child) => match table::children(None) {
                Ok(children) => {
                    // The child has ended and is kubexit's only child: its
                    // own children were handed to kubexit (the reaper of
                    // orphans) before it became a zombie, and any living
                    // descendant would be one of them or below one. None
                    // is left, and none can appear but kubexit's own
                    // helpers, which `watch` says.
                    self.alone = self.ended.is_some() && children == [child];
                    for pid in children.into_iter().filter(|pid| *pid != child) {
                        if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                            self.collected(status);
                        }
                    }
                }
                // Without the kernel's list of children, the zombie cannot
                // be kept apart: the child is released with the rest.
                Err(_) => {
                    if self.ended.is_some() {
                        self.child = None;
                    }
                    self.reap_any();
                }
            },
        }
        if was_seen { None } else { self.ended }
    }

    /// Reaps the supervised child's zombie: the last thing kubexit does
    /// with it. From here on its group id means nothing.
    pub fn release(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = waitpid(child, None);
        }
        self.reap_any();
    }

    fn reap_any(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if let Some((pid, code)) = ChildStatus::of(status)
                        && Some(pid) == self.child
                    {
                        self.child = None;
                        self.ended.get_or_insert(code);
                    }
                    self.collected(status);
                }
                Err(Errno::EINTR) => continue,
                // ECHILD: nobody is left.
                Err(_) => break,
            }
        }
    }

    fn collected(&mut self, status: WaitStatus) {
        let Some((pid, code)) = ChildStatus::of(status) else {
            return;
        };
        // Reaped, its pid is free for a new process, which may be one the
        // child leaves behind: it must not pass for the one inherited.
        self.inherited.retain(|inherited| *inherited != pid);
        if let Some(sender) = self.watched.remove(&pid) {
            let _ = sender.send(code);
        }
    }

    /// The children of kubexit that stop sequences concern: the supervised
    /// child while it lives, and every process it left behind that kubexit
    /// adopted; neither inherited processes nor kubexit's own helpers.
    pub fn stoppable(&self) -> Vec<Pid> {
        let mut found = table::own_children();
        found.retain(|pid| {
            !self.inherited.contains(pid)
                && !self.watched.contains_key(pid)
                && (Some(*pid) != self.child || self.ended.is_none())
        });
        found
    }

    /// Whether anything the child left behind is still alive (zombies not
    /// yet reaped count until the next [`Reaper::reap`]).
    pub fn has_leftovers(&self) -> bool {
        !self.alone && self.stoppable().iter().any(|pid| Some(*pid) != self.child)
    }
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper::new()
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;

    #[test]
    fn signal_deaths_map_to_128_plus_n() {
        assert_eq!(ChildStatus::Exited(3).code(), 3);
        assert_eq!(ChildStatus::Signaled(15).code(), 143);
        assert_eq!(ChildStatus::Signaled(9).code(), 137);
    }

    /// A reaper as [`Reaper::new`] makes one, but without the subreaper
    /// flag or a look at the test's own children.
    fn reaper_inheriting(inherited: Vec<Pid>) -> Reaper {
        Reaper {
            child: None,
            ended: None,
            inherited,
            watched: HashMap::new(),
            alone: false,
        }
    }

    #[test]
    fn an_inherited_process_once_reaped_leaves_its_pid_to_whoever_gets_it_next() {
        let logger = Pid::from_raw(4242);
        let mut reaper = reaper_inheriting(vec![logger, Pid::from_raw(4243)]);
        reaper.collected(WaitStatus::Exited(logger, 0));
        assert_eq!(reaper.inherited, [Pid::from_raw(4243)]);
        // A stop is no reaping: the pid stays the inherited process's.
        reaper.collected(WaitStatus::Stopped(Pid::from_raw(4243), Signal::SIGSTOP));
        assert_eq!(reaper.inherited, [Pid::from_raw(4243)]);
    }
}
