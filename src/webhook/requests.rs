//! One request: its route, the bound on its body, the review, the log line
//! and the counters.
//!
//! Routes: `POST /inject` takes an AdmissionReview and answers one (see
//! `review`); `GET /healthz` answers 200 while the server runs (liveness);
//! `GET /readyz` answers 200 while it accepts reviews and 503 once it is
//! stopping (readiness); `GET /metrics` gives the counters of `metrics`.
//! Anything else is 404, or 405 for a known path with the wrong method.
//!
//! Images: before a review is decided, the containers of its pod whose
//! command must come from their image (`review::wanted`) have their
//! images read, side by side, within the resolver's budget
//! (`--registry-timeout`), and the answers go to the review with the
//! options (`inject::lookup`). With `--registry-pull-secrets on`, they are
//! read with the pod's pull secrets and its ServiceAccount's
//! (`pull_secrets`), then `--registry-auth-file`'s credentials. The review
//! itself stays free of I/O.
//!
//! Bodies: a review must say its `Content-Length` (the API server always
//! does), so that one over `--max-request-bytes` is refused with 413 before
//! a byte of it is read, and the connection closed. Bodies being read are
//! also bounded all together ([`Limits::body_budget`]): a request waits for
//! its share of that budget before reading, so many large requests at once
//! wait in turn rather than grow the memory, each within its own deadline.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::metrics::Metrics;
use super::pull_secrets::PullSecrets;
use super::review::{self, Outcome, Reviewed};
use super::settings::Limits;
use crate::inject::Options;
use crate::inject::lookup::Lookups;
use crate::registry::{Keyring, Resolver};

/// The path of the reviews.
pub const INJECT_PATH: &str = "/inject";

/// The budget of request bodies is counted in KiB.
const BUDGET_UNIT: usize = 1024;

/// What every connection shares.
pub struct Shared {
    pub options: Options,
    pub limits: Limits,
    pub ready: AtomicBool,
    bodies: Semaphore,
    metrics: Arc<Metrics>,
    /// Reads the images of containers without `command`; one for the
    /// server, so its caches serve every review (`None`:
    /// `--registry-lookup off`).
    resolver: Option<Resolver>,
    /// With `--registry-pull-secrets on`: the reader of pods' pull
    /// secrets, and the credentials of `--registry-auth-file` searched
    /// after them.
    pull_secrets: Option<(PullSecrets, Keyring)>,
}

impl Shared {
    pub fn new(
        options: Options,
        limits: Limits,
        metrics: Arc<Metrics>,
        resolver: Option<Resolver>,
        pull_secrets: Option<(PullSecrets, Keyring)>,
    ) -> Shared {
        Shared {
            options,
            limits,
            ready: AtomicBool::new(true),
            bodies: Semaphore::new(limits.body_budget().div_ceil(BUDGET_UNIT)),
            metrics,
            resolver,
            pull_secrets,
        }
    }

    /// The options for the review in `body`: with what the images of its
    /// pod's containers without `command` run, read within the
    /// resolver's budget, when there are such containers.
    async fn options_for(&self, body: &[u8]) -> Cow<'_, Options> {
        let Some(resolver) = &self.resolver else {
            return Cow::Borrowed(&self.options);
        };
        let (wanted, pod) = review::wanted(body, &self.options);
        if wanted.is_empty() {
            return Cow::Borrowed(&self.options);
        }
        let keyring = match (&self.pull_secrets, pod) {
            (Some((secrets, mounted)), Some(pod)) => Some(secrets.keyring(&pod, mounted).await),
            _ => None,
        };
        let lookups = Lookups::read(resolver, &wanted, keyring.as_ref()).await;
        Cow::Owned(Options {
            images: lookups.images(&wanted),
            ..self.options.clone()
        })
    }
}

/// Answers one request.
pub async fn handle(
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
    let options = shared.options_for(&body).await;
    match review::review(&body, &options) {
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
