//! `kubexit inject`: from a plain manifest to a coordinated one.
//!
//! Coordinating a pod by hand means a graveyard volume, a volume for the
//! binary, an init container that installs kubexit, and on each container
//! a wrapped command and the right `KUBEXIT_*` variables: easy to get
//! wrong, and hard to see wrong. Here a pod says what it wants in
//! `kubexit.io/` annotations (`kubexit.io/sidecars: proxy` is often all),
//! and the rest is derived, the way `linkerd inject` and
//! `istioctl kube-inject` work.
//!
//! The layers, each that can fail with its own error type (but
//! `kubelet_probe`, whose reason the plan's error carries):
//!
//! - `vocabulary`: the annotations, their scopes, and their values checked
//!   with kubexit's own parsers;
//! - `kubelet_probe`: a container's readinessProbe in kubexit's probe
//!   syntax;
//! - `mesh`: what Istio's and Linkerd's injectors added to the pod, by
//!   their own records, and their proxies' readiness and quit endpoints;
//! - `additions`: the names and paths of what an injection adds;
//! - `images`: the containers without `command`, whose images' ENTRYPOINT
//!   and CMD the caller reads from their registries before the
//!   transformation ([`wanted`]), and how those become the command (a
//!   mesh's containers are never among them: they need no command);
//! - `plan`: who does what (sidecars, main containers, readiness, a mesh's
//!   proxy), every name checked against the pod, in phases;
//! - `pod`: the transformation itself, a pure function from a pod (or pod
//!   template) with its annotations to the coordinated pod or an error
//!   naming the container and the fix: [`inject`], [`uninject`],
//!   [`is_injected`]. The admission webhook calls the same functions on
//!   the Pod of an AdmissionReview;
//! - `record`: the `kubexit.io/injected` annotation that makes an
//!   injection reversible and re-injection idempotent;
//! - `manifest`: YAML and JSON streams, `List` objects, where each kind
//!   keeps its pod template;
//!
//! The command line around it (`kubexit inject`, `kubexit uninject`) is
//! the cli module's; this module neither reads files nor writes streams.
//! It is in the default build (cargo feature `inject`), left out of the
//! slim one.

mod additions;
pub mod images;
pub mod kubelet_probe;
#[cfg(feature = "registry")]
pub mod lookup;
pub mod manifest;
pub mod mesh;
pub mod plan;
pub mod pod;
pub mod record;
pub mod vocabulary;

pub use pod::{
    InjectError, Injection, Options, inject, is_disabled, is_injected, uninject, wanted,
};
