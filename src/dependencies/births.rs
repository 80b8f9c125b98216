//! Birth dependencies: waiting until others are ready.
//!
//! [`Births`] is the wait the supervisor runs before it starts the child.
//! It combines up to three kinds of dependency, all required:
//!
//! * **In the graveyard** (`KUBEXIT_BIRTH_DEPS`, the default mode):
//!   readiness is what each dependency's kubexit declared in its tombstone
//!   (`Ready`), as the dependency view reads it.
//! * **Containers of this pod** (`KUBEXIT_BIRTH_DEPS` with
//!   `KUBEXIT_POD_NAME`, the kubernetes module): readiness is the kubelet's.
//! * **Addresses** (`KUBEXIT_BIRTH_PROBES`): sidecars nobody wraps, such as
//!   a mesh's proxy, are ready when their probe succeeds (Istio's
//!   `http://127.0.0.1:15021/healthz/ready`, Linkerd's
//!   `http://127.0.0.1:4191/ready`, `tcp://127.0.0.1:5432`), tried every
//!   probe period with the probe timeout, as kubexit's own readiness probe.
//!
//! Whatever the kinds, the supervisor asks the same two questions, "where
//! does the wait stand?" and "what is still missing?", and deaths and stop
//! signals keep their meaning. A dependency that died ends the wait at once
//! (a probe has no death: it is tried until the birth timeout). The report
//! names every dependency still awaited and its state; when one has no
//! tombstone at all, the names the graveyard does hold, so that a typo
//! shows.

use crate::config::Config;
use crate::dependencies::Dependencies;
#[cfg(feature = "kubernetes")]
use crate::dependencies::kubernetes::PodWait;
use crate::dependencies::verdict::Verdict;
use crate::graveyard::name::Name;
use crate::process::reaper::Reaper;
use crate::readiness::{Event, Prober};

/// The wait for the birth dependencies, of every kind the configuration
/// names.
pub struct Births {
    /// Whether the dependency view holds birth dependencies.
    in_graveyard: bool,
    #[cfg(feature = "kubernetes")]
    pod: Option<PodWait>,
    probes: Vec<Prober>,
}

/// What happened to the wait, for the loop to act on.
pub enum News {
    /// Something changed: ask for the verdict again.
    Changed,
    /// A probe's attempt is due: call [`Births::start_attempt`].
    Due(usize),
}

impl Births {
    /// Whether the configuration asks for any wait at all.
    pub fn wanted(config: &Config) -> bool {
        !config.birth_deps.is_empty() || !config.birth_probes.is_empty()
    }

    /// Begins the wait. An error means it cannot begin at all (API mode
    /// outside a cluster, say): kubexit ends with status 1.
    pub fn start(config: &Config) -> Result<Births, String> {
        let api_mode = config.pod.is_some() && !config.birth_deps.is_empty();
        #[cfg(feature = "kubernetes")]
        let pod = match &config.pod {
            Some(pod) if api_mode => Some(PodWait::start(pod, &config.birth_deps)?),
            _ => None,
        };
        // Configuration refuses API mode in a build without it.
        #[cfg(not(feature = "kubernetes"))]
        if api_mode {
            return Err("Kubernetes API mode is not in this build".into());
        }
        Ok(Births {
            in_graveyard: !api_mode && !config.birth_deps.is_empty(),
            #[cfg(feature = "kubernetes")]
            pod,
            probes: config
                .birth_probes
                .iter()
                .map(|probe| Prober::new(probe, config.ready_period, config.ready_timeout))
                .collect(),
        })
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

    /// Waits for news of the pod or of a probe; never, when neither is
    /// waited for (graveyard news arrive through the dependency view).
    pub async fn news(&mut self) -> News {
        #[cfg(feature = "kubernetes")]
        let pod = async {
            match &mut self.pod {
                Some(pod) => pod.changed().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(feature = "kubernetes"))]
        let pod = std::future::pending::<()>();
        let probes = next_of(&mut self.probes);
        tokio::select! {
            () = pod => News::Changed,
            (i, event) = probes => match event {
                Event::Due => News::Due(i),
                Event::Ready => News::Changed,
            },
        }
    }

    /// Starts an attempt of the probe that is due.
    pub fn start_attempt(&mut self, i: usize, reaper: &mut Reaper) {
        if let Some(prober) = self.probes.get_mut(i) {
            prober.start_attempt(reaper);
        }
    }

    pub fn verdict(&self, view: &Dependencies) -> Verdict {
        let mut all_ready = self.probes.iter().all(Prober::is_ready);
        let mut take = |verdict: Verdict| match verdict {
            Verdict::AllReady => None,
            Verdict::Waiting => {
                all_ready = false;
                None
            }
            died => Some(died),
        };
        if self.in_graveyard
            && let Some(died) = take(view.births())
        {
            return died;
        }
        #[cfg(feature = "kubernetes")]
        if let Some(pod) = &self.pod
            && let Some(died) = take(pod.verdict())
        {
            return died;
        }
        if all_ready {
            Verdict::AllReady
        } else {
            Verdict::Waiting
        }
    }

    /// What is still awaited, and why, kind after kind.
    pub fn report(&self, view: &Dependencies) -> String {
        let mut parts = Vec::new();
        if self.in_graveyard {
            parts.push(view.births_report());
        }
        #[cfg(feature = "kubernetes")]
        if let Some(pod) = &self.pod {
            parts.push(pod.report());
        }
        for prober in self.probes.iter().filter(|p| !p.is_ready()) {
            let state = prober.last_failure().unwrap_or("not tried yet");
            parts.push(format!("{} ({state})", prober.probe()));
        }
        parts.retain(|p| !p.is_empty());
        parts.join(", ")
    }
}

/// The next event of any of `probers`, and whose.
async fn next_of(probers: &mut [Prober]) -> (usize, Event) {
    if probers.is_empty() {
        return std::future::pending().await;
    }
    let mut events: Vec<_> = probers
        .iter_mut()
        .map(|prober| Box::pin(prober.next_event()))
        .collect();
    std::future::poll_fn(|cx| {
        for (i, event) in events.iter_mut().enumerate() {
            if let std::task::Poll::Ready(event) = event.as_mut().poll(cx) {
                return std::task::Poll::Ready((i, event));
            }
        }
        std::task::Poll::Pending
    })
    .await
}
