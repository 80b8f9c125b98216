//! The reaper: the one place that calls `waitpid`.
//!
//! SIGCHLD is coalesced by the kernel (ten children exiting at once may
//! raise it once), so every wake-up reaps in a loop until nothing is left to
//! collect. Whatever exits is reaped, not just the supervised child: as PID 1
//! kubexit inherits every orphan of its container, and otherwise it registers
//! as a child subreaper so that the grandchildren the child abandons become
//! kubexit's to reap and to stop. Either way, no zombie outlives kubexit.
//!
//! Not every child of kubexit is the supervised child's doing: a process
//! started before kubexit was exec'd into (`sh -c 'logger & exec kubexit
//! app'`, a shell's process substitution) is kubexit's child from the start.
//! Those are noted when the reaper is created and are never counted as
//! leftovers: kubexit reaps them if they end, but does not stop them.
//!
//! One subtlety is closed here. When the supervised child has exited, its
//! pid is also the id of its process group, where leftovers may live on.
//! Signalling that group after the child is reaped could, in principle, hit
//! an unrelated group that reused the id; so [`Reaper::reap`] looks at the
//! child's exit with `WNOWAIT` first and lets the caller signal the group
//! while the zombie still pins the id, and only then reaps.

use std::collections::HashMap;
use std::fs;
use std::io;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

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

/// Reaps children; knows which one is the supervised child and which
/// children kubexit inherited.
pub struct Reaper {
    child: Option<Pid>,
    inherited: Vec<Pid>,
    /// Helper processes of kubexit's own (exec probes), whose status is
    /// handed to whoever started them.
    watched: HashMap<Pid, oneshot::Sender<ChildStatus>>,
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
            inherited: children().unwrap_or_default(),
            watched: HashMap::new(),
        }
    }

    pub fn supervise(&mut self, child: Pid) {
        self.child = Some(child);
    }

    /// Hands the exit status of `pid`, one of kubexit's own helper
    /// processes, to the returned receiver when it is reaped. Call it right
    /// after spawning, before the event loop can reap.
    pub fn watch(&mut self, pid: Pid) -> oneshot::Receiver<ChildStatus> {
        let (sender, receiver) = oneshot::channel();
        self.watched.insert(pid, sender);
        receiver
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

    /// Reaps every child that has exited, without blocking, and returns the
    /// supervised child's status if it was among them.
    pub fn reap(&mut self) -> Option<ChildStatus> {
        let mut supervised = None;
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ChildStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, ChildStatus::Signaled(signal as i32))
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                // ECHILD: nobody is left.
                Err(_) => break,
            };
            if self.child == Some(pid) {
                self.child = None;
                supervised = Some(status);
            } else if let Some(sender) = self.watched.remove(&pid) {
                let _ = sender.send(status);
            }
        }
        supervised
    }

    /// The living processes the supervised child left behind and kubexit
    /// adopted: its children minus those it inherited and the child itself.
    pub fn leftovers(&self) -> Vec<Pid> {
        let mut found = children().unwrap_or_default();
        found.retain(|pid| {
            !self.inherited.contains(pid)
                && !self.watched.contains_key(pid)
                && Some(*pid) != self.child
        });
        found
    }
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper::new()
    }
}

/// The pids of kubexit's living (or not yet reaped) children. The kernel
/// lists them per thread in /proc/self/task/TID/children, one small read
/// for a single-threaded kubexit; where that file is missing (kernels
/// without CONFIG_PROC_CHILDREN) every /proc/PID/stat is scanned instead.
fn children() -> io::Result<Vec<Pid>> {
    let mut found = Vec::new();
    let mut listed = false;
    for task in fs::read_dir("/proc/self/task")? {
        let Ok(task) = task else { continue };
        let Ok(list) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        listed = true;
        found.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw),
        );
    }
    if listed {
        return Ok(found);
    }
    let me = std::process::id().to_string();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
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
