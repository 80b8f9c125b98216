//! The report: every figure with the machine it was measured on, as JSON
//! for tools and as Markdown for BENCHMARKS.md.
//!
//! Figures are given as ratios measured in the run (kubexit / floor, Go /
//! kubexit), with the absolute figures beside them and a 90% bootstrap
//! interval on each ratio of medians (see `stats::Estimate`), and every
//! target is judged as the issue states it: mostly as a ratio to a
//! reference measured in the same run, so that it holds on any machine.
//! A smoke run's figures are not judged.
//!
//! The JSON keeps the raw samples (nanoseconds, KiB, bytes), so that plots
//! and summaries can be made again without measuring again.

use std::fmt::{self, Write as _};
use std::fs;
use std::path::Path;

use kubexit::json::Quoted;

use crate::footprint::{Idle, Memory, Size};
use crate::latency::{Fanout, Series};
use crate::overhead::Overhead;
use crate::scale::Scale;
use crate::startup::Startup;
use crate::stats::{Estimate, Summary, human_bytes, human_kib, human_ns};

/// The targets of issue 14 for a 2-core machine (and issue 7's sizes).
pub mod targets {
    /// Reaction latency, one dependent, p50: at most this times the floor's.
    pub const LATENCY_VS_FLOOR: f64 = 1.15;
    /// Fan-outs judged, worst dependent per run, p50 over runs: at most
    /// this times the floor's.
    pub const FANOUTS: [usize; 2] = [50, 200];
    pub const FANOUT_VS_FLOOR: f64 = 1.30;
    /// `kubexit true`'s overhead over `true`: at most tini's.
    pub const OVERHEAD_VS_TINI: f64 = 1.0;
    /// Start-up among 10,000 tombstones: at most this times start-up in an
    /// empty graveyard.
    pub const CROWDED_VS_EMPTY: f64 = 1.2;
    pub const RSS_SLIM_KIB: u64 = 2 * 1024;
    pub const RSS_FULL_KIB: u64 = 3 * 1024;
    pub const SIZE_SLIM_BYTES: u64 = 2 * 1024 * 1024;
    pub const SIZE_FULL_BYTES: u64 = 8 * 1024 * 1024;
}

/// Everything one invocation measured.
pub struct Results {
    pub smoke: bool,
    pub command: String,
    pub revision: Option<String>,
    pub when: String,
    pub machine: Machine,
    /// Each subject and where it came from.
    pub subjects_described: Vec<String>,
    /// What was missing, and so not measured.
    pub peers_missing: Vec<String>,
    pub latency: Vec<Fanout>,
    pub overhead: Option<Overhead>,
    pub memory: Vec<Memory>,
    pub idle: Vec<Idle>,
    pub startup: Option<Startup>,
    pub sizes: Vec<Size>,
    pub scale: Option<Scale>,
    /// The webhook's own report (Markdown), when it was measured.
    pub webhook: Option<String>,
    pub notes: Vec<String>,
    /// The load averages when the run ended.
    pub load_at_end: String,
}

/// The machine, as BENCHMARKS.md describes it.
pub struct Machine {
    pub cpu: String,
    /// The CPU flags say a hypervisor runs underneath.
    pub virtual_machine: bool,
    pub cores: usize,
    pub kernel: String,
    pub memory: String,
    pub graveyard_root: String,
    pub graveyard_fs: String,
    /// The load averages (1, 5, 15 minutes) when the run started: the
    /// machine is shared, and other work competes with the measurements.
    pub load_at_start: String,
}

/// The load averages over 1, 5 and 15 minutes, from /proc/loadavg.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Machine {
    pub fn detect(graveyard_root: &Path) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or("unknown".to_owned(), |(_, name)| name.trim().to_owned());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|kib| kib.split_whitespace().next()?.parse::<u64>().ok())
            .map_or("unknown".to_owned(), |kib| {
                format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0)
            });
        let virtual_machine = cpuinfo
            .lines()
            .find(|line| line.starts_with("flags"))
            .is_some_and(|flags| flags.split_whitespace().any(|f| f == "hypervisor"));
        Machine {
            cpu,
            virtual_machine,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("unknown".to_owned(), |k| k.trim().to_owned()),
            memory,
            graveyard_root: graveyard_root.display().to_string(),
            graveyard_fs: filesystem_of(graveyard_root),
            load_at_start: load_average(),
        }
    }
}

/// The type of the filesystem `path` is on, from /proc/mounts (the mount
/// with the longest matching mount point).
fn filesystem_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then_some((point.len(), kind, device))
        })
        .max_by_key(|(len, _, _)| *len)
        .map_or("unknown".to_owned(), |(_, kind, device)| {
            if device.starts_with('/') {
                format!("{kind} on {device}")
            } else {
                kind.to_owned()
            }
        })
}

impl Results {
    pub fn fanout(&self, dependents: usize) -> Option<&Fanout> {
        self.latency.iter().find(|f| f.dependents == dependents)
    }

    /// Every target, judged.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let ratio_verdict =
            |name: String, estimate: Option<Estimate>, parts: String, limit: f64, why_not: &str| {
                Verdict {
                    name,
                    measured: estimate
                        .map_or_else(|| why_not.to_owned(), |e| format!("{}: {parts}", e.times())),
                    limit: format!("≤ {limit:.2}×"),
                    met: estimate.map(|e| e.value <= limit),
                    estimate,
                }
            };
        if let Some(one) = self.fanout(1) {
            let (kubexit, floor) = (one.of("kubexit"), one.of("floor"));
            verdicts.push(ratio_verdict(
                "Reaction latency, 1 dependent, p50: kubexit / floor".to_owned(),
                kubexit
                    .zip(floor)
                    .and_then(|(k, f)| Estimate::ratio(&k.all, &f.all)),
                pair(kubexit.map(|s| &s.all[..]), floor.map(|s| &s.all[..])),
                targets::LATENCY_VS_FLOOR,
                "not measured: no floor",
            ));
        }
        for dependents in targets::FANOUTS {
            let Some(fanout) = self.fanout(dependents) else {
                continue;
            };
            let (kubexit, floor) = (fanout.of("kubexit"), fanout.of("floor"));
            verdicts.push(ratio_verdict(
                format!("Fan-out {dependents}, worst dependent per run, p50: kubexit / floor"),
                kubexit
                    .zip(floor)
                    .and_then(|(k, f)| Estimate::ratio(&k.worst, &f.worst)),
                pair(kubexit.map(|s| &s.worst[..]), floor.map(|s| &s.worst[..])),
                targets::FANOUT_VS_FLOOR,
                "not measured: no floor",
            ));
        }
        if let Some(overhead) = &self.overhead {
            let samples = |key| overhead.variant(key).map(|v| &v.samples[..]);
            let estimate = match (samples("true"), samples("kubexit"), samples("tini")) {
                (Some(t), Some(k), Some(tini)) => {
                    Estimate::of_medians(&[t, k, tini], |m| (m[1] - m[0]) / (m[2] - m[0]))
                }
                _ => None,
            };
            let added = |key| {
                let truth = Summary::of(samples("true")?)?.p50;
                Some(human_ns(
                    Summary::of(samples(key)?)?.p50 as f64 - truth as f64,
                ))
            };
            verdicts.push(ratio_verdict(
                "Wrapper overhead over `true`, medians: `kubexit true` / `tini -s -- true`"
                    .to_owned(),
                estimate,
                format!(
                    "{} / {}",
                    added("kubexit").unwrap_or_default(),
                    added("tini").unwrap_or_default()
                ),
                targets::OVERHEAD_VS_TINI,
                "not measured: tini is not installed",
            ));
        }
        if let Some(starts) = self.startup.as_ref().and_then(|s| s.of("kubexit")) {
            let startup = self.startup.as_ref().map_or(0, |s| s.tombstones);
            verdicts.push(ratio_verdict(
                format!(
                    "Start-up, spawn to child running, median: {startup} tombstones / empty \
                     graveyard, kubexit"
                ),
                Estimate::ratio(&starts.crowded, &starts.empty),
                pair(Some(&starts.crowded), Some(&starts.empty)),
                targets::CROWDED_VS_EMPTY,
                "not measured",
            ));
        }
        for memory in &self.memory {
            let limit = match memory.subject.key {
                "kubexit" => targets::RSS_FULL_KIB,
                "kubexit-slim" => targets::RSS_SLIM_KIB,
                _ => continue,
            };
            let Some(peak) = Summary::of(&memory.idle_peak_kib) else {
                continue;
            };
            verdicts.push(Verdict {
                name: format!(
                    "Peak RSS (VmHWM), max of {}, {} build",
                    peak.count,
                    build_name(memory.subject.key)
                ),
                measured: human_kib(peak.max),
                limit: format!("≤ {}", human_kib(limit)),
                met: Some(peak.max <= limit),
                estimate: None,
            });
        }
        let idle: Vec<&Idle> = self
            .idle
            .iter()
            .filter(|i| i.subject.key.starts_with("kubexit"))
            .collect();
        if !idle.is_empty() {
            let each: Vec<String> = idle
                .iter()
                .map(|i| {
                    format!(
                        "{} build {} ({} wake-ups)",
                        build_name(i.subject.key),
                        i.on_cpu_ns
                            .map_or_else(|| format!("{} ms", i.cpu_ms), |ns| human_ns(ns as f64)),
                        i.wakeups.map_or("n/a".to_owned(), |n| n.to_string())
                    )
                })
                .collect();
            verdicts.push(Verdict {
                name: format!(
                    "CPU time while idle, {} s, {} death dependencies",
                    idle[0].window.as_secs_f64(),
                    idle[0].dependencies
                ),
                measured: each.join("; "),
                limit: "none".to_owned(),
                met: Some(idle.iter().all(|i| i.is_idle())),
                estimate: None,
            });
        }
        for size in self
            .sizes
            .iter()
            .filter(|s| s.subject.key.starts_with("kubexit"))
        {
            let limit = if size.subject.key == "kubexit-slim" {
                targets::SIZE_SLIM_BYTES
            } else {
                targets::SIZE_FULL_BYTES
            };
            verdicts.push(Verdict {
                name: format!(
                    "Binary size, {} build (issue 7)",
                    build_name(size.subject.key)
                ),
                measured: format!("{} ({})", human_bytes(size.bytes), linkage(size)),
                limit: format!("≤ {}, static", human_bytes(limit)),
                met: Some(size.bytes <= limit && size.is_static == Some(true)),
                estimate: None,
            });
        }
        verdicts
    }

    /// The Markdown: the run, the targets, the figures side by side, the
    /// wake-ups, the scale run, notes.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.heading(&mut md);
        self.targets_table(&mut md);
        self.side_by_side_table(&mut md);
        self.wakeups_table(&mut md);
        self.scale_table(&mut md);
        if let Some(webhook) = &self.webhook {
            md.push_str(webhook);
            md.push('\n');
        }
        if !self.notes.is_empty() {
            md.push_str("Notes:\n\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
            md.push('\n');
        }
        md
    }

    fn heading(&self, md: &mut String) {
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Measured {}{} on {}{}, {} cores, Linux {}, {} memory; graveyards on {} ({}); load \
             average {} at the start, {} at the end.\n",
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
            m.graveyard_root,
            m.graveyard_fs,
            m.load_at_start,
            self.load_at_end
        );
        if self.smoke {
            md.push_str(
                "**Smoke run**: tiny sizes and whatever binary was given; the figures only show \
                 that every measurement runs, and no target is judged.\n\n",
            );
        }
        let _ = writeln!(md, "Command: `{}`\n", self.command);
        if !self.subjects_described.is_empty() {
            md.push_str("Subjects, measured in turn run by run:\n\n");
            for line in &self.subjects_described {
                let _ = writeln!(md, "- {line}");
            }
            md.push('\n');
        }
        for line in &self.peers_missing {
            let _ = writeln!(md, "**Not measured**: {line}.\n");
        }
    }

    fn targets_table(&self, md: &mut String) {
        let verdicts = self.verdicts();
        if verdicts.is_empty() {
            return;
        }
        let missed = verdicts.iter().filter(|v| v.met == Some(false)).count();
        let summary = match (self.smoke, missed) {
            (true, _) => "Targets (not judged in a smoke run):".to_owned(),
            (false, 0) => "Targets: every target measured is met.".to_owned(),
            (false, n) => format!("Targets: {n} of {} missed.", verdicts.len()),
        };
        let _ = writeln!(
            md,
            "{summary} Ratios are of medians measured in this run, with a 90% bootstrap \
             interval in brackets.\n"
        );
        md.push_str("| Target | Measured | Limit | |\n|---|---|---|---|\n");
        for v in &verdicts {
            let verdict = match (self.smoke, v.met) {
                (true, _) => "–",
                (false, Some(true)) => "met",
                (false, Some(false)) => "**missed**",
                (false, None) => "not measured",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {verdict} |",
                v.name, v.measured, v.limit
            );
        }
        md.push('\n');
    }

    fn side_by_side_table(&self, md: &mut String) {
        let columns = ["floor", "kubexit", "go"];
        let mut rows = String::new();
        let mut row = |measure: String, cells: [String; 3], ratios: [String; 2]| {
            let _ = writeln!(
                rows,
                "| {measure} | {} | {} | {} | {} | {} |",
                cells[0], cells[1], cells[2], ratios[0], ratios[1]
            );
        };
        let ratios_of = |series: [Option<&[u64]>; 3]| -> [String; 2] {
            let [floor, kubexit, go] = series;
            let text = |a: Option<&[u64]>, b: Option<&[u64]>| {
                a.zip(b)
                    .and_then(|(a, b)| Estimate::ratio(a, b))
                    .map_or("–".to_owned(), |e| e.times())
            };
            [text(kubexit, floor), text(go, kubexit)]
        };
        let dash = || "–".to_owned();
        for fanout in &self.latency {
            let series = columns.map(|key| fanout.of(key));
            let pick = |f: fn(&Series) -> &[u64]| series.map(|s| s.map(f));
            let runs = fanout.series.first().map_or(0, |s| s.worst.len());
            let cell = |s: Option<&Series>, f: &dyn Fn(&Series) -> String| s.map_or_else(dash, f);
            if fanout.dependents == 1 {
                row(
                    format!("Reaction latency, 1 dependent, p50 ({runs} runs each)"),
                    series.map(|s| cell(s, &|s| p50_of(&s.all))),
                    ratios_of(pick(|s| &s.all)),
                );
                row(
                    "Reaction latency, 1 dependent, p99 / max".to_owned(),
                    series.map(|s| {
                        cell(s, &|s| {
                            Summary::of(&s.all).map_or_else(dash, |x| {
                                format!("{} / {}", human_ns(x.p99 as f64), human_ns(x.max as f64))
                            })
                        })
                    }),
                    [dash(), dash()],
                );
            } else {
                row(
                    format!(
                        "Fan-out {}, worst dependent per run, p50 ({runs} runs each)",
                        fanout.dependents
                    ),
                    series.map(|s| cell(s, &|s| p50_of(&s.worst))),
                    ratios_of(pick(|s| &s.worst)),
                );
                row(
                    format!(
                        "Fan-out {}, worst run; p50 of all dependents",
                        fanout.dependents
                    ),
                    series.map(|s| {
                        cell(s, &|s| {
                            format!(
                                "{}; {}",
                                Summary::of(&s.worst).map_or_else(dash, |x| human_ns(x.max as f64)),
                                p50_of(&s.all)
                            )
                        })
                    }),
                    ratios_of(pick(|s| &s.all)),
                );
            }
        }
        if let Some(overhead) = &self.overhead {
            let samples = |key: &str| overhead.variant(key).map(|v| &v.samples[..]);
            let runs = samples("true").map_or(0, <[u64]>::len);
            let median = |key: &str| samples(key).and_then(Summary::of).map(|s| s.p50);
            let truth = median("true").unwrap_or(0);
            let tini =
                median("tini").map_or(String::new(), |t| format!("; tini {}", human_ns(t as f64)));
            row(
                format!(
                    "`true` wrapped, median ({runs} runs each; `true` alone {}{tini})",
                    human_ns(truth as f64)
                ),
                [
                    dash(),
                    median("kubexit").map_or_else(dash, |m| human_ns(m as f64)),
                    median("go").map_or_else(dash, |m| human_ns(m as f64)),
                ],
                ratios_of([None, samples("kubexit"), samples("go")]),
            );
            let added = |key: &str| median(key).map(|m| m as f64 - truth as f64);
            let over = |a: Option<f64>, b: Option<f64>| match (samples("true"), a, b) {
                (Some(t), Some(_), Some(_)) => {
                    let (ka, kb) = (samples("kubexit"), samples("go"));
                    ka.zip(kb)
                        .and_then(|(k, g)| {
                            Estimate::of_medians(&[t, k, g], |m| (m[2] - m[0]) / (m[1] - m[0]))
                        })
                        .map_or_else(dash, |e| e.times())
                }
                _ => dash(),
            };
            row(
                "Wrapper overhead over `true`, medians".to_owned(),
                [
                    dash(),
                    added("kubexit").map_or_else(dash, human_ns),
                    added("go").map_or_else(dash, human_ns),
                ],
                [dash(), over(added("kubexit"), added("go"))],
            );
        }
        if let Some(startup) = &self.startup {
            let series = columns.map(|key| startup.of(key));
            let alone = Summary::of(&startup.direct).map_or_else(dash, |s| human_ns(s.p50 as f64));
            row(
                format!(
                    "Start-up, spawn to child running, {} tombstones, median ({} runs each; \
                     child alone {alone})",
                    startup.tombstones,
                    startup.direct.len()
                ),
                series.map(|s| s.map_or_else(dash, |s| p50_of(&s.crowded))),
                ratios_of(series.map(|s| s.map(|s| &s.crowded[..]))),
            );
            row(
                "Start-up, empty graveyard, median".to_owned(),
                series.map(|s| s.map_or_else(dash, |s| p50_of(&s.empty))),
                ratios_of(series.map(|s| s.map(|s| &s.empty[..]))),
            );
            row(
                format!(
                    "Start-up, {} tombstones / empty graveyard",
                    startup.tombstones
                ),
                series.map(|s| {
                    s.and_then(|s| Estimate::ratio(&s.crowded, &s.empty))
                        .map_or_else(dash, |e| e.times())
                }),
                [dash(), dash()],
            );
        }
        if !self.memory.is_empty() {
            let peak = |key: &str| {
                self.memory
                    .iter()
                    .find(|m| m.subject.key == key)
                    .and_then(|m| m.idle_peak_kib.iter().copied().max())
            };
            let count = self.memory.first().map_or(0, |m| m.idle_peak_kib.len());
            let slim =
                peak("kubexit-slim").map_or(String::new(), |p| format!(" (slim {})", human_kib(p)));
            let ratio = |a: Option<u64>, b: Option<u64>| {
                a.zip(b)
                    .map_or_else(dash, |(a, b)| format!("{:.2}×", a as f64 / b as f64))
            };
            row(
                format!("Peak RSS (VmHWM) while supervising, max of {count}"),
                [
                    peak("floor").map_or_else(dash, human_kib),
                    peak("kubexit").map_or_else(dash, |p| format!("{}{slim}", human_kib(p))),
                    peak("go").map_or_else(dash, human_kib),
                ],
                [
                    ratio(peak("kubexit"), peak("floor")),
                    ratio(peak("go"), peak("kubexit")),
                ],
            );
        }
        if !self.idle.is_empty() {
            let idle = |key: &str| self.idle.iter().find(|i| i.subject.key == key);
            let text = |i: &Idle| {
                format!(
                    "{} ({})",
                    i.on_cpu_ns
                        .map_or_else(|| format!("{} ms", i.cpu_ms), |ns| human_ns(ns as f64)),
                    i.wakeups.map_or("n/a".to_owned(), |n| n.to_string())
                )
            };
            let window = self.idle[0].window.as_secs_f64();
            let slim =
                idle("kubexit-slim").map_or(String::new(), |i| format!("; slim {}", text(i)));
            row(
                format!(
                    "CPU time over {window} s idle, 3 death dependencies (the floor: 1): on-CPU \
                     time (wake-ups)"
                ),
                [
                    idle("floor").map_or_else(dash, text),
                    idle("kubexit").map_or_else(dash, |i| format!("{}{slim}", text(i))),
                    idle("go").map_or_else(dash, text),
                ],
                [dash(), dash()],
            );
        }
        if !self.sizes.is_empty() {
            let size = |key: &str| self.sizes.iter().find(|s| s.subject.key == key);
            let slim = size("kubexit-slim").map_or(String::new(), |s| {
                format!(" (slim {})", human_bytes(s.bytes))
            });
            row(
                "Binary size".to_owned(),
                [
                    dash(),
                    size("kubexit").map_or_else(dash, |s| {
                        format!("{}{slim}, {}", human_bytes(s.bytes), linkage(s))
                    }),
                    size("go").map_or_else(dash, |s| {
                        format!("{}, {}", human_bytes(s.bytes), linkage(s))
                    }),
                ],
                [
                    dash(),
                    size("kubexit").zip(size("go")).map_or_else(dash, |(k, g)| {
                        format!("{:.2}×", g.bytes as f64 / k.bytes as f64)
                    }),
                ],
            );
        }
        if !rows.is_empty() {
            md.push_str(
                "| Measure | floor | kubexit | Go | kubexit / floor | Go / kubexit |\n\
                 |---|---|---|---|---|---|\n",
            );
            md.push_str(&rows);
            md.push('\n');
        }
    }

    fn wakeups_table(&self, md: &mut String) {
        let fanouts: Vec<&Fanout> = self.latency.iter().filter(|f| f.dependents > 1).collect();
        if fanouts.is_empty() {
            return;
        }
        let alone = self.fanout(1);
        let columns = ["floor", "kubexit", "go"];
        let mean =
            |v: &[u64]| (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64);
        let dash = || "–".to_owned();
        md.push_str(
            "Wake-ups (voluntary context switches, all threads) and CPU time per dependent, \
             mean (max):\n\n| | floor | kubexit | Go |\n|---|---|---|---|\n",
        );
        let mut row = |what: String, cells: [String; 3]| {
            let _ = writeln!(
                md,
                "| {what} | {} | {} | {} |",
                cells[0], cells[1], cells[2]
            );
        };
        let mean_max = |v: &[u64]| {
            mean(v).map_or_else(dash, |m| {
                format!("{m:.1} ({})", v.iter().max().copied().unwrap_or(0))
            })
        };
        let cpu = |v: &[u64]| {
            mean(v).map_or_else(dash, |m| {
                format!(
                    "{} ({})",
                    human_ns(m),
                    human_ns(v.iter().max().copied().unwrap_or(0) as f64)
                )
            })
        };
        let each = |f: &Fanout, show: &dyn Fn(&Series) -> String| {
            columns.map(|k| f.of(k).map_or_else(dash, show))
        };
        if let Some(alone) = alone {
            row(
                "Alone (1 dependent): wake-ups before the death (its start-up)".to_owned(),
                each(alone, &|s| mean_max(&s.wakeups_before)),
            );
            row(
                "Alone: wake-ups from the death to exit (the child's included)".to_owned(),
                each(alone, &|s| mean_max(&s.wakeups_after)),
            );
            row(
                "Alone: CPU time from the death to exit (the child's exit included)".to_owned(),
                each(alone, &|s| cpu(&s.cpu_after)),
            );
        }
        for fanout in fanouts {
            let n = fanout.dependents;
            row(
                format!("Fan-out {n}: wake-ups before the death (start-up, siblings' births)"),
                each(fanout, &|s| mean_max(&s.wakeups_before)),
            );
            row(
                format!(
                    "Fan-out {n}: of which for siblings' tombstones (mean − alone; per sibling \
                     born after it)"
                ),
                columns.map(|k| {
                    let crowd = fanout.of(k).and_then(|s| mean(&s.wakeups_before));
                    let lone = alone
                        .and_then(|a| a.of(k))
                        .and_then(|s| mean(&s.wakeups_before));
                    crowd.zip(lone).map_or_else(dash, |(c, l)| {
                        let extra = c - l;
                        // On average a dependent sees (n − 1) / 2 siblings
                        // born after it.
                        let later = (n as f64 - 1.0) / 2.0;
                        format!("{extra:.1} ({:.2})", extra / later)
                    })
                }),
            );
            row(
                format!("Fan-out {n}: wake-ups from the death to exit (the child's included)"),
                each(fanout, &|s| mean_max(&s.wakeups_after)),
            );
            row(
                format!("Fan-out {n}: CPU time from the death to exit (the child's exit included)"),
                each(fanout, &|s| cpu(&s.cpu_after)),
            );
        }
        md.push('\n');
    }

    fn scale_table(&self, md: &mut String) {
        let Some(scale) = &self.scale else {
            return;
        };
        let dash = || "–".to_owned();
        md.push_str(
            "Scale: kubexits in one graveyard, each with a death dependency on one process:\n\n\
             | Run | kubexits | all children running after | inotify instances / watches held \
             | polling | fleet while idle: on-CPU time (wake-ups) | stopped / missed \
             | exited 0 | latency p50 / worst: watching; polling |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for run in &scale.runs {
            let latencies = |v: &[u64]| {
                Summary::of(v).map_or_else(dash, |s| {
                    format!("{} / {}", human_ns(s.p50 as f64), human_ns(s.max as f64))
                })
            };
            let _ = writeln!(
                md,
                "| {} (max_user_instances {}, max_user_watches {}; {} instances in use before) \
                 | {} | {} | {} / {} | {} | {} over {} s ({}) | {} / {} | {} | {}; {} |",
                run.label,
                run.max_user_instances.map_or_else(dash, |n| n.to_string()),
                run.max_user_watches.map_or_else(dash, |n| n.to_string()),
                run.held_before.instances,
                run.dependents,
                human_ns(run.started_ns as f64),
                run.held.instances,
                run.held.watches,
                run.polling,
                human_ns(run.idle_cpu_ns as f64),
                run.idle_window.as_secs_f64(),
                run.idle_wakeups,
                run.stopped,
                run.missed(),
                run.exited_zero,
                latencies(&run.watching_ns),
                latencies(&run.polling_ns),
            );
        }
        md.push('\n');
        if let Some(run) = scale
            .runs
            .iter()
            .find(|r| r.polling == 0 && r.held.instances > 0)
        {
            let watching = run.dependents;
            let _ = writeln!(
                md,
                "Each watching kubexit held {:.2} inotify instance and {:.2} watches. A node \
                 needs `fs.inotify.max_user_instances` ≥ the kubexits running under one uid on \
                 the node (all pods together) plus what else that uid holds, and \
                 `fs.inotify.max_user_watches` ≥ {:.0}× that; beyond it, kubexit polls every \
                 100 ms.\n",
                run.held.instances as f64 / watching as f64,
                run.held.watches as f64 / watching as f64,
                (run.held.watches as f64 / watching as f64).ceil()
            );
        }
        for note in scale
            .notes
            .iter()
            .chain(scale.runs.iter().flat_map(|r| &r.problems))
        {
            let _ = writeln!(md, "- {note}");
        }
        md.push('\n');
    }

    pub fn json(&self) -> Json {
        let m = &self.machine;
        let samples = |v: &[u64]| Json::Arr(v.iter().map(|&n| Json::Int(n)).collect());
        let summary = |v: &[u64]| Summary::of(v).map_or(Json::Null, summary_json);
        let strings = |v: &[String]| Json::Arr(v.iter().map(|n| Json::str(n)).collect());
        Json::obj([
            ("smoke", Json::Bool(self.smoke)),
            ("command", Json::str(&self.command)),
            (
                "revision",
                self.revision.as_deref().map_or(Json::Null, Json::str),
            ),
            ("when", Json::str(&self.when)),
            (
                "machine",
                Json::obj([
                    ("cpu", Json::str(&m.cpu)),
                    ("virtual_machine", Json::Bool(m.virtual_machine)),
                    ("cores", Json::Int(m.cores as u64)),
                    ("kernel", Json::str(&m.kernel)),
                    ("memory", Json::str(&m.memory)),
                    ("graveyard_root", Json::str(&m.graveyard_root)),
                    ("graveyard_fs", Json::str(&m.graveyard_fs)),
                    ("load_at_start", Json::str(&m.load_at_start)),
                    ("load_at_end", Json::str(&self.load_at_end)),
                ]),
            ),
            (
                "peers",
                Json::obj([
                    ("described", strings(&self.subjects_described)),
                    ("missing", strings(&self.peers_missing)),
                ]),
            ),
            (
                "targets",
                Json::Arr(
                    self.verdicts()
                        .into_iter()
                        .map(|v| {
                            Json::obj([
                                ("target", Json::str(&v.name)),
                                ("measured", Json::str(&v.measured)),
                                ("limit", Json::str(&v.limit)),
                                ("met", v.met.map_or(Json::Null, Json::Bool)),
                                (
                                    "ratio",
                                    v.estimate.map_or(Json::Null, |e| {
                                        Json::obj([
                                            ("value", Json::Num(e.value)),
                                            ("low_90", Json::Num(e.low)),
                                            ("high_90", Json::Num(e.high)),
                                        ])
                                    }),
                                ),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "latency_ns",
                Json::Arr(
                    self.latency
                        .iter()
                        .map(|f| {
                            Json::obj([
                                ("dependents", Json::Int(f.dependents as u64)),
                                ("notes", strings(&f.notes)),
                                (
                                    "subjects",
                                    Json::Arr(
                                        f.series
                                            .iter()
                                            .map(|s| {
                                                Json::obj([
                                                    ("subject", Json::str(s.subject.key)),
                                                    ("runs", Json::Int(s.worst.len() as u64)),
                                                    ("worst_per_run", summary(&s.worst)),
                                                    ("all_dependents", summary(&s.all)),
                                                    ("worst_per_run_samples", samples(&s.worst)),
                                                    (
                                                        "all_samples",
                                                        if f.dependents == 1 {
                                                            samples(&s.all)
                                                        } else {
                                                            Json::Null
                                                        },
                                                    ),
                                                    (
                                                        "dependents_polling",
                                                        Json::Int(s.polling as u64),
                                                    ),
                                                    (
                                                        "wakeups_before_death",
                                                        summary(&s.wakeups_before),
                                                    ),
                                                    (
                                                        "wakeups_after_death",
                                                        summary(&s.wakeups_after),
                                                    ),
                                                    ("cpu_ns_after_death", summary(&s.cpu_after)),
                                                ])
                                            })
                                            .collect(),
                                    ),
                                ),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "overhead_ns",
                self.overhead.as_ref().map_or(Json::Null, |o| {
                    Json::Arr(
                        o.variants
                            .iter()
                            .map(|v| {
                                Json::obj([
                                    ("key", Json::str(v.key)),
                                    ("command", Json::str(&v.command)),
                                    ("summary", summary(&v.samples)),
                                ])
                            })
                            .collect(),
                    )
                }),
            ),
            (
                "memory_kib",
                Json::Arr(
                    self.memory
                        .iter()
                        .map(|m| {
                            Json::obj([
                                ("subject", Json::str(m.subject.key)),
                                ("idle_vmhwm", samples(&m.idle_peak_kib)),
                                ("idle_vmrss", samples(&m.idle_rss_kib)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "idle",
                Json::Arr(
                    self.idle
                        .iter()
                        .map(|i| {
                            Json::obj([
                                ("subject", Json::str(i.subject.key)),
                                ("window_s", Json::Num(i.window.as_secs_f64())),
                                ("death_dependencies", Json::Int(i.dependencies as u64)),
                                ("cpu_ms", Json::Num(i.cpu_ms)),
                                ("on_cpu_ns", i.on_cpu_ns.map_or(Json::Null, Json::Int)),
                                ("context_switches", i.wakeups.map_or(Json::Null, Json::Int)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "startup_ns",
                self.startup.as_ref().map_or(Json::Null, |s| {
                    Json::obj([
                        ("tombstones", Json::Int(s.tombstones as u64)),
                        (
                            "subjects",
                            Json::Arr(
                                s.series
                                    .iter()
                                    .map(|x| {
                                        Json::obj([
                                            ("subject", Json::str(x.subject.key)),
                                            ("crowded", summary(&x.crowded)),
                                            ("empty", summary(&x.empty)),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                        ("child_alone", summary(&s.direct)),
                    ])
                }),
            ),
            (
                "sizes",
                Json::Arr(
                    self.sizes
                        .iter()
                        .map(|s| {
                            Json::obj([
                                ("subject", Json::str(s.subject.key)),
                                ("path", Json::str(&s.path)),
                                ("bytes", Json::Int(s.bytes)),
                                ("static", s.is_static.map_or(Json::Null, Json::Bool)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "scale",
                self.scale.as_ref().map_or(Json::Null, |scale| {
                    Json::obj([
                        ("notes", strings(&scale.notes)),
                        (
                            "runs",
                            Json::Arr(
                                scale
                                    .runs
                                    .iter()
                                    .map(|r| {
                                        let limit =
                                            |v: Option<u64>| v.map_or(Json::Null, Json::Int);
                                        Json::obj([
                                            ("label", Json::str(r.label)),
                                            ("kubexits", Json::Int(r.dependents as u64)),
                                            ("max_user_instances", limit(r.max_user_instances)),
                                            ("max_user_watches", limit(r.max_user_watches)),
                                            ("instances_held", Json::Int(r.held.instances as u64)),
                                            ("watches_held", Json::Int(r.held.watches as u64)),
                                            ("started_ns", Json::Int(r.started_ns)),
                                            ("polling", Json::Int(r.polling as u64)),
                                            ("idle_cpu_ns", Json::Int(r.idle_cpu_ns)),
                                            ("idle_wakeups", Json::Int(r.idle_wakeups)),
                                            ("stopped", Json::Int(r.stopped as u64)),
                                            ("missed", Json::Int(r.missed() as u64)),
                                            ("exited_zero", Json::Int(r.exited_zero as u64)),
                                            ("watching_ns", summary(&r.watching_ns)),
                                            ("polling_ns", summary(&r.polling_ns)),
                                            ("problems", strings(&r.problems)),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                    ])
                }),
            ),
            ("notes", strings(&self.notes)),
        ])
    }
}

/// One target, judged.
pub struct Verdict {
    pub name: String,
    /// The figure as shown: a ratio with its parts, or an absolute.
    pub measured: String,
    pub limit: String,
    /// `None` when it could not be measured in this run.
    pub met: Option<bool>,
    pub estimate: Option<Estimate>,
}

/// `610 µs / 430 µs`: the medians of two series, `–` for a missing one.
fn pair(a: Option<&[u64]>, b: Option<&[u64]>) -> String {
    let median = |s: Option<&[u64]>| {
        s.and_then(Summary::of)
            .map_or("–".to_owned(), |x| human_ns(x.p50 as f64))
    };
    format!("{} / {}", median(a), median(b))
}

fn p50_of(samples: &[u64]) -> String {
    Summary::of(samples).map_or("–".to_owned(), |s| human_ns(s.p50 as f64))
}

fn build_name(key: &str) -> &'static str {
    if key == "kubexit-slim" {
        "slim"
    } else {
        "full"
    }
}

fn linkage(size: &Size) -> &'static str {
    match size.is_static {
        Some(true) => "static",
        Some(false) => "dynamic",
        None => "not ELF",
    }
}

fn summary_json(s: Summary) -> Json {
    Json::obj([
        ("count", Json::Int(s.count as u64)),
        ("min", Json::Int(s.min)),
        ("p50", Json::Int(s.p50)),
        ("p90", Json::Int(s.p90)),
        ("p99", Json::Int(s.p99)),
        ("max", Json::Int(s.max)),
        ("mean", Json::Num(s.mean)),
    ])
}

/// Just enough JSON to write results.
pub enum Json {
    Null,
    Bool(bool),
    Int(u64),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(text: &str) -> Json {
        Json::Str(text.to_owned())
    }

    fn obj<const N: usize>(fields: [(&'static str, Json); N]) -> Json {
        Json::Obj(fields.into_iter().collect())
    }

    fn write(&self, out: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        let pad = "  ".repeat(indent + 1);
        match self {
            Json::Null => out.write_str("null"),
            Json::Bool(b) => write!(out, "{b}"),
            Json::Int(n) => write!(out, "{n}"),
            Json::Num(x) if x.is_finite() => write!(out, "{x}"),
            Json::Num(_) => out.write_str("null"),
            Json::Str(s) => write!(out, "{}", Quoted(s)),
            // Arrays of numbers stay on one line: samples are long.
            Json::Arr(items) if items.iter().all(|i| matches!(i, Json::Int(_))) => {
                out.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.write_str(", ")?;
                    }
                    item.write(out, indent + 1)?;
                }
                out.write_str("]")
            }
            Json::Arr(items) => {
                out.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    out.write_str(if i > 0 { ",\n" } else { "\n" })?;
                    out.write_str(&pad)?;
                    item.write(out, indent + 1)?;
                }
                if !items.is_empty() {
                    write!(out, "\n{}", "  ".repeat(indent))?;
                }
                out.write_str("]")
            }
            Json::Obj(fields) => {
                out.write_str("{")?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    out.write_str(if i > 0 { ",\n" } else { "\n" })?;
                    write!(out, "{pad}{}: ", Quoted(key))?;
                    value.write(out, indent + 1)?;
                }
                if !fields.is_empty() {
                    write!(out, "\n{}", "  ".repeat(indent))?;
                }
                out.write_str("}")
            }
        }
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}
