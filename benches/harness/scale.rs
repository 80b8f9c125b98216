//! Scale: 1,000 kubexits in one graveyard, each with a death dependency on
//! one process, beyond any one pod's usual size. All must be stopped, none
//! missed; what bounds the fleet is measured and said.
//!
//! Each kubexit holds one inotify instance and a few watches, charged to
//! its user on the node (not to its pod): `fs.inotify.max_user_instances`
//! (128 by default) bounds how many can watch at once under one uid. Past
//! it, kubexit reads the graveyard every 100 ms instead, with a warning.
//! So the measurement is made twice when it can be:
//!
//! 1. **inotify for all**: the limits raised (as root) to fit the fleet,
//!    restored after. Every kubexit watches.
//! 2. **the limits as found**: nothing raised. The kubexits beyond the
//!    limit poll; they must still all stop, later.
//!
//! For each: the time from the first spawn to every child running (every
//! birth wakes every kubexit already watching), the inotify instances and
//! watches the fleet holds (from /proc/PID/fdinfo), how many polled, the
//! CPU time and wake-ups of the whole fleet over an idle second (polling
//! is not free), then the death: how many children got SIGTERM, the
//! latency of those that watched and of those that polled, and how many
//! kubexits exited 0.
//!
//! As root, the fleet runs as a user of its own (see
//! `limits::fleet_user`), so that its instances are charged to that user
//! alone: the run at the limits as found exhausts that user's instances,
//! never those of the other programs on the machine.
//!
//! It is kubexit's measurement alone: the floor and the Go kubexit have no
//! fallback, and 1,000 Go kubexits would need more memory than the machine
//! can spare. It is left out of the smoke run (it takes a minute or more).

use std::fs;
use std::time::{Duration, Instant};

use crate::Bench;
use crate::limits::{self, MAX_USER_INSTANCES, MAX_USER_WATCHES, Need, Raised, Usage};
use crate::procs::{self, Fleet, log_tail};
use crate::subjects::Subject;
use crate::victim;

const DEPENDENCY: &str = "main";
/// What kubexit logs when it falls back to polling.
const POLLING_WARNING: &str = "fs.inotify.max_user_instances";

/// One fleet of kubexits in one graveyard, from birth to death.
#[derive(Debug, Clone)]
pub struct ScaleRun {
    /// `inotify for all`, `limits as found`.
    pub label: &'static str,
    pub dependents: usize,
    /// The limits in force during the run.
    pub max_user_instances: Option<u64>,
    pub max_user_watches: Option<u64>,
    /// What this user held before the fleet started.
    pub held_before: Usage,
    /// What the fleet held once every child ran.
    pub held: Usage,
    /// From just before the first spawn to every child running, ns.
    pub started_ns: u64,
    /// Kubexits that fell back to polling.
    pub polling: usize,
    /// The whole fleet's on-CPU time over the idle window, ns.
    pub idle_cpu_ns: u64,
    /// The whole fleet's voluntary context switches over the window.
    pub idle_wakeups: u64,
    pub idle_window: Duration,
    /// Children that received SIGTERM.
    pub stopped: usize,
    /// Kubexits that exited 0.
    pub exited_zero: usize,
    /// Latencies of the children of watching kubexits, ns.
    pub watching_ns: Vec<u64>,
    /// Latencies of the children of polling kubexits, ns.
    pub polling_ns: Vec<u64>,
    /// Anything that went wrong: missed children, killed kubexits.
    pub problems: Vec<String>,
}

impl ScaleRun {
    pub fn missed(&self) -> usize {
        self.dependents - self.stopped
    }
}

#[derive(Debug, Clone)]
pub struct Scale {
    pub runs: Vec<ScaleRun>,
    pub notes: Vec<String>,
}

/// Runs the fleet with the limits raised, then with the limits as found
/// when they do not fit it.
pub fn measure(
    bench: &Bench,
    kubexit: &Subject,
    dependents: usize,
    idle_window: Duration,
) -> Result<Scale, String> {
    let mut scale = Scale {
        runs: Vec::new(),
        notes: Vec::new(),
    };
    let uid = bench.uid;
    let need = Need {
        uid: uid.unwrap_or_else(limits::own_uid),
        instances: dependents,
        watches: 2 * dependents,
        why: format!("{dependents} kubexits"),
    };
    {
        let raised = Raised::ensure(&need);
        scale.notes.extend(raised.notes.iter().cloned());
        if raised.enough {
            eprintln!("scale: {dependents} kubexits, inotify for all");
            scale.runs.push(one_run(
                bench,
                kubexit,
                "inotify for all",
                dependents,
                idle_window,
            )?);
        } else {
            scale
                .notes
                .push("the limits could not be raised, so no run had inotify for all".to_owned());
        }
    }
    let free = limits::read_number(MAX_USER_INSTANCES.as_ref())
        .map(|limit| limit.saturating_sub(limits::user_usage(need.uid).instances as u64));
    match free {
        Some(free) if (free as usize) < dependents => {
            eprintln!("scale: {dependents} kubexits, limits as found ({free} instances free)");
            scale.runs.push(one_run(
                bench,
                kubexit,
                "limits as found",
                dependents,
                idle_window,
            )?);
        }
        _ => scale.notes.push(format!(
            "{} already allows {dependents} more instances: no fallback to polling to show",
            limits::sysctl_name(MAX_USER_INSTANCES)
        )),
    }
    Ok(scale)
}

fn one_run(
    bench: &Bench,
    kubexit: &Subject,
    label: &'static str,
    dependents: usize,
    idle_window: Duration,
) -> Result<ScaleRun, String> {
    let dir = bench.run_dir(&format!("scale-{}", label.replace(' ', "-")))?;
    let setup = bench.setup(&dir, kubexit);
    let held_before = limits::user_usage(bench.uid.unwrap_or_else(limits::own_uid));
    let mut fleet = Fleet::default();
    let began = Instant::now();
    for i in 0..dependents {
        fleet.spawn(&setup, &format!("dependent-{i:04}"), DEPENDENCY)?;
    }
    fleet.wait_ready(Duration::from_secs(60) + Duration::from_millis(100) * dependents as u32)?;
    let started_ns = began.elapsed().as_nanos() as u64;
    fleet.wait_quiet(Duration::from_secs(10));

    let mut held = Usage::default();
    for member in &fleet.members {
        held += limits::process_usage(member.pid);
    }
    let (cpu_before, wakeups_before) = fleet_cpu(&fleet);
    // The window is the measurement: there is no condition to wait for.
    std::thread::sleep(idle_window);
    let (cpu_after, wakeups_after) = fleet_cpu(&fleet);

    let guard = fleet.guard(
        bench.watchdog,
        Duration::from_secs(60) + Duration::from_millis(60) * dependents as u32,
    );
    let died = dir.bury(DEPENDENCY)?;
    let (reaped, killed) = fleet.reap_all(guard);

    let mut run = ScaleRun {
        label,
        dependents,
        max_user_instances: limits::read_number(MAX_USER_INSTANCES.as_ref()),
        max_user_watches: limits::read_number(MAX_USER_WATCHES.as_ref()),
        held_before,
        held,
        started_ns,
        polling: 0,
        idle_cpu_ns: cpu_after.saturating_sub(cpu_before),
        idle_wakeups: wakeups_after.saturating_sub(wakeups_before),
        idle_window,
        stopped: 0,
        exited_zero: reaped.iter().filter(|(_, r)| r.code == 0).count(),
        watching_ns: Vec::new(),
        polling_ns: Vec::new(),
        problems: Vec::new(),
    };
    if killed {
        run.problems
            .push("some kubexits were still running at the deadline and were killed".to_owned());
    }
    for member in &fleet.members {
        let polled = fs::read_to_string(&member.log).is_ok_and(|log| log.contains(POLLING_WARNING));
        run.polling += usize::from(polled);
        match victim::read_report(&member.report) {
            Some(report) if report.signal == nix::libc::SIGTERM => {
                run.stopped += 1;
                let latency = report.at.saturating_sub(died);
                if polled {
                    run.polling_ns.push(latency);
                } else {
                    run.watching_ns.push(latency);
                }
            }
            _ => {
                if run.problems.len() < 5 {
                    run.problems.push(format!(
                        "the child of {} was not stopped: {}",
                        member.name,
                        log_tail(&member.log)
                    ));
                }
            }
        }
    }
    eprintln!(
        "  {} stopped of {dependents}, {} polling, all running after {}",
        run.stopped,
        run.polling,
        crate::stats::human_ns(started_ns as f64)
    );
    Ok(run)
}

/// The fleet's on-CPU time (ns) and voluntary context switches, summed
/// over every kubexit.
fn fleet_cpu(fleet: &Fleet) -> (u64, u64) {
    fleet.members.iter().fold((0, 0), |(cpu, wakeups), member| {
        (
            cpu + procs::cpu_ns(member.pid).unwrap_or(0),
            wakeups + procs::voluntary_switches(member.pid).unwrap_or(0),
        )
    })
}
