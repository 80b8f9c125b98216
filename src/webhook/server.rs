//! The server: the listening socket, the routes, the bounds on request
//! bodies, and the stop.
//!
//! Routes: `POST /inject` takes an AdmissionReview and answers one (see
//! `review`); `GET /healthz` answers 200 while the server runs (liveness);
//! `GET /readyz` answers 200 while it accepts reviews and 503 once it is
//! stopping (readiness); `GET /metrics` gives the counters of `metrics`.
//! Anything else is 404, or 405 for a known path with the wrong method.
//!
//! Bodies: a review must say its `Content-Length` (the API server always
//! does), so that one over `--max-request-bytes` is refused with 413 before
//! a byte of it is read, and the connection closed. Bodies being read are
//! also bounded all together ([`Limits::body_budget`]): a request waits for
//! its share of that budget before reading, so many large requests at once
//! wait in turn rather than grow the memory, each within its own deadline.
//!
//! The stop, on SIGTERM or SIGINT: `/readyz` fails at once; after
//! `--shutdown-delay` (0 by default; a second signal cuts it short) the
//! listening socket is closed, every connection is told to close once its
//! request in flight is answered, and [`serve`] returns when all have
//! closed, or when the longest a request may take has passed. SIGHUP reads
//! the certificate files again. Other signals are ignored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use nix::sys::signal::Signal;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::connection::{self, Clock};
use super::metrics::Metrics;
use super::review::{self, Outcome, Reviewed};
use super::tls::{self, Certificates};
use super::{Limits, Settings, WebhookError};
use crate::inject::Options;
use crate::process::signals::Signals;

/// The path of the reviews.
pub const INJECT_PATH: &str = "/inject";

/// The budget of request bodies is counted in KiB.
const BUDGET_UNIT: usize = 1024;

/// What every connection shares.
pub struct Shared {
    pub options: Options,
    pub limits: Limits,
    ready: AtomicBool,
    bodies: Semaphore,
    metrics: Arc<Metrics>,
}

/// Serves until a stop signal, then stops as the module says.
pub async fn serve(
    settings: &Settings,
    certificates: Arc<Certificates>,
    signals: &Signals,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(Arc::new(certificates.server_config()?));
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| WebhookError::Listen {
                addr: settings.listen,
                source,
            })?;
    let address = listener.local_addr().unwrap_or(settings.listen);
    let limits = settings.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        options: settings.options.clone(),
        limits,
        ready: AtomicBool::new(true),
        bodies: Semaphore::new(limits.body_budget().div_ceil(BUDGET_UNIT)),
        metrics: Arc::clone(&metrics),
    });
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(tls::watch(Arc::clone(&certificates), Arc::clone(&metrics)));
    tracing::info!(
        address = %address,
        "Serving admission reviews on https://{address}{INJECT_PATH}"
    );

    let mut stop_at: Option<Instant> = None;
    loop {
        let next = async {
            let slot = Arc::clone(&slots).acquire_owned().await;
            (slot, listener.accept().await)
        };
        tokio::select! {
            received = signals.recv() => {
                let received = match received {
                    Ok(received) => received,
                    Err(err) => {
                        tracing::error!("cannot read signals: {err}; stopping");
                        break;
                    }
                };
                let mut now = false;
                for signal in received.iter().filter(|r| !r.is_own()).filter_map(|r| r.signal.known()) {
                    match signal {
                        Signal::SIGTERM | Signal::SIGINT => {
                            if stop_at.is_some() {
                                now = true;
                            } else {
                                shared.ready.store(false, Ordering::Relaxed);
                                stop_at = Some(Instant::now() + settings.shutdown_delay);
                                if settings.shutdown_delay.is_zero() {
                                    tracing::info!("Received {signal}: stopping");
                                } else {
                                    tracing::info!(
                                        "Received {signal}: /readyz fails from now on; stopping in {:?} \
                                         (--shutdown-delay)",
                                        settings.shutdown_delay
                                    );
                                }
                            }
                        }
                        Signal::SIGHUP => certificates.reload_and_log(&metrics),
                        _ => {}
                    }
                }
                if now || settings.shutdown_delay.is_zero() && stop_at.is_some() {
                    break;
                }
            }
            (slot, accepted) = next => match (slot, accepted) {
                (Ok(slot), Ok((stream, peer))) => {
                    tokio::spawn(connection::serve(
                        stream,
                        peer,
                        acceptor.clone(),
                        Arc::clone(&shared),
                        stopping.clone(),
                        (slot, metrics.opened()),
                    ));
                }
                (Ok(_), Err(err)) => {
                    // Out of file descriptors, say: a pause instead of a spin.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (Err(_), _) => {
                    // Never closed; were it ever, serving could not go on.
                    tracing::error!("the connection slots are gone; stopping");
                    break;
                }
            },
            _ = tokio::time::sleep_until(stop_at.unwrap_or_else(Instant::now)), if stop_at.is_some() => break,
        }
    }

    // No connection is accepted from here on: the port is closed.
    drop(listener);
    shared.ready.store(false, Ordering::Relaxed);
    let open = limits.max_connections - slots.available_permits();
    tracing::info!(
        connections = open,
        "Stopping: no new connections; answering the reviews in flight ({open} connection(s) open)"
    );
    let _ = stop.send(true);
    // Every slot back means every connection has closed. None can take
    // longer than a request may; a second more for the answers to go out.
    let every_slot = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let wait = limits.request_timeout + Duration::from_secs(1);
    match tokio::time::timeout(wait, slots.acquire_many(every_slot)).await {
        Ok(_) => tracing::info!("Stopped: every review answered"),
        Err(_) => tracing::warn!(
            "Stopped with {} connection(s) still open after {wait:?}",
            limits.max_connections - slots.available_permits()
        ),
    }
    Ok(())
}

/// Answers one request; tells the connection's clock when it is answered.
pub async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    clock: Arc<Clock>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = route(request, &shared, peer).await;
    clock.answered();
    Ok(response)
}

async fn route(
    request: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    match request.uri().path() {
        "/healthz" if read_only => text(StatusCode::OK, "ok\n"),
        "/readyz" if read_only => {
            if shared.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
            }
        }
        "/metrics" if read_only => {
            let mut response = text(StatusCode::OK, &shared.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        INJECT_PATH if request.method() == Method::POST => inject(request, shared, peer).await,
        "/healthz" | "/readyz" | "/metrics" => not_allowed("GET, HEAD"),
        INJECT_PATH => not_allowed("POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: kubexit webhook serves POST /inject, GET /healthz, GET /readyz and GET \
             /metrics\n",
        ),
    }
}

async fn inject(
    request: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let max = shared.limits.max_request_bytes;
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let Some(length) = length else {
        shared.metrics.refused();
        tracing::warn!(peer = %peer, "Refused a review from {peer} without Content-Length");
        return closing(text(
            StatusCode::LENGTH_REQUIRED,
            "a review must give its Content-Length\n",
        ));
    };
    if length > max {
        shared.metrics.refused();
        tracing::warn!(
            peer = %peer,
            "Refused a review of {length} bytes from {peer}: over the limit of {max} (--max-request-bytes)"
        );
        return closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a review of {length} bytes is over the limit of {max} bytes\n"),
        ));
    }
    // This body's share of the memory for bodies: waited for, not grown.
    let units = u32::try_from(length.div_ceil(BUDGET_UNIT).max(1)).unwrap_or(u32::MAX);
    let Ok(_share) = shared.bodies.acquire_many(units).await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n");
    };
    let body = match Limited::new(request.into_body(), length).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            shared.metrics.refused();
            return closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is longer than its Content-Length\n",
            ));
        }
        Err(err) => {
            shared.metrics.refused();
            tracing::debug!(peer = %peer, "cannot read a review from {peer}: {err}");
            return closing(text(StatusCode::BAD_REQUEST, "cannot read the body\n"));
        }
    };
    match review::review(&body, &shared.options) {
        Ok(reviewed) => {
            shared.metrics.reviewed(&reviewed.outcome);
            log(&reviewed);
            let mut response = Response::new(Full::new(Bytes::from(reviewed.answer)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => {
            shared.metrics.refused();
            tracing::warn!(peer = %peer, "Refused a request from {peer}: {err}");
            text(StatusCode::BAD_REQUEST, &format!("{err}\n"))
        }
    }
}

/// One line per review: what was done to which pod.
fn log(reviewed: &Reviewed) {
    let Reviewed { object, uid, .. } = reviewed;
    match &reviewed.outcome {
        Outcome::Injected(containers) => tracing::info!(
            uid = %uid,
            outcome = "injected",
            "{object}: injected into {}",
            containers.join(", ")
        ),
        Outcome::Denied(message) => {
            tracing::info!(uid = %uid, outcome = "denied", "{object}: denied: {message}")
        }
        Outcome::Unchanged(why) if [review::NOT_ASKED, review::NOT_A_POD].contains(why) => {
            tracing::debug!(uid = %uid, outcome = "unchanged", "{object}: passed through ({why})")
        }
        Outcome::Unchanged(why) => {
            tracing::info!(uid = %uid, outcome = "unchanged", "{object}: passed through ({why})")
        }
        Outcome::Fault(why) => tracing::warn!(
            uid = %uid,
            outcome = "fault",
            "{object}: allowed unchanged: {why}"
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The answer, and the connection closed after it: the rest of the body
/// is not read.
fn closing(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
