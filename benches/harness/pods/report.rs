//! The pods' report: `pods.md`, the Markdown for BENCHMARKS.md's section
//! "Pods on a real node" (between its `pods` markers), and `pods.json`
//! with every sample.
//!
//! A Job's seconds move in whole steps: the kubelet looks at its
//! containers about once a second, and the Job controller counts a pod's
//! end in batches of a second, so each run of a way ends on one of two or
//! three ticks a second apart. The median of a few runs then jumps by a
//! step from one run of the harness to the next, where the mean says how
//! often the later tick came. So each way is given as its mean, median,
//! fastest and slowest run of the seconds from the POST to the Job's end,
//! and compared by means: the ratio to the plain Job measured in the same
//! run, with a 90% bootstrap interval (`stats::Estimate::of_means`). The
//! goal of issue 30, a kubexit Job as fast as the plain one, is judged on
//! the way whose images carry kubexit: a mean at most [`GOAL`] times the
//! plain Job's, which admits no extra step of the kubelet (about a second,
//! a fifth of these Jobs).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::jobs::{self, Variant};
use super::{Sample, Series, Steps};
use crate::paths;
use crate::report::Machine;
use crate::stats::{Estimate, Summary};

/// The goal: (c') / (a), means, at most this.
pub const GOAL: f64 = 1.10;

pub struct Report {
    pub when: String,
    pub machine: Machine,
    pub load_at_start: String,
    pub load_at_end: String,
    pub command: String,
    pub revision: Option<String>,
    pub node: String,
    pub kubexit: PathBuf,
    pub go: Option<PathBuf>,
    pub runs: usize,
    pub warm_up: bool,
    pub series: Vec<Series>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn seconds(ns: u64) -> String {
    format!("{:.2} s", ns as f64 / 1e9)
}

/// `+1.02 s (+0.90 to +1.15)`: a difference of seconds, with its interval.
fn difference(estimate: &Estimate) -> String {
    format!(
        "{:+.2} s ({:+.2} to {:+.2})",
        estimate.value / 1e9,
        estimate.low / 1e9,
        estimate.high / 1e9
    )
}

impl Series {
    fn to_end(&self) -> Vec<u64> {
        self.samples.iter().map(|s| nanos(s.to_end)).collect()
    }

    fn step(&self, pick: impl Fn(&Steps) -> Option<Duration>) -> Vec<u64> {
        self.samples
            .iter()
            .filter_map(|s| pick(&s.steps).map(nanos))
            .collect()
    }

    /// `Complete ×7`, `Failed ×7`, `Complete ×6, Failed ×1`.
    fn endings(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for sample in &self.samples {
            match counts.iter_mut().find(|(e, _)| *e == sample.ended) {
                Some((_, n)) => *n += 1,
                None => counts.push((sample.ended.clone(), 1)),
            }
        }
        counts
            .iter()
            .map(|(ended, n)| format!("{ended} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Report {
    fn of(&self, variant: Variant) -> Option<&Series> {
        self.series.iter().find(|s| s.variant == variant)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Measured {}{} on {}{}, {} cores, Linux {}, {} memory; load average {} at the start, \
             {} at the end.\n",
            self.when,
            self.revision
                .as_ref()
                .map_or(String::new(), |r| format!(" at `{r}`")),
            m.cpu,
            if m.virtual_machine {
                " (virtual machine)"
            } else {
                ""
            },
            m.cores,
            m.kernel,
            m.memory,
            self.load_at_start,
            self.load_at_end
        );
        let _ = writeln!(md, "Command: `{}`\n", self.command);
        let _ = writeln!(
            md,
            "The node: Kubernetes v1.28.7 of `../shared/peers/cluster` (etcd, API server, \
             controller-manager, scheduler, containerd with runc, a kubelet; one node on \
             loopback), {}. The Job: main `{}`, and where there is one, a sidecar that SIGTERM \
             ends at once (`sleep 3600`; as a native sidecar, its container's PID 1, a shell \
             that exits 0 at SIGTERM); `backoffLimit: 0`, `restartPolicy: Never`. {} run{} of \
             each way, taking turns{}; each Job created once the one before is deleted and its \
             pod gone. Figures are seconds from the Job's POST to its condition \
             `Complete` or `Failed`, as the API server's watch delivered them.\n",
            self.node,
            jobs::MAIN.join(" "),
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            if self.warm_up {
                ", after one warm-up Job of each that is not counted"
            } else {
                ""
            }
        );
        md.push_str("Images, each the node's `localhost/busybox:v1` or that with one binary at `/bin/kubexit`:\n\n");
        let _ = writeln!(
            md,
            "- `{}`: kubexit, `{}`: the install image of (c), and the image both containers of (c') run",
            jobs::KUBEXIT_IMAGE,
            paths::shown(&self.kubexit)
        );
        if let Some(go) = &self.go {
            let _ = writeln!(
                md,
                "- `{}`: the Go kubexit, `{}`: the install image of (d)",
                jobs::GO_IMAGE,
                paths::shown(go)
            );
        } else {
            md.push_str("- no Go kubexit (`--alone`, or no `../shared/peers/kubexit-go`): (d) is not measured\n");
        }
        md.push('\n');
        self.main_table(&mut md);
        self.costs(&mut md);
        self.steps_table(&mut md);
        md
    }

    fn main_table(&self, md: &mut String) {
        let plain = self.of(Variant::Plain).map(Series::to_end);
        md.push_str(
            "| Job | ended | mean | median | min – max | / plain (a), means |\n\
             |---|---|---:|---:|---:|---:|\n",
        );
        for series in &self.series {
            let samples = series.to_end();
            let Some(summary) = Summary::of(&samples) else {
                continue;
            };
            let ratio = match (&plain, series.variant) {
                (_, Variant::Plain) => "1.00×".to_owned(),
                (Some(plain), _) => {
                    ratio_of_means(&samples, plain).map_or("–".to_owned(), |e| e.times())
                }
                (None, _) => "–".to_owned(),
            };
            let _ = writeln!(
                md,
                "| ({}) {} | {} | {} | {} | {} – {} | {ratio} |",
                series.variant.letter(),
                series.variant.label(),
                series.endings(),
                seconds(summary.mean as u64),
                seconds(summary.p50),
                seconds(summary.min),
                seconds(summary.max),
            );
        }
        md.push('\n');
    }

    /// The install step, the Go kubexit, and the goal, each in a line.
    fn costs(&self, md: &mut String) {
        let to_end = |v| self.of(v).map(Series::to_end);
        let difference_of_means =
            |a: &[u64], b: &[u64]| Estimate::of_means(&[a, b], |m| m[0] - m[1]);
        if let (Some(installed), Some(carried)) =
            (self.of(Variant::Installed), self.of(Variant::InImage))
        {
            let started = |s: &Series| s.step(|x| x.main_running?.checked_sub(x.scheduled?));
            let install_run = installed.step(|x| x.installed?.checked_sub(x.scheduled?));
            if let (Some(to_end), Some(to_start)) = (
                difference_of_means(&installed.to_end(), &carried.to_end()),
                difference_of_means(&started(installed), &started(carried)),
            ) {
                let _ = writeln!(
                    md,
                    "- **The install step**, (c) − (c'), means: {} to the Job's end, {} from \
                     scheduled to main running; in (c), the install container ended {} after \
                     the pod was scheduled (mean).",
                    difference(&to_end),
                    difference(&to_start),
                    mean_of(&install_run)
                );
            }
        }
        if let (Some(go), Some(installed)) = (to_end(Variant::Go), to_end(Variant::Installed))
            && let Some(ratio) = ratio_of_means(&go, &installed)
        {
            let exits = |variant| {
                let codes: std::collections::BTreeSet<i64> = self
                    .of(variant)
                    .into_iter()
                    .flat_map(|s| &s.samples)
                    .filter_map(|s| s.sidecar_exit)
                    .collect();
                if codes.is_empty() {
                    "–".to_owned()
                } else {
                    codes
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            let _ = writeln!(
                md,
                "- **The Go kubexit**, (d) / (c), means: {}; its sidecar ended with exit status {} \
                 (kubexit's: {}).",
                ratio.times(),
                exits(Variant::Go),
                exits(Variant::Installed)
            );
        }
        if let (Some(carried), Some(plain)) = (to_end(Variant::InImage), to_end(Variant::Plain))
            && let Some(ratio) = ratio_of_means(&carried, &plain)
        {
            let _ = writeln!(
                md,
                "- **The goal**, a kubexit Job as fast as the plain one: (c') / (a), means, {}; \
                 limit ≤ {GOAL:.2}×: {}.",
                ratio.times(),
                if ratio.value <= GOAL {
                    "met"
                } else {
                    "**missed**"
                }
            );
        }
        md.push('\n');
    }

    fn steps_table(&self, md: &mut String) {
        md.push_str(
            "Where the time goes: each step as first seen in the pod's status, seconds after the \
             POST, means (the kubelet reports a container's change at its next look, about once \
             a second, and the Job controller the pod's end in batches of a second):\n\n\
             | Job | POST answered | scheduled | install container ended | main running | main \
             ended | sidecar ended | pod ended | Job ended |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for series in &self.series {
            let post: Vec<u64> = series.samples.iter().map(|s| nanos(s.post)).collect();
            let _ = writeln!(
                md,
                "| ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
                series.variant.letter(),
                mean_of(&post),
                mean_of(&series.step(|s| s.scheduled)),
                mean_of(&series.step(|s| s.installed)),
                mean_of(&series.step(|s| s.main_running)),
                mean_of(&series.step(|s| s.main_ended)),
                mean_of(&series.step(|s| s.sidecar_ended)),
                mean_of(&series.step(|s| s.pod_ended)),
                mean_of(&series.to_end()),
            );
        }
        md.push('\n');
    }

    fn json(&self) -> Value {
        let step = |d: Option<Duration>| d.map_or(Value::Null, |d| json!(nanos(d)));
        let sample = |s: &Sample| {
            json!({
                "to_end_ns": nanos(s.to_end), "ended": s.ended, "post_ns": nanos(s.post),
                "sidecar_exit": s.sidecar_exit,
                "steps_ns": {
                    "scheduled": step(s.steps.scheduled),
                    "install_container_ended": step(s.steps.installed),
                    "main_running": step(s.steps.main_running),
                    "main_ended": step(s.steps.main_ended),
                    "sidecar_ended": step(s.steps.sidecar_ended),
                    "pod_ended": step(s.steps.pod_ended),
                },
            })
        };
        json!({
            "when": self.when,
            "revision": self.revision,
            "command": self.command,
            "machine": {
                "cpu": self.machine.cpu, "virtual_machine": self.machine.virtual_machine,
                "cores": self.machine.cores, "kernel": self.machine.kernel,
                "memory": self.machine.memory,
                "load_at_start": self.load_at_start, "load_at_end": self.load_at_end,
            },
            "node": self.node,
            "main": jobs::MAIN,
            "runs": self.runs,
            "warm_up": self.warm_up,
            "goal_ratio": GOAL,
            "variants": self.series.iter().map(|s| json!({
                "letter": s.variant.letter(), "key": s.variant.key(), "label": s.variant.label(),
                "samples": s.samples.iter().map(sample).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// `pods.md` and `pods.json` in `out`.
    pub fn write(&self, out: &Path, markdown: &str) -> Result<(), String> {
        let write = |name: &str, text: String| {
            let path = out.join(name);
            fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok::<(), String>(())
        };
        write("pods.json", format!("{:#}\n", self.json()))?;
        write("pods.md", markdown.to_owned())
    }
}

/// The mean, `–` without samples.
fn mean_of(values: &[u64]) -> String {
    Summary::of(values).map_or("–".to_owned(), |s| seconds(s.mean as u64))
}

fn ratio_of_means(numerator: &[u64], denominator: &[u64]) -> Option<Estimate> {
    Estimate::of_means(&[numerator, denominator], |m| m[0] / m[1])
}
