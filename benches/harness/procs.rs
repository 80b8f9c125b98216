//! Processes: kubexits under test, waits that end at a deadline, and what
//! the kernel says about a process in /proc.
//!
//! A [`Fleet`] is the kubexits of one run, each supervising a victim (see
//! the victim module). It owns them: whatever is still running when the
//! fleet is dropped (a run that failed half-way) is killed, kubexit and
//! victim both, so a failed measurement leaves nothing behind.
//!
//! Waiting for kubexits to end is a blocking `wait4(-1)`, not a polling
//! loop: while the harness waits for the reaction it is measuring, it must
//! not take CPU time from the processes it measures on a 2-core machine. A
//! watchdog thread bounds the wait: at the deadline it kills the fleet, and
//! the wait returns with an error that says so.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::subjects::Subject;
use crate::victim;

/// Where one run's supervisors live: the subject, the harness (the victim),
/// the graveyard, and a work directory outside it for ready files, reports
/// and logs (anything written in the graveyard would wake every kubexit).
pub struct Setup<'a> {
    pub subject: &'a Subject,
    pub harness: &'a Path,
    pub yard: &'a Path,
    pub work: &'a Path,
    /// Victims stay once timed, until [`Fleet::release`].
    pub linger: bool,
    /// Run the supervisors (and so their victims) as this user and group,
    /// so that their inotify instances are charged to it; the harness's
    /// own user when `None`.
    pub uid: Option<u32>,
}

/// A run's directory, removed when dropped: `graveyard/` and, beside it on
/// the same filesystem, `work/`.
pub struct RunDir {
    dir: PathBuf,
    pub yard: PathBuf,
    pub work: PathBuf,
}

impl RunDir {
    pub fn new(scratch: &Path, label: &str) -> Result<RunDir, String> {
        let dir = scratch.join(label);
        let run = RunDir {
            yard: dir.join("graveyard"),
            work: dir.join("work"),
            dir,
        };
        for d in [&run.yard, &run.work] {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        Ok(run)
    }

    pub fn setup<'a>(&'a self, subject: &'a Subject, harness: &'a Path) -> Setup<'a> {
        Setup {
            subject,
            harness,
            yard: &self.yard,
            work: &self.work,
            linger: false,
            uid: None,
        }
    }

    /// Gives the graveyard and the work directory to `uid`, for fleets run
    /// as another user.
    pub fn give_to(&self, uid: u32) -> Result<(), String> {
        for dir in [&self.dir, &self.yard, &self.work] {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid))
                .map_err(|e| format!("cannot give {} to uid {uid}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Records `name`'s death: its tombstone is written in the work
    /// directory and renamed into the graveyard, so the rename is the only
    /// event kubexits see. Returns CLOCK_MONOTONIC read just before the
    /// rename.
    pub fn bury(&self, name: &str) -> Result<u64, String> {
        self.record(name, true)
    }

    /// Writes `name`'s tombstone, dead or born and ready, the way
    /// [`RunDir::bury`] does.
    pub fn record(&self, name: &str, dead: bool) -> Result<u64, String> {
        let temp = self.work.join(format!(".{name}.tombstone"));
        fs::write(&temp, tombstone(dead))
            .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
        let target = self.yard.join(name);
        let before = victim::monotonic_ns();
        fs::rename(&temp, &target)
            .map_err(|e| format!("cannot rename to {}: {e}", target.display()))?;
        Ok(before)
    }
}

/// A tombstone in kubexit's own format, written now: born and ready, or
/// born and dead with exit code 0.
pub fn tombstone(dead: bool) -> String {
    let now = jiff::Timestamp::now();
    kubexit::graveyard::tombstone::Tombstone {
        born: Some(now),
        ready: (!dead).then_some(now),
        died: dead.then_some(now),
        exit_code: dead.then_some(0),
        ..Default::default()
    }
    .render(&jiff::tz::TimeZone::UTC)
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One supervisor (kubexit or a peer) supervising one victim.
pub struct Member {
    pub name: String,
    pub pid: i32,
    pub ready: PathBuf,
    pub report: PathBuf,
    pub log: PathBuf,
    /// CLOCK_MONOTONIC just before the supervisor was spawned, ns.
    pub spawned_at: u64,
    /// The victim's pid and start time, once it said it is running.
    pub victim: Option<(i32, u64)>,
    /// The supervisor's voluntary context switches (all threads) when
    /// [`Fleet::count_wakeups`] last looked.
    pub wakeups_before: Option<u64>,
    /// Its on-CPU time (all threads) then, ns.
    pub cpu_before: Option<u64>,
    reaped: bool,
}

/// The supervisors of one run.
#[derive(Default)]
pub struct Fleet {
    pub members: Vec<Member>,
}

/// What `wait4` says about an ended process.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub pid: i32,
    /// The exit status, or 128+N when killed by signal N.
    pub code: i32,
    /// Voluntary context switches over its whole life, all threads, and
    /// the children it reaped: each is one sleep, so one wake-up.
    pub wakeups: u64,
    /// User and system time over its whole life, the children it reaped
    /// included, ns.
    pub cpu_ns: u64,
}

impl Fleet {
    /// Starts the subject as `name`, with `death_deps`, supervising a
    /// victim. Its stdout and stderr (kubexit logs to one, Go to the other)
    /// go to one log file.
    pub fn spawn(&mut self, setup: &Setup, name: &str, death_deps: &str) -> Result<(), String> {
        let member = Member {
            name: name.to_owned(),
            pid: 0,
            ready: setup.work.join(format!("{name}.ready")),
            report: setup.work.join(format!("{name}.report")),
            log: setup.work.join(format!("{name}.log")),
            spawned_at: 0,
            victim: None,
            wakeups_before: None,
            cpu_before: None,
            reaped: false,
        };
        let log = File::create(&member.log)
            .map_err(|e| format!("cannot create {}: {e}", member.log.display()))?;
        let log_too = log
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", member.log.display()))?;
        let mut command = setup.subject.command(setup.yard, name, Some(death_deps));
        command
            .arg(setup.harness)
            .arg(victim::MODE)
            .arg(&member.ready)
            .arg(&member.report)
            .args(setup.linger.then_some(victim::LINGER))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_too);
        if let Some(uid) = setup.uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let spawned_at = victim::monotonic_ns();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", setup.subject.path.display()))?;
        // The Child is dropped without waiting: `reap` owns waiting.
        self.members.push(Member {
            pid: child.id() as i32,
            spawned_at,
            ..member
        });
        Ok(())
    }

    /// Notes every supervisor's voluntary context switches and CPU time so
    /// far, for the counts of the phase that ends now.
    pub fn count_wakeups(&mut self) {
        for member in &mut self.members {
            member.wakeups_before = voluntary_switches(member.pid);
            member.cpu_before = cpu_ns(member.pid);
        }
    }

    /// Waits until every victim has said it is running. A kubexit that ends
    /// before its victim is ready is an error that quotes its log.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let mut waiting = 0;
            for member in &mut self.members {
                if member.victim.is_some() {
                    continue;
                }
                if let Some((start, pid)) = victim::read_ready(&member.ready) {
                    member.victim = Some((pid, start));
                    continue;
                }
                if let Some(reaped) = reap_now(member.pid) {
                    member.reaped = true;
                    return Err(format!(
                        "kubexit {} exited with status {} before its child was running: {}",
                        member.name,
                        reaped.code,
                        log_tail(&member.log)
                    ));
                }
                waiting += 1;
            }
            if waiting == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{waiting} of {} children were not running after {limit:?}",
                    self.members.len()
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits, at most `limit`, until every kubexit and victim sleeps: the
    /// births that woke everyone have been handled. Quiet is a courtesy to
    /// the measurement, not a requirement: at the limit it goes on.
    pub fn wait_quiet(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let pids: Vec<i32> = self
            .members
            .iter()
            .flat_map(|m| [Some(m.pid), m.victim.map(|(pid, _)| pid)])
            .flatten()
            .collect();
        while Instant::now() < deadline {
            if pids.iter().all(|&pid| state(pid).is_none_or(|s| s != 'R')) {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until every victim has reported its signal (lingering victims
    /// do not exit), polling every 2 ms so as to take little CPU time from
    /// the reactions still under way.
    pub fn wait_reports(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut pending: Vec<&Member> = self.members.iter().collect();
        loop {
            pending.retain(|member| !member.report.exists());
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} children were not signalled within {limit:?}; first: {}",
                    pending.len(),
                    log_tail(&pending[0].log)
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Lets lingering victims go (SIGUSR1), so their kubexits can end.
    pub fn release(&self) {
        for (pid, _) in self.members.iter().filter_map(|m| m.victim) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
        }
    }

    /// Has `watchdog` kill the fleet unless it is reaped within `limit`.
    /// Armed before the event that ends the fleet, so that arming costs
    /// nothing while the reaction is timed.
    pub fn guard<'w>(&self, watchdog: &'w Watchdog, limit: Duration) -> Armed<'w> {
        watchdog.watch(self.pids_alive(), limit)
    }

    /// Waits, blocked, until every supervisor of the fleet has exited; if
    /// the guard had to kill, that is an error naming what it killed.
    pub fn reap(&mut self, guard: Armed) -> Result<Vec<(usize, Reaped)>, String> {
        let (reaped, killed) = self.reap_all(guard);
        if killed {
            let stuck: Vec<&str> = reaped
                .iter()
                .filter(|(_, one)| one.code == 128 + libc::SIGKILL)
                .map(|(index, _)| self.members[*index].name.as_str())
                .collect();
            return Err(format!(
                "supervisors still running at the deadline, killed: {}",
                stuck.join(", ")
            ));
        }
        Ok(reaped)
    }

    /// Waits, blocked, until every supervisor of the fleet has exited: what
    /// each ended with (by index), and whether the guard had to kill.
    pub fn reap_all(&mut self, guard: Armed) -> (Vec<(usize, Reaped)>, bool) {
        let mut reaped = Vec::new();
        while self.members.iter().any(|m| !m.reaped) {
            let Some(one) = reap_pid(-1) else { break };
            if let Some(index) = self.members.iter().position(|m| m.pid == one.pid) {
                self.members[index].reaped = true;
                reaped.push((index, one));
            }
        }
        (reaped, guard.clear())
    }

    /// The pids of supervisors not reaped yet, and of their victims.
    fn pids_alive(&self) -> Vec<i32> {
        self.members
            .iter()
            .filter(|m| !m.reaped)
            .flat_map(|m| [Some(m.pid), m.victim.map(|(pid, _)| pid)])
            .flatten()
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let left = self.pids_alive();
        if left.is_empty() {
            return;
        }
        for &pid in &left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for member in &mut self.members {
            if !member.reaped {
                let mut status = 0;
                // SAFETY: a plain blocking waitpid on our own child, which
                // was just sent SIGKILL.
                unsafe { libc::waitpid(member.pid, &mut status, 0) };
                member.reaped = true;
            }
        }
    }
}

/// A thread that kills processes that outlive their deadline. One serves
/// a whole measurement: arming it is a message, not a new thread, so it
/// costs nothing on the paths being timed.
pub struct Watchdog {
    orders: mpsc::Sender<Order>,
    verdicts: mpsc::Receiver<bool>,
}

enum Order {
    /// Kill these pids at this instant, unless cleared before.
    Watch(Vec<i32>, Instant),
    /// Stop watching; the answer is whether it had to kill.
    Clear,
}

impl Watchdog {
    pub fn new() -> Watchdog {
        let (orders, incoming) = mpsc::channel::<Order>();
        let (verdict, verdicts) = mpsc::channel::<bool>();
        thread::spawn(move || {
            let mut watching: Option<(Vec<i32>, Instant)> = None;
            let mut fired = false;
            loop {
                let order = match &watching {
                    None => incoming
                        .recv()
                        .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some((_, deadline)) => {
                        incoming.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    }
                };
                match order {
                    Ok(Order::Watch(pids, deadline)) => watching = Some((pids, deadline)),
                    Ok(Order::Clear) => {
                        watching = None;
                        if verdict.send(std::mem::take(&mut fired)).is_err() {
                            return;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Some((pids, _)) = watching.take() {
                            for pid in pids {
                                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                            }
                            fired = true;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        Watchdog { orders, verdicts }
    }

    /// Kills `pids` unless the returned guard is cleared (or dropped)
    /// within `limit`.
    pub fn watch(&self, pids: Vec<i32>, limit: Duration) -> Armed<'_> {
        let _ = self.orders.send(Order::Watch(pids, Instant::now() + limit));
        Armed {
            watchdog: self,
            cleared: false,
        }
    }
}

/// A watch in force; dropping it stops the watch, so an error path never
/// leaves the watchdog aimed at pids that may be reused.
pub struct Armed<'a> {
    watchdog: &'a Watchdog,
    cleared: bool,
}

impl Armed<'_> {
    /// Stops watching; whether the watchdog killed (a watchdog thread that
    /// is gone counts as having killed: it guarded nothing).
    pub fn clear(mut self) -> bool {
        self.cleared = true;
        self.stop()
    }

    fn stop(&self) -> bool {
        if self.watchdog.orders.send(Order::Clear).is_err() {
            return true;
        }
        self.watchdog.verdicts.recv().unwrap_or(true)
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        if !self.cleared {
            self.stop();
        }
    }
}

fn decode(pid: i32, status: i32, usage: &libc::rusage) -> Reaped {
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    };
    Reaped {
        pid,
        code,
        wakeups: u64::try_from(usage.ru_nvcsw).unwrap_or(0),
        cpu_ns: victim::timeval_ns(usage.ru_utime) + victim::timeval_ns(usage.ru_stime),
    }
}

/// `wait4(pid, options)`, retried on EINTR; `None` when nothing was reaped.
fn wait4(pid: i32, options: i32) -> Option<Reaped> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data, valid when zeroed.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 only writes the status and the usage.
        let got = unsafe { libc::wait4(pid, &mut status, options, &mut usage) };
        if got > 0 {
            return Some(decode(got, status, &usage));
        }
        if got < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// Reaps `pid` if it has ended, without waiting.
pub fn reap_now(pid: i32) -> Option<Reaped> {
    wait4(pid, libc::WNOHANG)
}

/// Reaps `pid` (any child for -1), waiting as long as it takes: callers
/// bound the wait with a [`Watchdog`]. `None` when there is no such child.
pub fn reap_pid(pid: i32) -> Option<Reaped> {
    wait4(pid, 0)
}

/// The last lines of a kubexit's log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
    if tail.is_empty() {
        "(its log is empty)".to_owned()
    } else {
        tail
    }
}

/// Runs a command to its end, bounded by `watchdog`, with stdin, stdout
/// and stderr closed; returns its exit status and how long it took from
/// just before the spawn to just after the reap, in nanoseconds.
pub fn run_timed(
    command: &mut Command,
    watchdog: &Watchdog,
    limit: Duration,
) -> Result<(i32, u64), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid = child.id() as i32;
    let guard = watchdog.watch(vec![pid], limit);
    let reaped = reap_pid(pid);
    let elapsed = started.elapsed();
    if guard.clear() {
        return Err(format!("{program} ran longer than {limit:?}"));
    }
    let reaped = reaped.ok_or_else(|| format!("lost track of {program}"))?;
    Ok((reaped.code, elapsed.as_nanos() as u64))
}

/// A process's scheduling state (`R`, `S`, `D`, `Z`...), from /proc.
pub fn state(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The fields of /proc/PID/stat after the command name, from the state on.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of the whole process, all threads, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    // Fields 14 and 15 of stat(5); the state is field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100).max(1)
}

/// Time on a CPU of every thread of the process, in nanoseconds, from
/// /proc/PID/task/*/schedstat: finer than clock ticks.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    sum_over_threads(pid, |tid_dir| {
        let text = fs::read_to_string(tid_dir.join("schedstat")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    })
}

/// Voluntary context switches of every thread of the process: each is one
/// sleep, so one wake-up.
pub fn voluntary_switches(pid: i32) -> Option<u64> {
    sum_over_threads(pid, |tid_dir| {
        let text = fs::read_to_string(tid_dir.join("status")).ok()?;
        status_value(&text, "voluntary_ctxt_switches:")
    })
}

/// Context switches of every thread of the process: how often it woke.
pub fn context_switches(pid: i32) -> Option<u64> {
    sum_over_threads(pid, |tid_dir| {
        let text = fs::read_to_string(tid_dir.join("status")).ok()?;
        Some(
            status_value(&text, "voluntary_ctxt_switches:")?
                + status_value(&text, "nonvoluntary_ctxt_switches:")?,
        )
    })
}

fn sum_over_threads(pid: i32, one: impl Fn(&Path) -> Option<u64>) -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        total += one(&entry.ok()?.path())?;
    }
    Some(total)
}

/// A number from /proc/PID/status (`VmHWM`, `VmRSS`... in KiB).
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_value(&text, &format!("{key}:"))
}

fn status_value(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Whether any process runs as user `uid`.
pub fn user_has_processes(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(processes) = fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|process| {
        let path = process.path();
        let is_pid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid && fs::metadata(&path).is_ok_and(|m| m.uid() == uid)
    })
}

/// Polls `condition` every millisecond until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}
