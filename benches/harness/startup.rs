//! Start-up in a crowded graveyard: from spawning a supervisor to its child
//! running, with 10,000 tombstones of other processes already there.
//!
//! Each run times, taking turns: every subject (kubexit, and the floor and
//! the Go kubexit when at hand) in the crowded graveyard and in an empty
//! one, and the child (the victim) spawned directly, without a supervisor.
//! The clock is read just before the spawn and by the victim as the first
//! thing it does. The direct start is what any process costs; the empty
//! graveyard shows what a supervisor adds; the crowded one whether the
//! graveyard's size matters (kubexit reads only the tombstones it depends
//! on, so it should not; the Go kubexit reads the whole directory first).
//!
//! The supervisors have a death dependency, named anew in each run so that
//! no earlier death counts; after each run its files are removed, so the
//! crowded graveyard keeps its size.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Bench;
use crate::procs::{self, Fleet, RunDir, Setup};
use crate::subjects::Subject;
use crate::victim;

/// One subject's start-ups.
#[derive(Debug, Clone)]
pub struct Starts {
    pub subject: Subject,
    /// ns per run, in the crowded graveyard.
    pub crowded: Vec<u64>,
    /// ns per run, in an empty graveyard.
    pub empty: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Startup {
    pub tombstones: usize,
    pub series: Vec<Starts>,
    /// ns per run, the victim without a supervisor.
    pub direct: Vec<u64>,
}

impl Startup {
    pub fn of(&self, key: &str) -> Option<&Starts> {
        self.series.iter().find(|s| s.subject.key == key)
    }
}

pub fn measure(
    bench: &Bench,
    subjects: &[Subject],
    tombstones: usize,
    runs: usize,
) -> Result<Startup, String> {
    let crowded = bench.run_dir("startup-crowded")?;
    let empty = bench.run_dir("startup-empty")?;
    fill(&crowded, tombstones)?;
    let mut result = Startup {
        tombstones,
        series: subjects
            .iter()
            .map(|subject| Starts {
                subject: subject.clone(),
                crowded: Vec::with_capacity(runs),
                empty: Vec::with_capacity(runs),
            })
            .collect(),
        direct: Vec::with_capacity(runs),
    };
    // Each turn is one start: a subject in the crowded graveyard, the same
    // in the empty one, ..., the child alone last.
    let turns = 2 * subjects.len() + 1;
    for run in 0..runs {
        for turn in 0..turns {
            let index = (run + turn) % turns;
            if index == turns - 1 {
                result.direct.push(start_directly(bench, &empty, run)?);
                continue;
            }
            let starts = &mut result.series[index / 2];
            if index.is_multiple_of(2) {
                let elapsed = start_supervisor(bench, &starts.subject, &crowded, run)?;
                starts.crowded.push(elapsed);
            } else {
                let elapsed = start_supervisor(bench, &starts.subject, &empty, run)?;
                starts.empty.push(elapsed);
            }
        }
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

/// One start of `subject` in `dir`'s graveyard: spawn to child running, ns.
fn start_supervisor(
    bench: &Bench,
    subject: &Subject,
    dir: &RunDir,
    run: usize,
) -> Result<u64, String> {
    let (name, dependency) = (
        format!("starter-{}-{run}", subject.key),
        format!("main-{}-{run}", subject.key),
    );
    let setup: Setup = bench.setup(dir, subject);
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
    let mut command = Command::new(bench.harness);
    command
        .arg(victim::MODE)
        .arg(&ready)
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(uid) = bench.uid {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(uid);
    }
    let spawned_at = victim::monotonic_ns();
    let child = command
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
