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
//! waited for in the same loop. The birth wait runs probes of addresses
//! (`KUBEXIT_BIRTH_PROBES`) with the same prober.
//!
//! The parts: `probe`, the syntax; `attempt`, one attempt of each kind;
//! `http`, the HTTP/1.1 client of http probes (and of the `quit` module's
//! calls); `resolve`, names and connections; `detached`, blocking calls
//! kept off the loop; `tls`, the handshake of https; `notify`, the socket.
//!
//! The loop waits on no probe: a name lookup and a `file:` probe's `lstat`
//! run on threads of their own (`detached`: one call in flight at most per
//! probe, never waited for beyond the attempt), and connections, requests,
//! answers and `exec:` commands are awaited under the attempt's timeout.
//! One exception: starting an `exec:` command returns once the command
//! has been executed (`posix_spawnp` reports whether it could be), so a
//! command, or a directory of `PATH`, on a mount that hangs holds the loop
//! for as long as the mount does.
//!
//! Failures are logged when their reason changes and otherwise at most
//! every few seconds, so a slow start does not flood the log.

pub mod attempt;
pub mod detached;
pub mod http;
pub mod notify;
pub mod probe;
pub mod resolve;
pub mod tls;

use std::io;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::process::reaper::Reaper;
use crate::readiness::attempt::{Attempt, Check};
use crate::readiness::notify::NotifySocket;
use crate::readiness::probe::Probe;

/// How often a persisting probe failure is logged again.
const REPEAT_FAILURE_LOG: Duration = Duration::from_secs(5);

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
    /// None for `notify`, which is no attempt: such a prober never starts one.
    check: Option<Check>,
    period: Duration,
    timeout: Duration,
    next_at: Instant,
    attempt: Option<Attempt>,
    ready: bool,
    last_failure: Option<(String, Instant)>,
}

impl Prober {
    /// A prober of `probe` (not `notify`, which is no attempt), its first
    /// attempt due at once.
    pub fn new(probe: &Probe, period: Duration, timeout: Duration) -> Prober {
        Prober {
            probe: probe.clone(),
            check: Check::of(probe),
            period,
            timeout,
            next_at: Instant::now(),
            attempt: None,
            ready: false,
            last_failure: None,
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Why the last attempt failed, if one has.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure
            .as_ref()
            .map(|(reason, _)| reason.as_str())
    }

    /// Waits for the next thing to do; never completes once ready.
    /// Cancel-safe: the attempt in progress is kept in the prober.
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
                    let result = running.finished().await;
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
        if let Some(check) = &self.check {
            self.attempt = Some(check.start(reaper, self.timeout));
        }
    }

    /// Records an attempt's result; true when the probe succeeded.
    fn finish_attempt(&mut self, result: Result<(), String>) -> bool {
        self.attempt = None;
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
    /// lookup or a file's status in flight is left to end on its own,
    /// never waited for.
    pub fn abandon(&mut self) {
        if let Some(attempt) = self.attempt.take() {
            attempt.abandon();
        }
        self.ready = true;
    }
}

/// The readiness of the child kubexit supervises.
pub enum Readiness {
    /// Ready, or no longer judged because the child has ended.
    Settled,
    Probing(Box<Prober>),
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
            Some(probe) => Readiness::Probing(Box::new(Prober::new(probe, period, timeout))),
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
