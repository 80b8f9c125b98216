//! A hostile or broken pod: things planted at every name kubexit uses, a
//! name server that never answers, a graveyard whose filesystem is full, an
//! inotify that cannot be had. kubexit is never blocked, never led out of
//! the graveyard, never blind, and its dependents always learn of a death.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{
    Kubexit, Yard, assert_contains, assert_lacks, can_unshare_pid, eventually, is_root, kubexit,
    read_pid, skip,
};

const BORN: &str = "2026-11-24T19:47:52Z";

fn symlink(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

fn fifo(at: &Path) {
    nix::unistd::mkfifo(at, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

#[test]
fn things_planted_at_every_name_kubexit_uses_cannot_block_redirect_or_stop_it() {
    let yard = Yard::new();
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious");
    fs::write(&precious, "precious\n").unwrap();
    // Were it followed, this "lock" would say db's holder is gone.
    let bait = outside.path().join("bait");
    fs::write(&bait, BORN).unwrap();
    yard.write("db", &format!("Born: \"{BORN}\"\n"));
    symlink(&bait, &yard.path().join(".db.lock"));
    fifo(&yard.path().join(".app.lock"));
    // The temporary names a kubexit once made of its pid, 1 as PID 1.
    fs::create_dir(yard.path().join(".kubexit-1-0.tmp")).unwrap();
    fifo(&yard.path().join(".kubexit-1-1.tmp"));
    symlink(&precious, &yard.path().join(".kubexit-1-2.tmp"));

    let mut app = if can_unshare_pid() {
        Kubexit::pid_1("app", &yard)
    } else {
        Kubexit::named("app", &yard)
    };
    let done = app.env("KUBEXIT_DEATH_DEPS", "db").sh("echo started").run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stdout.contains("started"), "{}", done.stderr);
    assert_lacks(&done.stderr, "New death");
    assert_contains(&done.stderr, "cannot hold the liveness lock");
    assert!(yard.read("app").unwrap().contains("ExitCode: 0\n"));
    // Nothing was followed, written through, or removed.
    assert_eq!(fs::read_to_string(&precious).unwrap(), "precious\n");
    assert_eq!(fs::read_to_string(&bait).unwrap(), BORN);
    assert_eq!(yard.read("db").unwrap(), format!("Born: \"{BORN}\"\n"));
    let kind = |name: &str| {
        fs::symlink_metadata(yard.path().join(name))
            .unwrap()
            .file_type()
    };
    assert!(kind(".db.lock").is_symlink());
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind(".app.lock")));
    assert!(kind(".kubexit-1-0.tmp").is_dir());
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind(
        ".kubexit-1-1.tmp"
    )));
    assert!(kind(".kubexit-1-2.tmp").is_symlink());
}

#[test]
fn a_directory_where_the_tombstone_belongs_is_refused_clearly() {
    let yard = Yard::new();
    fs::create_dir(yard.path().join("app")).unwrap();
    let done = Kubexit::named("app", &yard).sh("echo started").run();
    assert_eq!(done.code(), 1, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert_contains(
        &done.stderr,
        "a directory stands where the tombstone belongs",
    );
}

#[test]
fn the_status_view_never_hangs_on_a_fifo_nor_follows_a_symlinked_lock() {
    let yard = Yard::new();
    let outside = tempfile::tempdir().unwrap();
    let bait = outside.path().join("bait");
    fs::write(&bait, BORN).unwrap();
    yard.write("db", &format!("Born: \"{BORN}\"\n"));
    fifo(&yard.path().join(".db.lock"));
    yard.write("cache", &format!("Born: \"{BORN}\"\n"));
    symlink(&bait, &yard.path().join(".cache.lock"));
    let done = kubexit()
        .args(["--status", "--json", "--graveyard"])
        .arg_path(yard.path())
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stdout, r#""name":"db","state":"born""#);
    assert_contains(&done.stdout, r#""name":"cache","state":"born""#);
}

/// A name server on loopback that takes every query and never answers,
/// named in a `resolv.conf` bind-mounted over the system's in a mount
/// namespace of kubexit's own: a probe's name lookup hangs for as long as
/// the resolver's timeout (30 s here).
#[test]
fn a_probe_whose_name_never_resolves_holds_one_lookup_and_never_delays_the_exit() {
    if !is_root() {
        return skip(
            "a_probe_whose_name_never_resolves...",
            "binding port 53 and mounting over /etc/resolv.conf need root",
        );
    }
    let Ok(_silent) = std::net::UdpSocket::bind("127.53.53.53:53") else {
        return skip(
            "a_probe_whose_name_never_resolves...",
            "127.53.53.53:53 is taken",
        );
    };
    let yard = Yard::new();
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    fs::write(
        &resolv,
        "nameserver 127.53.53.53\noptions timeout:30 attempts:1\n",
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec \"$0\" sh -c 'echo up; sleep 1; echo done'",
        resolv.display()
    );
    let started = Instant::now();
    let running = kubexit()
        .env("KUBEXIT_NAME", "db")
        .env("KUBEXIT_GRAVEYARD", yard.path())
        .env("KUBEXIT_READY_PROBE", "tcp://db.example:5432")
        .env("KUBEXIT_READY_PERIOD", "50ms")
        .env("KUBEXIT_READY_TIMEOUT", "200ms")
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .arg_path(&crate::util::kubexit_binary())
        .spawn_self();
    running.wait_for_output("up");
    // unshare and sh exec into kubexit: the pid is kubexit's.
    let tasks = format!("/proc/{}/task", running.pid());
    let mut most = 0;
    while !running.stdout().contains("done") {
        if let Ok(entries) = fs::read_dir(&tasks) {
            most = most.max(entries.count());
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no 'done'");
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(
        &done.stderr,
        "Not ready yet: tcp://db.example:5432: no connection within 200ms",
    );
    // The event loop's thread and one lookup, never more.
    assert!(most <= 2, "{most} threads at once");
    // The child lived a second; a lookup waited for would take thirty.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "exit waited for a lookup: {:?}",
        started.elapsed()
    );
}

/// The graveyard is a small tmpfs, mounted in a mount namespace of the
/// test's own, shared by `db` and its dependent `app`. Once both are born,
/// the filesystem is filled; then db's child exits. Its `Died` cannot go
/// to a new file, yet app must learn of it and stop.
#[test]
fn a_death_on_a_full_graveyard_still_reaches_its_dependents() {
    if !is_root() {
        return skip(
            "a_death_on_a_full_graveyard_still_reaches_its_dependents",
            "mounting a tmpfs needs root",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let graveyard = dir.path().join("small");
    let go = dir.path().join("go");
    fs::create_dir(&graveyard).unwrap();
    let kx = crate::util::kubexit_binary();
    let kx = kx.display();
    let script = format!(
        "{mount}\n\
         export KUBEXIT_GRAVEYARD={g} KUBEXIT_GRACE_PERIOD=10s\n\
         KUBEXIT_NAME=db {kx} sh -c 'while [ ! -e {go} ]; do sleep 0.01; done; exit 3' 2>{d}/db.log &\n\
         db=$!\n\
         KUBEXIT_NAME=app KUBEXIT_DEATH_DEPS=db {kx} sh -c 'exec sleep 1000' 2>{d}/app.log &\n\
         app=$!\n\
         until grep -q Born {g}/db 2>/dev/null && grep -q Born {g}/app 2>/dev/null; do sleep 0.01; done\n\
         dd if=/dev/zero of={g}/filler bs=4k 2>/dev/null\n\
         touch {go}\n\
         wait $db; echo db=$?\n\
         wait $app; echo app=$?\n\
         cat {g}/db\n",
        g = graveyard.display(),
        go = go.display(),
        d = dir.path().display(),
        mount = crate::util::mount_tmpfs(&graveyard, "64k"),
    );
    let (unshare, private) = crate::util::PRIVATE_MOUNTS.split_first().unwrap();
    let output = std::process::Command::new(unshare)
        .args(private)
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = |name| fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(stdout.contains("db=3\n"), "{stdout}{}", log("db.log"));
    assert!(stdout.contains("app=0\n"), "{stdout}{}", log("app.log"));
    assert_contains(&stdout, "ExitCode: 3\n");
    assert!(
        log("app.log").contains("New death: db"),
        "{}",
        log("app.log")
    );
    assert!(
        log("db.log").contains("the graveyard's filesystem is full"),
        "{}",
        log("db.log")
    );
}

/// `db`'s kubexit is SIGKILLed; its dependent runs as another user in a
/// sticky graveyard, where it may not replace db's tombstone, so the loss
/// it sees cannot be recorded. It must act on it all the same.
#[test]
fn a_loss_is_acted_on_even_when_it_cannot_be_recorded() {
    if !is_root() {
        return skip(
            "a_loss_is_acted_on_even_when_it_cannot_be_recorded",
            "running the dependent as another user needs root",
        );
    }
    let yard = Yard::new();
    fs::set_permissions(yard.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let pids = tempfile::tempdir().unwrap();
    let db_child = pids.path().join("db-child");
    let db = Kubexit::named("db", &yard)
        .sh(&format!(
            "echo $$ > {}; exec sleep 1000",
            db_child.display()
        ))
        .spawn();
    let db_child = read_pid(&db_child);
    let mut app = Kubexit::named("app", &yard);
    app.env("KUBEXIT_DEATH_DEPS", "db")
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
        .arg_path(&crate::util::kubexit_binary())
        .sh("echo up; exec sleep 1000");
    let app = app.spawn_self();
    app.wait_for_output("up");
    db.signal(Signal::SIGKILL);
    let done = app.finish();
    let _ = nix::sys::signal::kill(db_child, Signal::SIGKILL);
    drop(db.finish());
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "acting on the loss all the same");
    assert_contains(&done.stderr, "New death: db");
    assert!(!yard.read("db").unwrap().contains("Died"));
}

/// In a user namespace whose inotify instance limit is 0, kubexit cannot
/// watch the graveyard: it says so, reads it on a timer, and still sees
/// the death.
#[test]
fn without_inotify_kubexit_polls_and_still_sees_the_death() {
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip(
            "without_inotify_kubexit_polls_and_still_sees_the_death",
            "user namespaces are not available",
        );
    }
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .args([
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_inotify_instances && exec \"$0\" sh -c 'echo up; exec sleep 1000'",
        ])
        .arg_path(&crate::util::kubexit_binary())
        .spawn_self();
    running.wait_for_output("up");
    running.wait_for_log("cannot watch the graveyard");
    yard.bury("db");
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "reading it every 100ms instead");
    assert_contains(&done.stderr, "New death: db");
    eventually("db's death seen", || {
        yard.read("app").is_some_and(|s| s.contains("Died"))
    });
}
