//! Footprint: what a supervisor costs while it waits, in memory, CPU time
//! and disk. kubexit (both builds) is measured beside the floor and the Go
//! kubexit when they are at hand, taking turns sample by sample.
//!
//! * **Memory.** A supervisor with a death dependency supervising a sleeping
//!   child, once everything sleeps: its peak resident set so far (`VmHWM`,
//!   start-up included) and its current one (`VmRSS`) from /proc. Not
//!   `ru_maxrss` from `wait4`: it also counts the children kubexit reaped,
//!   and, since the harness spawns with vfork, the harness's own peak from
//!   before the `exec`, so it says more about the harness than about
//!   kubexit.
//! * **Idle cost.** The same with three death dependencies, over a window
//!   (10 s by default) in which nothing happens: CPU time from
//!   /proc/PID/stat (utime + stime, all threads, in clock ticks), the finer
//!   on-CPU time of every thread from /proc/PID/task/*/schedstat, and the
//!   context switches, which count wake-ups. kubexit promises not to poll,
//!   so all three should stay at zero.
//! * **Size.** The binary's size on disk, and whether it is static (no
//!   program interpreter in its ELF program headers).

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::Bench;
use crate::procs::{self, Fleet, RunDir};
use crate::subjects::{Kind, Subject};

/// Memory of one subject, one sample per run.
#[derive(Debug, Clone)]
pub struct Memory {
    pub subject: Subject,
    /// `VmHWM` while idle, KiB.
    pub idle_peak_kib: Vec<u64>,
    /// `VmRSS` while idle, KiB.
    pub idle_rss_kib: Vec<u64>,
}

/// A running kubexit with one child, ready to be looked at.
struct Solo {
    fleet: Fleet,
    pid: i32,
    dir: RunDir,
}

impl Solo {
    fn start(bench: &Bench, subject: &Subject, label: &str, deps: &str) -> Result<Solo, String> {
        let dir = bench.run_dir(label)?;
        let mut fleet = Fleet::default();
        fleet.spawn(&bench.setup(&dir, subject), "sidecar", deps)?;
        fleet.wait_ready(Duration::from_secs(30))?;
        fleet.wait_quiet(Duration::from_secs(2));
        let pid = fleet.members[0].pid;
        Ok(Solo { fleet, pid, dir })
    }

    /// Records the death of `dependency` and waits for kubexit to exit 0.
    fn stop(mut self, bench: &Bench, dependency: &str) -> Result<(), String> {
        let guard = self.fleet.guard(bench.watchdog, Duration::from_secs(30));
        self.dir.bury(dependency)?;
        let reaped = self.fleet.reap(guard)?;
        match reaped.first() {
            Some((_, ended)) if ended.code == 0 => Ok(()),
            Some((_, ended)) => Err(format!(
                "the supervisor exited {}: {}",
                ended.code,
                procs::log_tail(&self.fleet.members[0].log)
            )),
            None => Err("the supervisor was not reaped".to_owned()),
        }
    }
}

/// Samples the memory of `runs` supervisors of each subject, one at a
/// time, the subjects taking turns.
pub fn memory(bench: &Bench, subjects: &[Subject], runs: usize) -> Result<Vec<Memory>, String> {
    let mut memories: Vec<Memory> = subjects
        .iter()
        .map(|subject| Memory {
            subject: subject.clone(),
            idle_peak_kib: Vec::new(),
            idle_rss_kib: Vec::new(),
        })
        .collect();
    for run in 0..runs {
        for memory in &mut memories {
            sample_memory(bench, memory, run)?;
        }
    }
    Ok(memories)
}

fn sample_memory(bench: &Bench, memory: &mut Memory, run: usize) -> Result<(), String> {
    let subject = &memory.subject;
    let solo = Solo::start(
        bench,
        subject,
        &format!("memory-{}-{run}", subject.key),
        "main",
    )?;
    let peak = procs::status_kib(solo.pid, "VmHWM");
    let rss = procs::status_kib(solo.pid, "VmRSS");
    solo.stop(bench, "main")?;
    let (Some(peak), Some(rss)) = (peak, rss) else {
        return Err("cannot read VmHWM and VmRSS from /proc".to_owned());
    };
    memory.idle_peak_kib.push(peak);
    memory.idle_rss_kib.push(rss);
    Ok(())
}

/// What an idle supervisor consumed over the window.
#[derive(Debug, Clone)]
pub struct Idle {
    pub subject: Subject,
    pub window: Duration,
    pub dependencies: usize,
    /// utime + stime, ms (clock-tick resolution).
    pub cpu_ms: f64,
    /// On-CPU time of all threads, ns (schedstat), when available.
    pub on_cpu_ns: Option<u64>,
    /// Context switches of all threads.
    pub wakeups: Option<u64>,
}

impl Idle {
    /// No CPU time at all over the window: on-CPU time where the kernel
    /// gives it, else clock ticks.
    pub fn is_idle(&self) -> bool {
        self.on_cpu_ns.map_or(self.cpu_ms == 0.0, |ns| ns == 0)
    }
}

/// Watches an idle supervisor for `window`. Three death dependencies,
/// but one for the floor, which takes only one.
pub fn idle(bench: &Bench, subject: &Subject, window: Duration) -> Result<Idle, String> {
    let dependencies = if subject.kind == Kind::Floor {
        "main"
    } else {
        "main,db,cache"
    };
    let solo = Solo::start(
        bench,
        subject,
        &format!("idle-{}", subject.key),
        dependencies,
    )?;
    let read = |pid| {
        (
            procs::cpu_ticks(pid),
            procs::cpu_ns(pid),
            procs::context_switches(pid),
        )
    };
    let before = read(solo.pid);
    // The window is the measurement: there is no condition to wait for.
    std::thread::sleep(window);
    let after = read(solo.pid);
    solo.stop(bench, "main")?;
    let (Some(ticks_before), Some(ticks_after)) = (before.0, after.0) else {
        return Err("cannot read the CPU time from /proc/PID/stat".to_owned());
    };
    let per_second = procs::ticks_per_second();
    Ok(Idle {
        subject: subject.clone(),
        window,
        dependencies: dependencies.split(',').count(),
        cpu_ms: ticks_after.saturating_sub(ticks_before) as f64 * 1000.0 / per_second as f64,
        on_cpu_ns: before.1.zip(after.1).map(|(b, a)| a.saturating_sub(b)),
        wakeups: before.2.zip(after.2).map(|(b, a)| a.saturating_sub(b)),
    })
}

/// A binary's size and linkage.
#[derive(Debug, Clone)]
pub struct Size {
    pub subject: Subject,
    pub path: String,
    pub bytes: u64,
    pub is_static: Option<bool>,
}

pub fn size(subject: &Subject) -> Result<Size, String> {
    let path: &Path = &subject.path;
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Size {
        subject: subject.clone(),
        path: crate::paths::shown(path),
        bytes: bytes.len() as u64,
        is_static: has_interpreter(&bytes).map(|interp| !interp),
    })
}

/// Whether a 64-bit little-endian ELF file names a program interpreter
/// (PT_INTERP): dynamically linked executables do, static ones do not.
/// `None` for anything else.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let table = usize::try_from(u64_at(0x20)?).ok()?;
    let entry_size = usize::from(u16_at(0x36)?);
    let entries = usize::from(u16_at(0x38)?);
    for i in 0..entries {
        if u32_at(table.checked_add(i.checked_mul(entry_size)?)?)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}
