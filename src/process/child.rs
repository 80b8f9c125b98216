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
//! Waiting for the child is not done here: the reaper owns `waitpid`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
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
