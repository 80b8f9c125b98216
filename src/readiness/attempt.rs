//! One attempt of a probe, of each kind, bounded by the probe timeout.
//!
//! A [`Check`] is what a probe needs from one attempt to the next: the
//! resolver of a network probe, the status call of a `file:` probe (both
//! keep a blocking call in flight across attempts, at most one, see
//! `detached`), the command of an `exec:` probe. [`Check::start`] makes one
//! [`Attempt`], a future the prober keeps and polls in the event loop until
//! it yields its result:
//!
//! - `tcp://`: a connection accepted within the timeout;
//! - `http://`, `https://`: a GET (the `http` client) answered within the
//!   timeout with a status of 200–399, as the kubelet judges;
//! - `file:`: the path's `lstat` answered within the timeout, off the
//!   loop, and found something there;
//! - `exec:`: the command, started through `process::child` and reaped by
//!   the reaper (which alone reaps), exited 0 within the timeout; past it,
//!   its process group is killed.
//!
//! Every attempt ends by the timeout, whatever the far side does. Only
//! the start of an `exec:` command can hold the loop (see the readiness
//! module).

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use nix::unistd::Pid;

use crate::duration::GoDuration;
use crate::process::child;
use crate::process::reaper::{ChildStatus, Reaper};
use crate::process::signals::SignalNumber;
use crate::readiness::detached::{Detached, Unanswered};
use crate::readiness::http;
use crate::readiness::probe::{HttpTarget, Probe};
use crate::readiness::resolve::Resolver;

/// What one probe needs from attempt to attempt.
pub enum Check {
    Tcp(Resolver),
    Http(HttpTarget, Resolver),
    File(FileCheck),
    Exec(Vec<OsString>),
}

/// One attempt in progress.
pub struct Attempt {
    result: Pin<Box<dyn Future<Output = Result<(), String>>>>,
    /// The process of an `exec:` attempt, killed if the attempt is given up.
    helper: Option<Pid>,
}

impl Check {
    /// The check of `probe`; none for `notify`, which is no attempt.
    pub fn of(probe: &Probe) -> Option<Check> {
        Some(match probe {
            Probe::Tcp { host, port } => Check::Tcp(Resolver::new(host, *port)),
            Probe::Http(target) => {
                Check::Http(target.clone(), Resolver::new(&target.host, target.port))
            }
            Probe::File { path } => Check::File(FileCheck::new(path.clone())),
            Probe::Exec { argv } => Check::Exec(argv.iter().map(OsString::from).collect()),
            Probe::Notify => return None,
        })
    }

    /// Starts one attempt, bounded by `timeout`. An `exec:` command's
    /// process is watched through `reaper`.
    pub fn start(&self, reaper: &mut Reaper, timeout: Duration) -> Attempt {
        let result: Pin<Box<dyn Future<Output = Result<(), String>>>> = match self {
            Check::Tcp(resolver) => Box::pin(tcp(resolver.clone(), timeout)),
            Check::Http(target, resolver) => {
                Box::pin(http_get(target.clone(), resolver.clone(), timeout))
            }
            Check::File(file) => Box::pin(file.clone().check(timeout)),
            Check::Exec(argv) => return exec(argv, reaper, timeout),
        };
        Attempt {
            result,
            helper: None,
        }
    }
}

impl Attempt {
    /// Waits for the attempt's result. Cancel-safe: the attempt goes on
    /// for the next call.
    pub async fn finished(&mut self) -> Result<(), String> {
        self.result.as_mut().await
    }

    /// Gives the attempt up: an `exec:` command still running is killed.
    /// A blocking call in flight is left to end on its own, never waited
    /// for.
    pub fn abandon(self) {
        if let Some(pid) = self.helper {
            let _ = child::signal_group_of(pid, SignalNumber::KILL);
        }
    }
}

/// One attempt of a TCP probe: Ok when a connection is accepted.
async fn tcp(resolver: Resolver, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, resolver.connect()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no connection within {}", GoDuration(timeout))),
    }
}

/// One attempt of an HTTP or HTTPS probe: Ok for a status of 200–399.
async fn http_get(target: HttpTarget, resolver: Resolver, timeout: Duration) -> Result<(), String> {
    // The kubelet's request: no body, no keep-alive.
    let request = http::request(
        "GET",
        &target,
        &[("User-Agent", "kubexit-probe"), ("Accept", "*/*")],
    );
    let status = http::status(&resolver, &target, &request);
    match tokio::time::timeout(timeout, status).await {
        Ok(Ok(code)) => judge(code),
        Ok(Err(failure)) => Err(failure.to_string()),
        Err(_) => Err(format!("no answer within {}", GoDuration(timeout))),
    }
}

/// Ok for a status of 200–399, as the kubelet judges.
fn judge(code: u16) -> Result<(), String> {
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP status {code}"))
    }
}

/// The path of a `file:` probe, and its `lstat` in flight.
#[derive(Clone)]
pub struct FileCheck {
    path: PathBuf,
    status: Detached<Result<(), String>>,
}

impl FileCheck {
    fn new(path: PathBuf) -> FileCheck {
        FileCheck {
            path,
            status: Detached::new("file-probe"),
        }
    }

    /// One attempt: Ok when something is at the path (a symbolic link
    /// counts, dangling or not). The `lstat` runs off the loop: a hung
    /// mount holds its thread, not the loop, and the attempt ends at
    /// `timeout`.
    async fn check(self, timeout: Duration) -> Result<(), String> {
        let path = self.path.clone();
        let status = self.status.run(move || {
            std::fs::symlink_metadata(&path)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        match tokio::time::timeout(timeout, status).await {
            Ok(Ok(found)) => found,
            Ok(Err(Unanswered::NoThread(e))) => Err(format!("cannot look at the path: {e}")),
            Ok(Err(Unanswered::Lost)) => Err("the look at the path ended without an answer".into()),
            Err(_) => Err(format!(
                "the file system did not answer within {}",
                GoDuration(timeout)
            )),
        }
    }
}

/// One attempt of an `exec:` probe: Ok when the command exits 0.
fn exec(argv: &[OsString], reaper: &mut Reaper, timeout: Duration) -> Attempt {
    let pid = match child::spawn_helper(argv) {
        Ok(pid) => pid,
        Err(err) => {
            return Attempt {
                result: Box::pin(std::future::ready(Err(err.to_string()))),
                helper: None,
            };
        }
    };
    let exited = reaper.watch(pid);
    let result = async move {
        match tokio::time::timeout(timeout, exited).await {
            Ok(Ok(ChildStatus::Exited(0))) => Ok(()),
            Ok(Ok(status)) => Err(format!("the command ended with status {}", status.code())),
            Ok(Err(_)) => Err("the command's status was lost".into()),
            Err(_) => {
                let _ = child::signal_group_of(pid, SignalNumber::KILL);
                Err(format!(
                    "the command did not finish within {}",
                    GoDuration(timeout)
                ))
            }
        }
    };
    Attempt {
        result: Box::pin(result),
        helper: Some(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_judged_as_the_kubelet_does() {
        let judge_status = |line: &str| {
            http::status_code(line)
                .map_err(|failure| failure.to_string())
                .and_then(judge)
        };
        assert!(judge_status("HTTP/1.1 200 OK").is_ok());
        assert!(judge_status("HTTP/1.0 302 Found").is_ok());
        assert!(judge_status("HTTP/1.1 399 Whatever").is_ok());
        assert_eq!(
            judge_status("HTTP/1.1 503 Unavailable"),
            Err("HTTP status 503".into())
        );
        assert!(judge_status("HTTP/1.1 199 Early").is_err());
        assert!(judge_status("SSH-2.0-OpenSSH").is_err());
        assert!(judge_status("").is_err());
    }
}
