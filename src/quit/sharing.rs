//! Sidecars shared by several main containers: the last one out asks.
//!
//! A proxy that serves several main containers must quit only once every
//! one of them has ended, so each kubexit with quit endpoints records them
//! in its tombstone (`Quit`, from `Born` on), and once its child has ended
//! and its own `Died` is written, it reads the graveyard through a
//! dependency view and decides, endpoint by endpoint, whose turn it is:
//!
//! * **Someone else's**, when another process whose tombstone names the
//!   same endpoint (as printed) has not died for good: it asks when it
//!   ends, and it will find this one dead. A process the kubelet starts
//!   again in place has not died for good; a holder judged lost (its
//!   kubexit SIGKILLed) has, as the view judges it.
//! * **Awaited**, when a process named in `KUBEXIT_QUIT_AFTER` has not
//!   died for good and does not name the endpoint: it has no tombstone yet
//!   (a main container still waiting for its birth dependencies, or not
//!   started), or it is a main container that does not ask itself. kubexit
//!   watches the graveyard until that changes, at most the quit timeout,
//!   and then asks anyway: a pod never waits on a container that never
//!   comes.
//! * **This kubexit's** otherwise: every other user of the endpoint has
//!   died.
//!
//! `Died` is written before the graveyard is read, so of several users
//! that end together at least one sees all the others dead and asks
//! (several may; a second quit is harmless), and of users that end one
//! after the other, the last one asks, and only it. What the records
//! cannot tell: a main container that has not written its tombstone yet
//! is unknown to the others unless `KUBEXIT_QUIT_AFTER` names it, and a
//! kubexit killed before it asks (SIGKILL) leaves the endpoint unasked if
//! it was the last one out.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::dependencies::{Dependencies, Role};
use crate::duration::GoDuration;
use crate::graveyard::Graveyard;
use crate::graveyard::name::Name;
use crate::graveyard::restart::RestartPolicy;
use crate::quit::endpoint::Endpoint;

/// Whose turn it is to ask one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Turn {
    /// Every other user has died.
    Mine,
    /// This one uses it too and has not ended: it asks.
    Theirs(Name),
    /// These, of `KUBEXIT_QUIT_AFTER`, have said nothing of it yet.
    Awaiting(Vec<Name>),
}

/// Who else may use the sidecars of this kubexit, and how to judge them.
pub struct Users<'a> {
    pub graveyard: &'a Graveyard,
    /// This kubexit's own name, which is no other user.
    pub me: &'a Name,
    /// `KUBEXIT_QUIT_AFTER`: the main containers waited for.
    pub after: &'a [Name],
    pub restarts: RestartPolicy,
}

/// The endpoints this kubexit asks, once its own death is recorded: those
/// whose other users have all died, and those still awaited after `limit`
/// (with a warning). The others are left to their users, and said so.
pub async fn mine(users: &Users<'_>, endpoints: &[Endpoint], limit: Duration) -> Vec<Endpoint> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    let mut others: Vec<Name> = users.after.to_vec();
    match users.graveyard.names() {
        Ok(names) => others.extend(
            names
                .into_iter()
                .filter(|name| name != users.me && !users.after.contains(name)),
        ),
        Err(err) => tracing::warn!(
            "cannot list the graveyard {}: {err}; asking the sidecars without knowing who else \
             uses them",
            users.graveyard.dir().display()
        ),
    }
    if others.is_empty() {
        return endpoints.to_vec();
    }
    let mut view = Dependencies::open(users.graveyard, &[(&others, Role::Quit)], users.restarts);
    let deadline = Instant::now() + limit;
    let mut listening = false;
    let mut said: Vec<Name> = Vec::new();
    let turns = loop {
        let turns: Vec<Turn> = endpoints
            .iter()
            .map(|endpoint| turn(&view, &endpoint.to_string(), users.after))
            .collect();
        let mut awaited: Vec<Name> = Vec::new();
        for turn in &turns {
            if let Turn::Awaiting(names) = turn {
                for name in names {
                    if !awaited.contains(name) {
                        awaited.push(name.clone());
                    }
                }
            }
        }
        if awaited.is_empty() || Instant::now() >= deadline {
            break turns;
        }
        if !listening {
            // From here on no change is missed; the view reads again.
            view.listen();
            listening = true;
            continue;
        }
        if said != awaited {
            tracing::info!(
                "Quit: waiting for {} (KUBEXIT_QUIT_AFTER) to start or end before asking the \
                 sidecars they share, at most {}",
                Name::display_list(&awaited),
                GoDuration(limit)
            );
            said = awaited;
        }
        tokio::select! {
            _ = view.changed() => {}
            () = sleep_until(deadline) => {}
        }
    };
    let mut mine = Vec::new();
    for (endpoint, turn) in endpoints.iter().zip(turns) {
        match turn {
            Turn::Mine => mine.push(endpoint.clone()),
            Turn::Theirs(user) => tracing::info!(
                endpoint = %endpoint,
                "Quit {endpoint}: left to {user}, which uses it too and has not ended: the last \
                 one out asks"
            ),
            Turn::Awaiting(names) => {
                tracing::warn!(
                    endpoint = %endpoint,
                    "Quit {endpoint}: {} neither ended nor took it over within {}; asking now, \
                     so that the pod does not wait for them",
                    Name::display_list(&names),
                    GoDuration(limit)
                );
                mine.push(endpoint.clone());
            }
        }
    }
    mine
}

/// Whose turn it is to ask `endpoint` (as printed), as the view stands.
fn turn(view: &Dependencies, endpoint: &str, after: &[Name]) -> Turn {
    let alive = view.alive(Role::Quit);
    if let Some(user) = alive.iter().find(|name| view.quits(name, endpoint)) {
        return Turn::Theirs(user.clone());
    }
    let awaited: Vec<Name> = alive
        .into_iter()
        .filter(|name| after.contains(name))
        .collect();
    if awaited.is_empty() {
        Turn::Mine
    } else {
        Turn::Awaiting(awaited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graveyard::tombstone::Tombstone;
    use crate::testing::runtime;

    const ISTIO: &str = "http://127.0.0.1:15020/quitquitquit";

    fn name(n: &str) -> Name {
        Name::new(n).unwrap()
    }

    /// A tombstone of a kubexit that asks `quit`, dead or not.
    fn user(quit: &str, dead: bool) -> Tombstone {
        let now = jiff::Timestamp::now();
        Tombstone {
            born: Some(now),
            quit: Some(quit.into()),
            died: dead.then_some(now),
            exit_code: dead.then_some(0),
            ..Tombstone::default()
        }
    }

    #[test]
    fn the_turn_is_theirs_while_a_user_lives_awaited_for_the_silent_of_quit_after_else_mine() {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        let rt = runtime();
        let _guard = rt.enter();
        let names = [name("a"), name("b"), name("c"), name("d")];
        let after = [name("c")];
        let turn_under = |restarts| {
            let view = Dependencies::open(&graveyard, &[(&names, Role::Quit)], restarts);
            turn(&view, ISTIO, &after)
        };
        let turn_now = || turn_under(RestartPolicy::Never);
        // c, of KUBEXIT_QUIT_AFTER, has no tombstone yet; d asks another
        // endpoint, and is no user of this one.
        graveyard.write(&name("a"), &user(ISTIO, true)).unwrap();
        graveyard
            .write(&name("d"), &user("http://127.0.0.1:4191/shutdown", false))
            .unwrap();
        assert_eq!(turn_now(), Turn::Awaiting(vec![name("c")]));
        // b lives and asks it too: b is the one to ask, whoever else is awaited.
        graveyard.write(&name("b"), &user(ISTIO, false)).unwrap();
        assert_eq!(turn_now(), Turn::Theirs(name("b")));
        // Once b and c have died, it is this kubexit's; but a b that failed
        // under OnFailure comes back, and asks at its last end.
        graveyard.write(&name("c"), &user("", true)).unwrap();
        let failed = Tombstone {
            exit_code: Some(1),
            ..user(ISTIO, true)
        };
        graveyard.write(&name("b"), &failed).unwrap();
        assert_eq!(turn_now(), Turn::Mine);
        assert_eq!(
            turn_under(RestartPolicy::OnFailure),
            Turn::Theirs(name("b"))
        );
    }
}
