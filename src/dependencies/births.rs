//! Birth dependencies: waiting until others are ready.
//!
//! [`Births`] is the wait the supervisor runs, in one of two modes. In
//! graveyard mode (the default) readiness is what each dependency's kubexit
//! declared in its tombstone (`Ready`), as the dependency view reads it. In
//! Kubernetes API mode (`KUBEXIT_POD_NAME` set, the kubernetes module) a
//! dependency is a container of this pod and readiness is the kubelet's.
//! Either way the supervisor asks the same two questions, "where does the
//! wait stand?" and "what is still missing?", and deaths and stop signals
//! keep their meaning.
//!
//! It explains itself: the report names every dependency still awaited and
//! its state, and when one has no tombstone at all, the names the graveyard
//! does hold, so that a typo shows.

use crate::config::Config;
#[cfg(feature = "kubernetes")]
use crate::dependencies::kubernetes::PodWait;
use crate::dependencies::{Dependencies, Verdict};
use crate::graveyard::name::Name;

/// The wait for the birth dependencies, in the mode the configuration
/// chose.
pub enum Births {
    /// Judged by the dependency view, from the graveyard.
    Graveyard,
    #[cfg(feature = "kubernetes")]
    Pod(PodWait),
}

impl Births {
    /// Begins the wait. An error means it cannot begin at all (API mode
    /// outside a cluster, say): kubexit ends with status 1.
    pub fn start(config: &Config) -> Result<Births, String> {
        match &config.pod {
            #[cfg(feature = "kubernetes")]
            Some(pod) => Ok(Births::Pod(PodWait::start(pod, &config.birth_deps)?)),
            // Configuration refuses API mode in a build without it.
            #[cfg(not(feature = "kubernetes"))]
            Some(_) => Err("Kubernetes API mode is not in this build".into()),
            None => Ok(Births::Graveyard),
        }
    }

    /// The birth dependencies the dependency view must watch in the
    /// graveyard: all of them, unless the API judges them.
    pub fn in_graveyard(config: &Config) -> &[Name] {
        if config.pod.is_some() {
            &[]
        } else {
            &config.birth_deps
        }
    }

    /// Returns when the API has news of the pod; never in graveyard mode,
    /// whose news arrives as graveyard changes.
    pub async fn news(&mut self) {
        match self {
            #[cfg(feature = "kubernetes")]
            Births::Pod(wait) => wait.changed().await,
            Births::Graveyard => std::future::pending().await,
        }
    }

    pub fn verdict(&self, view: &Dependencies) -> Verdict {
        match self {
            Births::Graveyard => view.births(),
            #[cfg(feature = "kubernetes")]
            Births::Pod(wait) => wait.verdict(),
        }
    }

    pub fn report(&self, view: &Dependencies) -> String {
        match self {
            Births::Graveyard => view.births_report(),
            #[cfg(feature = "kubernetes")]
            Births::Pod(wait) => wait.report(),
        }
    }
}
