//! Reaction latency: from a death recorded to the dependents' children
//! receiving the stop signal.
//!
//! One run: a fresh graveyard; N kubexits, each with the death dependency
//! `main`, each supervising a victim; wait until every victim runs (kubexit
//! arms its watch before it starts its child, so a running victim means a
//! watching kubexit) and everything sleeps; then the harness writes `main`'s
//! tombstone with `Died` to a temporary file beside the graveyard, reads
//! CLOCK_MONOTONIC, and renames the file into the graveyard. Each victim
//! reads the same clock when its `sigtimedwait` returns. A dependent's
//! latency is the difference; a run's figure is its worst dependent.
//!
//! The temporary file is written outside the graveyard (on the same
//! filesystem, so the rename stays atomic): the rename is then the only
//! event the kubexits see, and what is timed is their reaction to it alone.
//!
//! Once stopped, a dependent's child exits and its kubexit records its own
//! death, and that write wakes every other kubexit of the graveyard while
//! some may not have reacted yet: with N dependents, N² wake-ups compete
//! with the reactions for the CPUs. That is part of a real fan-out, so it is
//! measured by default; `--linger` keeps the children alive until all have
//! been timed, which leaves the reactions alone, to show what that
//! competition costs.
//!
//! Every kubexit holds one inotify instance. When a fan-out would pass the
//! per-user limit (`fs.inotify.max_user_instances`), the harness raises it
//! for the measurement if it may (root) and restores it afterwards; if it
//! may not, the kubexits beyond the limit fall back to reading the
//! graveyard every 100 ms, and the result says how many did.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::Bench;
use crate::procs::{Fleet, Member, RunDir, Setup, log_tail};
use crate::stats::human_ns;
use crate::victim;

/// The dependency every measured kubexit waits on.
const DEPENDENCY: &str = "main";
/// What kubexit logs when it falls back to polling.
const POLLING_WARNING: &str = "fs.inotify.max_user_instances";

/// The latencies of one fan-out over its runs.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub dependents: usize,
    /// Each run's worst dependent, ns.
    pub worst: Vec<u64>,
    /// Every dependent of every run, ns.
    pub all: Vec<u64>,
    /// What was done about the inotify limit, if anything.
    pub limit_note: Option<String>,
    /// Dependents that fell back to polling, over all runs.
    pub polling: usize,
}

/// Measures `runs` runs of `dependents` kubexits stopping on one death.
pub fn measure(
    bench: &Bench,
    dependents: usize,
    runs: usize,
    linger: bool,
) -> Result<Fanout, String> {
    let limit = InotifyLimit::ensure(dependents);
    let mut result = Fanout {
        dependents,
        worst: Vec::with_capacity(runs),
        all: Vec::with_capacity(runs * dependents),
        limit_note: limit.note.clone(),
        polling: 0,
    };
    if let Some(note) = &limit.note {
        eprintln!("  {note}");
    }
    for run in 0..runs {
        let (latencies, polling) = one_run(bench, dependents, run, linger)
            .map_err(|e| format!("fan-out {dependents}, run {}: {e}", run + 1))?;
        let worst = latencies.iter().copied().max().unwrap_or(0);
        if dependents > 1 || (run + 1) % 100 == 0 || run + 1 == runs {
            eprintln!(
                "  {dependents} dependent(s), run {}/{runs}: worst {}",
                run + 1,
                human_ns(worst as f64)
            );
        }
        result.worst.push(worst);
        result.all.extend(latencies);
        result.polling += polling;
    }
    drop(limit);
    Ok(result)
}

/// One run: the latency of each dependent, and how many polled.
fn one_run(
    bench: &Bench,
    dependents: usize,
    run: usize,
    linger: bool,
) -> Result<(Vec<u64>, usize), String> {
    let dir = RunDir::new(bench.scratch, &format!("fanout-{dependents}-run-{run}"))?;
    let mut fleet = Fleet::default();
    let setup = Setup {
        linger,
        ..dir.setup(bench.kubexit, bench.harness)
    };
    for i in 0..dependents {
        fleet.spawn(&setup, &format!("dependent-{i}"), DEPENDENCY)?;
    }
    let start_limit = Duration::from_secs(30) + Duration::from_millis(100) * dependents as u32;
    fleet.wait_ready(start_limit)?;
    fleet.wait_quiet(Duration::from_secs(2));

    let guard = fleet.guard(bench.watchdog, Duration::from_secs(30));
    let died = dir.bury(DEPENDENCY)?;
    if linger {
        fleet.wait_reports(Duration::from_secs(30))?;
        fleet.release();
    }
    let reaped = fleet.reap(guard)?;

    let mut polling = 0;
    for (index, ended) in reaped {
        let member = &fleet.members[index];
        if ended.code != 0 {
            return Err(format!(
                "kubexit {} exited {} (expected 0, stopped for a death): {}",
                member.name,
                ended.code,
                log_tail(&member.log)
            ));
        }
        if fs::read_to_string(&member.log).is_ok_and(|log| log.contains(POLLING_WARNING)) {
            polling += 1;
        }
    }
    let latencies = fleet
        .members
        .iter()
        .map(|member| signalled_after(member, died))
        .collect::<Result<Vec<u64>, String>>()?;
    Ok((latencies, polling))
}

/// How long after `died` the member's child received SIGTERM.
fn signalled_after(member: &Member, died: u64) -> Result<u64, String> {
    let (signalled, signal) = victim::read_report(&member.report).ok_or_else(|| {
        format!(
            "the child of {} was never signalled: {}",
            member.name,
            log_tail(&member.log)
        )
    })?;
    if signal != nix::libc::SIGTERM {
        return Err(format!("the child of {} got signal {signal}", member.name));
    }
    signalled.checked_sub(died).ok_or_else(|| {
        format!(
            "the child of {} was signalled before the death was written",
            member.name
        )
    })
}

/// The inotify instance limit, raised for a measurement and restored after.
struct InotifyLimit {
    /// The value to write back on drop, if it was changed.
    restore: Option<u64>,
    note: Option<String>,
}

const MAX_USER_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

impl InotifyLimit {
    /// Makes room for `dependents` more instances if it can.
    fn ensure(dependents: usize) -> InotifyLimit {
        let mut limit = InotifyLimit {
            restore: None,
            note: None,
        };
        let Some(current) = read_number(Path::new(MAX_USER_INSTANCES)) else {
            return limit;
        };
        let in_use = inotify_instances_of_this_user();
        // A margin for the rest of the machine (editors, the harness's own
        // tools) starting instances during the run.
        let needed = (in_use + dependents + 16) as u64;
        if current >= needed {
            return limit;
        }
        let raised = needed.next_multiple_of(256);
        match fs::write(MAX_USER_INSTANCES, raised.to_string()) {
            Ok(()) => {
                limit.restore = Some(current);
                limit.note = Some(format!(
                    "raised fs.inotify.max_user_instances from {current} to {raised} for \
                     {dependents} dependents ({in_use} instances already in use), restored after"
                ));
            }
            Err(err) => {
                limit.note = Some(format!(
                    "fs.inotify.max_user_instances is {current} ({in_use} in use) and cannot be \
                     raised ({err}): kubexits beyond it poll the graveyard every 100 ms"
                ));
            }
        }
        limit
    }
}

impl Drop for InotifyLimit {
    fn drop(&mut self) {
        if let Some(value) = self.restore
            && let Err(err) = fs::write(MAX_USER_INSTANCES, value.to_string())
        {
            eprintln!("warning: cannot restore {MAX_USER_INSTANCES} to {value}: {err}");
        }
    }
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Counts the inotify instances held by processes of this user, by their
/// descriptors in /proc.
fn inotify_instances_of_this_user() -> usize {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { nix::libc::geteuid() };
    let Ok(processes) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut count = 0;
    for process in processes.flatten() {
        let path = process.path();
        let is_ours = fs::metadata(&path).is_ok_and(|m| m.uid() == uid);
        if !is_ours || !is_pid_dir(&path) {
            continue;
        }
        let Ok(fds) = fs::read_dir(path.join("fd")) else {
            continue;
        };
        count += fds
            .flatten()
            .filter(|fd| {
                fs::read_link(fd.path())
                    .is_ok_and(|target| target.as_os_str() == "anon_inode:inotify")
            })
            .count();
    }
    count
}

fn is_pid_dir(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}
