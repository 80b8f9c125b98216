//! Restarts in place: whether a death is for good.
//!
//! A kubelet restarts the containers of a pod in place, as the pod's
//! `restartPolicy` says: under `Always` every container that ends, under
//! `OnFailure` every one that ends with a status other than 0, under
//! `Never` none. A dependency that the kubelet will start again has not
//! died for good: its next life writes a new `Born` over the tombstone. So
//! such a death stops no dependent (a sidecar stays for the main
//! container's next attempt, and a Deployment's pod stays whole while one
//! container is restarted), and a birth dependency that died waits for its
//! next life instead of failing its dependents.
//!
//! The status judged is the one the dependency's container ended with:
//! its kubexit's exit status (`ExitStatus` in the tombstone when it
//! differs from the child's, as when kubexit stopped the child on purpose),
//! else the child's (`ExitCode`: Go kubexit exits with it). A holder found
//! gone without a recorded death (SIGKILLed, out of memory) ended with no
//! status of its own; the kubelet saw 137 or the like, and restarts it
//! under both `Always` and `OnFailure`.
//!
//! The Kubernetes API mode reads the policy from the pod itself; in the
//! graveyard it is a setting (`KUBEXIT_RESTART_POLICY`), which `kubexit
//! inject` and the webhook copy from the pod's spec. This is the one place
//! that decides what each policy restarts; the dependency view asks it of
//! every death it sees.

use std::fmt;

/// A pod's `restartPolicy`, as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Nothing is restarted: every death is for good (upstream's meaning,
    /// and a Job's usual policy).
    #[default]
    Never,
    /// What fails is restarted; what ends with 0 is done.
    OnFailure,
    /// Whatever ends is restarted (a Deployment's pods).
    Always,
}

impl RestartPolicy {
    /// Reads the policy as a pod spec writes it (`OnFailure`), in any case.
    pub fn parse(raw: &str) -> Result<RestartPolicy, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "never" => Ok(RestartPolicy::Never),
            "onfailure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            _ => Err(format!(
                "{raw:?} is not a restartPolicy; write the pod's: Never, OnFailure or Always"
            )),
        }
    }

    /// Whether a container that ended with `status` (`None`: ended without
    /// one, its holder lost) is started again by the kubelet.
    pub fn restarts(self, status: Option<i32>) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => status != Some(0),
            RestartPolicy::Always => true,
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Never => "Never",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Always => "Always",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_restarts_what_the_kubelet_restarts() {
        use RestartPolicy::*;
        for status in [Some(0), Some(1), Some(143), None] {
            assert!(!Never.restarts(status));
            assert!(Always.restarts(status));
        }
        assert!(!OnFailure.restarts(Some(0)));
        assert!(OnFailure.restarts(Some(1)));
        assert!(OnFailure.restarts(Some(-1)));
        assert!(OnFailure.restarts(None));
    }

    #[test]
    fn policies_are_read_as_pods_spell_them_in_any_case() {
        assert_eq!(
            RestartPolicy::parse("OnFailure"),
            Ok(RestartPolicy::OnFailure)
        );
        assert_eq!(RestartPolicy::parse(" always "), Ok(RestartPolicy::Always));
        assert_eq!(RestartPolicy::parse("NEVER"), Ok(RestartPolicy::Never));
        let err = RestartPolicy::parse("sometimes").unwrap_err();
        assert!(err.contains("Never, OnFailure or Always"), "{err}");
        for policy in [
            RestartPolicy::Never,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ] {
            assert_eq!(RestartPolicy::parse(&policy.to_string()), Ok(policy));
        }
    }
}
