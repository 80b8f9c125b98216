//! The report: every figure with the machine it was measured on, as JSON
//! for tools and as a Markdown table for BENCHMARKS.md, each figure beside
//! its target and the Go reference.
//!
//! The JSON keeps the raw samples (nanoseconds, KiB, bytes), so that plots
//! and summaries can be made again without measuring again; the Markdown
//! table is what a person pastes.

use std::fmt::{self, Write as _};
use std::fs;
use std::path::Path;

use kubexit::json::Quoted;

use crate::footprint::{Idle, Memory, Size};
use crate::latency::Fanout;
use crate::overhead::Overhead;
use crate::startup::Startup;
use crate::stats::{Summary, human_bytes, human_kib, human_ns};

/// The targets of issue 7, for a 2-core machine, and the Go reference
/// measured on such a machine.
pub mod targets {
    pub const LATENCY_P50_NS: u64 = 250_000;
    pub const GO_LATENCY_P50_NS: u64 = 720_000;
    pub const FANOUT: usize = 50;
    pub const FANOUT_WORST_NS: u64 = 10_000_000;
    pub const GO_FANOUT_WORST_NS: u64 = 70_000_000;
    pub const OVERHEAD_NS: u64 = 1_000_000;
    pub const GO_KUBEXIT_TRUE_NS: u64 = 15_000_000;
    pub const GO_TRUE_NS: u64 = 1_000_000;
    pub const RSS_SLIM_KIB: u64 = 4 * 1024;
    pub const RSS_FULL_KIB: u64 = 8 * 1024;
    pub const GO_RSS_KIB: u64 = 20_173; // 19.7 MiB
    pub const SIZE_SLIM_BYTES: u64 = 2 * 1024 * 1024;
    pub const SIZE_FULL_BYTES: u64 = 8 * 1024 * 1024;
    pub const GO_SIZE: &str = "37 MB";
}

/// Everything one invocation measured.
pub struct Results {
    pub smoke: bool,
    pub command: String,
    pub revision: Option<String>,
    pub when: String,
    pub machine: Machine,
    pub latency: Vec<Fanout>,
    pub overhead: Option<Overhead>,
    pub memory: Vec<Memory>,
    pub idle: Vec<Idle>,
    pub startup: Option<Startup>,
    pub sizes: Vec<Size>,
    pub notes: Vec<String>,
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

    /// The Markdown section: a heading line, the machine, the table, notes.
    pub fn markdown(&self) -> String {
        // A smoke run's figures mean nothing, so they are not judged.
        let verdict = |met: bool| match (self.smoke, met) {
            (true, _) => "–",
            (false, true) => "met",
            (false, false) => "**missed**",
        };
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Measured {}{} on {}{}, {} cores, Linux {}, {} memory; graveyards on {} ({}).\n",
            self.when,
            self.revision
                .as_ref()
                .map_or(String::new(), |r| format!(" at {r}")),
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
            m.graveyard_fs
        );
        if self.smoke {
            md.push_str(
                "**Smoke run**: tiny sizes and whatever binary was given; the figures only show \
                 that every measurement runs.\n\n",
            );
        }
        let _ = writeln!(md, "Command: `{}`\n", self.command);
        md.push_str("| Measure | kubexit | Target | Go kubexit | |\n|---|---|---|---|---|\n");
        let mut row = |measure: String, value: String, target: &str, go: &str, verdict: &str| {
            let _ = writeln!(md, "| {measure} | {value} | {target} | {go} | {verdict} |");
        };
        for fanout in &self.latency {
            let Some(all) = Summary::of(&fanout.all) else {
                continue;
            };
            let worst = Summary::of(&fanout.worst).unwrap_or(all);
            if fanout.dependents == 1 {
                row(
                    format!("Reaction latency, 1 dependent, p50 ({} runs)", all.count),
                    human_ns(all.p50 as f64),
                    &format!("≤ {}", human_ns(targets::LATENCY_P50_NS as f64)),
                    &human_ns(targets::GO_LATENCY_P50_NS as f64),
                    verdict(all.p50 <= targets::LATENCY_P50_NS),
                );
                row(
                    "Reaction latency, 1 dependent, p99 / max".to_owned(),
                    format!(
                        "{} / {}",
                        human_ns(all.p99 as f64),
                        human_ns(all.max as f64)
                    ),
                    "",
                    "",
                    "",
                );
            } else {
                let (target, go, met) = if fanout.dependents == targets::FANOUT {
                    (
                        format!("≤ {}", human_ns(targets::FANOUT_WORST_NS as f64)),
                        format!("≈ {}", human_ns(targets::GO_FANOUT_WORST_NS as f64)),
                        verdict(worst.p50 <= targets::FANOUT_WORST_NS),
                    )
                } else {
                    (String::new(), String::new(), "")
                };
                row(
                    format!(
                        "Fan-out {}: worst dependent per run, p50 over {} runs (worst run; p50 of all dependents)",
                        fanout.dependents, worst.count
                    ),
                    format!(
                        "{} ({}; {})",
                        human_ns(worst.p50 as f64),
                        human_ns(worst.max as f64),
                        human_ns(all.p50 as f64)
                    ),
                    &target,
                    &go,
                    met,
                );
            }
        }
        if let Some(overhead) = &self.overhead {
            let summary = |key| overhead.variant(key).and_then(|v| Summary::of(&v.samples));
            let median_p90 =
                |s: Summary| format!("{} / {}", human_ns(s.p50 as f64), human_ns(s.p90 as f64));
            if let Some(truth) = summary("true") {
                row(
                    format!("`true` alone, median / p90 ({} runs)", truth.count),
                    median_p90(truth),
                    "",
                    &format!("≈ {}", human_ns(targets::GO_TRUE_NS as f64)),
                    "",
                );
                if let Some(kubexit) = summary("kubexit") {
                    row(
                        "`kubexit true`, median / p90".to_owned(),
                        median_p90(kubexit),
                        "",
                        &format!("≈ {}", human_ns(targets::GO_KUBEXIT_TRUE_NS as f64)),
                        "",
                    );
                    let added = kubexit.p50.saturating_sub(truth.p50);
                    row(
                        "Wrapper overhead: `kubexit true` − `true`, medians".to_owned(),
                        human_ns(added as f64),
                        &format!("≤ {}", human_ns(targets::OVERHEAD_NS as f64)),
                        &format!(
                            "≈ {}",
                            human_ns((targets::GO_KUBEXIT_TRUE_NS - targets::GO_TRUE_NS) as f64)
                        ),
                        verdict(added <= targets::OVERHEAD_NS),
                    );
                }
                if let Some(tini) = summary("tini") {
                    row(
                        format!(
                            "`tini -s -- true`, median / p90 (overhead {})",
                            human_ns(tini.p50.saturating_sub(truth.p50) as f64)
                        ),
                        median_p90(tini),
                        "",
                        "",
                        "",
                    );
                }
            }
        }
        for memory in &self.memory {
            let (Some(idle), Some(rss)) = (
                Summary::of(&memory.idle_peak_kib),
                Summary::of(&memory.idle_rss_kib),
            ) else {
                continue;
            };
            let limit = if memory.build == "slim" {
                targets::RSS_SLIM_KIB
            } else {
                targets::RSS_FULL_KIB
            };
            row(
                format!(
                    "Peak RSS, {} build, supervising with a death dependency: VmHWM, max of {} (VmRSS)",
                    memory.build, idle.count
                ),
                format!("{} ({})", human_kib(idle.max), human_kib(rss.max)),
                &format!("≤ {}", human_kib(limit)),
                &human_kib(targets::GO_RSS_KIB),
                verdict(idle.max <= limit),
            );
        }
        for idle in &self.idle {
            let on_cpu = idle
                .on_cpu_ns
                .map_or("n/a".to_owned(), |ns| human_ns(ns as f64));
            let wakeups = idle.wakeups.map_or("n/a".to_owned(), |n| n.to_string());
            let met = idle.on_cpu_ns.map_or(idle.cpu_ms == 0.0, |ns| ns == 0);
            row(
                format!(
                    "CPU time over {} s idle, {} build, {} death dependencies: utime+stime (on-CPU time; wake-ups)",
                    idle.window.as_secs_f64(),
                    idle.build,
                    idle.dependencies
                ),
                format!("{} ms ({on_cpu}; {wakeups})", idle.cpu_ms),
                "none",
                "",
                verdict(met),
            );
        }
        if let Some(startup) = &self.startup {
            let median = |samples: &[u64]| {
                Summary::of(samples).map_or("n/a".to_owned(), |s| human_ns(s.p50 as f64))
            };
            row(
                format!(
                    "Start-up, spawn to child running, {} tombstones in the graveyard, median of {} (empty graveyard; child alone)",
                    startup.tombstones,
                    startup.crowded.len()
                ),
                format!(
                    "{} ({}; {})",
                    median(&startup.crowded),
                    median(&startup.empty),
                    median(&startup.direct)
                ),
                "",
                "",
                "",
            );
        }
        for size in &self.sizes {
            let (limit, go) = if size.build == "slim" {
                (targets::SIZE_SLIM_BYTES, "")
            } else {
                (targets::SIZE_FULL_BYTES, targets::GO_SIZE)
            };
            let linkage = match size.is_static {
                Some(true) => "static",
                Some(false) => "dynamic",
                None => "not ELF",
            };
            row(
                format!("Binary size, {} build", size.build),
                format!("{} ({linkage})", human_bytes(size.bytes)),
                &format!("≤ {}", human_bytes(limit)),
                go,
                verdict(size.bytes <= limit && size.is_static == Some(true)),
            );
        }
        if !self.notes.is_empty() {
            md.push('\n');
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }

    pub fn json(&self) -> Json {
        let m = &self.machine;
        let samples = |v: &[u64]| Json::Arr(v.iter().map(|&n| Json::Int(n)).collect());
        let summary = |v: &[u64]| Summary::of(v).map_or(Json::Null, summary_json);
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
                ]),
            ),
            (
                "latency_ns",
                Json::Arr(
                    self.latency
                        .iter()
                        .map(|f| {
                            Json::obj([
                                ("dependents", Json::Int(f.dependents as u64)),
                                ("runs", Json::Int(f.worst.len() as u64)),
                                ("worst_per_run", summary(&f.worst)),
                                ("all_dependents", summary(&f.all)),
                                ("worst_per_run_samples", samples(&f.worst)),
                                (
                                    "inotify_limit",
                                    f.limit_note.as_deref().map_or(Json::Null, Json::str),
                                ),
                                ("dependents_polling", Json::Int(f.polling as u64)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "latency_1_dependent_samples_ns",
                self.fanout(1).map_or(Json::Null, |f| samples(&f.all)),
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
                                ("build", Json::str(&m.build)),
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
                                ("build", Json::str(&i.build)),
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
                        ("crowded", summary(&s.crowded)),
                        ("empty", summary(&s.empty)),
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
                                ("build", Json::str(&s.build)),
                                ("path", Json::str(&s.path)),
                                ("bytes", Json::Int(s.bytes)),
                                ("static", s.is_static.map_or(Json::Null, Json::Bool)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "notes",
                Json::Arr(self.notes.iter().map(|n| Json::str(n)).collect()),
            ),
        ])
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
