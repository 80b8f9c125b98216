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
//! in a blocking read of an inotify instance of its own, woken only by
//! changes to that dependency's files.
//!
//! What this does not cover: Go kubexit holds no lock, so a Go peer that is
//! SIGKILLed is still only seen through `Died`. A stale lock file whose
//! `Born` differs from the tombstone's (a Go instance took over the name,
//! or a new holder has not written yet) is never taken as a death.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::thread;

use inotify::{Inotify, WatchMask};
use jiff::Timestamp;
use nix::fcntl::{Flock, FlockArg};

use crate::graveyard::Graveyard;
use crate::name::Name;
use crate::tombstone::{NEVER_STARTED, Tombstone};

/// The lock that says "this kubexit is alive"; held until dropped or the
/// process ends.
pub struct LifeLock {
    _lock: Flock<File>,
}

impl LifeLock {
    /// Takes the lock on `name`'s lock file and records `born` in it. Blocks
    /// only while a dependent briefly holds a shared lock to record a lost
    /// predecessor.
    pub fn hold(graveyard: &Graveyard, name: &Name, born: Timestamp) -> io::Result<LifeLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(graveyard.lock_path(name)?)?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        lock.set_len(0)?;
        lock.write_all(born.to_string().as_bytes())?;
        Ok(LifeLock { _lock: lock })
    }
}

/// Starts a thread that records `name`'s death if its kubexit dies without
/// recording it. Failures to watch are logged; they only lose this extra
/// guarantee, never the ordinary one.
pub fn watch_for_lost(graveyard: Graveyard, name: Name) {
    let spawned = thread::Builder::new()
        .name(format!("liveness-{name}"))
        .spawn(move || {
            if let Err(err) = follow(&graveyard, &name) {
                tracing::warn!(dependency = %name, "cannot follow {name}'s liveness lock: {err}");
            }
        });
    if let Err(err) = spawned {
        tracing::warn!("cannot start the liveness watch: {err}");
    }
}

/// The dependent's loop: wait for a holder to go away, judge, wait for a
/// change, repeat.
fn follow(graveyard: &Graveyard, name: &Name) -> io::Result<()> {
    let lock_path = graveyard.lock_path(name)?;
    let mut changes = Inotify::init()?;
    changes.watches().add(
        graveyard.dir(),
        WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::ONLYDIR,
    )?;
    let mut buffer = vec![0u8; 4096];
    loop {
        match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&lock_path)
        {
            Ok(file) => {
                // Returns when no kubexit holds the exclusive lock.
                let mut shared =
                    Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| io::Error::from(e))?;
                let mut holder_born = String::new();
                shared.read_to_string(&mut holder_born)?;
                record_if_lost(graveyard, name, holder_born.trim());
                drop(shared);
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        // Sleep until the dependency's tombstone or lock file changes.
        let tombstone = name.as_str();
        let lock_name = lock_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        loop {
            // A blocking read: this thread has nothing else to do.
            let events = changes.read_events_blocking(&mut buffer)?;
            let relevant = events
                .into_iter()
                .any(|event| event.name.is_some_and(|n| n == tombstone || n == lock_name));
            if relevant {
                break;
            }
        }
    }
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
