//! Birth dependencies: waiting until others are ready.
//!
//! [`Births`] is the wait the supervisor runs, in one of two modes. In
//! graveyard mode (the default, [`BirthWait`]) readiness is what each
//! dependency's kubexit declared in its tombstone. In Kubernetes API mode
//! (`KUBEXIT_POD_NAME` set, the kubernetes module) a dependency is a
//! container of this pod and readiness is the kubelet's. Either way the
//! supervisor asks the same two questions, "where does the wait stand?" and
//! "what is still missing?", and deaths and stop signals keep their
//! meaning.
//!
//! Each kubexit declares its own readiness in its tombstone (`Ready`), so a
//! kubexit with `KUBEXIT_BIRTH_DEPS` only has to watch tombstones: the child
//! starts when every named dependency's tombstone shows `Ready` and no
//! `Died`. This module keeps the latest sighting of each dependency and
//! gives the verdict; the supervisor feeds it graveyard events, a scan at
//! start and after lost events, and decides what to do with the verdict.
//!
//! It also explains itself: [`BirthWait::report`] names every dependency
//! still awaited and its state, and when one has no tombstone at all, the
//! names the graveyard does hold, so that a typo shows.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;

use crate::config::Config;
#[cfg(feature = "kubernetes")]
use crate::dependencies::kubernetes::PodWait;
use crate::dependencies::{Dependencies, Seen};
use crate::graveyard::name::Name;
use crate::graveyard::{Change, Graveyard};

/// Where the wait stands.
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

/// The wait for the birth dependencies, in the mode the configuration
/// chose.
pub enum Births {
    Graveyard(BirthWait),
    #[cfg(feature = "kubernetes")]
    Pod(PodWait),
}

impl Births {
    /// Begins the wait. An error means it cannot begin at all (API mode
    /// outside a cluster, say): kubexit ends with status 1.
    pub fn start(config: &Config, graveyard: &Graveyard) -> Result<Births, String> {
        match &config.pod {
            #[cfg(feature = "kubernetes")]
            Some(pod) => Ok(Births::Pod(PodWait::start(pod, &config.birth_deps)?)),
            // Configuration refuses API mode in a build without it.
            #[cfg(not(feature = "kubernetes"))]
            Some(_) => Err("Kubernetes API mode is not in this build".into()),
            None => {
                let mut wait = BirthWait::new(&config.birth_deps);
                wait.refresh_all(graveyard);
                Ok(Births::Graveyard(wait))
            }
        }
    }

    /// Takes in graveyard changes (only graveyard mode cares).
    pub fn graveyard_changed(&mut self, graveyard: &Graveyard, changes: &[Change]) {
        #[cfg_attr(not(feature = "kubernetes"), allow(irrefutable_let_patterns))]
        let Births::Graveyard(wait) = self else {
            return;
        };
        for change in changes {
            match change {
                Change::Entry(entry) => wait.refresh_entry(graveyard, entry),
                Change::Overflow | Change::Tick => wait.refresh_all(graveyard),
                Change::Gone => {}
            }
        }
    }

    /// Returns when the API has news of the pod; never in graveyard mode,
    /// whose news arrives as graveyard changes.
    pub async fn news(&mut self) {
        match self {
            #[cfg(feature = "kubernetes")]
            Births::Pod(wait) => wait.changed().await,
            Births::Graveyard(_) => std::future::pending().await,
        }
    }

    pub fn verdict(&self) -> Verdict {
        match self {
            Births::Graveyard(wait) => wait.verdict(),
            #[cfg(feature = "kubernetes")]
            Births::Pod(wait) => wait.verdict(),
        }
    }

    pub fn report(&self, graveyard: &Graveyard) -> String {
        match self {
            Births::Graveyard(wait) => wait.report(graveyard),
            #[cfg(feature = "kubernetes")]
            Births::Pod(wait) => wait.report(),
        }
    }
}

/// The sightings of the birth dependencies in the graveyard.
pub struct BirthWait {
    deps: Dependencies,
    seen: BTreeMap<Name, Seen>,
}

impl BirthWait {
    pub fn new(names: &[Name]) -> BirthWait {
        BirthWait {
            deps: Dependencies::new(names),
            seen: names.iter().map(|n| (n.clone(), Seen::Nothing)).collect(),
        }
    }

    /// Reads every dependency's tombstone again.
    pub fn refresh_all(&mut self, graveyard: &Graveyard) {
        for name in self.deps.names().to_vec() {
            self.refresh(graveyard, &name);
        }
    }

    /// Reads the dependency a changed graveyard entry belongs to, if any.
    pub fn refresh_entry(&mut self, graveyard: &Graveyard, entry: &OsStr) {
        if let Some(name) = self.deps.matching(entry).cloned() {
            self.refresh(graveyard, &name);
        }
    }

    fn refresh(&mut self, graveyard: &Graveyard, name: &Name) {
        let seen = self.deps.look(graveyard, name);
        self.seen.insert(name.clone(), seen);
    }

    pub fn verdict(&self) -> Verdict {
        let mut all_ready = true;
        for (name, seen) in &self.seen {
            match seen {
                Seen::Stone(stone) if stone.is_dead() => return Verdict::Died(name.clone()),
                Seen::Stone(stone) if stone.ready.is_some() && !stone.is_dead() => {}
                _ => all_ready = false,
            }
        }
        if all_ready {
            Verdict::AllReady
        } else {
            Verdict::Waiting
        }
    }

    /// The dependencies not ready yet and why, such as
    /// `cache (no tombstone yet; the graveyard holds: api, dbb), db (born, not ready)`.
    pub fn report(&self, graveyard: &Graveyard) -> String {
        let mut held = None;
        let mut parts = Vec::new();
        for (name, seen) in &self.seen {
            let state = match seen {
                Seen::Nothing => {
                    let held = held.get_or_insert_with(|| holdings(graveyard));
                    format!("no tombstone yet; the graveyard holds: {held}")
                }
                Seen::Unreadable => "unreadable tombstone".into(),
                Seen::Stone(stone) if stone.is_dead() => "dead".into(),
                Seen::Stone(stone) if stone.ready.is_some() => continue,
                Seen::Stone(stone) if stone.born.is_some() => "born, not ready".into(),
                Seen::Stone(_) => "tombstone without Born".into(),
            };
            parts.push(format!("{name} ({state})"));
        }
        parts.join(", ")
    }
}

/// The tombstone names in the graveyard, at most 20 of them, for reports.
fn holdings(graveyard: &Graveyard) -> String {
    let mut names: Vec<String> = fs::read_dir(graveyard.dir())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return "nothing".into();
    }
    names.sort();
    let more = names.len().saturating_sub(20);
    names.truncate(20);
    let mut text = names.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graveyard::tombstone::Tombstone;

    fn yard() -> (tempfile::TempDir, Graveyard) {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        (dir, graveyard)
    }

    fn name(n: &str) -> Name {
        Name::new(n).unwrap()
    }

    fn stone(ready: bool, dead: bool) -> Tombstone {
        let now = jiff::Timestamp::now();
        Tombstone {
            born: Some(now),
            ready: ready.then_some(now),
            died: dead.then_some(now),
            ..Tombstone::default()
        }
    }

    #[test]
    fn all_ready_only_when_every_dependency_is_ready_and_alive() {
        let (_dir, graveyard) = yard();
        let mut wait = BirthWait::new(&[name("a"), name("b")]);
        wait.refresh_all(&graveyard);
        assert_eq!(wait.verdict(), Verdict::Waiting);
        graveyard.write(&name("a"), &stone(true, false)).unwrap();
        graveyard.write(&name("b"), &stone(false, false)).unwrap();
        wait.refresh_all(&graveyard);
        assert_eq!(wait.verdict(), Verdict::Waiting);
        assert_eq!(wait.report(&graveyard), "b (born, not ready)");
        graveyard.write(&name("b"), &stone(true, false)).unwrap();
        wait.refresh_entry(&graveyard, OsStr::new("b"));
        assert_eq!(wait.verdict(), Verdict::AllReady);
    }

    #[test]
    fn a_dead_dependency_ends_the_wait() {
        let (_dir, graveyard) = yard();
        let mut wait = BirthWait::new(&[name("a")]);
        graveyard.write(&name("a"), &stone(false, true)).unwrap();
        wait.refresh_all(&graveyard);
        assert_eq!(wait.verdict(), Verdict::Died(name("a")));
    }

    #[test]
    fn a_missing_tombstone_is_reported_with_what_the_graveyard_holds() {
        let (_dir, graveyard) = yard();
        graveyard.write(&name("dbb"), &stone(true, false)).unwrap();
        let mut wait = BirthWait::new(&[name("db")]);
        wait.refresh_all(&graveyard);
        assert_eq!(
            wait.report(&graveyard),
            "db (no tombstone yet; the graveyard holds: dbb)"
        );
    }
}
