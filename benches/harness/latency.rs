//! Reaction latency: from a death recorded to the dependents' children
//! receiving the stop signal, for kubexit and the references (the floor and
//! the Go kubexit, see the subjects module), by the same method.
//!
//! One run: a fresh graveyard; N supervisors of one subject, each with the
//! death dependency `main`, each supervising a victim; wait until every
//! victim runs (all three arm their graveyard watch before they start their
//! child, so a running victim means a watching supervisor) and everything
//! sleeps; then the harness writes `main`'s tombstone with `Died` to a
//! temporary file beside the graveyard, reads CLOCK_MONOTONIC, and renames
//! the file into the graveyard. Each victim reads the same clock when its
//! `sigtimedwait` returns. A dependent's latency is the difference; a run's
//! figure is its worst dependent. The subjects take turns run by run, so
//! that the machine's drift (a shared 2-core VM moves by 2× between runs)
//! falls on all of them alike and their ratio holds.
//!
//! The temporary file is written outside the graveyard (on the same
//! filesystem, so the rename stays atomic): the rename is then the only
//! event the supervisors see, and what is timed is their reaction to it.
//!
//! Once stopped, a dependent's child exits and its supervisor records its
//! own death (kubexit and Go do; the floor does not), and that write wakes
//! every other supervisor watching the graveyard while some may not have
//! reacted yet. That is part of a real fan-out, so it is measured by
//! default; `--linger` keeps the children alive until all have been timed,
//! which leaves the reactions alone, to show what that competition costs.
//!
//! By default `main` has no tombstone until it dies, so the death is the
//! first tombstone a dependent ever reads. With `--born-first`, `main`'s
//! `Born` is written before the dependents start (as when the main
//! container started first): each dependent then reads and parses a
//! tombstone at start-up, and the death finds that code already run once.
//! The difference between the two shows what a cold reaction path costs.
//!
//! **Wake-ups.** Just before the death is written, the harness reads every
//! supervisor's voluntary context switches (all threads) from /proc: each
//! is one sleep, so one wake-up, from its start to that moment. With one
//! dependent that is a supervisor's own start-up; in a fan-out the excess
//! is what siblings' births (tombstones that are no dependency of it) cost
//! it. After the reap, `wait4` gives the whole life's count, so the rest is
//! what the death and the exit cost (the child's own few included).
//!
//! Every supervisor holds one inotify instance. When a fan-out would pass
//! the per-user limits, the harness raises them for the measurement if it
//! may (root) and restores them afterwards (see the limits module); if it
//! may not, kubexits beyond the limit fall back to reading the graveyard
//! every 100 ms, and the result says how many did, while the floor and the
//! Go kubexit, which cannot run without inotify, are left out.

use std::fs;
use std::time::Duration;

use crate::Bench;
use crate::limits::{Need, Raised};
use crate::procs::{Fleet, Member, Setup, log_tail};
use crate::stats::human_ns;
use crate::subjects::{Kind, Subject};
use crate::victim;

/// The dependency every measured supervisor waits on.
const DEPENDENCY: &str = "main";
/// What kubexit logs when it falls back to polling.
const POLLING_WARNING: &str = "fs.inotify.max_user_instances";

/// One subject's figures over the runs of one fan-out.
#[derive(Debug, Clone)]
pub struct Series {
    pub subject: Subject,
    /// Each run's worst dependent, ns.
    pub worst: Vec<u64>,
    /// Every dependent of every run, ns.
    pub all: Vec<u64>,
    /// Dependents that fell back to polling, over all runs.
    pub polling: usize,
    /// Each dependent's wake-ups (voluntary context switches, all threads)
    /// from its start to the moment just before the death is written:
    /// its own start-up, and every sibling born after it.
    pub wakeups_before: Vec<u64>,
    /// Each dependent's wake-ups from then to its exit, its child's
    /// included (`wait4` counts the children a process reaped).
    pub wakeups_after: Vec<u64>,
    /// Each dependent's CPU time from then to its exit, ns: `wait4`'s
    /// user and system time, less what it had used before (from /proc)
    /// and less what its child had used when it reported its signal (the
    /// child's exit, after that, stays in).
    pub cpu_after: Vec<u64>,
}

/// The latencies of one fan-out, for every subject, over its runs.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub dependents: usize,
    pub series: Vec<Series>,
    /// What was done about the inotify limits, and who was left out.
    pub notes: Vec<String>,
}

impl Fanout {
    pub fn of(&self, key: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.subject.key == key)
    }
}

/// What one run of one subject gave.
struct Run {
    latencies: Vec<u64>,
    polling: usize,
    wakeups_before: Vec<u64>,
    wakeups_after: Vec<u64>,
    cpu_after: Vec<u64>,
}

/// How the runs are made: the default measures a real fan-out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Children stay alive until every dependent has been timed.
    pub linger: bool,
    /// `main`'s `Born` is written before the dependents start.
    pub born_first: bool,
}

/// Measures `runs` runs of `dependents` supervisors stopping on one death,
/// for every subject, taking turns run by run: in run *r* the subjects go
/// in turn starting with subject *r* mod their number, so that neither
/// drift nor the order favours one.
pub fn measure(
    bench: &Bench,
    subjects: &[Subject],
    dependents: usize,
    runs: usize,
    options: Options,
) -> Result<Fanout, String> {
    let limit = Raised::ensure(&Need {
        uid: bench.uid.unwrap_or_else(crate::limits::own_uid),
        instances: dependents,
        watches: 2 * dependents,
        why: format!("{dependents} dependents"),
    });
    let mut notes = limit.notes.clone();
    let subjects: Vec<&Subject> = if limit.enough {
        subjects.iter().collect()
    } else {
        let (kept, left): (Vec<&Subject>, Vec<&Subject>) =
            subjects.iter().partition(|s| s.kind == Kind::Kubexit);
        if !left.is_empty() {
            let names: Vec<&str> = left.iter().map(|s| s.label).collect();
            notes.push(format!(
                "fan-out {dependents}: {} left out, since they cannot run without inotify",
                names.join(" and ")
            ));
        }
        kept
    };
    for note in &notes {
        eprintln!("  {note}");
    }
    let mut series: Vec<Series> = subjects
        .iter()
        .map(|&subject| Series {
            subject: subject.clone(),
            worst: Vec::with_capacity(runs),
            all: Vec::with_capacity(runs * dependents),
            polling: 0,
            wakeups_before: Vec::with_capacity(runs * dependents),
            wakeups_after: Vec::with_capacity(runs * dependents),
            cpu_after: Vec::with_capacity(runs * dependents),
        })
        .collect();
    for run in 0..runs {
        for turn in 0..series.len() {
            let index = (run + turn) % series.len();
            let one = &mut series[index];
            let result = one_run(bench, &one.subject, dependents, run, options).map_err(|e| {
                format!(
                    "{}, fan-out {dependents}, run {}: {e}",
                    one.subject,
                    run + 1
                )
            })?;
            one.worst
                .push(result.latencies.iter().copied().max().unwrap_or(0));
            one.all.extend(result.latencies);
            one.polling += result.polling;
            one.wakeups_before.extend(result.wakeups_before);
            one.wakeups_after.extend(result.wakeups_after);
            one.cpu_after.extend(result.cpu_after);
        }
        if dependents > 1 || (run + 1) % 100 == 0 || run + 1 == runs {
            let latest: Vec<String> = series
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        s.subject,
                        human_ns(s.worst.last().copied().unwrap_or(0) as f64)
                    )
                })
                .collect();
            eprintln!(
                "  {dependents} dependent(s), run {}/{runs}: worst {}",
                run + 1,
                latest.join(", ")
            );
        }
    }
    drop(limit);
    Ok(Fanout {
        dependents,
        series,
        notes,
    })
}

/// One run of one subject.
fn one_run(
    bench: &Bench,
    subject: &Subject,
    dependents: usize,
    run: usize,
    options: Options,
) -> Result<Run, String> {
    let dir = bench.run_dir(&format!("fanout-{}-{dependents}-run-{run}", subject.key))?;
    let mut fleet = Fleet::default();
    let setup = Setup {
        linger: options.linger,
        ..bench.setup(&dir, subject)
    };
    if options.born_first {
        dir.record(DEPENDENCY, false)?;
    }
    for i in 0..dependents {
        fleet.spawn(&setup, &format!("dependent-{i}"), DEPENDENCY)?;
    }
    let start_limit = Duration::from_secs(30) + Duration::from_millis(100) * dependents as u32;
    fleet.wait_ready(start_limit)?;
    fleet.wait_quiet(Duration::from_secs(2));
    fleet.count_wakeups();

    let guard = fleet.guard(bench.watchdog, Duration::from_secs(30));
    let died = dir.bury(DEPENDENCY)?;
    if options.linger {
        fleet.wait_reports(Duration::from_secs(30))?;
        fleet.release();
    }
    let reaped = fleet.reap(guard)?;

    let mut result = Run {
        latencies: Vec::with_capacity(dependents),
        polling: 0,
        wakeups_before: Vec::with_capacity(dependents),
        wakeups_after: Vec::with_capacity(dependents),
        cpu_after: Vec::with_capacity(dependents),
    };
    for (index, ended) in reaped {
        let member = &fleet.members[index];
        if ended.code != 0 {
            return Err(format!(
                "{} {} exited {} (expected 0, stopped for a death): {}",
                subject,
                member.name,
                ended.code,
                log_tail(&member.log)
            ));
        }
        if fs::read_to_string(&member.log).is_ok_and(|log| log.contains(POLLING_WARNING)) {
            result.polling += 1;
        }
        if let Some(before) = member.wakeups_before {
            result.wakeups_before.push(before);
            result
                .wakeups_after
                .push(ended.wakeups.saturating_sub(before));
        }
        if let (Some(before), Some(report)) =
            (member.cpu_before, victim::read_report(&member.report))
        {
            result.cpu_after.push(
                ended
                    .cpu_ns
                    .saturating_sub(before)
                    .saturating_sub(report.cpu_ns),
            );
        }
    }
    for member in &fleet.members {
        result.latencies.push(signalled_after(member, died)?);
    }
    Ok(result)
}

/// How long after `died` the member's child received SIGTERM.
fn signalled_after(member: &Member, died: u64) -> Result<u64, String> {
    let victim::Report {
        at: signalled,
        signal,
        ..
    } = victim::read_report(&member.report).ok_or_else(|| {
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
