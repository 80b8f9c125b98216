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
//! The layers, each with its own error type:
//!
//! - `vocabulary`: the annotations, their scopes, and their values checked
//!   with kubexit's own parsers;
//! - `kubelet_probe`: a container's readinessProbe in kubexit's probe
//!   syntax;
//! - `plan`: who does what (sidecars, main containers, readiness), every
//!   name checked against the pod;
//! - `pod`: the transformation itself, a pure function from a pod (or pod
//!   template) with its annotations to the coordinated pod or an error
//!   naming the container and the fix: [`inject`], [`uninject`],
//!   [`is_injected`]. The admission webhook calls the same functions on
//!   the Pod of an AdmissionReview;
//! - `record`: the `kubexit.io/injected` annotation that makes an
//!   injection reversible and re-injection idempotent;
//! - `manifest`: YAML and JSON streams, `List` objects, where each kind
//!   keeps its pod template;
//! - `cli`: arguments and standard streams.
//!
//! **How the subcommand is reached.** Upstream's command line is
//! `kubexit CMD ARGS...` with the configuration in the environment, and
//! it keeps its meaning: [`subcommand`] takes `kubexit inject` (or
//! `uninject`) only when `KUBEXIT_NAME` is not in the environment. Upstream
//! could never run without `KUBEXIT_NAME`, and `--name` must come before
//! the command, so no command line that upstream ran changes meaning; a
//! supervised child named `inject` still works with `KUBEXIT_NAME` set or
//! `kubexit --name x inject`. The transformation is in the default build
//! (cargo feature `inject`); the slim build says it is not there, exit 2.

#[cfg(feature = "inject")]
mod cli;
#[cfg(feature = "inject")]
pub mod kubelet_probe;
#[cfg(feature = "inject")]
pub mod manifest;
#[cfg(feature = "inject")]
pub mod plan;
#[cfg(feature = "inject")]
pub mod pod;
#[cfg(feature = "inject")]
pub mod record;
#[cfg(feature = "inject")]
pub mod vocabulary;

#[cfg(feature = "inject")]
pub use pod::{InjectError, Injection, Options, inject, is_disabled, is_injected, uninject};

use std::ffi::OsString;
use std::process::ExitCode;

/// The words that name the subcommand.
const NAMES: [&str; 2] = ["inject", "uninject"];

/// Whether this command line is the subcommand rather than a child named
/// `inject` (see the module docs).
pub fn is_subcommand(first: Option<&OsString>, kubexit_name: Option<&OsString>) -> bool {
    kubexit_name.is_none() && first.is_some_and(|word| NAMES.iter().any(|n| word == n))
}

/// Runs `kubexit inject` / `kubexit uninject` when the process's command
/// line is one, and returns its exit status; `None` otherwise.
pub fn subcommand() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if !is_subcommand(args.first(), std::env::var_os("KUBEXIT_NAME").as_ref()) {
        return None;
    }
    #[cfg(feature = "inject")]
    {
        Some(cli::main(args.into_iter()))
    }
    #[cfg(not(feature = "inject"))]
    {
        eprintln!(
            "Error: `kubexit {}` is not in this build of kubexit (built without the cargo feature \
             `inject`, as the slim build is); use the default build. To run a command named {0} \
             under kubexit instead, set KUBEXIT_NAME.",
            args[0].to_string_lossy()
        );
        Some(ExitCode::from(crate::EXIT_CONFIG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unconfigured_kubexit_takes_inject_as_the_subcommand() {
        let inject = OsString::from("inject");
        let name = OsString::from("app");
        assert!(is_subcommand(Some(&inject), None));
        assert!(is_subcommand(Some(&OsString::from("uninject")), None));
        assert!(!is_subcommand(Some(&inject), Some(&name)));
        assert!(!is_subcommand(Some(&OsString::from("--name")), None));
        assert!(!is_subcommand(Some(&OsString::from("injection")), None));
        assert!(!is_subcommand(None, None));
    }
}
