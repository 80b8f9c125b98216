//! Wrapper overhead: what wrapping a command costs, end to end.
//!
//! `true` alone, `kubexit true` and, when tini is installed, `tini -s --
//! true`, each timed from just before the spawn to just after the reap.
//! The variants take turns run by run, so that drift in the machine (page
//! cache, frequency, other load) falls on all of them alike. A few runs of
//! each are made first and not counted, to warm the page cache.
//!
//! kubexit runs as it would in a pod: it creates the graveyard if needed,
//! takes its liveness lock, writes `Born`, starts the child, reaps it,
//! writes `Died`, and exits with its status.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Bench;
use crate::procs::{RunDir, run_timed, which, without_kubexit_env};

/// Runs not counted, per variant.
const WARM_UP: usize = 3;

/// One wrapped (or bare) command and its timings.
#[derive(Debug, Clone)]
pub struct Variant {
    /// A short key: `true`, `kubexit`, `tini`.
    pub key: &'static str,
    /// The command line, for the report.
    pub command: String,
    /// Nanoseconds per run.
    pub samples: Vec<u64>,
}

/// Every variant measured; tini's absence is noted, not an error.
#[derive(Debug, Clone)]
pub struct Overhead {
    pub variants: Vec<Variant>,
    pub notes: Vec<String>,
}

impl Overhead {
    pub fn variant(&self, key: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.key == key)
    }
}

/// Measures `runs` runs of each variant.
pub fn measure(bench: &Bench, runs: usize) -> Result<Overhead, String> {
    let truth = which("true").ok_or("`true` is not on PATH")?;
    let dir = RunDir::new(bench.scratch, "overhead")?;
    let mut candidates = vec![
        Candidate::new("true", &truth, &[]),
        Candidate::new(
            "kubexit",
            bench.kubexit,
            &[
                "--graveyard".as_ref(),
                dir.yard.as_os_str(),
                "--name".as_ref(),
                "overhead".as_ref(),
                "--".as_ref(),
                truth.as_os_str(),
            ],
        ),
    ];
    let mut notes = Vec::new();
    match which("tini") {
        Some(tini) => candidates.push(Candidate::new(
            "tini",
            &tini,
            &["-s".as_ref(), "--".as_ref(), truth.as_os_str()],
        )),
        None => notes.push("tini is not installed: `tini -s -- true` was skipped".to_owned()),
    }
    let mut variants: Vec<Variant> = candidates
        .iter()
        .map(|candidate| Variant {
            key: candidate.key,
            command: candidate.text(),
            samples: Vec::with_capacity(runs),
        })
        .collect();
    let limit = Duration::from_secs(10);
    for run in 0..WARM_UP + runs {
        for (variant, candidate) in variants.iter_mut().zip(&candidates) {
            let (code, elapsed) = run_timed(&mut candidate.command(), bench.watchdog, limit)?;
            if code != 0 {
                return Err(format!("`{}` exited {code}", variant.command));
            }
            if run >= WARM_UP {
                variant.samples.push(elapsed);
            }
        }
    }
    Ok(Overhead { variants, notes })
}

/// A command to time.
struct Candidate {
    key: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
}

impl Candidate {
    fn new(key: &'static str, program: &Path, args: &[&OsStr]) -> Candidate {
        Candidate {
            key,
            program: program.to_path_buf(),
            args: args.iter().map(|&a| a.to_owned()).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        without_kubexit_env(&mut command);
        command
    }

    fn text(&self) -> String {
        let mut text = self.program.display().to_string();
        for arg in &self.args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }
}
