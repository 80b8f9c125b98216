//! Liveness that survives SIGKILL.
//!
//! A kubexit killed by SIGKILL, the OOM killer or a torn-down container
//! never writes `Died`; with upstream, its dependents then wait forever and
//! the Job hangs. kubexit closes that gap with a lock the kernel releases
//! for it:
//!
//! * **The holder.** Before it writes `Born`, kubexit takes an exclusive
//!   `flock` on `.NAME.lock` in the graveyard (a dot-file: kubexit's own, not
//!   a tombstone, which renames replace) and writes its `Born` time into it.
//!   It holds the lock until the process ends, however it ends: the kernel
//!   drops the lock when the last descriptor closes. The descriptor is
//!   close-on-exec, so the child never holds it.
//! * **The dependent.** For each dependency, a thread waits in a blocking
//!   shared `flock` on that lock file. It returns the moment the holder is
//!   gone. If the tombstone then shows no `Died` and the same `Born` as the
//!   lock file, the holder died silently, and the dependent records the
//!   death in the dependency's tombstone itself (`ExitCode: -1`, a `Reason`
//!   starting with `lost`). It does so while holding its shared lock, so a
//!   restarting holder, which must take the exclusive lock before it writes a
//!   new `Born`, cannot interleave. The ordinary graveyard watch then sees
//!   the death, in this kubexit and in every other reader, Go peers included.
//!
//! Waiting is blocking, in a thread per dependency, not polling: a lost
//! death is recorded within milliseconds. Between holders, the thread sleeps
//! until the supervisor's graveyard watch reports a change to that
//! dependency's tombstone (a new holder writes `Born` after taking the lock).
//! The threads own no inotify instance: those are limited per user, and a
//! pod may hold hundreds of kubexits.
//!
//! What this does not cover: Go kubexit holds no lock, so a Go peer that is
//! SIGKILLed is still only seen through `Died`. A stale lock file whose
//! `Born` differs from the tombstone's (a Go instance took over the name,
//! or a new holder has not written yet) is never taken as a death.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::graveyard::Graveyard;
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::{NEVER_STARTED, Tombstone};

/// The lock that says "this kubexit is alive"; held until dropped or the
/// process ends.
pub struct LifeLock {
    _lock: Flock<File>,
}

impl LifeLock {
    /// Takes the lock on `name`'s lock file and records `born` in it.
    /// Dependents hold the lock only for a moment, so a lock still taken
    /// after [`HOLD_PATIENCE`] belongs to another live kubexit of the same
    /// name (a nested kubexit that inherited `KUBEXIT_NAME`, or a
    /// misconfiguration): that is an error for the caller to report, never a
    /// wait without end.
    pub fn hold(graveyard: &Graveyard, name: &Name, born: Timestamp) -> io::Result<LifeLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(graveyard.lock_path(name)?)?;
        let mut lock = lock_within(file, HOLD_PATIENCE)?;
        lock.set_len(0)?;
        lock.write_all(born.to_string().as_bytes())?;
        Ok(LifeLock { _lock: lock })
    }
}

/// How long [`LifeLock::hold`] waits for dependents' momentary shared locks.
pub const HOLD_PATIENCE: Duration = Duration::from_millis(500);

/// Takes the exclusive lock, retrying while it is busy for at most `limit`.
fn lock_within(mut file: File, limit: Duration) -> io::Result<Flock<File>> {
    let deadline = Instant::now() + limit;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((returned, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = returned;
                thread::sleep(Duration::from_millis(5));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(io::Error::other(
                    "another live kubexit holds this name's lock (a nested kubexit that \
                     inherited KUBEXIT_NAME? give each kubexit its own name)",
                ));
            }
            Err((_, errno)) => return Err(errno.into()),
        }
    }
}

/// The threads following the dependencies' locks, and how to wake them.
pub struct Liveness {
    followers: Vec<(Name, SyncSender<()>)>,
}

impl Liveness {
    /// Starts one thread per dependency that records its death if its
    /// kubexit dies without recording it. A thread that cannot start is
    /// logged: it only loses this extra guarantee, never the ordinary one.
    pub fn follow(graveyard: &Graveyard, names: &[Name]) -> Liveness {
        let mut followers = Vec::new();
        for name in names {
            // One pending wake-up is enough: the thread re-reads everything.
            let (poke, woken) = sync_channel(1);
            let (graveyard, thread_name) = (graveyard.clone(), name.clone());
            let spawned = thread::Builder::new()
                .name(format!("liveness-{name}"))
                .spawn(move || follow(&graveyard, &thread_name, &woken));
            match spawned {
                Ok(_) => followers.push((name.clone(), poke)),
                Err(err) => tracing::warn!("cannot follow {name}'s liveness: {err}"),
            }
        }
        Liveness { followers }
    }

    /// Tells the follower of the dependency whose tombstone is `entry` that
    /// it changed.
    pub fn changed(&self, entry: &OsStr) {
        for (name, poke) in &self.followers {
            if OsStr::new(name.as_str()) == entry {
                let _ = poke.try_send(());
            }
        }
    }

    /// Tells every follower that anything may have changed.
    pub fn changed_all(&self) {
        for (_, poke) in &self.followers {
            let _ = poke.try_send(());
        }
    }
}

/// A follower's loop: wait for the holder to go away, judge, wait for a
/// change, repeat, until the supervisor is gone.
fn follow(graveyard: &Graveyard, name: &Name, woken: &Receiver<()>) {
    loop {
        if let Err(err) = judge_when_released(graveyard, name) {
            tracing::warn!(dependency = %name, "cannot follow {name}'s liveness lock: {err}");
        }
        if woken.recv().is_err() {
            return;
        }
    }
}

/// Waits until no kubexit holds `name`'s lock (at once if none does), then
/// judges whether its holder died without recording it.
fn judge_when_released(graveyard: &Graveyard, name: &Name) -> io::Result<()> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(graveyard.lock_path(name)?)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    let mut shared =
        Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| io::Error::from(e))?;
    let mut holder_born = String::new();
    shared.read_to_string(&mut holder_born)?;
    record_if_lost(graveyard, name, holder_born.trim());
    Ok(())
}

/// With the shared lock held: if the tombstone still belongs to the holder
/// that just went away and records no death, record it.
fn record_if_lost(graveyard: &Graveyard, name: &Name, holder_born: &str) {
    let Ok(holder_born) = holder_born.parse::<Timestamp>() else {
        return;
    };
    let Ok(Some(stone)) = graveyard.read(name) else {
        return;
    };
    if stone.is_dead() || stone.born != Some(holder_born) {
        return;
    }
    tracing::warn!(
        dependency = %name,
        "Lost: {name}'s kubexit ended without recording a death (SIGKILL, OOM kill or container teardown); recording it"
    );
    let lost = Tombstone {
        died: Some(Timestamp::now()),
        exit_code: Some(NEVER_STARTED),
        reason: Some("lost: its kubexit ended without recording a death".into()),
        ..stone
    };
    if let Err(err) = graveyard.write(name, &lost) {
        tracing::error!("{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Graveyard, Name) {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        (dir, graveyard, Name::new("db").unwrap())
    }

    fn born_at(graveyard: &Graveyard, name: &Name, born: Timestamp) {
        let stone = Tombstone {
            born: Some(born),
            ..Tombstone::default()
        };
        graveyard.write(name, &stone).unwrap();
    }

    #[test]
    fn a_holder_gone_without_died_is_recorded_as_lost() {
        let (_dir, graveyard, name) = setup();
        let born = Timestamp::now();
        born_at(&graveyard, &name, born);
        record_if_lost(&graveyard, &name, &born.to_string());
        let stone = graveyard.read(&name).unwrap().unwrap();
        assert_eq!(stone.born, Some(born));
        assert!(stone.is_dead());
        assert_eq!(stone.exit_code, Some(-1));
        assert!(stone.reason.unwrap().starts_with("lost"));
    }

    #[test]
    fn a_stale_lock_of_another_instance_is_not_a_death() {
        let (_dir, graveyard, name) = setup();
        born_at(&graveyard, &name, Timestamp::now());
        let earlier = Timestamp::from_second(1_700_000_000).unwrap();
        record_if_lost(&graveyard, &name, &earlier.to_string());
        record_if_lost(&graveyard, &name, "");
        assert!(!graveyard.read(&name).unwrap().unwrap().is_dead());
    }

    #[test]
    fn a_recorded_death_is_left_as_it_is() {
        let (_dir, graveyard, name) = setup();
        let born = Timestamp::now();
        let stone = Tombstone {
            born: Some(born),
            died: Some(born),
            exit_code: Some(3),
            ..Tombstone::default()
        };
        graveyard.write(&name, &stone).unwrap();
        record_if_lost(&graveyard, &name, &born.to_string());
        assert_eq!(graveyard.read(&name).unwrap(), Some(stone));
    }

    #[test]
    fn the_lock_is_exclusive_while_held_and_free_once_dropped() {
        let (_dir, graveyard, name) = setup();
        let life = LifeLock::hold(&graveyard, &name, Timestamp::now()).unwrap();
        let probe = || {
            let file = File::open(graveyard.lock_path(&name).unwrap()).unwrap();
            Flock::lock(file, FlockArg::LockSharedNonblock).is_ok()
        };
        assert!(!probe());
        drop(life);
        assert!(probe());
    }
}
