//! The subjects measured side by side: the floor, kubexit, and the Go
//! kubexit.
//!
//! A figure measured on one machine on one day says little about another
//! day: on a shared 2-core VM the same binary's reaction latency moves by
//! 2× from one run to the next. A ratio to a reference measured in the same
//! run, by the same method, taking turns run by run, holds much better.
//! Two references live in `../shared/peers/`:
//!
//! * **the floor**, `floor.c`: the least a death-dependency supervisor can
//!   do (one inotify read, one small read, one kill; no configuration, no
//!   logging, no record of its own death). The harness builds it with the
//!   system C compiler, `cc -O2`, into a directory of its own.
//! * **the Go kubexit**, `kubexit-go`: upstream, configured by environment
//!   variables only.
//!
//! `../shared` is found as the tests find it: where `KUBEXIT_SHARED` (or
//! `--shared`) points, else beside the checkout. Without it, or without a C
//! compiler, the harness says so and measures what it has: kubexit alone
//! if need be, with no ratios.
//!
//! Every subject is started the same way, as a container's entry point:
//! kubexit with its flags, the others with the `KUBEXIT_*` variables they
//! read, the harness's own `KUBEXIT_*` variables removed for all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::programs::{is_executable, without_kubexit_env};

/// What a subject is, which decides how it is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Floor,
    Kubexit,
    Go,
}

/// One binary measured.
#[derive(Debug, Clone)]
pub struct Subject {
    pub kind: Kind,
    /// For tables and plots: `floor`, `kubexit`, `kubexit slim`, `Go`.
    pub label: &'static str,
    /// For JSON: `floor`, `kubexit`, `kubexit-slim`, `go`.
    pub key: &'static str,
    pub path: PathBuf,
}

impl Subject {
    pub fn kubexit(path: &Path) -> Subject {
        Subject {
            kind: Kind::Kubexit,
            label: "kubexit",
            key: "kubexit",
            path: path.to_path_buf(),
        }
    }

    pub fn kubexit_slim(path: &Path) -> Subject {
        Subject {
            kind: Kind::Kubexit,
            label: "kubexit slim",
            key: "kubexit-slim",
            path: path.to_path_buf(),
        }
    }

    fn go(path: &Path) -> Subject {
        Subject {
            kind: Kind::Go,
            label: "Go",
            key: "go",
            path: path.to_path_buf(),
        }
    }

    fn floor(path: &Path) -> Subject {
        Subject {
            kind: Kind::Floor,
            label: "floor",
            key: "floor",
            path: path.to_path_buf(),
        }
    }

    /// The command that starts this subject as `name` in `yard`, with
    /// `death_deps` if any; the child's command line is appended by the
    /// caller. The floor needs exactly one death dependency.
    pub fn command(&self, yard: &Path, name: &str, death_deps: Option<&str>) -> Command {
        let mut command = Command::new(&self.path);
        without_kubexit_env(&mut command);
        match self.kind {
            Kind::Kubexit => {
                command.arg("--graveyard").arg(yard).arg("--name").arg(name);
                if let Some(deps) = death_deps {
                    command
                        .arg("--death-deps")
                        .arg(deps)
                        .arg("--grace-period")
                        .arg("30s");
                }
                command.arg("--");
            }
            Kind::Go | Kind::Floor => {
                command
                    .env("KUBEXIT_GRAVEYARD", yard)
                    .env("KUBEXIT_NAME", name);
                if let Some(deps) = death_deps {
                    command.env("KUBEXIT_DEATH_DEPS", deps);
                }
                if self.kind == Kind::Go {
                    command.env("KUBEXIT_GRACE_PERIOD", "30s");
                }
            }
        }
        command
    }

    /// The command line as a person would type it, for the report.
    pub fn describe(&self, yard: &str, name: &str, death_deps: Option<&str>) -> String {
        let path = crate::paths::shown(&self.path);
        match self.kind {
            Kind::Kubexit => {
                let deps = death_deps.map_or(String::new(), |d| {
                    format!(" --death-deps {d} --grace-period 30s")
                });
                format!("{path} --graveyard {yard} --name {name}{deps} --")
            }
            Kind::Go | Kind::Floor => {
                let deps = death_deps.map_or(String::new(), |d| format!(" KUBEXIT_DEATH_DEPS={d}"));
                let grace = if self.kind == Kind::Go {
                    " KUBEXIT_GRACE_PERIOD=30s"
                } else {
                    ""
                };
                format!("KUBEXIT_GRAVEYARD={yard} KUBEXIT_NAME={name}{deps}{grace} {path}")
            }
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label)
    }
}

/// The references found for this run, and what was said about them.
pub struct Peers {
    pub floor: Option<Subject>,
    pub go: Option<Subject>,
    /// Where each came from, for the report.
    pub described: Vec<String>,
    /// What is missing and why, for the report and the terminal.
    pub missing: Vec<String>,
}

impl Peers {
    /// No references: kubexit measured alone, on request.
    pub fn none(why: &str) -> Peers {
        Peers {
            floor: None,
            go: None,
            described: Vec::new(),
            missing: vec![why.to_owned()],
        }
    }

    /// Finds the Go kubexit in `shared/peers` and builds the floor from its
    /// source into `build_dir`. `shared` is `None` when nothing points
    /// anywhere and there is no `../shared` beside the checkout.
    pub fn find(shared: Option<&Path>, build_dir: &Path) -> Peers {
        let mut peers = Peers {
            floor: None,
            go: None,
            described: Vec::new(),
            missing: Vec::new(),
        };
        let Some(shared) = shared.filter(|dir| dir.join("peers").is_dir()) else {
            let looked = shared.map_or_else(default_shared, Path::to_path_buf);
            eprintln!("harness: no directory {}/peers", looked.display());
            peers.missing.push(format!(
                "no peers at {}/peers (set KUBEXIT_SHARED or --shared to the shared directory): \
                 kubexit is measured alone, without the floor or the Go kubexit, and no ratio \
                 is reported",
                crate::paths::shown(&looked)
            ));
            return peers;
        };
        let peers_dir = shared.join("peers");

        let source = peers_dir.join("floor.c");
        match build_floor(&source, build_dir) {
            Ok((binary, compiler)) => {
                peers.described.push(format!(
                    "floor: `{}` built with `cc -O2` ({compiler})",
                    crate::paths::shown(&source)
                ));
                peers.floor = Some(Subject::floor(&binary));
            }
            Err(why) => peers.missing.push(format!("no floor: {why}")),
        }

        let go = peers_dir.join("kubexit-go");
        if is_executable(&go) {
            peers
                .described
                .push(format!("Go: `{}`", crate::paths::shown(&go)));
            peers.go = Some(Subject::go(&go));
        } else {
            peers.missing.push(format!(
                "no Go kubexit: {} is not an executable file",
                crate::paths::shown(&go)
            ));
        }
        peers
    }
}

/// Where `../shared` would be: beside the checkout.
pub fn default_shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Compiles the floor with `cc -O2`; the binary and the compiler's first
/// line of `--version`.
fn build_floor(source: &Path, build_dir: &Path) -> Result<(PathBuf, String), String> {
    if !source.is_file() {
        return Err(format!("{} is missing", crate::paths::shown(source)));
    }
    let binary = build_dir.join("floor");
    let output = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&binary)
        .arg(source)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the C compiler `cc` ({e}); install gcc or clang"))?;
    if !output.status.success() {
        return Err(format!(
            "`cc -O2` failed on {}: {}",
            crate::paths::shown(source),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let version = Command::new("cc")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "version unknown".to_owned());
    Ok((binary, version))
}
