//! `kubexit webhook`: the mutating admission webhook that coordinates the
//! pods of a labelled namespace, with no manifest edited.
//!
//! Platform teams do not edit every team's manifests; they label a
//! namespace, as Istio and Linkerd have taught them. The API server then
//! sends every Pod created there to this server, as an `AdmissionReview`
//! (`admission.k8s.io/v1`), before storing it. A pod that asks for kubexit
//! in `kubexit.io/` annotations comes back with a JSON Patch that makes it
//! the pod `kubexit inject` would have written: the same function
//! ([`crate::inject::inject`]) with the same options, so the same
//! annotations give the same pod and the same errors, word for word.
//!
//! A cluster-wide service must stay up and answer fast: under the failure
//! policy deploy/webhook registers it with (`Fail`), a labelled namespace
//! creates no pod while no replica answers. And a fault of its own must
//! not decide whether a pod runs. What this module promises for that, and
//! where it is kept:
//!
//! - `review`: the decision for one review, a pure function from the bytes
//!   posted to the bytes answered. Pods without `kubexit.io/` annotations,
//!   pods already injected (unless another webhook, a mesh's injector,
//!   has added to them since) and anything but a Pod's creation are
//!   allowed unchanged; invalid annotations are denied with `inject`'s
//!   message;
//!   any fault of the webhook's own allows the pod unchanged and is
//!   logged. A body that is no review at all has no `uid` to answer: it
//!   gets 400, and the failure policy decides.
//! - `requests` reads, before the review, what the images of the pod's
//!   containers without `command` run, from their registries
//!   (`crate::registry`, one resolver for the server, so its caches serve
//!   every review), within `--registry-timeout`; a registry that cannot
//!   answer denies the pod with the image, the registry's answer and
//!   `kubexit.io/entrypoint.NAME`, as `kubexit inject` does.
//!   `--registry-lookup off` asks none. `pull_secrets` reads, with
//!   `--registry-pull-secrets on`, the credentials of the pod's
//!   `imagePullSecrets` and its ServiceAccount's from the Kubernetes API.
//! - `patch`: the JSON Patch from the pod sent to the pod injected, which
//!   for an injection says only what was added: `add` operations, none
//!   rewriting what the user wrote (tests/suite/webhook.rs,
//!   `the_patch_adds_and_never_rewrites_what_the_user_wrote`).
//! - `tls`: the certificate and key, read again whenever their files change
//!   (cert-manager renews them), without a connection dropped.
//! - `connection`: one client connection, with deadlines on everything it
//!   may wait for (the TLS handshake, a whole request, an idle keep-alive),
//!   a bounded read buffer, and a graceful close on stop.
//! - `requests`: one request: `POST /inject`, `GET /healthz`, `GET /readyz`
//!   and `GET /metrics` (the counters of `metrics`, for Prometheus), request
//!   bodies bounded one by one and all together.
//! - `server`: the listening socket and the stop: on SIGTERM (or SIGINT)
//!   `/readyz` fails, no new connection is accepted once `--shutdown-delay`
//!   has passed, the reviews in flight are answered, and [`run`] returns.
//!   SIGHUP reads the certificate again.
//!
//! What the server is given ([`Settings`], [`Limits`]) and why it cannot
//! serve ([`WebhookError`]) are `settings`' and `error`'s, shared by the
//! parts above.
//!
//! The server's thread keeps the small blocks a review frees for the next
//! one (the crate's `memory` module), instead of giving them back to musl's
//! allocator, which maps and unmaps pages for them.
//!
//! Everything runs on one thread (a current-thread tokio runtime): a review
//! is a few hundred microseconds of work at most, far from what one core
//! can do, and one thread keeps the memory small and the log in order. The
//! log is kubexit's (`cli::log`), in text or JSON.
//!
//! The command line around it is `cli::webhook`; it is in the default
//! build (cargo feature `webhook`), left out of the slim one.

mod connection;
mod error;
mod metrics;
pub mod patch;
mod pull_secrets;
mod requests;
pub mod review;
mod server;
mod settings;
pub mod tls;

use crate::process::signals::Signals;

pub use error::WebhookError;
pub use settings::{Limits, Lookup, Settings};
pub use tls::TlsError;

/// Serves admission reviews until a stop signal, then stops gracefully.
/// Signals must have been blocked (`process::signals::block_all`) before
/// any thread was started.
pub fn run(settings: Settings) -> Result<(), WebhookError> {
    crate::memory::keep_on_this_thread();
    let certificates = tls::Certificates::load(&settings.tls_cert, &settings.tls_key)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(WebhookError::Runtime)?;
    let outcome = runtime.block_on(async {
        let signals = Signals::open().map_err(WebhookError::Signals)?;
        server::serve(&settings, certificates, &signals).await
    });
    // The certificate watch is the one task left; it has nothing to finish.
    runtime.shutdown_background();
    outcome
}
