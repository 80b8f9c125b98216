//! The process table, as far as kubexit needs it: its own children, and the
//! processes descended from them, each known by its pid *and* its start
//! time, so that a pid the kernel has handed to a new process is not taken
//! for the old one. (The pair fails only if a pid comes round again within
//! the clock tick, 10 ms, in which its first holder started: the kernel
//! hands out every other free pid first, tens of thousands of forks in
//! those 10 ms at the smallest `pid_max`.)
//!
//! The kernel lists a task's children in `/proc/PID/task/TID/children`,
//! one small read per thread, which is how kubexit walks its own subtree
//! without reading the whole process table. Where that file is missing
//! (kernels without `CONFIG_PROC_CHILDREN`) or unreadable (a descendant
//! that changed its user), every `/proc/PID/stat` is read instead, once per
//! walk. Zombies are left out: they have ended, and only their parent can
//! do anything about them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::libc;
use nix::unistd::Pid;

use crate::files;

/// A process, as the kernel tells it apart from any other that ever had or
/// will have its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: Pid,
    /// Start time, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

/// A moment in the process table, taken just before a signal is sent to a
/// whole group: afterwards, it tells a process that was there (and got the
/// signal) from one that appeared later (and did not), without a look at
/// the table beforehand, which would delay the signal by a walk of
/// `/proc`.
///
/// A process started after the moment has a later start time; start times
/// count clock ticks (10 ms), so within the moment's own tick the pid
/// decides. `/proc/sys/kernel/ns_last_pid` gives the last pid handed out in
/// kubexit's PID namespace (the child's), read after the clock and before
/// the signal. The kernel hands pids out in increasing order up to
/// `pid_max`, then starts again from the bottom (300), so "later" is
/// counted round that circle: a pid less than half of it ahead of the last
/// one came after the moment, even across the wrap. Three races stay open:
/// a process forked between the read and the signal is taken for a
/// newcomer, and told twice (narrow as a system call); within one tick,
/// forks that move the kernel's next pid by half of `pid_max` or more
/// (forks, plus the pids it skips because they are in use) are misjudged;
/// and without `ns_last_pid` (an unusual /proc), a process started in the
/// moment's tick counts as present, as it does when `pid_max` cannot be
/// read and the pids have wrapped within the tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    tick: u64,
    last_pid: Option<i32>,
    pid_max: Option<i32>,
}

/// Where moments are read: the boot clock (no system call: the vDSO) and
/// `ns_last_pid`, opened once, before any moment is wanted, with the clock's
/// ticks per second and `pid_max`, so that marking one costs a single
/// `pread` on the way to a signal.
pub struct Moments {
    last_pid: Option<File>,
    pid_max: Option<i32>,
    ticks_per_second: u64,
}

impl Moments {
    pub fn open() -> Moments {
        let path = Path::new("/proc/sys/kernel/ns_last_pid");
        // SAFETY: sysconf only reads a constant.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let pid_max = files::read_proc(Path::new("/proc/sys/kernel/pid_max"), 32)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .filter(|max: &i32| *max > 1);
        Moments {
            last_pid: files::open(path, libc::O_RDONLY, 0).ok(),
            pid_max,
            ticks_per_second: u64::try_from(ticks_per_second).unwrap_or(0),
        }
    }

    /// This moment.
    pub fn now(&self) -> Mark {
        let tick = boot_ticks(self.ticks_per_second);
        let last_pid = self.last_pid.as_ref().and_then(|file| {
            let mut text = [0u8; 16];
            let read = file.read_at(&mut text, 0).ok()?;
            std::str::from_utf8(&text[..read]).ok()?.trim().parse().ok()
        });
        Mark {
            tick,
            last_pid,
            pid_max: self.pid_max,
        }
    }
}

impl Mark {
    /// Whether `process` appeared after this moment.
    pub fn precedes(&self, process: &Process) -> bool {
        match process.start.cmp(&self.tick) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self
                .last_pid
                .is_some_and(|last| handed_out_after(last, process.pid.as_raw(), self.pid_max)),
        }
    }
}

/// Whether `pid` was handed out after `last`: ahead of it by less than half
/// the circle of pids, or, without `pid_max`, simply greater.
fn handed_out_after(last: i32, pid: i32, pid_max: Option<i32>) -> bool {
    match pid_max {
        Some(max) => {
            let ahead = (i64::from(pid) - i64::from(last)).rem_euclid(i64::from(max));
            ahead != 0 && ahead < i64::from(max) / 2
        }
        None => pid > last,
    }
}

/// Now, in the unit and from the origin of `/proc/PID/stat`'s start times:
/// clock ticks since boot (`CLOCK_BOOTTIME`, which a time namespace shifts
/// as it shifts those start times).
fn boot_ticks(per_second: u64) -> u64 {
    let mut now = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let read = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_BOOTTIME, &mut now) };
    if read != 0 || per_second == 0 {
        return 0;
    }
    now.tv_sec as u64 * per_second + now.tv_nsec as u64 * per_second / 1_000_000_000
}

/// The fields of `/proc/PID/stat` kubexit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub start: u64,
}

/// Parses `/proc/PID/stat`. The command name in parentheses may contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5) ... starttime (22).
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of `pid`, if it still exists.
pub fn stat(pid: Pid) -> Option<Stat> {
    parse_stat(&files::read_proc(Path::new(&format!("/proc/{pid}/stat")), 512).ok()?)
}

/// The children of `pid` (`None`: of kubexit itself), zombies included,
/// from the per-thread lists.
pub fn children(pid: Option<Pid>) -> io::Result<Vec<Pid>> {
    let dir = match pid {
        None => "/proc/self/task".to_owned(),
        Some(pid) => format!("/proc/{pid}/task"),
    };
    let mut found = Vec::new();
    for task in fs::read_dir(dir)? {
        let task = task?;
        let list = files::read_proc(&task.path().join("children"), 256)?;
        found.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw),
        );
    }
    Ok(found)
}

/// The children of kubexit itself, zombies included. Where the kernel does
/// not list them, the whole table is read.
pub fn own_children() -> Vec<Pid> {
    match children(None) {
        Ok(found) => found,
        Err(_) => {
            let me = std::process::id() as i32;
            whole_table()
                .into_iter()
                .filter(|(_, stat)| stat.ppid == me)
                .map(|(pid, _)| pid)
                .collect()
        }
    }
}

/// `roots` and every living process descended from them, zombies left out.
pub fn descendants(roots: &[Pid]) -> Vec<(Process, Stat)> {
    let mut found: Vec<(Process, Stat)> = Vec::new();
    walk(roots, |pid| {
        let Some(stat) = stat(pid) else { return false };
        if stat.state == 'Z' || found.iter().any(|(p, _)| p.pid == pid) {
            return false;
        }
        let process = Process {
            pid,
            start: stat.start,
        };
        found.push((process, stat));
        true
    });
    found
}

/// Walks down from `roots`, into the children of every process that
/// `enter` takes in.
fn walk(roots: &[Pid], mut enter: impl FnMut(Pid) -> bool) {
    let mut queue: Vec<Pid> = roots.to_vec();
    let mut table: Option<HashMap<i32, Vec<Pid>>> = None;
    while let Some(pid) = queue.pop() {
        if !enter(pid) {
            continue;
        }
        match children(Some(pid)) {
            Ok(kids) => queue.extend(kids),
            Err(_) => {
                let table = table.get_or_insert_with(by_parent);
                queue.extend(table.get(&pid.as_raw()).into_iter().flatten());
            }
        }
    }
}

/// Every process's children, from the whole table.
fn by_parent() -> HashMap<i32, Vec<Pid>> {
    let mut by_parent: HashMap<i32, Vec<Pid>> = HashMap::new();
    for (child, stat) in whole_table() {
        by_parent.entry(stat.ppid).or_default().push(child);
    }
    by_parent
}

/// Every process's stat.
fn whole_table() -> Vec<(Pid, Stat)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let pid = Pid::from_raw(pid);
            Some((pid, stat(pid)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = "42 (a) b) (c) S 7 42 40 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                state: 'S',
                ppid: 7,
                pgrp: 42,
                start: 12345
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn kubexit_sees_its_own_children_and_their_descendants() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let found = loop {
            let found = descendants(&[pid]);
            if found.len() == 2 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(own_children().contains(&pid));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found
                .iter()
                .all(|(p, s)| p.start == s.start && s.state != 'Z')
        );
        for (p, _) in &found {
            let _ = nix::sys::signal::kill(p.pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = child.wait();
    }

    #[test]
    fn a_mark_tells_processes_started_after_it_from_those_before() {
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        };
        let process = |child: &std::process::Child| {
            let pid = Pid::from_raw(child.id() as i32);
            Process {
                pid,
                start: stat(pid).unwrap().start,
            }
        };
        let mut before = spawn();
        let moments = Moments::open();
        let mark = moments.now();
        let mut after = spawn();
        assert!(!mark.precedes(&process(&before)), "{mark:?}");
        assert!(mark.precedes(&process(&after)), "{mark:?}");
        assert!(!moments.now().precedes(&process(&after)));
        for child in [&mut before, &mut after] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn within_the_marks_tick_a_pid_handed_out_after_the_wrap_is_a_newcomer() {
        let mark = Mark {
            tick: 100,
            last_pid: Some(32_760),
            pid_max: Some(32_768),
        };
        let started = |pid, start| Process {
            pid: Pid::from_raw(pid),
            start,
        };
        // After the moment: just above the last pid, or past the wrap.
        assert!(mark.precedes(&started(32_765, 100)));
        assert!(mark.precedes(&started(301, 100)));
        // Before it: the last pid itself and those just below.
        assert!(!mark.precedes(&started(32_760, 100)));
        assert!(!mark.precedes(&started(32_000, 100)));
        // Just after a wrap, the pids from before it are high ones.
        let wrapped = Mark {
            last_pid: Some(310),
            ..mark
        };
        assert!(!wrapped.precedes(&started(32_700, 100)));
        assert!(wrapped.precedes(&started(311, 100)));
        // Other ticks decide by the tick alone.
        assert!(wrapped.precedes(&started(32_700, 101)));
        assert!(!mark.precedes(&started(301, 99)));
    }
}
