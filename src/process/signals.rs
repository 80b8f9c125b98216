//! Signals: how kubexit hears them and what it makes of them.
//!
//! kubexit blocks every signal it can handle as the very first thing it does,
//! before any thread exists, and reads them from a `signalfd` inside the
//! event loop. That gives one ordered queue for everything: a SIGTERM that
//! arrives while the configuration is still being read is not lost and does
//! not kill kubexit half-way; it waits in the queue and is handled where the
//! supervisor decides (a stop signal before the child has started means the
//! child never starts). Blocked signals are also what lets kubexit work as
//! PID 1, where the kernel drops signals that have no handler but still
//! queues blocked ones.
//!
//! The kernel keeps at most one pending instance of each classic signal, so
//! a burst of the same signal may arrive as one; kubexit reads the queue
//! until it is empty on every wake-up, so it never drops what the kernel
//! kept apart. Real-time signals are queued by the kernel and forwarded one
//! by one.
//!
//! Synchronous fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
//! SIGSYS) are left alone: they are about kubexit itself and must keep their
//! default action. The child gets an empty mask back before `exec` (see the
//! `child` module).
//!
//! Some signals are the kernel's answer to something kubexit itself did: a
//! SIGPIPE or SIGXFSZ for its own write (to a stderr whose reader has gone,
//! say), a SIGXCPU for its own CPU limit. The kernel attributes those to
//! kubexit's own pid, or to itself (`SI_KERNEL`). [`Received::is_own`]
//! says so, and they are never passed on to the child: a broken log pipe
//! must not kill the child, nor, by being forwarded and logged again, make
//! kubexit spin.
//!
//! This module only hears and names signals; sending them is the child
//! module's job, and deciding what they mean is the supervisor's.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;

/// A signal by number. Classic signals are also [`Signal`]s; real-time
/// signals (SIGRTMIN..SIGRTMAX) exist only as numbers, and kubexit forwards
/// them too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalNumber(pub i32);

impl SignalNumber {
    pub const TERM: SignalNumber = SignalNumber(nix::libc::SIGTERM);
    pub const KILL: SignalNumber = SignalNumber(nix::libc::SIGKILL);

    pub fn known(self) -> Option<Signal> {
        Signal::try_from(self.0).ok()
    }

    /// Stop signals: the ones that ask a process to end. One of them arriving
    /// before the child has started means the child never starts; arriving
    /// while it runs, it is forwarded and the grace period starts.
    pub fn is_stop(self) -> bool {
        matches!(
            self.known(),
            Some(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT)
        )
    }

    /// Whether a received signal is passed on to the child. SIGCHLD is
    /// kubexit's own business (reaping); SIGTTIN and SIGTTOU are the
    /// terminal's complaints about kubexit itself, not requests for the child.
    pub fn is_forwarded(self) -> bool {
        !matches!(
            self.known(),
            Some(Signal::SIGCHLD | Signal::SIGTTIN | Signal::SIGTTOU)
        )
    }
}

impl fmt::Display for SignalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known() {
            Some(signal) => f.write_str(signal.as_str()),
            None => {
                if (NAMED_RTMIN..=nix::libc::SIGRTMAX()).contains(&self.0) {
                    write!(f, "SIGRTMIN+{}", self.0 - NAMED_RTMIN)
                } else {
                    write!(f, "signal {}", self.0)
                }
            }
        }
    }
}

/// The number real-time signals are named from: glibc's SIGRTMIN, as
/// `kill -l` lists them on glibc systems. Each C library keeps the first
/// few real-time signals for itself and starts SIGRTMIN above them (glibc
/// at 34, musl at 35), so naming from the library kubexit is linked with
/// would give one signal two names: the static (musl) and the glibc build
/// would log the same 35 as SIGRTMIN+0 and SIGRTMIN+1.
const NAMED_RTMIN: i32 = 34;

/// A signal name that kubexit does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a signal; write a name such as SIGTERM, TERM or SIGINT, or a number such as 15"
)]
pub struct UnknownSignal(pub String);

/// Parses a signal as users write it: `SIGTERM`, `TERM`, `term`, `15`.
/// SIGKILL and SIGSTOP are accepted (a stop signal may be SIGKILL); numbers
/// must name a real signal.
pub fn parse_signal(raw: &str) -> Result<SignalNumber, UnknownSignal> {
    let trimmed = raw.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        let valid = Signal::try_from(number).is_ok()
            || (nix::libc::SIGRTMIN()..=nix::libc::SIGRTMAX()).contains(&number);
        return if valid {
            Ok(SignalNumber(number))
        } else {
            Err(UnknownSignal(raw.to_owned()))
        };
    }
    let upper = trimmed.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>()
        .map(|signal| SignalNumber(signal as i32))
        .map_err(|_| UnknownSignal(raw.to_owned()))
}

/// The set kubexit blocks and reads from its signalfd.
fn handled_set() -> SigSet {
    let mut set = SigSet::all();
    for fault in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGTRAP,
        Signal::SIGSYS,
        Signal::SIGABRT,
    ] {
        set.remove(fault);
    }
    set
}

/// Blocks every handled signal in the calling thread. Call it first in
/// `main`, before any thread is spawned, so that every thread inherits the
/// mask and no signal is delivered the default way.
pub fn block_all() -> io::Result<()> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None)?;
    Ok(())
}

/// Gives every signal back its default handling (for the modes that do not
/// supervise, such as `--status`): nothing stays blocked.
pub fn unblock_all() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// A signal as received: what it is, and whether kubexit's own action
/// raised it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub signal: SignalNumber,
    own: bool,
}

impl Received {
    /// Whether the kernel raised this signal for kubexit's own action (see
    /// the module docs): kubexit's business alone, never forwarded.
    pub fn is_own(&self) -> bool {
        self.own
    }

    fn classify(signal: SignalNumber, sender: u32, code: i32) -> Received {
        let own = match signal.known() {
            // Raised by a write of kubexit's: the kernel names kubexit as
            // the sender.
            Some(Signal::SIGPIPE | Signal::SIGXFSZ) => {
                sender == std::process::id()
                    && matches!(code, nix::libc::SI_USER | nix::libc::SI_TKILL)
            }
            Some(Signal::SIGXCPU) => code == nix::libc::SI_KERNEL,
            _ => false,
        };
        Received { signal, own }
    }
}

/// The queue of signals received by kubexit, readable in the event loop.
pub struct Signals {
    fd: AsyncFd<SignalFd>,
}

impl Signals {
    /// Opens the queue. [`block_all`] must have run first. Needs a tokio
    /// runtime with I/O enabled.
    pub fn open() -> io::Result<Signals> {
        let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
        let fd = SignalFd::with_flags(&handled_set(), flags)?;
        // SAFETY: the SignalFd owns its descriptor and keeps it open,
        // unchanged, for as long as the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Signals { fd })
    }

    /// The descriptor that becomes readable when a signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Everything pending now, without waiting (possibly nothing).
    pub fn drain(&self) -> io::Result<Vec<Received>> {
        let mut received = Vec::new();
        while let Some(info) = self.fd.get_ref().read_signal()? {
            if let Ok(number) = i32::try_from(info.ssi_signo) {
                received.push(Received::classify(
                    SignalNumber(number),
                    info.ssi_pid,
                    info.ssi_code,
                ));
            }
        }
        Ok(received)
    }

    /// Waits until at least one signal is pending, then returns all of them.
    pub async fn recv(&self) -> io::Result<Vec<Received>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let received = self.drain()?;
            if received.is_empty() {
                guard.clear_ready();
            } else {
                return Ok(received);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_short_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Ok(SignalNumber::TERM));
        assert_eq!(parse_signal("term"), Ok(SignalNumber::TERM));
        assert_eq!(parse_signal(" 15 "), Ok(SignalNumber::TERM));
        assert_eq!(parse_signal("SIGKILL"), Ok(SignalNumber::KILL));
        assert_eq!(parse_signal("int"), Ok(SignalNumber(nix::libc::SIGINT)));
        assert!(parse_signal("SIGRTMIN").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("99").is_err());
        assert!(parse_signal("").is_err());
        assert!(parse_signal("TERMINATE").is_err());
    }

    #[test]
    fn stop_signals_are_term_int_hup_quit() {
        let stops: Vec<String> = (1..32)
            .map(SignalNumber)
            .filter(|s| s.is_stop())
            .map(|s| s.to_string())
            .collect();
        assert_eq!(stops, ["SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM"]);
    }

    #[test]
    fn chld_and_terminal_job_control_are_not_forwarded() {
        for kept in [nix::libc::SIGCHLD, nix::libc::SIGTTIN, nix::libc::SIGTTOU] {
            assert!(!SignalNumber(kept).is_forwarded());
        }
        for passed in [nix::libc::SIGHUP, nix::libc::SIGUSR1, nix::libc::SIGWINCH] {
            assert!(SignalNumber(passed).is_forwarded());
        }
        assert!(SignalNumber(nix::libc::SIGRTMIN() + 1).is_forwarded());
    }

    #[test]
    fn only_signals_raised_for_kubexits_own_action_are_its_own() {
        let me = std::process::id();
        let pipe = SignalNumber(nix::libc::SIGPIPE);
        assert!(Received::classify(pipe, me, nix::libc::SI_USER).is_own());
        assert!(!Received::classify(pipe, me + 1, nix::libc::SI_USER).is_own());
        assert!(!Received::classify(pipe, 0, nix::libc::SI_USER).is_own());
        let xcpu = SignalNumber(nix::libc::SIGXCPU);
        assert!(Received::classify(xcpu, 0, nix::libc::SI_KERNEL).is_own());
        // A terminal's Ctrl-C comes from the kernel too, and is forwarded.
        let int = SignalNumber(nix::libc::SIGINT);
        assert!(!Received::classify(int, 0, nix::libc::SI_KERNEL).is_own());
        assert!(!Received::classify(SignalNumber::TERM, me, nix::libc::SI_USER).is_own());
    }

    #[test]
    fn real_time_signals_are_named_as_kill_l_names_them_whatever_the_c_library() {
        assert_eq!(SignalNumber(34).to_string(), "SIGRTMIN+0");
        assert_eq!(SignalNumber(36).to_string(), "SIGRTMIN+2");
        assert_eq!(SignalNumber(64).to_string(), "SIGRTMIN+30");
        // Below glibc's SIGRTMIN: kept by the C libraries, named by number.
        assert_eq!(SignalNumber(33).to_string(), "signal 33");
    }
}
