//! Readiness: when the child counts as ready, so that `Ready` can be
//! recorded in the tombstone for the kubexits waiting on it.
//!
//! Without a probe the child is ready when it is born. With one, the
//! supervisor's event loop asks [`Readiness::next_event`] what happens next:
//! an attempt is due, or one has finished. Attempts run one at a time, each
//! bounded by the probe timeout, every probe period, until one succeeds;
//! then probing stops for good (readiness here is about start-up order, not
//! liveness). Starting an attempt is a separate call so that `exec:` probes
//! can register their process with the reaper, which alone reaps.
//!
//! Failures are logged when their reason changes and otherwise at most
//! every few seconds, so a slow start does not flood the log.

pub mod notify;
pub mod probe;
pub mod tls;

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::time::{Instant, sleep_until};

use crate::process::child;
use crate::process::reaper::{ChildStatus, Reaper};
use crate::process::signals::SignalNumber;
use crate::readiness::notify::NotifySocket;
use crate::readiness::probe::Probe;

/// How often a persisting probe failure is logged again.
const REPEAT_FAILURE_LOG: Duration = Duration::from_secs(5);

type Attempt = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// What the readiness machinery needs from the loop.
pub enum Event {
    /// Time to start an attempt: call [`Readiness::start_attempt`].
    Due,
    /// The child was judged ready.
    Ready,
}

/// The readiness state of the child.
pub struct Readiness {
    state: State,
    period: Duration,
    timeout: Duration,
    last_failure: Option<(String, Instant)>,
}

enum State {
    /// Ready, or no longer probing because the child has ended.
    Settled,
    Probing {
        probe: Probe,
        next_at: Instant,
        attempt: Option<Attempt>,
        helper: Option<Pid>,
    },
    Notify(Option<NotifySocket>),
}

impl Readiness {
    /// Prepares readiness for `probe`; the notify socket is bound here,
    /// before the child starts, so that its name can be passed to it.
    pub fn new(
        probe: Option<&Probe>,
        period: Duration,
        timeout: Duration,
    ) -> io::Result<Readiness> {
        let state = match probe {
            None => State::Settled,
            Some(Probe::Notify) => State::Notify(Some(NotifySocket::bind()?)),
            Some(probe) => State::Probing {
                probe: probe.clone(),
                next_at: Instant::now(),
                attempt: None,
                helper: None,
            },
        };
        Ok(Readiness {
            state,
            period,
            timeout,
            last_failure: None,
        })
    }

    /// Whether the child counts as ready already (no probe).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Settled)
    }

    /// Variables the child needs to take part (`NOTIFY_SOCKET`).
    pub fn child_env(&self) -> Vec<(&'static str, &str)> {
        match &self.state {
            State::Notify(Some(socket)) => vec![("NOTIFY_SOCKET", socket.env_value())],
            _ => Vec::new(),
        }
    }

    /// Waits for the next thing to do; never completes once ready.
    pub async fn next_event(&mut self) -> Event {
        loop {
            match &mut self.state {
                State::Settled => std::future::pending::<()>().await,
                State::Notify(socket) => {
                    let Some(live) = socket.as_ref() else {
                        std::future::pending::<()>().await;
                        continue;
                    };
                    match live.ready().await {
                        Ok(()) => {
                            self.state = State::Settled;
                            return Event::Ready;
                        }
                        Err(err) => {
                            tracing::error!(
                                "the notify socket failed: {err}; the child cannot be marked ready"
                            );
                            *socket = None;
                        }
                    }
                }
                State::Probing {
                    next_at, attempt, ..
                } => match attempt {
                    None => {
                        sleep_until(*next_at).await;
                        return Event::Due;
                    }
                    Some(running) => {
                        let result = running.as_mut().await;
                        if self.finish_attempt(result) {
                            return Event::Ready;
                        }
                    }
                },
            }
        }
    }

    /// Starts one probe attempt.
    pub fn start_attempt(&mut self, reaper: &mut Reaper) {
        let timeout = self.timeout;
        let State::Probing {
            probe,
            attempt,
            helper,
            ..
        } = &mut self.state
        else {
            return;
        };
        let future: Attempt = match probe.clone() {
            Probe::Tcp { host, port } => {
                Box::pin(async move { probe::check_tcp(&host, port, timeout).await })
            }
            Probe::Http(target) if target.tls => {
                Box::pin(async move { crate::readiness::tls::check_https(&target, timeout).await })
            }
            Probe::Http(target) => {
                Box::pin(async move { probe::check_http(&target, timeout).await })
            }
            Probe::File { path } => Box::pin(std::future::ready(probe::check_file(&path))),
            Probe::Exec { argv } => {
                let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
                match child::spawn_helper(&argv) {
                    Ok(pid) => {
                        *helper = Some(pid);
                        let exited = reaper.watch(pid);
                        Box::pin(async move {
                            match tokio::time::timeout(timeout, exited).await {
                                Ok(Ok(ChildStatus::Exited(0))) => Ok(()),
                                Ok(Ok(status)) => {
                                    Err(format!("the command ended with status {}", status.code()))
                                }
                                Ok(Err(_)) => Err("the command's status was lost".into()),
                                Err(_) => {
                                    let _ = child::signal_group_of(pid, SignalNumber::KILL);
                                    Err(format!(
                                        "the command did not finish within {}",
                                        crate::duration::GoDuration(timeout)
                                    ))
                                }
                            }
                        })
                    }
                    Err(err) => Box::pin(std::future::ready(Err(err.to_string()))),
                }
            }
            Probe::Notify => return,
        };
        *attempt = Some(future);
    }

    /// Records an attempt's result; true when the child became ready.
    fn finish_attempt(&mut self, result: Result<(), String>) -> bool {
        let period = self.period;
        let State::Probing {
            probe,
            next_at,
            attempt,
            helper,
        } = &mut self.state
        else {
            return false;
        };
        *attempt = None;
        *helper = None;
        match result {
            Ok(()) => {
                self.state = State::Settled;
                true
            }
            Err(reason) => {
                let now = Instant::now();
                *next_at = now + period;
                let repeat = match &self.last_failure {
                    Some((last, at)) => {
                        *last != reason || now.duration_since(*at) >= REPEAT_FAILURE_LOG
                    }
                    None => true,
                };
                if repeat {
                    tracing::info!(probe = %probe, "Not ready yet: {probe}: {reason}");
                    self.last_failure = Some((reason, now));
                }
                false
            }
        }
    }

    /// Stops probing (the child has ended): an `exec:` probe still running
    /// is killed.
    pub fn abandon(&mut self) {
        if let State::Probing {
            helper: Some(pid), ..
        } = &self.state
        {
            let _ = child::signal_group_of(*pid, SignalNumber::KILL);
        }
        self.state = State::Settled;
    }
}
