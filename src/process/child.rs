//! The child: starting the supervised command and signalling it.
//!
//! The child runs in a process group of its own, so that "stop the child"
//! means the child and everything it started (`sh -c 'a & b'`), not just one
//! pid. It inherits kubexit's environment (the `KUBEXIT_*` variables too, as
//! upstream), its stdin, stdout and stderr, and starts with an empty signal
//! mask and default dispositions, whatever kubexit had blocked.
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
//! Waiting for the child is not done here: the reaper owns `waitpid`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};

use crate::process::signals::SignalNumber;

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
    let take_terminal = terminal.foreground;
    let pid = start(command, |cmd| {
        cmd.envs(extra_env.iter().copied());
        // SAFETY: the closure runs in the forked child before exec and
        // only makes async-signal-safe calls (sigprocmask, tcsetpgrp,
        // getpgrp); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || prepare_child(take_terminal));
        }
    })?;
    Ok(Child { pid })
}

/// Starts one of kubexit's helper commands (an exec probe): in a process
/// group of its own, with no stdin and its output discarded, so that it
/// never mixes with the child's output.
pub fn spawn_helper(command: &[OsString]) -> Result<Pid, SpawnError> {
    start(command, |cmd| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: as in `spawn`.
        unsafe {
            cmd.pre_exec(|| prepare_child(false));
        }
    })
}

fn start(command: &[OsString], configure: impl FnOnce(&mut Command)) -> Result<Pid, SpawnError> {
    let Some((program, args)) = command.split_first() else {
        return Err(SpawnError::NotFound {
            program: String::new(),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    configure(&mut cmd);
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

/// Runs in the child between fork and exec.
fn prepare_child(take_terminal: bool) -> io::Result<()> {
    if take_terminal {
        // SAFETY: stdin stays open for the duration of this call.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None)?;
        match tcsetpgrp(stdin, getpgrp()) {
            Ok(()) | Err(Errno::ENOTTY | Errno::ENXIO) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}

impl Child {
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// Sends `signal` to one process.
pub fn signal_process(pid: Pid, signal: SignalNumber) -> io::Result<()> {
    send(pid.as_raw(), signal)
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
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(nix::libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}
