//! kubexit's benchmark harness (issue 7), run by `bench/run`.
//!
//! It drives built kubexit binaries the way a pod does: real processes,
//! real signals, real graveyards on tmpfs (as an `emptyDir` with `medium:
//! Memory`). What it measures, each in its own module:
//!
//! * `latency`: from a death recorded to the dependents' children receiving
//!   SIGTERM, for one dependent and for fan-outs;
//! * `overhead`: `kubexit true` against `true` (and `tini -s -- true`);
//! * `footprint`: peak RSS, CPU time while idle, binary size;
//! * `startup`: spawn to child running with 10,000 tombstones around;
//! * `webhook`: `kubexit webhook` under load (its own report, `webhook.md`).
//!
//! The harness is also the child kubexit supervises: run as `harness victim
//! READY REPORT`, it times its own signal (see `victim`). Results go to
//! `results.json` (raw samples included) and `results.md` (a table to paste
//! into BENCHMARKS.md), plots to two SVG files. `--smoke` runs everything
//! with tiny sizes, for CI: it shows that the harness works and asserts no
//! timing.

mod footprint;
mod latency;
mod overhead;
mod plots;
mod procs;
mod report;
mod startup;
mod stats;
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
use crate::report::{Machine, Results, targets};

/// Measures kubexit: reaction latency, fan-out, wrapper overhead, memory,
/// idle cost, start-up in a crowded graveyard, binary size.
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

    /// Runs of each fan-out [default: 30; smoke 2].
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

    /// Start-ups timed per variant [default: 30; smoke 3].
    #[arg(long, value_name = "N")]
    startup_runs: Option<usize>,

    /// Latency and fan-out with children that stay alive until all have
    /// been timed: no dependent's own death competes with the reactions
    /// being timed. For analysis; the default measures a real fan-out.
    #[arg(long)]
    linger: bool,

    /// Only these measurements (comma-separated); all by default.
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
    Webhook,
}

/// The sizes of one invocation, resolved from the flags and the mode.
struct Sizes {
    runs: usize,
    fanouts: Vec<usize>,
    fanout_runs: usize,
    overhead_runs: usize,
    memory_runs: usize,
    idle: Duration,
    tombstones: usize,
    startup_runs: usize,
}

impl Sizes {
    fn from_args(args: &Args) -> Result<Sizes, String> {
        let pick = |given: Option<usize>, full: usize, smoke: usize| {
            given.unwrap_or(if args.smoke { smoke } else { full })
        };
        let sizes = Sizes {
            runs: pick(args.runs, 500, 5),
            fanouts: args.fanouts.clone().unwrap_or(if args.smoke {
                vec![2, 3]
            } else {
                vec![targets::FANOUT, 200]
            }),
            fanout_runs: pick(args.fanout_runs, 30, 2),
            overhead_runs: pick(args.overhead_runs, 300, 5),
            memory_runs: pick(args.memory_runs, 5, 1),
            idle: Duration::from_secs(args.idle_seconds.unwrap_or(if args.smoke { 1 } else { 10 })),
            tombstones: pick(args.tombstones, 10_000, 100),
            startup_runs: pick(args.startup_runs, 30, 3),
        };
        let counts = [
            ("--runs", sizes.runs),
            ("--fanout-runs", sizes.fanout_runs),
            ("--overhead-runs", sizes.overhead_runs),
            ("--memory-runs", sizes.memory_runs),
            ("--startup-runs", sizes.startup_runs),
        ];
        if let Some((flag, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if sizes.fanouts.contains(&0) {
            return Err("--fanouts must be at least 1 each".to_owned());
        }
        Ok(sizes)
    }
}

/// What every measurement needs: the binary under test, the harness (the
/// victim), a scratch directory on the graveyard filesystem, a watchdog.
pub struct Bench<'a> {
    pub kubexit: &'a Path,
    pub harness: &'a Path,
    pub scratch: &'a Path,
    pub watchdog: &'a Watchdog,
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
        if !procs::is_executable(path) {
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

    let watchdog = Watchdog::new();
    let full = Bench {
        kubexit: &args.kubexit,
        harness: &harness,
        scratch: scratch.path(),
        watchdog: &watchdog,
    };
    let slim = args
        .kubexit_slim
        .as_deref()
        .map(|kubexit| Bench { kubexit, ..full });
    let builds: Vec<(&str, &Bench)> = [Some(("full", &full)), slim.as_ref().map(|b| ("slim", b))]
        .into_iter()
        .flatten()
        .collect();
    let wanted = |m: Measurement| args.only.is_empty() || args.only.contains(&m);

    let mut results = Results {
        smoke: args.smoke,
        command: command_line(words),
        revision: args.revision.clone(),
        when: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        machine: Machine::detect(&args.graveyard_root),
        latency: Vec::new(),
        overhead: None,
        memory: Vec::new(),
        idle: Vec::new(),
        startup: None,
        sizes: Vec::new(),
        notes: Vec::new(),
    };

    if args.linger {
        results.notes.push(
            "--linger: children stayed alive until every dependent was timed, so no \
             dependent's own death competed with the reactions"
                .to_owned(),
        );
    }
    if wanted(Measurement::Latency) {
        eprintln!("latency: 1 dependent, {} runs", sizes.runs);
        results
            .latency
            .push(latency::measure(&full, 1, sizes.runs, args.linger)?);
    }
    if wanted(Measurement::Fanout) {
        for &dependents in &sizes.fanouts {
            eprintln!("latency: fan-out {dependents}, {} runs", sizes.fanout_runs);
            let fanout = latency::measure(&full, dependents, sizes.fanout_runs, args.linger)?;
            if let Some(note) = &fanout.limit_note {
                results.notes.push(note.clone());
            }
            if fanout.polling > 0 {
                results.notes.push(format!(
                    "fan-out {dependents}: {} kubexit runs fell back to polling the graveyard",
                    fanout.polling
                ));
            }
            results.latency.push(fanout);
        }
    }
    if wanted(Measurement::Overhead) {
        eprintln!("overhead: {} runs of each command", sizes.overhead_runs);
        let overhead = overhead::measure(&full, sizes.overhead_runs)?;
        results.notes.extend(overhead.notes.iter().cloned());
        results.overhead = Some(overhead);
    }
    if wanted(Measurement::Memory) {
        for (build, bench) in &builds {
            eprintln!("memory: {build} build, {} samples", sizes.memory_runs);
            results
                .memory
                .push(footprint::memory(bench, build, sizes.memory_runs)?);
        }
    }
    if wanted(Measurement::Idle) {
        for (build, bench) in &builds {
            eprintln!("idle: {build} build, {:?}", sizes.idle);
            results
                .idle
                .push(footprint::idle(bench, build, sizes.idle)?);
        }
    }
    if wanted(Measurement::Startup) {
        eprintln!(
            "start-up: {} tombstones, {} runs",
            sizes.tombstones, sizes.startup_runs
        );
        results.startup = Some(startup::measure(
            &full,
            sizes.tombstones,
            sizes.startup_runs,
        )?);
    }
    if wanted(Measurement::Size) {
        for (build, bench) in &builds {
            results.sizes.push(footprint::size(build, bench.kubexit)?);
        }
    }

    #[cfg(feature = "webhook")]
    if wanted(Measurement::Webhook) {
        eprintln!("webhook: reviews under load");
        webhook::measure(&full, &webhook::Sizes::new(args.smoke), &args.out)?;
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
        let svg = plots::latency_cdf(
            &one.all,
            &plots::Reference {
                label: "target p50".to_owned(),
                at: 1.0,
                ns: targets::LATENCY_P50_NS as f64,
            },
            &plots::Reference {
                label: "Go p50".to_owned(),
                at: 1.0,
                ns: targets::GO_LATENCY_P50_NS as f64,
            },
        );
        write(plots_dir.join("latency-cdf.svg"), svg)?;
    }
    let points: Vec<(usize, stats::Summary)> = results
        .latency
        .iter()
        .filter_map(|f| Some((f.dependents, stats::Summary::of(&f.worst)?)))
        .collect();
    if !points.is_empty() {
        let reference = |at: usize, ns: u64, label: &str| plots::Reference {
            label: label.to_owned(),
            at: at as f64,
            ns: ns as f64,
        };
        let svg = plots::fanout(
            &points,
            &[
                reference(1, targets::LATENCY_P50_NS, "target"),
                reference(targets::FANOUT, targets::FANOUT_WORST_NS, "target"),
            ],
            &[
                reference(1, targets::GO_LATENCY_P50_NS, "Go"),
                reference(targets::FANOUT, targets::GO_FANOUT_WORST_NS, "Go"),
            ],
        );
        write(plots_dir.join("latency-fanout.svg"), svg)?;
    }
    println!("{markdown}");
    Ok(())
}

/// The invocation, for the report: program name shortened, `--bench` left
/// out (cargo adds it).
fn command_line(words: &[OsString]) -> String {
    let mut line = vec!["harness".to_owned()];
    line.extend(
        words
            .iter()
            .skip(1)
            .map(|w| w.to_string_lossy().into_owned())
            .filter(|w| w != "--bench"),
    );
    line.join(" ")
}
