//! The answer every wait for birth dependencies gives, whatever kind
//! (the graveyard's view, the Kubernetes API's pod, the birth probes): one
//! type, so that `births` can combine them and the supervisor act on one.

use crate::graveyard::name::Name;

/// Where a wait for birth dependencies stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every dependency is ready: start the child.
    AllReady,
    /// Some are not ready yet.
    Waiting,
    /// This dependency is dead: it will not be ready unless it is started
    /// again, so waiting on would only run out the timeout.
    Died(Name),
}
