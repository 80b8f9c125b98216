//! kubexit's benchmark harness (issues 7 and 14), run by `bench/run`.
//!
//! It drives built binaries the way a pod does: real processes, real
//! signals, real graveyards on tmpfs (as an `emptyDir` with `medium:
//! Memory`). kubexit is measured side by side with two references from
//! `../shared/peers` (see `subjects`): the floor, the least a supervisor can
//! do, built here from `floor.c`, and the Go kubexit. They take turns run
//! by run, so that the machine's drift falls on all alike, and the report
//! gives ratios measured in the run (kubexit/floor, Go/kubexit) beside the
//! absolute figures. What it measures, each in its own module:
//!
//! * `latency`: from a death recorded to the dependents' children
//!   receiving SIGTERM, for one dependent and for fan-outs, and the
//!   wake-ups each dependent pays for its siblings;
//! * `overhead`: `kubexit true` against `true`, tini and the Go kubexit;
//! * `footprint`: peak RSS, CPU time while idle, binary size;
//! * `startup`: spawn to child running with 10,000 tombstones around;
//! * `scale`: 1,000 kubexits in one graveyard, and the inotify limits that
//!   bound them;
//! * `webhook`: `kubexit webhook` under load (its own report, `webhook.md`);
//! * `pods`: Jobs on a real node, with a sidecar stopped by kubexit (with
//!   and without its install init container), by the Go kubexit, or by the
//!   kubelet, beside the plain Job (its own report, `pods.md`).
//!
//! The harness is also the child every supervisor runs: as `harness victim
//! READY REPORT`, it times its own signal (see `victim`). Results go to
//! `results.json` (raw samples included) and `results.md` (the Markdown to
//! paste into BENCHMARKS.md, also printed), plots to two SVG files.
//! `--smoke` runs everything but the scale run and the pods with tiny
//! sizes, for CI: it shows that the harness works and asserts no timing
//! (of the pods, it makes and checks the Jobs, which needs no node).

mod footprint;
mod latency;
mod limits;
mod overhead;
mod paths;
mod plots;
mod pods;
mod procs;
mod programs;
mod report;
mod scale;
mod startup;
mod stats;
mod subjects;
mod victim;
#[cfg(feature = "webhook")]
mod webhook;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::procs::Watchdog;
use crate::report::{Machine, Results};
use crate::subjects::{Peers, Subject};

/// Measures kubexit beside the floor and the Go kubexit: reaction latency,
/// fan-out, wake-ups, wrapper overhead, memory, idle cost, start-up in a
/// crowded graveyard, binary size, and a fleet of 1,000.
#[derive(Parser, Debug)]
#[command(name = "harness", version)]
struct Args {
    /// Tiny sizes, for CI: shows that every measurement runs, asserts no
    /// timing. Each size below can still be set.
    #[arg(long)]
    smoke: bool,

    /// The kubexit measured: the full build (default features).
    #[arg(long, value_name = "PATH")]
    kubexit: PathBuf,

    /// The slim build (--no-default-features), for memory, idle cost and
    /// size; left out when not given.
    #[arg(long, value_name = "PATH")]
    kubexit_slim: Option<PathBuf>,

    /// The shared directory whose `peers/` holds `floor.c` and
    /// `kubexit-go` [default: ../shared beside the checkout].
    #[arg(long, value_name = "DIR", env = "KUBEXIT_SHARED")]
    shared: Option<PathBuf>,

    /// Measure kubexit alone, without the floor and the Go kubexit.
    #[arg(long)]
    alone: bool,

    /// Where graveyards are made. tmpfs by default, like an emptyDir with
    /// medium: Memory.
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    graveyard_root: PathBuf,

    /// Where results.json and results.md are written.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Where the SVG plots are written; defaults to --out.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,

    /// Runs of the one-dependent latency [default: 500; smoke 5].
    #[arg(long, value_name = "N")]
    runs: Option<usize>,

    /// Fan-outs measured besides one dependent [default: 50,200; smoke 2,3].
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    fanouts: Option<Vec<usize>>,

    /// Runs of each fan-out [default: 15,000 reactions' worth, at least 30:
    /// 300 runs of a fan-out of 50, 75 of 200; smoke 2].
    #[arg(long, value_name = "N")]
    fanout_runs: Option<usize>,

    /// Runs of each command of the overhead measurement [default: 300;
    /// smoke 5].
    #[arg(long, value_name = "N")]
    overhead_runs: Option<usize>,

    /// kubexits sampled per build for memory [default: 5; smoke 1].
    #[arg(long, value_name = "N")]
    memory_runs: Option<usize>,

    /// Seconds of idleness watched [default: 10; smoke 1].
    #[arg(long, value_name = "SECONDS")]
    idle_seconds: Option<u64>,

    /// Tombstones in the crowded graveyard [default: 10000; smoke 100].
    #[arg(long, value_name = "N")]
    tombstones: Option<usize>,

    /// Start-ups timed per variant [default: 100; smoke 3].
    #[arg(long, value_name = "N")]
    startup_runs: Option<usize>,

    /// kubexits in the scale run [default: 1000; smoke 20, and only with
    /// --only scale].
    #[arg(long, value_name = "N")]
    scale: Option<usize>,

    /// Jobs of each way on the node [default: 7, after a warm-up Job of
    /// each; smoke 1, no warm-up, and only with --only pods].
    #[arg(long, value_name = "N")]
    pod_runs: Option<usize>,

    /// A node already up for the pods (the env file `cluster/up STATE_DIR`
    /// writes), left running; by default one is started for the run and
    /// stopped after it.
    #[arg(long, value_name = "FILE")]
    node_env: Option<PathBuf>,

    /// Latency and fan-out with children that stay alive until all have
    /// been timed: no dependent's own death competes with the reactions
    /// being timed. For analysis; the default measures a real fan-out.
    #[arg(long)]
    linger: bool,

    /// Latency and fan-out with `main`'s Born tombstone written before the
    /// dependents start, so that each reads and parses one at start-up and
    /// the death finds that path warm. For analysis.
    #[arg(long)]
    born_first: bool,

    /// Only these measurements (comma-separated); all by default (the
    /// smoke run leaves out scale and pods unless named here).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Measurement>,

    /// A revision to name in the report (e.g. `git describe`).
    #[arg(long)]
    revision: Option<String>,

    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Measurement {
    Latency,
    Fanout,
    Overhead,
    Memory,
    Idle,
    Startup,
    Size,
    Scale,
    Webhook,
    Pods,
}

/// The sizes of one invocation, resolved from the flags and the mode.
struct Sizes {
    runs: usize,
    /// Each fan-out measured, with its runs ([`fanout_runs`]).
    fanouts: Vec<(usize, usize)>,
    overhead_runs: usize,
    memory_runs: usize,
    idle: Duration,
    tombstones: usize,
    startup_runs: usize,
    scale: usize,
    pod_runs: usize,
}

impl Sizes {
    fn from_args(args: &Args) -> Result<Sizes, String> {
        let pick = |given: Option<usize>, full: usize, smoke: usize| {
            given.unwrap_or(if args.smoke { smoke } else { full })
        };
        let sizes = Sizes {
            runs: pick(args.runs, 500, 5),
            fanouts: args
                .fanouts
                .clone()
                .unwrap_or(if args.smoke {
                    vec![2, 3]
                } else {
                    vec![50, 200]
                })
                .into_iter()
                .map(|dependents| {
                    let runs = pick(args.fanout_runs, fanout_runs(dependents), 2);
                    (dependents, runs)
                })
                .collect(),
            overhead_runs: pick(args.overhead_runs, 300, 5),
            memory_runs: pick(args.memory_runs, 5, 1),
            idle: Duration::from_secs(args.idle_seconds.unwrap_or(if args.smoke { 1 } else { 10 })),
            tombstones: pick(args.tombstones, 10_000, 100),
            startup_runs: pick(args.startup_runs, 100, 3),
            scale: pick(args.scale, 1000, 20),
            pod_runs: pick(args.pod_runs, 7, 1),
        };
        let counts = [
            ("--runs", sizes.runs),
            ("--overhead-runs", sizes.overhead_runs),
            ("--memory-runs", sizes.memory_runs),
            ("--startup-runs", sizes.startup_runs),
            ("--scale", sizes.scale),
            ("--pod-runs", sizes.pod_runs),
        ];
        if let Some((flag, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if sizes.fanouts.iter().any(|&(_, runs)| runs == 0) {
            return Err("--fanout-runs must be at least 1".to_owned());
        }
        if sizes.fanouts.iter().any(|&(dependents, _)| dependents == 0) {
            return Err("--fanouts must be at least 1 each".to_owned());
        }
        Ok(sizes)
    }
}

/// Runs of a fan-out of `dependents` unless `--fanout-runs` says: 15,000
/// reactions' worth, at least 30 (300 runs of 50, 75 of 200). The figure is
/// the median over runs of each run's worst dependent, a sample that spreads
/// over a decade on two cores (whichever reactions the scheduler runs before
/// the others' exits), for the floor as for kubexit: two identical subjects
/// differ by more than 1.3x one time in three at 30 runs, one time in twenty
/// at 300, which costs about three minutes per fan-out.
fn fanout_runs(dependents: usize) -> usize {
    const REACTIONS: usize = 15_000;
    (REACTIONS / dependents.max(1)).max(30)
}

/// What every measurement needs: the harness (the victim), a scratch
/// directory on the graveyard filesystem, a watchdog, and the user the
/// supervisors run as.
pub struct Bench<'a> {
    pub harness: &'a Path,
    /// As root, every supervisor (and its child) runs as a user of its own
    /// (see `limits::fleet_user`); `None`: as the harness's user.
    pub uid: Option<u32>,
    pub scratch: &'a Path,
    pub watchdog: &'a Watchdog,
}

impl Bench<'_> {
    /// A fresh run directory, given to the supervisors' user.
    pub fn run_dir(&self, label: &str) -> Result<procs::RunDir, String> {
        let dir = procs::RunDir::new(self.scratch, label)?;
        if let Some(uid) = self.uid {
            dir.give_to(uid)?;
        }
        Ok(dir)
    }

    /// How `subject` runs in `dir`.
    pub fn setup<'a>(&'a self, dir: &'a procs::RunDir, subject: &'a Subject) -> procs::Setup<'a> {
        procs::Setup {
            uid: self.uid,
            ..dir.setup(subject, self.harness)
        }
    }
}

fn main() -> ExitCode {
    let words: Vec<OsString> = std::env::args_os().collect();
    if words.get(1).is_some_and(|w| w == victim::MODE) {
        return victim::main(&words[2..]);
    }
    let args = Args::parse();
    match run(&args, &words) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("harness: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, words: &[OsString]) -> Result<(), String> {
    let sizes = Sizes::from_args(args)?;
    let harness = std::env::current_exe()
        .map_err(|e| format!("cannot find the harness's own binary: {e}"))?;
    for path in [Some(&args.kubexit), args.kubexit_slim.as_ref()]
        .into_iter()
        .flatten()
    {
        if !programs::is_executable(path) {
            return Err(format!(
                "{} is not an executable file; build it first (bench/run does)",
                path.display()
            ));
        }
    }
    if !args.graveyard_root.is_dir() {
        return Err(format!(
            "the graveyard root {} is not a directory; give --graveyard-root",
            args.graveyard_root.display()
        ));
    }
    let scratch = tempfile::Builder::new()
        .prefix("kubexit-bench-")
        .tempdir_in(&args.graveyard_root)
        .map_err(|e| {
            format!(
                "cannot make a directory in {}: {e}",
                args.graveyard_root.display()
            )
        })?;
    let plots_dir = args.plots.clone().unwrap_or_else(|| args.out.clone());
    for dir in [&args.out, &plots_dir] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }

    let floor_dir = tempfile::Builder::new()
        .prefix("kubexit-floor-")
        .tempdir()
        .map_err(|e| format!("cannot make a directory for the floor: {e}"))?;
    let peers = if args.alone {
        Peers::none("--alone: kubexit is measured alone, without the floor or the Go kubexit")
    } else {
        Peers::find(
            Some(&args.shared.clone().unwrap_or_else(subjects::default_shared)),
            floor_dir.path(),
        )
    };
    for line in &peers.missing {
        eprintln!("harness: {line}");
    }

    let mut user_notes = Vec::new();
    let programs: Vec<&Path> = [Some(args.kubexit.as_path()), Some(harness.as_path())]
        .into_iter()
        .chain([
            args.kubexit_slim.as_deref(),
            peers.floor.as_ref().map(|s| s.path.as_path()),
            peers.go.as_ref().map(|s| s.path.as_path()),
        ])
        .flatten()
        .collect();
    let uid = limits::fleet_user(
        &programs,
        &[scratch.path(), floor_dir.path()],
        &mut user_notes,
    );
    for note in &user_notes {
        eprintln!("harness: {note}");
    }

    let watchdog = Watchdog::new();
    let bench = Bench {
        harness: &harness,
        uid,
        scratch: scratch.path(),
        watchdog: &watchdog,
    };
    let kubexit = Subject::kubexit(&args.kubexit);
    let slim = args.kubexit_slim.as_deref().map(Subject::kubexit_slim);
    // Side by side: the floor, kubexit, Go, in that order wherever they
    // appear.
    let side_by_side: Vec<Subject> = [peers.floor.clone(), Some(kubexit.clone()), peers.go.clone()]
        .into_iter()
        .flatten()
        .collect();
    let every_build: Vec<Subject> = [
        peers.floor.clone(),
        Some(kubexit.clone()),
        slim.clone(),
        peers.go.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let wanted = |m: Measurement| {
        if args.only.is_empty() {
            !(args.smoke && matches!(m, Measurement::Scale | Measurement::Pods))
        } else {
            args.only.contains(&m)
        }
    };

    let mut results = Results {
        smoke: args.smoke,
        command: command_line(words),
        revision: args.revision.clone(),
        when: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        machine: Machine::detect(&args.graveyard_root),
        subjects_described: describe_subjects(&peers, &kubexit, slim.as_ref()),
        peers_missing: peers.missing.clone(),
        latency: Vec::new(),
        overhead: None,
        memory: Vec::new(),
        idle: Vec::new(),
        startup: None,
        sizes: Vec::new(),
        scale: None,
        webhook: None,
        notes: user_notes,
        load_at_end: String::new(),
    };

    if args.linger {
        results.notes.push(
            "--linger: children stayed alive until every dependent was timed, so no \
             dependent's own death competed with the reactions"
                .to_owned(),
        );
    }
    if args.born_first {
        results.notes.push(
            "--born-first: `main`'s Born tombstone was written before the dependents \
             started, so each had read and parsed one before the death"
                .to_owned(),
        );
    }
    let options = latency::Options {
        linger: args.linger,
        born_first: args.born_first,
    };
    if wanted(Measurement::Latency) {
        eprintln!("latency: 1 dependent, {} runs each", sizes.runs);
        results.latency.push(latency::measure(
            &bench,
            &side_by_side,
            1,
            sizes.runs,
            options,
        )?);
    }
    if wanted(Measurement::Fanout) {
        for &(dependents, runs) in &sizes.fanouts {
            eprintln!("latency: fan-out {dependents}, {runs} runs each");
            let fanout = latency::measure(&bench, &side_by_side, dependents, runs, options)?;
            results.notes.extend(fanout.notes.iter().cloned());
            for series in &fanout.series {
                if series.polling > 0 {
                    results.notes.push(format!(
                        "fan-out {dependents}: {} {} runs fell back to polling the graveyard",
                        series.polling, series.subject
                    ));
                }
            }
            results.latency.push(fanout);
        }
    }
    if wanted(Measurement::Overhead) {
        eprintln!("overhead: {} runs of each command", sizes.overhead_runs);
        let overhead = overhead::measure(&bench, &kubexit, peers.go.as_ref(), sizes.overhead_runs)?;
        results.notes.extend(overhead.notes.iter().cloned());
        results.overhead = Some(overhead);
    }
    if wanted(Measurement::Memory) {
        eprintln!("memory: {} samples of each", sizes.memory_runs);
        results.memory = footprint::memory(&bench, &every_build, sizes.memory_runs)?;
    }
    if wanted(Measurement::Idle) {
        for subject in &every_build {
            eprintln!("idle: {subject}, {:?}", sizes.idle);
            results
                .idle
                .push(footprint::idle(&bench, subject, sizes.idle)?);
        }
    }
    if wanted(Measurement::Startup) {
        eprintln!(
            "start-up: {} tombstones, {} runs each",
            sizes.tombstones, sizes.startup_runs
        );
        results.startup = Some(startup::measure(
            &bench,
            &side_by_side,
            sizes.tombstones,
            sizes.startup_runs,
        )?);
    }
    if wanted(Measurement::Size) {
        for subject in every_build
            .iter()
            .filter(|s| s.kind != subjects::Kind::Floor)
        {
            results.sizes.push(footprint::size(subject)?);
        }
    }
    if wanted(Measurement::Scale) {
        results.scale = Some(scale::measure(
            &bench,
            &kubexit,
            sizes.scale,
            Duration::from_secs(1),
        )?);
    }

    #[cfg(feature = "webhook")]
    if wanted(Measurement::Webhook) {
        eprintln!("webhook: reviews under load");
        results.webhook = Some(webhook::measure(
            &kubexit.path,
            &webhook::Sizes::new(args.smoke),
            &args.out,
        )?);
    }

    if wanted(Measurement::Pods) {
        eprintln!(
            "pods: Jobs on a real node, {} run(s) of each way",
            sizes.pod_runs
        );
        let shared = args.shared.clone().unwrap_or_else(subjects::default_shared);
        let cluster = shared.join("peers/cluster");
        let settings = pods::Settings {
            kubexit: &args.kubexit,
            go: peers.go.as_ref().map(|go| go.path.as_path()),
            cluster: cluster.join("up").is_file().then_some(cluster),
            node_env: args.node_env.as_deref(),
            runs: sizes.pod_runs,
            warm_up: !args.smoke,
            out: &args.out,
            command: results.command.clone(),
            revision: args.revision.clone(),
        };
        match pods::measure(&settings)? {
            pods::Outcome::Measured(markdown) => println!("{markdown}"),
            // Asked for by name, outside a smoke run: not measuring it is a
            // failure, not a note.
            pods::Outcome::Skipped(why)
                if !args.smoke && args.only.contains(&Measurement::Pods) =>
            {
                return Err(format!("pods: not measured: {why}"));
            }
            pods::Outcome::Skipped(why) => {
                eprintln!("pods: not measured: {why}");
                results.notes.push(format!("pods: not measured: {why}"));
            }
        }
    } else if args.smoke {
        pods::jobs::check_all(&args.kubexit)?;
        let note = "pods: not measured in a smoke run (a node, and a minute of Jobs; \
                    `--only pods` asks for it); the Job of each way was made with \
                    `kubexit inject` and checked";
        eprintln!("{note}");
        results.notes.push(note.to_owned());
    }

    results.load_at_end = report::load_average();
    // A run of the pods alone leaves the other results as they were.
    let others = Measurement::value_variants()
        .iter()
        .any(|&m| m != Measurement::Pods && wanted(m));
    if !others {
        return Ok(());
    }
    write_outputs(&results, &args.out, &plots_dir)
}

fn write_outputs(results: &Results, out: &Path, plots_dir: &Path) -> Result<(), String> {
    let write = |path: PathBuf, text: String| {
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
        Ok::<(), String>(())
    };
    write(out.join("results.json"), format!("{}\n", results.json()))?;
    let markdown = results.markdown();
    write(out.join("results.md"), markdown.clone())?;
    if let Some(one) = results.fanout(1) {
        write(plots_dir.join("latency-cdf.svg"), plots::latency_cdf(one))?;
    }
    if !results.latency.is_empty() {
        write(
            plots_dir.join("latency-fanout.svg"),
            plots::fanout(&results.latency),
        )?;
    }
    println!("{markdown}");
    Ok(())
}

/// One line per subject for the report: the floor, kubexit, Go.
fn describe_subjects(peers: &Peers, kubexit: &Subject, slim: Option<&Subject>) -> Vec<String> {
    let mut lines = Vec::new();
    let (floor, go): (Vec<&String>, Vec<&String>) = peers
        .described
        .iter()
        .partition(|line| line.starts_with("floor"));
    lines.extend(floor.into_iter().cloned());
    lines.push(format!(
        "kubexit: `{}`{}",
        paths::shown(&kubexit.path),
        slim.map_or(String::new(), |s| format!(
            " (slim build: `{}`)",
            paths::shown(&s.path)
        ))
    ));
    lines.extend(go.into_iter().cloned());
    lines
}

/// The invocation, for the report: program name shortened, `--bench` left
/// out (cargo adds it), paths shown relative to the checkout (see
/// `paths`).
fn command_line(words: &[OsString]) -> String {
    let mut line = vec!["harness".to_owned()];
    line.extend(
        words
            .iter()
            .skip(1)
            .map(|w| w.to_string_lossy().into_owned())
            .filter(|w| w != "--bench")
            .map(|w| paths::shown_word(&w)),
    );
    line.join(" ")
}
