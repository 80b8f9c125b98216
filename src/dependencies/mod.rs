//! Dependencies: one view of every process kubexit depends on.
//!
//! A name may be a death dependency, a birth dependency, or both; whatever
//! its roles, it is watched once and read once per change (a death is read
//! once more when it is armed again, below, and a tombstone whose holder
//! may be lost once more under the holder's lock, by [`liveness::lost`]),
//! and the view answers every question asked of it: is it dead (its
//! tombstone records `Died`, or its holder was judged lost), is it ready,
//! which quit endpoints does its kubexit call.
//! The supervisor asks the view; nothing else in a supervising kubexit
//! reads a dependency's tombstone (`kubexit status` reads every tombstone,
//! to show them, and decides nothing).
//!
//! The view keeps its promises this way:
//!
//! * **Nothing is missed.** The view reads every name once at start, to
//!   decide whether the child may start at all; the [`Watch`] comes after
//!   (a kubexit with death dependencies alone starts its child first: in a
//!   crowded graveyard, watching the directory costs the kernel a walk of
//!   every entry). Listening arms the watch on each name *before* reading
//!   the name's tombstone again, so a death before that read is in it, and
//!   one after is an event. Every event
//!   re-arms and re-reads the names it concerns (see the watch module),
//!   with one exception for speed: a tombstone that an event shows dead is
//!   taken in at once, for the supervisor to act on, and armed and read
//!   again only when the view is next asked to wait, or never, once the
//!   view is quiet ([`Dependencies::quiet`], when the child is stopped for a
//!   death).
//! * **Liveness is judged at every look.** After reading a tombstone that
//!   shows a birth and no death, the view asks the liveness module whether
//!   the holder behind it is gone ([`liveness::lost`]): a non-blocking lock
//!   attempt, at the first scan (a dependency SIGKILLed before this kubexit
//!   started is found before the child starts) and whenever the watch says
//!   the holder's lock was closed. The kernel says the lock was closed a
//!   moment before it releases it, so a lock found still held when the
//!   watch was just armed on it, or just reported its close, or lost
//!   events, is tried again 1, 2, 4 ms... later, for two seconds in all
//!   (while such a recheck is pending, [`Dependencies::fd`] is `None`: the
//!   news may come from the timer). A lost dependency is dead at once, even
//!   when the record of its loss cannot be written.
//! * **The untidiness of a shared directory stays here.** A tombstone that
//!   is missing says nothing yet; one that cannot be read (garbage, a link,
//!   a FIFO, a huge file) is reported once per distinct problem, not on
//!   every event, and never counts as a death: only a `Died` time does, or
//!   a lost holder of a readable one (above).
//!
//! Birth dependencies judged by the Kubernetes API (`KUBEXIT_POD_NAME`) are
//! not in the graveyard; [`births`] combines both kinds of wait, and
//! [`kubernetes`] follows the pod.

pub mod births;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod verdict;

use std::os::fd::BorrowedFd;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::graveyard::Graveyard;
use crate::graveyard::liveness::{self, Judged};
use crate::graveyard::name::Name;
use crate::graveyard::restart::RestartPolicy;
use crate::graveyard::tombstone::Tombstone;
use crate::graveyard::watch::{Change, Watch};

pub use verdict::Verdict;

/// What a dependency's tombstone says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No tombstone yet.
    Nothing,
    /// A tombstone that cannot be read (already logged).
    Unreadable,
    /// A readable tombstone.
    Stone(Tombstone),
}

/// What a dependency is to this kubexit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its death stops the child (`KUBEXIT_DEATH_DEPS`).
    Death,
    /// The child waits for it to be ready (`KUBEXIT_BIRTH_DEPS`).
    Birth,
    /// A stop signal from outside waits for its death (`KUBEXIT_STOP_AFTER`).
    StopAfter,
    /// It may share a sidecar this kubexit asks to quit: named in
    /// `KUBEXIT_QUIT_AFTER`, or in the graveyard when the child has ended.
    Quit,
}

/// Every role a dependency has; a name may have several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Roles {
    death: bool,
    birth: bool,
    stop_after: bool,
    quit: bool,
}

impl Roles {
    fn has(self, role: Role) -> bool {
        match role {
            Role::Death => self.death,
            Role::Birth => self.birth,
            Role::StopAfter => self.stop_after,
            Role::Quit => self.quit,
        }
    }

    fn add(&mut self, role: Role) {
        match role {
            Role::Death => self.death = true,
            Role::Birth => self.birth = true,
            Role::StopAfter => self.stop_after = true,
            Role::Quit => self.quit = true,
        }
    }
}

struct Dependency {
    name: Name,
    roles: Roles,
    seen: Seen,
    /// Its holder was judged gone without a recorded death: this is the
    /// record of the loss, which counts until a new birth replaces it.
    lost: Option<Tombstone>,
    /// The last problem reported about its tombstone.
    complaint: Option<String>,
    /// Seen dead after an event, and not armed since (see `look_after`).
    unarmed: bool,
    /// Its lock was found held just after it may have been released: when
    /// to try it again.
    recheck: Option<Recheck>,
}

/// The first wait before a held lock is tried again; each next one is twice
/// as long, up to [`RECHECK_LAST`].
const RECHECK_FIRST: Duration = Duration::from_millis(1);
/// The last wait: the tries then span about two seconds.
const RECHECK_LAST: Duration = Duration::from_millis(1024);

/// When a held lock is tried again, and how long the wait before was.
#[derive(Debug, Clone, Copy)]
struct Recheck {
    at: Instant,
    wait: Duration,
}

impl Recheck {
    fn first() -> Recheck {
        Recheck {
            at: Instant::now() + RECHECK_FIRST,
            wait: RECHECK_FIRST,
        }
    }

    /// The try after this one, if any is left.
    fn next(self) -> Option<Recheck> {
        let wait = self.wait * 2;
        (wait <= RECHECK_LAST).then(|| Recheck {
            at: Instant::now() + wait,
            wait,
        })
    }
}

impl Dependency {
    fn is_dead(&self) -> bool {
        self.lost.is_some() || matches!(&self.seen, Seen::Stone(stone) if stone.is_dead())
    }

    /// Dead, and not to be started again in place under `restarts` (see
    /// [`RestartPolicy`]): a holder lost ended with no status of its own.
    fn is_dead_for_good(&self, restarts: RestartPolicy) -> bool {
        let status = match (&self.lost, &self.seen) {
            (Some(_), _) => None,
            (None, Seen::Stone(stone)) => stone.status(),
            (None, _) => None,
        };
        self.is_dead() && !restarts.restarts(status)
    }

    fn is_ready(&self) -> bool {
        !self.is_dead() && matches!(&self.seen, Seen::Stone(stone) if stone.ready.is_some())
    }
}

/// What the view learnt from a batch of graveyard changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learnt {
    /// The dependencies it concerns were read again.
    Changes,
    /// The graveyard was removed and has been created again: whatever
    /// kubexit had written there must be written again.
    Recreated,
}

/// The view of every dependency in the graveyard.
pub struct Dependencies {
    graveyard: Graveyard,
    watch: Watch,
    deps: Vec<Dependency>,
    /// Which deaths the kubelet answers with a restart in place.
    restarts: RestartPolicy,
}

impl Dependencies {
    /// Reads the dependencies named in `roles` (each name with the role it
    /// plays) in `graveyard`, and judges them: read before this returns,
    /// but not watched until [`Dependencies::listen`]. `restarts` says
    /// which deaths are not for good.
    pub fn open(
        graveyard: &Graveyard,
        roles: &[(&[Name], Role)],
        restarts: RestartPolicy,
    ) -> Dependencies {
        let mut deps: Vec<Dependency> = Vec::new();
        for (names, role) in roles {
            for name in *names {
                match deps.iter_mut().find(|d| d.name == *name) {
                    Some(dep) => dep.roles.add(*role),
                    None => {
                        let mut roles = Roles::default();
                        roles.add(*role);
                        deps.push(Dependency {
                            name: name.clone(),
                            roles,
                            seen: Seen::Nothing,
                            lost: None,
                            complaint: None,
                            unarmed: false,
                            recheck: None,
                        });
                    }
                }
            }
        }
        let mut view = Dependencies {
            watch: Watch::open(graveyard, &[]),
            graveyard: graveyard.clone(),
            deps,
            restarts,
        };
        view.look_all(false);
        view
    }

    /// Arms the watch on every dependency and reads each one again: from
    /// here on no change is missed, and one since [`Dependencies::open`]
    /// is in what this reads. Call it before [`Dependencies::changed`].
    pub fn listen(&mut self) {
        let names: Vec<Name> = self.deps.iter().map(|d| d.name.clone()).collect();
        if names.is_empty() {
            return;
        }
        tracing::info!("Watching graveyard...");
        self.watch = Watch::open(&self.graveyard, &names);
        self.look_all(false);
    }

    /// Waits for the next graveyard change that concerns a dependency and
    /// takes it in. Pends forever without dependencies, or once quiet.
    pub async fn changed(&mut self) -> Learnt {
        if self.arm_the_unarmed() {
            return Learnt::Changes;
        }
        loop {
            let Some(at) = self
                .deps
                .iter()
                .filter_map(|d| d.recheck)
                .map(|r| r.at)
                .min()
            else {
                let changes = self.watch.next().await;
                return self.take_in(changes);
            };
            tokio::select! {
                changes = self.watch.next() => return self.take_in(changes),
                // Back to the caller when a holder was lost, or when no try
                // is left: a caller at rest may wait on `fd` again.
                () = sleep_until(at) => {
                    if self.recheck_due() || self.deps.iter().all(|d| d.recheck.is_none()) {
                        return Learnt::Changes;
                    }
                }
            }
        }
    }

    /// Tries again the held locks that are due; whether one was lost.
    fn recheck_due(&mut self) -> bool {
        let now = Instant::now();
        let mut lost = false;
        for i in 0..self.deps.len() {
            if let Some(recheck) = self.deps[i].recheck
                && recheck.at <= now
            {
                self.deps[i].recheck = recheck.next();
                self.judge(i, false);
                lost |= self.deps[i].lost.is_some();
            }
        }
        lost
    }

    /// The descriptor that becomes readable when the graveyard has news
    /// for [`Dependencies::changed_now`]; `None` when news may come another
    /// way (a polling tick, a lock to try again), or is owed already.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        if self.deps.iter().any(|d| d.unarmed || d.recheck.is_some()) {
            return None;
        }
        self.watch.fd()
    }

    /// What [`Dependencies::changed`] would learn from what is queued now,
    /// without waiting: `None` when nothing queued concerns a dependency.
    /// For a caller that waited on [`Dependencies::fd`], which is there
    /// only when no look is owed.
    pub fn changed_now(&mut self) -> Option<Learnt> {
        let changes = self.watch.now()?;
        Some(self.take_in(changes))
    }

    /// Deaths seen in the last round were acted on before being armed: arms
    /// them now and looks again, before anything else is awaited. Whether
    /// that changed what is seen.
    fn arm_the_unarmed(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.deps.len() {
            if std::mem::take(&mut self.deps[i].unarmed) {
                let before = self.deps[i].seen.clone();
                self.look(i, false);
                moved |= self.deps[i].seen != before;
            }
        }
        moved
    }

    fn take_in(&mut self, changes: Vec<Change>) -> Learnt {
        let mut learnt = Learnt::Changes;
        for change in changes {
            match change {
                Change::Stone(name) => {
                    if let Some(i) = self.index(&name) {
                        self.look_after(i);
                    }
                }
                Change::Lock(name) => {
                    if let Some(i) = self.index(&name) {
                        self.judge(i, true);
                    }
                }
                // Events were lost, a lock's close among them maybe; a
                // polling tick comes again soon anyway.
                Change::Everything => self.look_all(self.watch.fd().is_some()),
                Change::Gone => {
                    let dir = self.graveyard.dir().display();
                    tracing::warn!(
                        "the graveyard {dir} was removed or moved away; creating it again"
                    );
                    if let Err(err) = self.graveyard.recreate() {
                        tracing::error!("{err}");
                    }
                    self.watch.rewatch();
                    self.look_all(false);
                    learnt = Learnt::Recreated;
                }
            }
        }
        learnt
    }

    /// Stops listening: once the child is stopping or has ended, no change
    /// in the graveyard matters.
    pub fn quiet(&mut self) {
        // Deaths taken in but not armed yet are not looked at again, nor
        // held locks tried again.
        for dep in &mut self.deps {
            dep.unarmed = false;
            dep.recheck = None;
        }
        self.watch.quiet();
    }

    /// The dependencies of `role` that have died (or were lost), in the
    /// order configured: for death and birth dependencies and those of
    /// [`Role::Quit`], those dead for good (a death the kubelet answers
    /// with a restart in place is not);
    /// for `stop-after`, every death (it concerns a pod being deleted,
    /// where nothing is restarted).
    pub fn dead(&self, role: Role) -> Vec<Name> {
        self.of(role, true)
    }

    /// The dependencies of `role` not dead yet, in the sense of
    /// [`Dependencies::dead`]: no tombstone, alive, unreadable, or dead
    /// and to be restarted.
    pub fn alive(&self, role: Role) -> Vec<Name> {
        self.of(role, false)
    }

    /// The dependencies of `role` that have died and will be started again
    /// in place (none under the policy `Never`), each with the status it
    /// ended with, if one was recorded.
    pub fn restarting(&self, role: Role) -> Vec<(Name, Option<i32>)> {
        self.deps
            .iter()
            .filter(|d| d.roles.has(role) && d.is_dead() && !d.is_dead_for_good(self.restarts))
            .map(|d| {
                let status = match (&d.lost, &d.seen) {
                    (None, Seen::Stone(stone)) => stone.status(),
                    _ => None,
                };
                (d.name.clone(), status)
            })
            .collect()
    }

    fn of(&self, role: Role, dead: bool) -> Vec<Name> {
        self.deps
            .iter()
            .filter(|d| d.roles.has(role) && self.counts_dead(d, role) == dead)
            .map(|d| d.name.clone())
            .collect()
    }

    fn counts_dead(&self, dep: &Dependency, role: Role) -> bool {
        match role {
            Role::StopAfter => dep.is_dead(),
            Role::Death | Role::Birth | Role::Quit => dep.is_dead_for_good(self.restarts),
        }
    }

    /// Whether `name`'s tombstone names `endpoint` (as printed) among the
    /// quit endpoints its kubexit calls.
    pub fn quits(&self, name: &Name, endpoint: &str) -> bool {
        self.index(name).is_some_and(|i| {
            let dep = &self.deps[i];
            let stone = match (&dep.lost, &dep.seen) {
                (Some(lost), _) => Some(lost),
                (None, Seen::Stone(stone)) => Some(stone),
                (None, _) => None,
            };
            stone.is_some_and(|stone| stone.quits(endpoint))
        })
    }

    /// Where the wait for the birth dependencies in the graveyard stands.
    pub fn births(&self) -> Verdict {
        let mut all_ready = true;
        for dep in self.deps.iter().filter(|d| d.roles.has(Role::Birth)) {
            if dep.is_dead_for_good(self.restarts) {
                return Verdict::Died(dep.name.clone());
            }
            all_ready &= dep.is_ready();
        }
        if all_ready {
            Verdict::AllReady
        } else {
            Verdict::Waiting
        }
    }

    /// The birth dependencies not ready yet and why, such as
    /// `cache (no tombstone yet; the graveyard holds: api, dbb), db (born, not ready)`.
    pub fn births_report(&self) -> String {
        let mut held = None;
        let mut parts = Vec::new();
        let mut awaited: Vec<&Dependency> = self
            .deps
            .iter()
            .filter(|d| d.roles.has(Role::Birth) && !d.is_ready())
            .collect();
        awaited.sort_by(|a, b| a.name.cmp(&b.name));
        for dep in awaited {
            let state = match &dep.seen {
                _ if dep.lost.is_some() => "lost".into(),
                Seen::Nothing => {
                    let held = held.get_or_insert_with(|| holdings(&self.graveyard));
                    format!("no tombstone yet; the graveyard holds: {held}")
                }
                Seen::Unreadable => "unreadable tombstone".into(),
                Seen::Stone(stone) if stone.is_dead() && !dep.is_dead_for_good(self.restarts) => {
                    format!("dead, to be restarted: restartPolicy {}", self.restarts)
                }
                Seen::Stone(stone) if stone.is_dead() => "dead".into(),
                Seen::Stone(stone) if stone.born.is_some() => "born, not ready".into(),
                Seen::Stone(_) => "tombstone without Born".into(),
            };
            parts.push(format!("{} ({state})", dep.name));
        }
        parts.join(", ")
    }

    fn index(&self, name: &Name) -> Option<usize> {
        self.deps.iter().position(|d| d.name == *name)
    }

    /// Looks at every dependency; `doubt` as for [`Dependencies::look`].
    fn look_all(&mut self, doubt: bool) {
        for i in 0..self.deps.len() {
            self.look(i, doubt);
        }
    }

    /// After an event on a dependency's tombstone: a death is taken in
    /// before anything else, so that it is acted on at once; the watch on
    /// the new file is armed at the next [`Dependencies::changed`], which
    /// looks again. Anything else is looked at as usual.
    fn look_after(&mut self, i: usize) {
        let seen = self.read(i);
        if matches!(&seen, Seen::Stone(stone) if stone.is_dead()) {
            let dep = &mut self.deps[i];
            dep.complaint = None;
            dep.seen = seen;
            dep.unarmed = true;
        } else {
            self.look(i, false);
        }
    }

    /// Arms the watch on a dependency, reads its tombstone, and judges its
    /// liveness when it shows a birth and no death; `doubt` says the lock
    /// may have been closed unseen (events were lost).
    fn look(&mut self, i: usize, doubt: bool) {
        let fresh = self.watch.arm(&self.deps[i].name.clone());
        let seen = self.read(i);
        let dep = &mut self.deps[i];
        if !matches!(seen, Seen::Unreadable) {
            dep.complaint = None;
        }
        // A new birth (a restarted dependency) ends an earlier loss.
        if let (Some(lost), Seen::Stone(stone)) = (&dep.lost, &seen)
            && stone.born != lost.born
        {
            dep.lost = None;
        }
        dep.seen = seen;
        self.judge(i, doubt || fresh);
    }

    /// Reads a dependency's tombstone; a problem is reported once.
    fn read(&mut self, i: usize) -> Seen {
        let name = &self.deps[i].name;
        match self.graveyard.read(name) {
            Ok(None) => Seen::Nothing,
            Ok(Some(stone)) => Seen::Stone(stone),
            Err(err) => {
                let problem = err.to_string();
                if self.deps[i].complaint.as_ref() != Some(&problem) {
                    tracing::warn!(
                        dependency = %name,
                        "Ignoring unreadable tombstone {}: {problem}",
                        self.graveyard.path_of(name).display()
                    );
                    self.deps[i].complaint = Some(problem);
                }
                Seen::Unreadable
            }
        }
    }

    /// Asks whether a dependency that shows a birth and no death has lost
    /// its holder. `woken` says its lock may have been closed a moment ago
    /// (see the module's essay): a lock found held is then tried again.
    fn judge(&mut self, i: usize, woken: bool) {
        let dep = &mut self.deps[i];
        let alive = matches!(&dep.seen, Seen::Stone(s) if s.born.is_some() && !s.is_dead());
        if dep.lost.is_some() || !alive {
            dep.recheck = None;
            return;
        }
        match liveness::lost(&self.graveyard, &dep.name) {
            Judged::Lost(stone) => {
                dep.lost = Some(stone);
                dep.recheck = None;
            }
            Judged::Held if woken => dep.recheck = Some(Recheck::first()),
            Judged::Held => {}
            Judged::Nothing => dep.recheck = None,
        }
    }
}

/// The tombstone names in the graveyard, at most 20 of them, for reports.
fn holdings(graveyard: &Graveyard) -> String {
    let names = graveyard.names().unwrap_or_default();
    if names.is_empty() {
        return "nothing".into();
    }
    let more = names.len().saturating_sub(20);
    let mut text = names
        .iter()
        .take(20)
        .map(Name::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::runtime;

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

    fn ended(status: i32, exit_status: Option<i32>) -> Tombstone {
        Tombstone {
            exit_code: Some(status),
            exit_status,
            ..stone(true, true)
        }
    }

    #[test]
    fn a_death_the_kubelet_answers_with_a_restart_is_not_for_good() {
        let (_dir, graveyard) = yard();
        let rt = runtime();
        let _guard = rt.enter();
        let roles: &[(&[Name], Role)] = &[
            (&[name("main")], Role::Death),
            (&[name("proxy")], Role::Birth),
            (&[name("main")], Role::StopAfter),
        ];
        graveyard.write(&name("main"), &ended(1, None)).unwrap();
        graveyard.write(&name("proxy"), &ended(143, None)).unwrap();
        let view = Dependencies::open(&graveyard, roles, RestartPolicy::OnFailure);
        assert!(view.dead(Role::Death).is_empty());
        assert_eq!(view.alive(Role::Death), [name("main")]);
        assert_eq!(view.restarting(Role::Death), [(name("main"), Some(1))]);
        assert_eq!(view.births(), Verdict::Waiting, "waits for the next life");
        // A pod being deleted restarts nothing: stop-after counts every death.
        assert_eq!(view.dead(Role::StopAfter), [name("main")]);

        // kubexit's own status is what the container ended with: a sidecar
        // stopped on purpose ended with 0, whatever its child's 143 says.
        graveyard.write(&name("main"), &ended(0, None)).unwrap();
        graveyard
            .write(&name("proxy"), &ended(143, Some(0)))
            .unwrap();
        let view = Dependencies::open(&graveyard, roles, RestartPolicy::OnFailure);
        assert_eq!(view.dead(Role::Death), [name("main")]);
        assert!(view.restarting(Role::Death).is_empty());
        assert_eq!(view.births(), Verdict::Died(name("proxy")));

        // Under Always nothing dies for good; under Never everything does.
        let always = Dependencies::open(&graveyard, roles, RestartPolicy::Always);
        assert!(always.dead(Role::Death).is_empty());
        assert_eq!(always.births(), Verdict::Waiting);
        let never = Dependencies::open(&graveyard, roles, RestartPolicy::Never);
        assert_eq!(never.dead(Role::Death), [name("main")]);
    }

    #[test]
    fn births_are_ready_only_when_every_one_is_ready_and_alive() {
        let (_dir, graveyard) = yard();
        let rt = runtime();
        let _guard = rt.enter();
        let view = Dependencies::open(
            &graveyard,
            &[(&[name("a"), name("b")], Role::Birth)],
            RestartPolicy::Never,
        );
        assert_eq!(view.births(), Verdict::Waiting);
        graveyard.write(&name("a"), &stone(true, false)).unwrap();
        graveyard.write(&name("b"), &stone(false, false)).unwrap();
        let mut view = Dependencies::open(
            &graveyard,
            &[(&[name("a"), name("b")], Role::Birth)],
            RestartPolicy::Never,
        );
        view.listen();
        assert_eq!(view.births(), Verdict::Waiting);
        assert_eq!(view.births_report(), "b (born, not ready)");
        graveyard.write(&name("b"), &stone(true, false)).unwrap();
        rt.block_on(view.changed());
        assert_eq!(view.births(), Verdict::AllReady);
    }

    #[test]
    fn a_name_that_is_both_kinds_is_read_once_and_its_death_ends_the_wait() {
        let (_dir, graveyard) = yard();
        let rt = runtime();
        let _guard = rt.enter();
        graveyard.write(&name("a"), &stone(false, false)).unwrap();
        let mut view = Dependencies::open(
            &graveyard,
            &[(&[name("a")], Role::Death), (&[name("a")], Role::Birth)],
            RestartPolicy::Never,
        );
        view.listen();
        assert_eq!(view.deps.len(), 1);
        assert!(view.dead(Role::Death).is_empty());
        graveyard.write(&name("a"), &stone(false, true)).unwrap();
        rt.block_on(view.changed());
        assert_eq!(view.dead(Role::Death), [name("a")]);
        assert_eq!(view.births(), Verdict::Died(name("a")));
    }

    #[test]
    fn a_missing_tombstone_is_reported_with_what_the_graveyard_holds() {
        let (_dir, graveyard) = yard();
        let rt = runtime();
        let _guard = rt.enter();
        graveyard.write(&name("dbb"), &stone(true, false)).unwrap();
        let view = Dependencies::open(
            &graveyard,
            &[(&[name("db")], Role::Birth)],
            RestartPolicy::Never,
        );
        assert_eq!(
            view.births_report(),
            "db (no tombstone yet; the graveyard holds: dbb)"
        );
    }

    #[test]
    fn a_siblings_tombstone_wakes_nobody_once_every_dependency_is_there() {
        let (_dir, graveyard) = yard();
        let rt = runtime();
        let _guard = rt.enter();
        graveyard.write(&name("db"), &stone(true, false)).unwrap();
        let mut view = Dependencies::open(
            &graveyard,
            &[(&[name("db")], Role::Death)],
            RestartPolicy::Never,
        );
        view.listen();
        graveyard
            .write(&name("sibling"), &stone(true, false))
            .unwrap();
        let woken = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(200), view.changed()).await
        });
        assert!(woken.is_err(), "woken by a sibling's tombstone");
        graveyard.write(&name("db"), &stone(true, true)).unwrap();
        rt.block_on(view.changed());
        assert_eq!(view.dead(Role::Death), [name("db")]);
    }
}
