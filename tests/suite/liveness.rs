//! Liveness that survives SIGKILL: a kubexit killed without a chance to
//! write `Died` is still seen as dead by its dependents, at once.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};

use crate::util::{
    self, Finished, Kubexit, Yard, asleep, assert_contains, at_rest, eventually, read_pid,
    voluntary_switches, watch_masks,
};

/// Kills `db`'s kubexit with SIGKILL while `app` depends on it, in a
/// graveyard at `graveyard`; returns how long `app` took to notice.
fn sigkill_is_noticed(graveyard: &Path) -> Duration {
    let yard = Yard::new();
    let pids = yard.path().join("db-child");
    let db = Kubexit::named("db", &yard)
        .env("KUBEXIT_GRAVEYARD", graveyard)
        .sh(&format!("echo $$ > {}; exec sleep 1000", pids.display()))
        .spawn();
    let db_child = read_pid(&pids);
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRAVEYARD", graveyard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo up; exec sleep 1000")
        .spawn();
    app.wait_for_output("up");

    db.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let done = app.finish();
    let noticed = killed.elapsed();
    // The SIGKILLed kubexit could not stop its child; a pod's teardown
    // would. Here the test does.
    let _ = kill(db_child, Signal::SIGKILL);
    let db = db.finish();
    assert_eq!(db.status.code(), None, "db's kubexit was not killed");

    assert_lost(&done, graveyard);
    noticed
}

#[test]
fn a_sigkilled_dependency_is_noticed_within_a_second_on_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        panic!("/dev/shm (tmpfs) is missing on this machine");
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let noticed = sigkill_is_noticed(dir.path());
    assert!(noticed < Duration::from_secs(1), "took {noticed:?}");
}

#[test]
fn a_sigkilled_dependency_is_noticed_within_a_second_on_disk() {
    // The target directory is on the build's own disk filesystem.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let noticed = sigkill_is_noticed(dir.path());
    assert!(noticed < Duration::from_secs(1), "took {noticed:?}");
}

#[test]
fn a_birth_dependency_killed_during_the_wait_fails_the_wait_at_once() {
    let yard = Yard::new();
    let pids = yard.path().join("db-child");
    let db = Kubexit::named("db", &yard)
        .env("KUBEXIT_READY_PROBE", "file:/nonexistent/never")
        .sh(&format!("echo $$ > {}; exec sleep 1000", pids.display()))
        .spawn();
    let db_child = read_pid(&pids);
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1h")
        .sh("echo started")
        .spawn();
    app.wait_for_log("Waiting for birth dependencies: db (born, not ready)");
    db.signal(Signal::SIGKILL);
    let done = app.finish();
    let _ = kill(db_child, Signal::SIGKILL);
    db.finish();
    assert_eq!(done.code(), 1, "{}", done.stderr);
    assert_contains(&done.stderr, "Birth dependency died: db");
}

/// A kubexit whose child is another kubexit with the inherited name: the
/// inner one cannot hold the name's lock, says why, and still runs.
#[test]
fn a_nested_kubexit_with_the_same_name_does_not_hang() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .arg_path(&crate::util::kubexit_binary())
        .args(["sh", "-c", "echo inner ran"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "inner ran\n");
    assert_contains(&done.stderr, "another live kubexit holds this name's lock");
}

/// A dependency whose kubexit was SIGKILLed before this kubexit started is
/// judged at the first look, before the child would start: it never does.
#[test]
fn a_dependency_lost_before_start_keeps_the_child_from_starting() {
    let yard = Yard::new();
    let pids = yard.path().join("db-child");
    let db = Kubexit::named("db", &yard)
        .sh(&format!("echo $$ > {}; exec sleep 1000", pids.display()))
        .spawn();
    let db_child = read_pid(&pids);
    yard.wait_for("db", "Born: ");
    db.signal(Signal::SIGKILL);
    drop(db.finish());
    let _ = kill(db_child, Signal::SIGKILL);
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!done.stdout.contains("started"), "{}", done.stderr);
    assert_contains(&done.stderr, "Death dependency already dead: db");
    assert!(yard.read("app").unwrap().contains("ExitCode: -1\n"));
}

/// The `Born` the tests' stand-in holder writes in its tombstone and lock.
const HOLDER_BORN: &str = "2026-12-02T07:00:00.123456789Z";

/// Plays `db`'s kubexit in `yard`, as far as its dependents can tell: a
/// tombstone that shows a birth and the exclusive lock carrying the same
/// `Born`, held on a read-only descriptor (closing it says nothing to a
/// watch). Closing a writable descriptor of the lock file while it is
/// held then shows what the kernel shows of a dying holder for a moment:
/// the close reported, the lock not yet released.
fn stand_in_holder(yard: &Yard) -> (Flock<File>, std::path::PathBuf) {
    let lock_path = yard.path().join(".db.lock");
    fs::write(&lock_path, HOLDER_BORN).unwrap();
    yard.write("db", &format!("Born: \"{HOLDER_BORN}\"\n"));
    let file = File::open(&lock_path).unwrap();
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| errno)
        .unwrap();
    (lock, lock_path)
}

/// The close of a writable descriptor, reported while the lock stays held.
fn report_a_close(lock_path: &Path) {
    drop(OpenOptions::new().write(true).open(lock_path).unwrap());
}

/// `app` ended (exit status 0) because `db`'s holder was judged lost,
/// and the loss is recorded in `db`'s tombstone in `graveyard`.
fn assert_lost(done: &Finished, graveyard: &Path) {
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(
        &done.stderr,
        "Lost: db's kubexit ended without recording a death",
    );
    assert_contains(&done.stderr, "New death: db");
    let stone = fs::read_to_string(graveyard.join("db")).unwrap();
    assert!(
        stone.contains("Born: ") && stone.contains("Died: "),
        "{stone}"
    );
    assert_contains(&stone, "ExitCode: -1\n");
    assert_contains(&stone, "Reason: \"lost");
}

/// The kernel reports the close of a dying holder's lock file a moment
/// before it releases the lock (up to milliseconds later). A dependent
/// woken by the close finds the lock still held: it must try again, not
/// take the holder for alive until the next event, which never comes.
#[test]
fn a_lock_released_just_after_its_close_was_reported_is_still_noticed() {
    let yard = Yard::private();
    let (holder, lock_path) = stand_in_holder(&yard);
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo up; exec sleep 1000")
        .spawn();
    let pid = app.pid().as_raw();
    app.wait_for_log("Watching graveyard");
    if !util::rest_is_seen(
        "a_lock_released_just_after_its_close_was_reported_is_still_noticed",
        pid,
    ) {
        return;
    }
    // At rest in poll(2): watching, and no earlier try of the lock pending.
    eventually("app at rest, watching db", || at_rest(pid));
    let before = voluntary_switches(pid);
    report_a_close(&lock_path);
    eventually("app woken by the close and asleep again", || {
        voluntary_switches(pid) > before && asleep(pid)
    });
    drop(holder);
    let done = app.finish();
    assert_lost(&done, yard.path());
}

/// The same moment at the other end: the close came before the dependent
/// watched the lock, and the lock was still held when it first tried it.
#[test]
fn a_lock_released_just_after_the_watch_was_armed_is_still_noticed() {
    let yard = Yard::private();
    let (holder, lock_path) = stand_in_holder(&yard);
    report_a_close(&lock_path);
    let inode = fs::metadata(&lock_path).unwrap().ino();
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo up; exec sleep 1000")
        .spawn();
    let pid = app.pid().as_raw();
    eventually("app watching db's lock, and asleep", || {
        !watch_masks(pid, inode).is_empty() && asleep(pid)
    });
    drop(holder);
    let done = app.finish();
    assert_lost(&done, yard.path());
}
