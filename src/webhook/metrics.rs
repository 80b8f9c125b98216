//! Counters for `GET /metrics`, in Prometheus' text format, so that a
//! platform team can alert on what the log says line by line: reviews by
//! outcome, requests refused before review, certificate reloads, open
//! connections. Counters and that one gauge, open connections (atomics, no
//! histograms): latency belongs to
//! the API server's own `apiserver_admission_webhook_admission_duration_seconds`,
//! which measures it where it matters, round trip included.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::review::Outcome;

/// Everything counted since the server started.
#[derive(Debug, Default)]
pub struct Metrics {
    injected: AtomicU64,
    denied: AtomicU64,
    unchanged: AtomicU64,
    fault: AtomicU64,
    refused: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    open: AtomicU64,
}

/// A connection, counted as open until dropped.
pub struct Open(Arc<Metrics>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn reviewed(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Injected(_) => &self.injected,
            Outcome::Denied(_) => &self.denied,
            Outcome::Unchanged(_) => &self.unchanged,
            Outcome::Fault(_) => &self.fault,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A request to /inject answered without a review (400, 411, 413).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A reading of the certificate files that changed the pair served
    /// (`true`) or could not (`false`).
    pub fn reloaded(&self, served: bool) {
        let counter = if served {
            &self.reloads
        } else {
            &self.reload_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection accepted; it counts as open until the value is dropped.
    pub fn opened(self: &Arc<Metrics>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(Arc::clone(self))
    }

    /// The text `GET /metrics` answers.
    pub fn render(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut text = String::with_capacity(1024);
        let _ = writeln!(
            text,
            "# HELP kubexit_webhook_reviews_total Admission reviews answered, by outcome.\n\
             # TYPE kubexit_webhook_reviews_total counter"
        );
        for (outcome, counter) in [
            ("injected", &self.injected),
            ("denied", &self.denied),
            ("unchanged", &self.unchanged),
            ("fault", &self.fault),
        ] {
            let _ = writeln!(
                text,
                "kubexit_webhook_reviews_total{{outcome=\"{outcome}\"}} {}",
                get(counter)
            );
        }
        let _ = writeln!(
            text,
            "# HELP kubexit_webhook_refused_total Requests to /inject answered without a review \
             (not a review, no length, too large).\n\
             # TYPE kubexit_webhook_refused_total counter\n\
             kubexit_webhook_refused_total {}",
            get(&self.refused)
        );
        let _ = writeln!(
            text,
            "# HELP kubexit_webhook_certificate_reloads_total Readings of changed certificate \
             files, by result.\n\
             # TYPE kubexit_webhook_certificate_reloads_total counter\n\
             kubexit_webhook_certificate_reloads_total{{result=\"served\"}} {}\n\
             kubexit_webhook_certificate_reloads_total{{result=\"failed\"}} {}",
            get(&self.reloads),
            get(&self.reload_failures)
        );
        let _ = writeln!(
            text,
            "# HELP kubexit_webhook_open_connections Client connections open now.\n\
             # TYPE kubexit_webhook_open_connections gauge\n\
             kubexit_webhook_open_connections {}",
            get(&self.open)
        );
        text
    }
}
