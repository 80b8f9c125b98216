//! Start-up in a crowded graveyard: from spawning kubexit to its child
//! running, with 10,000 tombstones of other processes already there.
//!
//! Each run times three starts, taking turns: kubexit in the crowded
//! graveyard, kubexit in an empty one, and the child (the victim) spawned
//! directly, without kubexit. The clock is read just before the spawn and
//! by the victim as the first thing it does. The direct start is what any
//! process costs; the empty graveyard shows what kubexit adds; the crowded
//! one whether the graveyard's size matters (kubexit reads only the
//! tombstones it depends on, so it should not).
//!
//! The kubexits have a death dependency, named anew in each run so that no
//! earlier death counts; after each run its files are removed, so the
//! crowded graveyard keeps its size.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Bench;
use crate::procs::{self, Fleet, RunDir, Setup};
use crate::victim;

#[derive(Debug, Clone)]
pub struct Startup {
    pub tombstones: usize,
    /// ns per run, in the crowded graveyard.
    pub crowded: Vec<u64>,
    /// ns per run, in an empty graveyard.
    pub empty: Vec<u64>,
    /// ns per run, the victim without kubexit.
    pub direct: Vec<u64>,
}

pub fn measure(bench: &Bench, tombstones: usize, runs: usize) -> Result<Startup, String> {
    let crowded = RunDir::new(bench.scratch, "startup-crowded")?;
    let empty = RunDir::new(bench.scratch, "startup-empty")?;
    fill(&crowded, tombstones)?;
    let mut result = Startup {
        tombstones,
        crowded: Vec::with_capacity(runs),
        empty: Vec::with_capacity(runs),
        direct: Vec::with_capacity(runs),
    };
    for run in 0..runs {
        result.crowded.push(start_kubexit(bench, &crowded, run)?);
        result.empty.push(start_kubexit(bench, &empty, run)?);
        result.direct.push(start_directly(bench, &empty, run)?);
    }
    Ok(result)
}

/// Writes `count` tombstones of other processes, half of them dead.
fn fill(dir: &RunDir, count: usize) -> Result<(), String> {
    let (alive, dead) = (procs::tombstone(false), procs::tombstone(true));
    for i in 0..count {
        let text = if i % 2 == 0 { &alive } else { &dead };
        let path = dir.yard.join(format!("job-{i:05}"));
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// One kubexit start in `dir`'s graveyard: spawn to child running, ns.
fn start_kubexit(bench: &Bench, dir: &RunDir, run: usize) -> Result<u64, String> {
    let (name, dependency) = (format!("starter-{run}"), format!("main-{run}"));
    let setup: Setup = dir.setup(bench.kubexit, bench.harness);
    let mut fleet = Fleet::default();
    fleet.spawn(&setup, &name, &dependency)?;
    fleet.wait_ready(Duration::from_secs(30))?;
    let member = &fleet.members[0];
    let (_, started) = member.victim.ok_or("the child never said it was running")?;
    let elapsed = started.saturating_sub(member.spawned_at);
    let guard = fleet.guard(bench.watchdog, Duration::from_secs(30));
    dir.bury(&dependency)?;
    fleet.reap(guard)?;
    for file in [name.clone(), format!(".{name}.lock"), dependency] {
        let _ = fs::remove_file(dir.yard.join(file));
    }
    Ok(elapsed)
}

/// The victim started without kubexit: spawn to running, ns.
fn start_directly(bench: &Bench, dir: &RunDir, run: usize) -> Result<u64, String> {
    let ready = dir.work.join(format!("direct-{run}.ready"));
    let report = dir.work.join(format!("direct-{run}.report"));
    let spawned_at = victim::monotonic_ns();
    let child = Command::new(bench.harness)
        .arg(victim::MODE)
        .arg(&ready)
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bench.harness.display()))?;
    let pid = child.id() as i32;
    let guard = bench.watchdog.watch(vec![pid], Duration::from_secs(30));
    let mut started = None;
    procs::eventually(Duration::from_secs(30), || {
        started = victim::read_ready(&ready);
        started.is_some()
    });
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    procs::reap_pid(pid);
    if guard.clear() {
        return Err("the directly started child did not end".to_owned());
    }
    let (started, _) = started.ok_or("the directly started child never said it was running")?;
    Ok(started.saturating_sub(spawned_at))
}
