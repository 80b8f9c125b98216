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
//!   close-on-exec, so the child never holds it. Taking the lock never
//!   blocks the event loop: attempts are non-blocking, with the loop's own
//!   timer between them.
//! * **The dependent.** It never waits on the lock. The graveyard watch
//!   reports when the lock file is closed by a writer (the holder's
//!   descriptor closing, at its death), and the dependency view then asks
//!   [`lost`]: a non-blocking shared lock succeeds only if no holder is
//!   left. The kernel reports the close *before* it releases the lock (in
//!   `__fput`, the close notification comes first and the lock goes with
//!   the file a moment later; how often a dependent is that quick depends
//!   on the scheduler: on one of our VMs the lock was still held after the
//!   event for 27 closes in 500, up to 2 ms, on another for none in
//!   3,100), so a lock found held just after its close was reported may be
//!   on its way out: [`lost`] says `Held`, not merely "not lost", and the
//!   dependency view asks again a few times over the next two seconds. If
//!   the tombstone then shows no `Died` and the same `Born` as the lock
//!   file, the holder died silently: the dependent records the death in
//!   the dependency's tombstone itself (`ExitCode: -1`, a `Reason`
//!   starting with `lost`), while holding its shared lock, so a restarting
//!   holder, which takes the exclusive lock before it writes a new `Born`,
//!   cannot interleave. A holder that cannot take its lock at all (the
//!   file cannot be opened for writing by it, say so in its log) writes
//!   `Born` without it, and a dependent that judged the earlier life lost
//!   at that moment may write the loss over the new `Born`, until the new
//!   holder's next write. The view also counts the dependency as dead
//!   at once, even if that record cannot be written (a full filesystem):
//!   the dependents act on what they saw, and every other reader, Go peers
//!   included, sees the record where it could be written.
//!
//! Lock files are opened as every graveyard entry is: never through a link,
//! never blocking on a FIFO, only if they are regular files. Anything else
//! planted at a lock's name costs only this guarantee, with a warning from
//! the holder (`cannot hold the liveness lock`).
//!
//! What this does not cover: Go kubexit holds no lock, so a Go peer that is
//! SIGKILLed is still only seen through `Died`. A stale lock file whose
//! `Born` differs from the tombstone's (a Go instance took over the name,
//! or a new holder has not written yet) is never taken as a death.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use jiff::Timestamp;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::libc;
use tokio::time::{Instant, sleep};

use crate::graveyard::Graveyard;
use crate::graveyard::entry::{ReadError, open_entry};
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::{NEVER_STARTED, Tombstone};

/// The lock that says "this kubexit is alive"; held until dropped or the
/// process ends.
pub struct LifeLock {
    _lock: Flock<File>,
}

/// How long [`LifeLock::hold`] waits for dependents' momentary shared locks.
pub const HOLD_PATIENCE: Duration = Duration::from_millis(500);

/// How often a busy lock is tried again while holding it.
const HOLD_RETRY: Duration = Duration::from_millis(5);

impl LifeLock {
    /// Takes the lock on `name`'s lock file and records `born` in it.
    /// Dependents hold the lock only for a moment, so a lock still taken
    /// after [`HOLD_PATIENCE`] belongs to another live kubexit of the same
    /// name (a nested kubexit that inherited `KUBEXIT_NAME`, or a
    /// misconfiguration): that is an error for the caller to report, never a
    /// wait without end.
    pub async fn hold(graveyard: &Graveyard, name: &Name, born: Timestamp) -> io::Result<LifeLock> {
        let path = graveyard.lock_path(name)?;
        let mut file = match open_entry(&path, libc::O_RDWR | libc::O_CREAT, 0o644) {
            Ok(Some(file)) => file,
            Ok(None) => return Err(io::Error::from_raw_os_error(nix::libc::ENOENT)),
            Err(ReadError::Io(err)) => return Err(err),
            Err(err) => {
                return Err(io::Error::other(format!(
                    "{} cannot be used: {err}",
                    path.display()
                )));
            }
        };
        let deadline = Instant::now() + HOLD_PATIENCE;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((returned, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = returned;
                    sleep(HOLD_RETRY).await;
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(io::Error::other(
                        "another live kubexit holds this name's lock (a nested kubexit that \
                         inherited KUBEXIT_NAME? give each kubexit its own name)",
                    ));
                }
                Err((_, errno)) => return Err(errno.into()),
            }
        };
        // In place, then cut: on a full filesystem the file's block is
        // already there to be written.
        let text = born.to_string();
        lock.write_all_at(text.as_bytes(), 0)?;
        lock.set_len(text.len() as u64)?;
        Ok(LifeLock { _lock: lock })
    }
}

/// A free lock, held shared while the caller judges, and the `Born` its
/// last holder wrote into it.
struct Released {
    _lock: Flock<File>,
    holder_born: Option<Timestamp>,
}

/// What `name`'s lock file says of its holder.
enum Lock {
    /// A kubexit holds it.
    Held,
    /// Nobody holds it.
    Free(Released),
    /// There is no usable lock file.
    Absent,
}

/// Tries `name`'s lock without blocking.
fn try_lock(graveyard: &Graveyard, name: &Name) -> Lock {
    let Ok(path) = graveyard.lock_path(name) else {
        return Lock::Absent;
    };
    let file = match open_entry(&path, libc::O_RDONLY, 0) {
        Ok(Some(file)) => file,
        Ok(None) => return Lock::Absent,
        Err(err) => {
            tracing::debug!(dependency = %name, "{name}'s liveness lock cannot be used: {err}");
            return Lock::Absent;
        }
    };
    let mut lock = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => return Lock::Held,
        Err((_, errno)) => {
            tracing::debug!(dependency = %name, "{name}'s liveness lock cannot be taken: {errno}");
            return Lock::Absent;
        }
    };
    let mut text = String::new();
    let _ = (&mut *lock).take(64).read_to_string(&mut text);
    Lock::Free(Released {
        holder_born: text.trim().parse().ok(),
        _lock: lock,
    })
}

/// Whether the holder behind `stone`'s `Born` is gone without recording a
/// death: its lock is free and carries that `Born`. Only reads.
pub fn holder_gone(graveyard: &Graveyard, name: &Name, stone: &Tombstone) -> bool {
    !stone.is_dead()
        && stone.born.is_some()
        && matches!(try_lock(graveyard, name), Lock::Free(r) if r.holder_born == stone.born)
}

/// What [`lost`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// A kubexit holds the lock: alive, or dying with its lock not yet
    /// released (see the module's essay).
    Held,
    /// The holder is gone without recording a death: this is the record
    /// of the loss.
    Lost(Tombstone),
    /// Nothing to judge by: no lock file (a Go peer), a free lock of
    /// another `Born`, or a death already recorded.
    Nothing,
}

/// Judges `name` after its lock was closed (or at a scan): if its holder is
/// gone without recording a death, records one (`lost`) in its tombstone and
/// returns that tombstone, whether or not the record could be written.
pub fn lost(graveyard: &Graveyard, name: &Name) -> Judged {
    let released = match try_lock(graveyard, name) {
        Lock::Free(released) => released,
        Lock::Held => return Judged::Held,
        Lock::Absent => return Judged::Nothing,
    };
    // Read again under the shared lock: a restarting holder cannot write
    // a new Born until it is released.
    let Ok(Some(stone)) = graveyard.read(name) else {
        return Judged::Nothing;
    };
    if stone.is_dead() || stone.born.is_none() || stone.born != released.holder_born {
        return Judged::Nothing;
    }
    tracing::warn!(
        dependency = %name,
        "Lost: {name}'s kubexit ended without recording a death (SIGKILL, OOM kill or container teardown); recording it"
    );
    let lost = Tombstone {
        died: Some(Timestamp::now()),
        exit_code: Some(NEVER_STARTED),
        reason: Some("lost: its kubexit ended without recording a death".into()),
        awaiting: None,
        ..stone
    };
    if let Err(err) = graveyard.write(name, &lost) {
        tracing::error!("{err}; acting on the loss all the same");
    }
    Judged::Lost(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::runtime;

    fn setup() -> (tempfile::TempDir, Graveyard, Name) {
        let dir = tempfile::tempdir().unwrap();
        let graveyard = Graveyard::open(dir.path()).unwrap();
        (dir, graveyard, Name::new("db").unwrap())
    }

    fn born_at(graveyard: &Graveyard, name: &Name, born: Timestamp) -> Tombstone {
        let stone = Tombstone {
            born: Some(born),
            ..Tombstone::default()
        };
        graveyard.write(name, &stone).unwrap();
        stone
    }

    #[test]
    fn a_holder_gone_without_died_is_recorded_as_lost() {
        let (_dir, graveyard, name) = setup();
        let born = Timestamp::now();
        let life = runtime()
            .block_on(LifeLock::hold(&graveyard, &name, born))
            .unwrap();
        let stone = born_at(&graveyard, &name, born);
        assert_eq!(
            lost(&graveyard, &name),
            Judged::Held,
            "judged lost while held"
        );
        assert!(!holder_gone(&graveyard, &name, &stone));
        drop(life);
        assert!(holder_gone(&graveyard, &name, &stone));
        let Judged::Lost(recorded) = lost(&graveyard, &name) else {
            panic!("a released lock was not judged lost");
        };
        let stone = graveyard.read(&name).unwrap().unwrap();
        assert_eq!(stone, recorded);
        assert_eq!(stone.born, Some(born));
        assert_eq!(stone.exit_code, Some(-1));
        assert!(stone.reason.unwrap().starts_with("lost"));
    }

    #[test]
    fn a_stale_lock_of_another_instance_is_not_a_death() {
        let (_dir, graveyard, name) = setup();
        let earlier = Timestamp::from_second(1_700_000_000).unwrap();
        drop(
            runtime()
                .block_on(LifeLock::hold(&graveyard, &name, earlier))
                .unwrap(),
        );
        born_at(&graveyard, &name, Timestamp::now());
        assert_eq!(lost(&graveyard, &name), Judged::Nothing);
        assert!(!graveyard.read(&name).unwrap().unwrap().is_dead());
    }

    #[test]
    fn a_recorded_death_is_left_as_it_is() {
        let (_dir, graveyard, name) = setup();
        let born = Timestamp::now();
        drop(
            runtime()
                .block_on(LifeLock::hold(&graveyard, &name, born))
                .unwrap(),
        );
        let stone = Tombstone {
            born: Some(born),
            died: Some(born),
            exit_code: Some(3),
            ..Tombstone::default()
        };
        graveyard.write(&name, &stone).unwrap();
        assert_eq!(lost(&graveyard, &name), Judged::Nothing);
        assert_eq!(graveyard.read(&name).unwrap(), Some(stone));
    }

    #[test]
    fn a_second_holder_of_the_same_name_is_refused_in_bounded_time() {
        let (_dir, graveyard, name) = setup();
        let rt = runtime();
        let _first = rt
            .block_on(LifeLock::hold(&graveyard, &name, Timestamp::now()))
            .unwrap();
        let err = rt
            .block_on(LifeLock::hold(&graveyard, &name, Timestamp::now()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("another live kubexit"), "{err}");
    }

    #[test]
    fn planted_fifos_symlinks_and_directories_at_a_lock_name_never_block_or_redirect() {
        let (dir, graveyard, _) = setup();
        let rt = runtime();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "untouched").unwrap();
        let fifo = |p: &std::path::Path| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU).unwrap();
        };
        let link = |p: &std::path::Path| std::os::unix::fs::symlink("outside", p).unwrap();
        let dir_at = |p: &std::path::Path| std::fs::create_dir(p).unwrap();
        type Plant<'a> = &'a dyn Fn(&std::path::Path);
        let plants: [(&str, Plant); 3] = [("fifo", &fifo), ("link", &link), ("dir", &dir_at)];
        for (planted, plant) in plants {
            let name = Name::new(planted).unwrap();
            plant(&graveyard.lock_path(&name).unwrap());
            let stone = born_at(&graveyard, &name, Timestamp::now());
            assert!(
                rt.block_on(LifeLock::hold(&graveyard, &name, Timestamp::now()))
                    .is_err()
            );
            assert_eq!(lost(&graveyard, &name), Judged::Nothing);
            assert!(!holder_gone(&graveyard, &name, &stone));
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
    }
}
