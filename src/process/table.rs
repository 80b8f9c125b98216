//! The process table, as far as kubexit needs it: its own children, and the
//! processes descended from them, each known by its pid *and* its start
//! time, so that a pid the kernel has handed to a new process is never
//! taken for the old one.
//!
//! The kernel lists a task's children in `/proc/PID/task/TID/children`,
//! one small read per thread, which is how kubexit walks its own subtree
//! without reading the whole process table. Where that file is missing
//! (kernels without `CONFIG_PROC_CHILDREN`) or unreadable (a descendant
//! that changed its user), every `/proc/PID/stat` is read instead, once per
//! walk. Zombies are left out: they have ended, and only their parent can
//! do anything about them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;

use nix::unistd::Pid;

/// A process, as the kernel tells it apart from any other that ever had or
/// will have its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: Pid,
    /// Start time, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
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
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
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
        let list = fs::read_to_string(task.path().join("children"))?;
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

/// The pids of `roots` and their descendants, zombies included, from the
/// kernel's lists of children alone: the quickest look at a subtree, for a
/// snapshot taken just before signalling it.
pub fn subtree(roots: &[Pid]) -> HashSet<Pid> {
    let mut found = HashSet::new();
    let mut queue: Vec<Pid> = roots.to_vec();
    let mut table: Option<HashMap<i32, Vec<Pid>>> = None;
    while let Some(pid) = queue.pop() {
        if !found.insert(pid) {
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
    found
}

/// `roots` and every living process descended from them, zombies left out.
pub fn descendants(roots: &[Pid]) -> Vec<(Process, Stat)> {
    let mut found: Vec<(Process, Stat)> = Vec::new();
    let mut queue: Vec<Pid> = roots.to_vec();
    let mut table: Option<HashMap<i32, Vec<Pid>>> = None;
    while let Some(pid) = queue.pop() {
        let Some(stat) = stat(pid) else { continue };
        if stat.state == 'Z' || found.iter().any(|(p, _)| p.pid == pid) {
            continue;
        }
        found.push((
            Process {
                pid,
                start: stat.start,
            },
            stat,
        ));
        match children(Some(pid)) {
            Ok(kids) => queue.extend(kids),
            Err(_) => {
                let table = table.get_or_insert_with(by_parent);
                queue.extend(table.get(&pid.as_raw()).into_iter().flatten());
            }
        }
    }
    found
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
}
