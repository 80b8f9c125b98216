//! Readiness: when the child counts as ready, so that `Ready` can be
//! recorded in the tombstone for the kubexits waiting on it.
//!
//! Without a probe the child is ready when it is born. With one, a
//! [`Prober`] runs it: attempts one at a time, each bounded by the probe
//! timeout, every probe period, until one succeeds; then probing stops for
//! good (readiness here is about start-up order, not liveness). The
//! supervisor's event loop asks [`Prober::next_event`] what happens next: an
//! attempt is due, or one has finished. Starting an attempt is a separate
//! call so that `exec:` probes can register their process with the reaper,
//! which alone reaps. The notify socket (`notify`) is the child's own word,
//! waited for in the same loop.
//!
//! Nothing here blocks the event loop: network probes resolve names through
//! a [`resolve::Resolver`] (one lookup in flight at most, never waited for
//! beyond the attempt), connect and read under the attempt's timeout.
//!
//! Failures are logged when their reason changes and otherwise at most
//! every few seconds, so a slow start does not flood the log.

pub mod notify;
pub mod probe;
pub mod resolve;
pub mod tls;

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::time::{Instant, sleep_until};

use crate::duration::GoDuration;
use crate::process::child;
use crate::process::reaper::{ChildStatus, Reaper};
use crate::process::signals::SignalNumber;
use crate::readiness::notify::NotifySocket;
use crate::readiness::probe::Probe;
use crate::readiness::resolve::Resolver;

/// How often a persisting probe failure is logged again.
const REPEAT_FAILURE_LOG: Duration = Duration::from_secs(5);

type Attempt = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// What a prober needs from the loop.
pub enum Event {
    /// Time to start an attempt: call [`Prober::start_attempt`].
    Due,
    /// The probe succeeded.
    Ready,
}

/// One probe, tried until it first succeeds.
pub struct Prober {
    probe: Probe,
    period: Duration,
    timeout: Duration,
    resolver: Option<Resolver>,
    next_at: Instant,
    attempt: Option<Attempt>,
    helper: Option<Pid>,
    ready: bool,
    last_failure: Option<(String, Instant)>,
}

impl Prober {
    /// A prober of `probe` (not `notify`, which is no attempt), its first
    /// attempt due at once.
    pub fn new(probe: &Probe, period: Duration, timeout: Duration) -> Prober {
        Prober {
            resolver: probe
                .address()
                .map(|(host, port)| Resolver::new(host, port)),
            probe: probe.clone(),
            period,
            timeout,
            next_at: Instant::now(),
            attempt: None,
            helper: None,
            ready: false,
            last_failure: None,
        }
    }

    /// Waits for the next thing to do; never completes once ready.
    pub async fn next_event(&mut self) -> Event {
        loop {
            if self.ready {
                return std::future::pending().await;
            }
            match &mut self.attempt {
                None => {
                    sleep_until(self.next_at).await;
                    return Event::Due;
                }
                Some(running) => {
                    let result = running.as_mut().await;
                    if self.finish_attempt(result) {
                        return Event::Ready;
                    }
                }
            }
        }
    }

    /// Starts one attempt.
    pub fn start_attempt(&mut self, reaper: &mut Reaper) {
        if self.ready || self.attempt.is_some() {
            return;
        }
        let timeout = self.timeout;
        let resolver = self.resolver.clone();
        let future: Attempt = match (self.probe.clone(), resolver) {
            (Probe::Tcp { .. }, Some(resolver)) => {
                Box::pin(async move { probe::check_tcp(&resolver, timeout).await })
            }
            (Probe::Http(target), Some(resolver)) if target.tls => {
                Box::pin(async move { tls::check_https(&target, &resolver, timeout).await })
            }
            (Probe::Http(target), Some(resolver)) => {
                Box::pin(async move { probe::check_http(&target, &resolver, timeout).await })
            }
            (Probe::File { path }, _) => Box::pin(std::future::ready(probe::check_file(&path))),
            (Probe::Exec { argv }, _) => {
                let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
                match child::spawn_helper(&argv) {
                    Ok(pid) => {
                        self.helper = Some(pid);
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
                                        GoDuration(timeout)
                                    ))
                                }
                            }
                        })
                    }
                    Err(err) => Box::pin(std::future::ready(Err(err.to_string()))),
                }
            }
            _ => return,
        };
        self.attempt = Some(future);
    }

    /// Records an attempt's result; true when the probe succeeded.
    fn finish_attempt(&mut self, result: Result<(), String>) -> bool {
        self.attempt = None;
        self.helper = None;
        match result {
            Ok(()) => {
                self.ready = true;
                true
            }
            Err(reason) => {
                let now = Instant::now();
                self.next_at = now + self.period;
                let repeat = match &self.last_failure {
                    Some((last, at)) => {
                        *last != reason || now.duration_since(*at) >= REPEAT_FAILURE_LOG
                    }
                    None => true,
                };
                if repeat {
                    let probe = &self.probe;
                    tracing::info!(probe = %probe, "Not ready yet: {probe}: {reason}");
                    self.last_failure = Some((reason, now));
                }
                false
            }
        }
    }

    /// Stops probing: an `exec:` probe still running is killed; a name
    /// lookup in flight is left to end on its own, never waited for.
    pub fn abandon(&mut self) {
        if let Some(pid) = self.helper.take() {
            let _ = child::signal_group_of(pid, SignalNumber::KILL);
        }
        self.attempt = None;
        self.ready = true;
    }
}

/// The readiness of the child kubexit supervises.
pub enum Readiness {
    /// Ready, or no longer judged because the child has ended.
    Settled,
    Probing(Prober),
    Notify(Option<NotifySocket>),
}

/// What the loop must do about the child's readiness.
pub enum ReadinessEvent {
    Due,
    Ready,
}

impl Readiness {
    /// Prepares readiness for `probe`; the notify socket is bound here,
    /// before the child starts, so that its name can be passed to it.
    pub fn new(
        probe: Option<&Probe>,
        period: Duration,
        timeout: Duration,
    ) -> io::Result<Readiness> {
        Ok(match probe {
            None => Readiness::Settled,
            Some(Probe::Notify) => Readiness::Notify(Some(NotifySocket::bind()?)),
            Some(probe) => Readiness::Probing(Prober::new(probe, period, timeout)),
        })
    }

    /// Whether the child counts as ready already (no probe).
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Settled)
    }

    /// Variables the child needs to take part (`NOTIFY_SOCKET`).
    pub fn child_env(&self) -> Vec<(&'static str, &str)> {
        match self {
            Readiness::Notify(Some(socket)) => vec![("NOTIFY_SOCKET", socket.env_value())],
            _ => Vec::new(),
        }
    }

    /// Waits for the next thing to do; never completes once ready.
    pub async fn next_event(&mut self) -> ReadinessEvent {
        loop {
            match self {
                Readiness::Settled => std::future::pending::<()>().await,
                Readiness::Probing(prober) => match prober.next_event().await {
                    Event::Due => return ReadinessEvent::Due,
                    Event::Ready => {
                        *self = Readiness::Settled;
                        return ReadinessEvent::Ready;
                    }
                },
                Readiness::Notify(socket) => {
                    let Some(live) = socket.as_ref() else {
                        std::future::pending::<()>().await;
                        continue;
                    };
                    match live.ready().await {
                        Ok(()) => {
                            *self = Readiness::Settled;
                            return ReadinessEvent::Ready;
                        }
                        Err(err) => {
                            tracing::error!(
                                "the notify socket failed: {err}; the child cannot be marked ready"
                            );
                            *socket = None;
                        }
                    }
                }
            }
        }
    }

    /// Starts one probe attempt.
    pub fn start_attempt(&mut self, reaper: &mut Reaper) {
        if let Readiness::Probing(prober) = self {
            prober.start_attempt(reaper);
        }
    }

    /// Stops judging (the child has ended).
    pub fn abandon(&mut self) {
        if let Readiness::Probing(prober) = self {
            prober.abandon();
        }
        *self = Readiness::Settled;
    }
}
