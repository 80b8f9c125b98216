//! Quitting the sidecars nobody wraps, once the work is done.
//!
//! A service mesh injects its proxy into the pod, and nobody can put
//! kubexit in front of it; in a Job, the proxy then runs forever and the
//! Job never completes. Such proxies have an endpoint that makes them exit:
//! Istio's pilot-agent `POST /quitquitquit` on port 15020, Linkerd's proxy
//! `POST /shutdown` on its admin port 4191, cloud-sql-proxy's
//! `POST /quitquitquit` on its admin port 9091 (started with
//! `--quitquitquit`), Envoy's admin `POST /quitquitquit`. With
//! `KUBEXIT_QUIT`, the main container's kubexit calls them once its child
//! has ended (or never started) and its `Died` is recorded; or at once,
//! with nothing recorded, when the graveyard cannot be opened, since no
//! child will run. How endpoints are written is `endpoint`'s; which of
//! them are this kubexit's to call, when several main containers share a
//! sidecar (the last one out asks), is `sharing`'s; the requests are made
//! by the readiness probes' HTTP client (`readiness::http`); when to call
//! is the supervisor's.
//!
//! Each endpoint is called on its own, all at once. A call succeeds on a
//! 2xx answer. Anything else is tried again after a short backoff (100 ms,
//! doubling up to 1 s) until the quit timeout (`KUBEXIT_QUIT_TIMEOUT`, 10 s
//! by default) has passed: no call begins after it, the last one is made
//! at that moment, and it may take its second. A refused connection is
//! read by what the endpoint has shown before:
//!
//! * **Never accepted a connection: not listening yet.** A proxy still
//!   starting when a short-lived child has already ended (no birth probe
//!   made the child wait for it) refuses, and would then run forever. So
//!   kubexit keeps trying, as for any failure, and says once that it does
//!   (`not listening yet; trying again until the quit timeout (10s) has
//!   passed`); at the timeout it warns that nothing ever listened. A
//!   sidecar already gone before the first call is refused the same way,
//!   and costs the quit timeout: the records cannot tell the two apart,
//!   and giving up too early is the worse mistake (the Job never ends),
//!   where waiting only delays this container's end.
//! * **Accepted one before (an answer, a reset): gone.** It was there and
//!   has stopped listening, which is what was wanted: the call ends at
//!   once (`the sidecar is already gone`).
//!
//! A birth probe on the proxy's readiness is the other half of the
//! answer: the child starts only once the proxy is up, and its quit finds
//! it listening. Each call's result is logged (the tries between, at
//! debug level). Nothing here changes kubexit's exit status: the child's
//! work is what it reports, and a sidecar that will not quit is the pod's
//! to end.

pub mod endpoint;
pub mod sharing;

use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout};

use crate::duration::GoDuration;
use crate::quit::endpoint::Endpoint;
use crate::readiness::http::{self, Failure};
use crate::readiness::resolve::Resolver;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// Calls every endpoint, all at once, each until it succeeds, finds its
/// sidecar gone, or `limit` has passed.
pub async fn quit_all(endpoints: &[Endpoint], limit: Duration) {
    if endpoints.is_empty() {
        return;
    }
    let deadline = Instant::now() + limit;
    let calls = endpoints
        .iter()
        .map(|endpoint| quit(endpoint, deadline, limit));
    join_all(calls).await;
}

/// Awaits every future, polling them together (the slim build has no
/// futures crate, and this is all it needs).
async fn join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

async fn quit(endpoint: &Endpoint, deadline: Instant, limit: Duration) {
    let resolver = Resolver::new(&endpoint.target.host, endpoint.target.port);
    let mut backoff = BACKOFF_FIRST;
    // Whether a connection was ever accepted there: until one was, a
    // refused connection means the sidecar has not begun to listen yet.
    let mut listened = false;
    let mut said_not_yet = false;
    let mut last;
    loop {
        let attempt = timeout(CALL_TIMEOUT, call(endpoint, &resolver)).await;
        match attempt {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                tracing::info!(endpoint = %endpoint, "Quit {endpoint}: HTTP {status}");
                return;
            }
            Ok(Err(Failure::Connect(err))) if err.is_refused() => {
                if listened {
                    tracing::info!(
                        endpoint = %endpoint,
                        "Quit {endpoint}: connection refused, the sidecar is already gone"
                    );
                    return;
                }
                if !std::mem::replace(&mut said_not_yet, true) {
                    tracing::info!(
                        endpoint = %endpoint,
                        "Quit {endpoint}: connection refused, not listening yet; trying again \
                         until the quit timeout ({}) has passed",
                        GoDuration(limit)
                    );
                }
                last = "connection refused throughout: nothing listened there (the sidecar \
                        never started, or had gone before the first call)"
                    .to_owned();
            }
            Ok(Err(failure @ Failure::Connect(_))) => last = failure.to_string(),
            Ok(Ok(status)) => {
                listened = true;
                last = format!("HTTP {status}");
            }
            Ok(Err(failure)) => {
                listened = true;
                last = failure.to_string();
            }
            Err(_) => last = format!("no answer within {}", GoDuration(CALL_TIMEOUT)),
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tracing::debug!(endpoint = %endpoint, "Quit {endpoint}: {last}; trying again");
        // The last try is made at the deadline itself, not a backoff before it.
        sleep_until((now + backoff).min(deadline)).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
    tracing::warn!(
        endpoint = %endpoint,
        "Quit {endpoint} failed for {}: {last}; the sidecar may keep the pod running",
        GoDuration(limit)
    );
}

/// One call: the status code of the answer.
async fn call(endpoint: &Endpoint, resolver: &Resolver) -> Result<u16, Failure> {
    let request = http::request(
        endpoint.method.as_str(),
        &endpoint.target,
        &[("User-Agent", "kubexit"), ("Content-Length", "0")],
    );
    http::status(resolver, &endpoint.target, &request).await
}
