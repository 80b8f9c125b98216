//! The reaper: the one place that calls `waitpid`.
//!
//! SIGCHLD is coalesced by the kernel (ten children exiting at once may
//! raise it once), so every wake-up reaps in a loop until nothing is left to
//! collect. Whatever exits is reaped, not just the supervised child: as PID 1
//! kubexit inherits every orphan of its container, and otherwise it registers
//! as a child subreaper so that the grandchildren the child abandons become
//! kubexit's to reap and to stop. Either way, no zombie outlives kubexit.
//!
//! One subtlety is closed here. When the supervised child has exited, its
//! pid is also the id of its process group, where leftovers may live on.
//! Signalling that group after the child is reaped could, in principle, hit
//! an unrelated group that reused the id; so [`Reaper::reap`] looks at the
//! child's exit with `WNOWAIT` first and lets the caller signal the group
//! while the zombie still pins the id, and only then reaps.

use std::fs;
use std::io;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

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
}

/// Reaps children; knows which one is the supervised child.
pub struct Reaper {
    child: Option<Pid>,
}

/// What one round of reaping found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The supervised child's status, if it ended in this round.
    pub child: Option<ChildStatus>,
    /// Whether kubexit still has children (leftovers, adopted orphans).
    pub others_remain: bool,
}

impl Reaper {
    /// Becomes the reaper of orphaned descendants: as PID 1 that is already
    /// the case; otherwise the subreaper flag makes it so.
    pub fn new() -> Reaper {
        if std::process::id() != 1 {
            let _ = nix::sys::prctl::set_child_subreaper(true);
        }
        Reaper { child: None }
    }

    pub fn supervise(&mut self, child: Pid) {
        self.child = Some(child);
    }

    /// Whether the supervised child has exited and awaits reaping; it is not
    /// reaped, so its pid and group id stay reserved (see the module docs).
    pub fn child_has_exited(&self) -> bool {
        let Some(child) = self.child else {
            return false;
        };
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        matches!(
            waitid(Id::Pid(child), flags),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
        )
    }

    /// Reaps every child that has exited, without blocking.
    pub fn reap(&mut self) -> Reaped {
        let mut reaped = Reaped::default();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    reaped.others_remain = true;
                    break;
                }
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.note(&mut reaped, pid, ChildStatus::Exited(code))
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.note(&mut reaped, pid, ChildStatus::Signaled(signal as i32))
                }
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                // ECHILD: nobody is left.
                Err(_) => break,
            }
        }
        reaped
    }

    fn note(&mut self, reaped: &mut Reaped, pid: Pid, status: ChildStatus) {
        if self.child == Some(pid) {
            self.child = None;
            reaped.child = Some(status);
        }
    }
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper::new()
    }
}

/// The pids of kubexit's living children: leftovers of the supervised
/// child that were adopted after their parent died. Read from /proc, where a
/// missing or racing entry is simply skipped.
pub fn adopted_children() -> io::Result<Vec<Pid>> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(me.as_str()) {
            found.push(Pid::from_raw(pid));
        }
    }
    Ok(found)
}

/// The parent pid field of /proc/PID/stat. The command name in parentheses
/// may contain spaces and parentheses, so fields are counted from the last
/// `)`: state, then ppid.
fn parent_of(stat: &str) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_deaths_map_to_128_plus_n() {
        assert_eq!(ChildStatus::Exited(3).code(), 3);
        assert_eq!(ChildStatus::Signaled(15).code(), 143);
        assert_eq!(ChildStatus::Signaled(9).code(), 137);
    }

    #[test]
    fn parent_pid_is_read_after_the_last_parenthesis() {
        assert_eq!(parent_of("42 (sleep) S 7 42 42 0"), Some("7"));
        assert_eq!(parent_of("42 (a) b) (c) R 1 42"), Some("1"));
        assert_eq!(parent_of("garbage"), None);
    }
}
