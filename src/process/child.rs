//! The child: starting the supervised command and signalling it.
//!
//! The child runs in a process group of its own, so that "stop the child"
//! means the child and everything it started (`sh -c 'a & b'`), not just one
//! pid. It inherits kubexit's environment (the `KUBEXIT_*` variables too, as
//! upstream), its stdin, stdout and stderr, and starts with an empty signal
//! mask and SIGPIPE's default action, whatever kubexit had blocked or
//! ignored. It is started with `posix_spawnp`, which copies nothing of
//! kubexit's memory; only the terminal's hand-over below needs a fork.
//!
//! A separate process group would normally put the child in the background
//! of an interactive terminal, where reading from it stops the process. So
//! when kubexit itself is in the terminal's foreground, the child's group is
//! made the foreground group before `exec` (done in the child with SIGTTOU
//! blocked, as tini does, so there is no window where the child can be
//! stopped by the hand-over). Ctrl-C then reaches the child directly, and
//! interactive programs work. [`Terminal::reclaim`] gives the terminal back
//! to kubexit's group when the child is gone. A kubexit started in the
//! background (`kubexit app &`) never touches the terminal.
//!
//! **Signals** go to the child's group in one `kill(-pgid)`: the group id is
//! the child's pid, which the reaper keeps from reuse by holding the
//! child's zombie. Any other process is signalled as the process it was
//! seen to be, pid *and* start time ([`Process`]), never by a bare pid that
//! may have been handed to a stranger since: a pidfd is opened on the pid,
//! the start time read again (only then, so that the pidfd and the process
//! checked are one), and the signal sent through the pidfd, which reaches
//! that process or none. A process whose start time differs is another and
//! is left alone. Where the kernel has no pidfds (before Linux 5.3, or a
//! seccomp filter refuses them), the start time is checked and `kill(2)`
//! sent by pid; one race stays open there, as narrow as the time between
//! that read and the kill: the process ends, its parent (not kubexit: a
//! child of kubexit cannot be reaped by anyone else) reaps it, and the pid
//! goes to a new process, which gets the signal.
//!
//! Waiting for the child is not done here: the reaper owns `waitpid`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::OFlag;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::stat::Mode;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};

use crate::process::signals::SignalNumber;
use crate::process::table::{self, Process};

/// A started child: its pid, which is also its process group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pid: Pid,
}

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{program:?}: command not found; check the spelling and that it is on PATH")]
    NotFound { program: String },
    #[error(
        "{program:?}: permission denied; the file must be executable (chmod +x) and not a directory"
    )]
    NotExecutable { program: String },
    #[error("{program:?}: cannot be started: {source}")]
    Other { program: String, source: io::Error },
}

impl SpawnError {
    /// The shell's convention for commands that did not run.
    pub fn exit_status(&self) -> u8 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::NotExecutable { .. } => 126,
            SpawnError::Other { .. } => 1,
        }
    }
}

/// Whether kubexit holds the controlling terminal's foreground, and so must
/// hand it to the child.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    foreground: bool,
}

impl Terminal {
    /// Looks at stdin: kubexit is in the foreground when the terminal's
    /// foreground group is kubexit's own group.
    pub fn detect() -> Terminal {
        let stdin = io::stdin();
        let foreground = matches!(tcgetpgrp(stdin.as_fd()), Ok(group) if group == getpgrp());
        Terminal { foreground }
    }

    /// Makes kubexit's group the foreground group again, if it handed the
    /// terminal over. SIGTTOU is blocked in kubexit, so this cannot stop it.
    pub fn reclaim(&self) {
        if self.foreground {
            let _ = tcsetpgrp(io::stdin().as_fd(), getpgrp());
        }
    }
}

/// Starts `command` (program looked up on PATH, as upstream) in a new
/// process group, with `extra_env` added to kubexit's environment.
pub fn spawn(
    command: &[OsString],
    extra_env: &[(&str, &str)],
    terminal: Terminal,
) -> Result<Child, SpawnError> {
    let pid = if terminal.foreground {
        fork_for_terminal(command, extra_env)?
    } else {
        launch(command, extra_env, false)?
    };
    Ok(Child { pid })
}

/// Starts one of kubexit's helper commands (an exec probe): in a process
/// group of its own, with no stdin and its output discarded, so that it
/// never mixes with the child's output.
pub fn spawn_helper(command: &[OsString]) -> Result<Pid, SpawnError> {
    launch(command, &[], true)
}

/// Starts a process with `posix_spawnp`: no copy of kubexit's memory is
/// made and touched on the way (a fork costs a start-up dozens of page
/// faults). The new process gets its own group, an empty signal mask and
/// SIGPIPE's default action back; with `quiet`, /dev/null for its standard
/// streams.
fn launch(
    command: &[OsString],
    extra_env: &[(&str, &str)],
    quiet: bool,
) -> Result<Pid, SpawnError> {
    let Some(program) = command.first() else {
        return Err(SpawnError::NotFound {
            program: String::new(),
        });
    };
    let name = || program.to_string_lossy().into_owned();
    let other = |source: io::Error| SpawnError::Other {
        program: name(),
        source,
    };
    let args = command
        .iter()
        .map(|arg| CString::new(arg.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| other(io::Error::other("an argument contains a NUL byte")))?;
    let env = environment(extra_env).map_err(other)?;
    let mut attr = PosixSpawnAttr::init().map_err(|e| other(e.into()))?;
    let mut sigdefault = SigSet::empty();
    sigdefault.add(Signal::SIGPIPE);
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .and_then(|()| attr.set_pgroup(Pid::from_raw(0)))
    .and_then(|()| attr.set_sigmask(&SigSet::empty()))
    .and_then(|()| attr.set_sigdefault(&sigdefault))
    .map_err(|e| other(e.into()))?;
    let mut actions = PosixSpawnFileActions::init().map_err(|e| other(e.into()))?;
    if quiet {
        for fd in 0..3 {
            actions
                .add_open(fd, "/dev/null", OFlag::O_RDWR, Mode::empty())
                .map_err(|e| other(e.into()))?;
        }
    }
    posix_spawnp(&args[0], &actions, &attr, &args, &env).map_err(|errno| match errno {
        Errno::ENOENT | Errno::ENOTDIR => SpawnError::NotFound { program: name() },
        Errno::EACCES | Errno::ENOEXEC | Errno::EISDIR | Errno::EPERM => {
            SpawnError::NotExecutable { program: name() }
        }
        errno => other(errno.into()),
    })
}

/// kubexit's environment with `extra` added (replacing what it names), as
/// `KEY=VALUE` strings.
fn environment(extra: &[(&str, &str)]) -> io::Result<Vec<CString>> {
    let mut env: Vec<CString> = Vec::new();
    for (key, value) in std::env::vars_os() {
        if extra.iter().any(|(k, _)| OsStr::new(k) == key) {
            continue;
        }
        let mut entry = key.into_vec();
        entry.push(b'=');
        entry.extend(value.as_bytes());
        env.push(CString::new(entry).map_err(io::Error::other)?);
    }
    for (key, value) in extra {
        env.push(CString::new(format!("{key}={value}")).map_err(io::Error::other)?);
    }
    Ok(env)
}

/// Starts the child with a fork, to hand it the terminal between fork and
/// exec (see the module docs); the standard library resets the signal mask
/// and SIGPIPE in that child.
fn fork_for_terminal(command: &[OsString], extra_env: &[(&str, &str)]) -> Result<Pid, SpawnError> {
    let Some((program, args)) = command.split_first() else {
        return Err(SpawnError::NotFound {
            program: String::new(),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .process_group(0)
        .envs(extra_env.iter().copied());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (sigprocmask, tcsetpgrp, getpgrp); it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(take_terminal);
    }
    match cmd.spawn() {
        Ok(child) => {
            let raw = i32::try_from(child.id()).map_err(|_| SpawnError::Other {
                program: program.to_string_lossy().into_owned(),
                source: io::Error::other("pid out of range"),
            })?;
            // Dropping std's handle neither waits nor kills: the reaper owns
            // the process from here on.
            drop(child);
            Ok(Pid::from_raw(raw))
        }
        Err(source) => {
            let program = program.to_string_lossy().into_owned();
            Err(match source.kind() {
                io::ErrorKind::NotFound => SpawnError::NotFound { program },
                io::ErrorKind::PermissionDenied => SpawnError::NotExecutable { program },
                _ if source.raw_os_error() == Some(nix::libc::ENOEXEC) => {
                    SpawnError::NotExecutable { program }
                }
                _ => SpawnError::Other { program, source },
            })
        }
    }
}

/// Runs in the child between fork and exec: makes the child's group the
/// terminal's foreground group, with SIGTTOU blocked for the hand-over,
/// then leaves the mask empty again.
fn take_terminal() -> io::Result<()> {
    // SAFETY: stdin stays open for the duration of this call.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None)?;
    match tcsetpgrp(stdin, getpgrp()) {
        Ok(()) | Err(Errno::ENOTTY | Errno::ENXIO) => {}
        Err(errno) => return Err(errno.into()),
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}

impl Child {
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// Sends `signal` to `process`, if its pid still names it: a pid the
/// kernel has handed to a new process since `process` was seen is not hit
/// (see the module docs). Gone by now is not an error.
pub fn signal_process(process: Process, signal: SignalNumber) -> io::Result<()> {
    match pidfd_open(process.pid) {
        Ok(pidfd) => send_if_still(process, Some(&pidfd), signal),
        Err(err) if lacks_pidfds(&err) => send_if_still(process, None, signal),
        Err(err) if err.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Sends `signal` to `process` if its start time is still the one seen:
/// through `pidfd`, opened on its pid before this read, or by pid without
/// one.
fn send_if_still(
    process: Process,
    pidfd: Option<&OwnedFd>,
    signal: SignalNumber,
) -> io::Result<()> {
    // Read after the pidfd is open: if the start time is still the one
    // seen, the pidfd holds that process, and a signal through it can
    // reach no other, even if the pid is reused from here on.
    if table::stat(process.pid).map(|stat| stat.start) != Some(process.start) {
        return Ok(());
    }
    match pidfd.map(|pidfd| pidfd_send_signal(pidfd, signal)) {
        // A kernel with pidfd_open has pidfd_send_signal too; a filter
        // that lets one through and not the other is not worth more.
        None => send(process.pid.as_raw(), signal),
        Some(Err(err)) if err.raw_os_error() == Some(nix::libc::ENOSYS) => {
            send(process.pid.as_raw(), signal)
        }
        Some(sent) => sent,
    }
}

/// A pidfd for `pid` (always close-on-exec), closed when dropped.
fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers; on success it
    // returns a new descriptor that nothing else owns.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just opened for this call and is owned by no one
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)` with no `siginfo` (as `kill(2)` sends) and no
/// flags. A process that has ended is not an error.
fn pidfd_send_signal(pidfd: &OwnedFd, signal: SignalNumber) -> io::Result<()> {
    let no_info: *const nix::libc::siginfo_t = std::ptr::null();
    // SAFETY: the descriptor is open for the duration of the call, and a
    // null siginfo is allowed (the kernel fills it in as for kill).
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal.0,
            no_info,
            0,
        )
    };
    sent(rc)
}

/// Whether `pidfd_open` failed because the kernel has no pidfds (before
/// Linux 5.3), or a seccomp filter that does not know the call refuses it
/// (older container runtimes answer EPERM, which `pidfd_open` itself
/// never returns).
fn lacks_pidfds(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(nix::libc::ENOSYS | nix::libc::EPERM)
    )
}

/// The result of a call that sends a signal (`rc`, its return value): a
/// process that has ended (ESRCH) is not an error.
fn sent(rc: impl Into<i64>) -> io::Result<()> {
    if rc.into() == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(nix::libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Sends `signal` to the process group led by `leader`.
pub fn signal_group_of(leader: Pid, signal: SignalNumber) -> io::Result<()> {
    send(-leader.as_raw(), signal)
}

/// `kill(2)` with a raw signal number, because real-time signals have no
/// `nix::Signal`.
fn send(target: i32, signal: SignalNumber) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { nix::libc::kill(target, signal.0) };
    sent(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signal bit `signal` of a `SigPnd`/`ShdPnd` mask.
    fn bit(signal: i32) -> u64 {
        1 << (signal - 1)
    }

    /// The signals pending for the whole process `pid` (`ShdPnd`).
    fn pending(pid: Pid) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("ShdPnd:")).unwrap();
        u64::from_str_radix(line["ShdPnd:".len()..].trim(), 16).unwrap()
    }

    /// A process that holds SIGUSR1 blocked, so that a SIGUSR1 sent to it
    /// stays pending where it can be seen.
    fn holding_usr1() -> (std::process::Child, Process) {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import signal, sys, time\n\
                 signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n\
                 print('up', flush=True)\n\
                 time.sleep(60)\n",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut up = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut up,
        )
        .unwrap();
        assert_eq!(up, "up\n");
        let pid = Pid::from_raw(child.id() as i32);
        let start = table::stat(pid).unwrap().start;
        (child, Process { pid, start })
    }

    #[test]
    fn a_process_is_signalled_only_while_its_pid_still_names_it() {
        let usr1 = SignalNumber(nix::libc::SIGUSR1);
        let (mut child, seen) = holding_usr1();
        // The same pid with another start time: the process seen has
        // ended and its pid went to this one.
        let stranger = Process {
            start: seen.start + 1,
            ..seen
        };
        signal_process(stranger, usr1).unwrap();
        assert_eq!(
            pending(seen.pid) & bit(usr1.0),
            0,
            "a stranger was signalled"
        );
        send_if_still(stranger, None, usr1).unwrap();
        assert_eq!(
            pending(seen.pid) & bit(usr1.0),
            0,
            "a stranger was signalled without a pidfd"
        );
        signal_process(seen, usr1).unwrap();
        assert_ne!(
            pending(seen.pid) & bit(usr1.0),
            0,
            "the process seen was not signalled"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn without_a_pidfd_the_process_seen_is_signalled_by_pid() {
        let usr1 = SignalNumber(nix::libc::SIGUSR1);
        let (mut child, seen) = holding_usr1();
        send_if_still(seen, None, usr1).unwrap();
        assert_ne!(pending(seen.pid) & bit(usr1.0), 0);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_process_that_has_ended_is_no_error() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        child.wait().unwrap();
        let gone = Process { pid, start: 0 };
        assert!(signal_process(gone, SignalNumber::TERM).is_ok());
    }
}
