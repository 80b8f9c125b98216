//! Wrapper overhead: what wrapping a command costs, end to end.
//!
//! `true` alone, `kubexit true`, the Go kubexit's `true` and, when tini is
//! installed, `tini -s -- true`, each timed from just before the spawn to
//! just after the reap. The variants take turns run by run (and the first
//! of each turn changes from run to run), so that drift in the machine
//! (page cache, frequency, other load) falls on all of them alike. A few
//! runs of each are made first and not counted, to warm the page cache.
//!
//! kubexit runs as it would in a pod: it creates the graveyard if needed,
//! takes its liveness lock, writes `Born`, starts the child, reaps it,
//! writes `Died`, and exits with its status. The Go kubexit does the same
//! with its own means. The floor is no wrapper (it needs a death
//! dependency and does not notice its child's exit), so it has no place
//! here: the target is tini's overhead.

use std::process::Command;
use std::time::Duration;

use crate::Bench;
use crate::procs::run_timed;
use crate::programs::{which, without_kubexit_env};
use crate::subjects::Subject;

/// Runs not counted, per variant.
const WARM_UP: usize = 3;

/// One wrapped (or bare) command and its timings.
#[derive(Debug, Clone)]
pub struct Variant {
    /// A short key: `true`, `kubexit`, `go`, `tini`.
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

/// Measures `runs` runs of each variant: `true`, kubexit, the Go kubexit
/// when given, and tini when installed.
pub fn measure(
    bench: &Bench,
    kubexit: &Subject,
    go: Option<&Subject>,
    runs: usize,
) -> Result<Overhead, String> {
    let truth = which("true").ok_or("`true` is not on PATH")?;
    let dir = bench.run_dir("overhead")?;
    let shown_yard = "G";
    let mut candidates = vec![Candidate {
        key: "true",
        text: truth.display().to_string(),
        command: Box::new(|| Command::new(&truth)),
    }];
    for subject in [Some(kubexit), go].into_iter().flatten() {
        candidates.push(Candidate {
            key: subject.key,
            text: format!(
                "{} {}",
                subject.describe(shown_yard, "overhead", None),
                truth.display()
            ),
            command: Box::new(|| {
                let mut command = subject.command(&dir.yard, "overhead", None);
                command.arg(&truth);
                command
            }),
        });
    }
    let mut notes = Vec::new();
    match which("tini") {
        Some(tini) => {
            let truth = &truth;
            candidates.push(Candidate {
                key: "tini",
                text: format!("{} -s -- {}", tini.display(), truth.display()),
                command: Box::new(move || {
                    let mut command = Command::new(&tini);
                    command.arg("-s").arg("--").arg(truth);
                    command
                }),
            });
        }
        None => notes.push(
            "tini is not installed (Debian: apt-get install tini): `tini -s -- true` was \
             skipped, and with it the overhead target"
                .to_owned(),
        ),
    }
    let mut variants: Vec<Variant> = candidates
        .iter()
        .map(|candidate| Variant {
            key: candidate.key,
            command: candidate.text.clone(),
            samples: Vec::with_capacity(runs),
        })
        .collect();
    let limit = Duration::from_secs(10);
    let count = candidates.len();
    for run in 0..WARM_UP + runs {
        for turn in 0..count {
            let index = (run + turn) % count;
            let mut command = (candidates[index].command)();
            without_kubexit_env(&mut command);
            if let Some(uid) = bench.uid {
                use std::os::unix::process::CommandExt;
                command.uid(uid).gid(uid);
            }
            let (code, elapsed) = run_timed(&mut command, bench.watchdog, limit)?;
            let variant = &mut variants[index];
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

/// A command to time, made anew for each run.
struct Candidate<'a> {
    key: &'static str,
    text: String,
    command: Box<dyn Fn() -> Command + 'a>,
}
