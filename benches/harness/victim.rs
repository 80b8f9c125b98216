//! The victim: the harness binary re-executed as the child kubexit supervises.
//!
//! `harness victim READY REPORT` is what every measured kubexit runs. It
//! reads the monotonic clock first of all, blocks SIGTERM, and only then
//! says it is running by renaming a file into place at READY (`<start-ns>
//! <pid>`): from that moment a stop signal cannot be lost or kill it before
//! it is timed. It then waits for the signal in `sigtimedwait`, reads the
//! clock again the instant it returns, and writes REPORT (`<signal-ns>
//! <signal-number> <cpu-ns>`, the last its own CPU time so far, so that
//! the harness can tell its supervisor's CPU time from its own) the same
//! way. Both clocks are CLOCK_MONOTONIC, the one
//! the harness reads just before it renames a `Died` tombstone into place, so
//! the two readings subtract across processes.
//!
//! With a third word, `linger`, the victim does not exit once timed: it
//! waits for SIGUSR1 from the harness. Its kubexit then records no death
//! while other dependents are still being timed (see the latency module).
//!
//! A victim nobody stops gives up after [`GIVE_UP`] and exits 3, so that a
//! harness that failed half-way never leaves processes behind for long.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::ptr;

use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

/// How long a victim waits for its stop signal before it gives up.
pub const GIVE_UP: libc::time_t = 300;

/// The first command-line word that selects the victim's mode.
pub const MODE: &str = "victim";

/// The optional last word: stay until SIGUSR1 once timed.
pub const LINGER: &str = "linger";

/// CLOCK_MONOTONIC in nanoseconds: comparable between processes of one boot.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Writes `text` to `path` through a temporary file and a rename, so that a
/// reader sees all of it or nothing.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    fs::write(&temp, text)?;
    fs::rename(&temp, path)
}

/// The victim's whole life; `args` are the words after [`MODE`].
pub fn main(args: &[OsString]) -> ExitCode {
    let started = monotonic_ns();
    let (ready, report, linger) = match args {
        [ready, report] => (ready, report, false),
        [ready, report, linger] if linger == LINGER => (ready, report, true),
        _ => {
            eprintln!("usage: harness victim READY REPORT [linger]");
            return ExitCode::from(2);
        }
    };
    match live(started, Path::new(ready), Path::new(report), linger) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(err) => {
            eprintln!("victim: {err}");
            ExitCode::from(1)
        }
    }
}

/// Returns whether the signals came before the victim gave up.
fn live(started: u64, ready: &Path, report: &Path, linger: bool) -> io::Result<bool> {
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGTERM);
    blocked.add(Signal::SIGUSR1);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)?;
    write_atomically(ready, &format!("{started} {}\n", std::process::id()))?;
    let Some(signal) = wait_for(Signal::SIGTERM)? else {
        return Ok(false);
    };
    let signalled = monotonic_ns();
    write_atomically(report, &format!("{signalled} {signal} {}\n", own_cpu_ns()))?;
    if linger {
        return Ok(wait_for(Signal::SIGUSR1)?.is_some());
    }
    Ok(true)
}

/// Waits for a blocked signal, at most [`GIVE_UP`]; its number, or `None`
/// at the limit.
fn wait_for(signal: Signal) -> io::Result<Option<i32>> {
    let mut set = SigSet::empty();
    set.add(signal);
    let limit = libc::timespec {
        tv_sec: GIVE_UP,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: the set and the timeout are valid for the call; no
        // siginfo is asked for.
        let got = unsafe { libc::sigtimedwait(set.as_ref(), ptr::null_mut(), &limit) };
        if got >= 0 {
            return Ok(Some(got));
        }
        match io::Error::last_os_error() {
            err if err.raw_os_error() == Some(libc::EINTR) => continue,
            err if err.raw_os_error() == Some(libc::EAGAIN) => return Ok(None),
            err => return Err(err),
        }
    }
}

/// A victim's ready file: when it started and its pid.
pub fn read_ready(path: &Path) -> Option<(u64, i32)> {
    let text = fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// What a victim reports once signalled.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// CLOCK_MONOTONIC when the signal arrived, ns.
    pub at: u64,
    pub signal: i32,
    /// The victim's own CPU time (user + system) until then, ns.
    pub cpu_ns: u64,
}

/// A victim's report.
pub fn read_report(path: &Path) -> Option<Report> {
    let text = fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    Some(Report {
        at: words.next()?.parse().ok()?,
        signal: words.next()?.parse().ok()?,
        cpu_ns: words.next()?.parse().ok()?,
    })
}

/// This process's CPU time so far, user and system, ns.
fn own_cpu_ns() -> u64 {
    // SAFETY: rusage is plain data, valid when zeroed; getrusage only
    // writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    timeval_ns(usage.ru_utime) + timeval_ns(usage.ru_stime)
}

/// A `timeval` in nanoseconds (0 if negative, which it never is).
pub fn timeval_ns(t: libc::timeval) -> u64 {
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(t.tv_usec).unwrap_or(0) * 1_000
}
