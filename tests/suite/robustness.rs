//! Bad input, faults and load: whatever a shared directory, a signal storm
//! or a broken child throws at kubexit, it says so clearly, exits with a
//! documented status, and loses nothing.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{self, Kubexit, Yard, assert_contains, eventually, is_root, kubexit, read_pid};

/// kubexit as an unprivileged user, so that permissions apply even when
/// the tests run as root (as CI does).
fn unprivileged(yard: &Yard, name: &str) -> Kubexit {
    let mut k = Kubexit::named(name, yard);
    if is_root() {
        k.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
        .arg_path(&crate::util::kubexit_binary());
    }
    k
}

/// Runs what `unprivileged` built: as root, setpriv is the program and
/// execs kubexit as nobody; otherwise kubexit runs as the user already.
fn run_unprivileged(k: &mut Kubexit) -> util::Finished {
    if is_root() { k.run_self() } else { k.run() }
}

#[test]
fn a_read_only_graveyard_means_the_child_never_starts() {
    let yard = Yard::new();
    let graveyard = yard.path().join("ro");
    fs::create_dir(&graveyard).unwrap();
    fs::set_permissions(&graveyard, fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(yard.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut k = unprivileged(&yard, "app");
    k.env("KUBEXIT_GRAVEYARD", &graveyard).sh("echo started");
    let done = run_unprivileged(&mut k);
    assert_eq!(done.code(), 1, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert_contains(&done.stderr, "cannot write the tombstone");
    assert_contains(&done.stderr, "needs write permission");
}

#[test]
fn an_unreadable_dependency_tombstone_is_reported_and_is_not_a_death() {
    let yard = Yard::new();
    fs::set_permissions(yard.path(), fs::Permissions::from_mode(0o777)).unwrap();
    yard.bury("db");
    fs::set_permissions(yard.stone_path("db"), fs::Permissions::from_mode(0o000)).unwrap();
    let mut k = unprivileged(&yard, "app");
    k.env("KUBEXIT_DEATH_DEPS", "db").sh("echo started");
    let done = run_unprivileged(&mut k);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stdout.contains("started"));
    assert_contains(&done.stderr, "Permission denied");
}

#[test]
fn a_graveyard_deleted_while_running_is_created_again_and_deaths_still_seen() {
    let yard = Yard::new();
    let graveyard = yard.path().join("graveyard");
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRAVEYARD", &graveyard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo up; exec sleep 1000")
        .spawn();
    running.wait_for_output("up");
    fs::remove_dir_all(&graveyard).unwrap();
    running.wait_for_log("was removed or moved away; creating it again");
    eventually("app's record restored", || graveyard.join("app").is_file());
    fs::write(graveyard.join("db"), "Died: \"2026-11-24T19:47:53Z\"\n").unwrap();
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "New death: db");
    let stone = fs::read_to_string(graveyard.join("app")).unwrap();
    assert!(
        stone.contains("Born: ") && stone.contains("Died: "),
        "{stone}"
    );
}

/// Without dependencies kubexit does not watch the graveyard; a graveyard
/// removed under it is created again when the death is recorded.
#[test]
fn without_dependencies_a_deleted_graveyard_still_gets_the_death_record() {
    let yard = Yard::new();
    let graveyard = yard.path().join("graveyard");
    let script = format!(
        "echo up; while [ -d '{}' ]; do sleep 0.01; done; exit 7",
        graveyard.display()
    );
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRAVEYARD", &graveyard)
        .sh(&script)
        .spawn();
    running.wait_for_output("up");
    assert!(!running.stderr().contains("Watching graveyard"));
    fs::remove_dir_all(&graveyard).unwrap();
    let done = running.finish();
    assert_eq!(done.code(), 7, "{}", done.stderr);
    assert_contains(&done.stderr, "was removed; creating it again");
    let stone = fs::read_to_string(graveyard.join("app")).unwrap();
    assert!(
        stone.contains("Died: ") && stone.contains("ExitCode: 7"),
        "{stone}"
    );
}

#[test]
fn values_that_are_not_utf8_exit_2_naming_the_variable() {
    let yard = Yard::new();
    for (var, value) in [
        ("KUBEXIT_NAME", &b"app\xff"[..]),
        ("KUBEXIT_DEATH_DEPS", b"db,\xfe"),
        ("KUBEXIT_GRACE_PERIOD", b"3\xffs"),
    ] {
        let done = Kubexit::named("app", &yard)
            .env(var, OsStr::from_bytes(value))
            .args(["true"])
            .run();
        assert_eq!(done.code(), 2, "{var}: {}", done.stderr);
        assert!(
            done.stderr.contains(var) && done.stderr.contains("UTF-8"),
            "{}",
            done.stderr
        );
    }
}

#[test]
fn durations_that_overflow_and_an_empty_command_exit_2() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRACE_PERIOD", "9223372036854775808ns")
        .args(["true"])
        .run();
    assert_eq!(done.code(), 2);
    assert_contains(&done.stderr, "too large");
    let done = Kubexit::named("app", &yard).args([""]).run();
    assert_eq!(done.code(), 2);
    assert_contains(&done.stderr, "empty string");
}

/// 1,000 signals at kubexit in a burst: it survives, and the child gets
/// every real-time signal (the kernel queues those one by one) and at least
/// one of the classic ones (the kernel coalesces those).
#[test]
fn a_burst_of_a_thousand_signals_is_survived_and_forwarded() {
    let yard = Yard::new();
    let report = yard.path().join("report");
    // The child takes its signals from the queue one by one (sigwaitinfo):
    // Python's ordinary handlers would coalesce them.
    let script = format!(
        "import signal\n\
         rt, usr1 = signal.SIGRTMIN + 1, signal.SIGUSR1\n\
         wanted = {{rt, usr1, signal.SIGTERM}}\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, wanted)\n\
         counts = {{rt: 0, usr1: 0}}\n\
         print('up', flush=True)\n\
         while True:\n\
         \x20   info = signal.sigwaitinfo(wanted)\n\
         \x20   if info.si_signo == signal.SIGTERM: break\n\
         \x20   counts[info.si_signo] += 1\n\
         # The kernel hands out lower signals first: drain what TERM overtook.\n\
         while True:\n\
         \x20   info = signal.sigtimedwait({{rt, usr1}}, 0)\n\
         \x20   if info is None: break\n\
         \x20   counts[info.si_signo] += 1\n\
         open('{report}', 'w').write('%d %d' % (counts[rt], counts[usr1]))\n",
        report = report.display()
    );
    let running = Kubexit::named("app", &yard)
        .args(["python3", "-c", &script])
        .spawn();
    running.wait_for_output("up");
    let rtmin = nix::libc::SIGRTMIN() + 1;
    for i in 0..1000 {
        // SAFETY: kill has no memory-safety preconditions.
        let signal = if i % 2 == 0 {
            rtmin
        } else {
            nix::libc::SIGUSR1
        };
        assert_eq!(
            unsafe { nix::libc::kill(running.pid().as_raw(), signal) },
            0
        );
    }
    running.wait_for_log("Received signal: SIGRTMIN+1");
    eventually("all 500 real-time signals forwarded", || {
        running
            .stderr()
            .matches("Received signal: SIGRTMIN+1")
            .count()
            == 500
    });
    running.signal(Signal::SIGTERM);
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let counts = fs::read_to_string(&report).unwrap();
    let (rt, usr1) = counts.trim().split_once(' ').unwrap();
    assert_eq!(rt, "500", "real-time signals lost on the way to the child");
    assert!(usr1.parse::<u32>().unwrap() >= 1);
}

/// 200 kubexits in one graveyard: a chain of 100 (each depends on the one
/// before) and a fan-out of 99 from one root. When the root ends, all are
/// stopped, every tombstone records a death, and nothing hangs.
#[test]
fn two_hundred_instances_in_a_chain_and_a_fan_out_all_stop() {
    let yard = Yard::new();
    let mut running = Vec::new();
    let spawn = |name: &str, deps: &str| {
        let mut k = Kubexit::named(name, &yard);
        k.env("KUBEXIT_GRACE_PERIOD", "5s");
        if !deps.is_empty() {
            k.env("KUBEXIT_DEATH_DEPS", deps);
        }
        k.args(["sleep", "1000"]).spawn()
    };
    for i in 1..=100 {
        let before = if i == 1 {
            "root".to_owned()
        } else {
            format!("chain{}", i - 1)
        };
        running.push((format!("chain{i}"), spawn(&format!("chain{i}"), &before)));
    }
    for i in 1..=99 {
        running.push((format!("fan{i}"), spawn(&format!("fan{i}"), "root")));
    }
    for (name, _) in &running {
        yard.wait_for(name, "Born: ");
    }
    let root = Kubexit::named("root", &yard).args(["true"]).run();
    assert_eq!(root.code(), 0);
    for (name, kubexit) in running {
        let done = kubexit.finish();
        assert_eq!(done.code(), 0, "{name}: {}", done.stderr);
        let stone = yard.read(&name).unwrap();
        assert!(stone.contains("Died: "), "{name}: {stone}");
    }
}

/// The graveyard is a 64 KiB tmpfs (in a mount namespace of the test's
/// own); the child fills it before it exits, so the death cannot be
/// written. kubexit says so, and still exits with the child's status.
#[test]
fn a_full_filesystem_is_said_clearly_and_the_exit_status_is_not_lost() {
    if !is_root() {
        return crate::util::skip(
            "a_full_filesystem_is_said_clearly_and_the_exit_status_is_not_lost",
            "mounting a tmpfs needs root",
        );
    }
    let yard = Yard::new();
    let graveyard = yard.path().join("small");
    fs::create_dir(&graveyard).unwrap();
    let kubexit_bin = crate::util::kubexit_binary();
    let kubexit_bin = kubexit_bin.display();
    let script = format!(
        "{mount}; exec env KUBEXIT_GRAVEYARD={dir} {kubexit_bin} \
         sh -c 'dd if=/dev/zero of={dir}/filler bs=4k 2>/dev/null; exit 7'",
        dir = graveyard.display(),
        mount = crate::util::mount_tmpfs(&graveyard, "64k"),
    );
    let done = kubexit()
        .env("KUBEXIT_NAME", "app")
        .args(crate::util::PRIVATE_MOUNTS)
        .args([&script])
        .run_self();
    assert_eq!(done.code(), 7, "{}", done.stderr);
    assert_contains(&done.stderr, "the graveyard's filesystem is full");
    assert_contains(&done.stderr, "Child Exited(7)");
}

#[test]
fn a_child_that_double_forks_a_daemon_leaves_nothing_running() {
    let yard = Yard::new();
    let pids = yard.path().join("daemon");
    let done = Kubexit::named("app", &yard)
        .sh(&format!(
            "(setsid sh -c 'echo $$ > {0}; exec sleep 1000' &) ; \
             while [ ! -s {0} ]; do sleep 0.01; done",
            pids.display()
        ))
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let daemon: Pid = read_pid(&pids);
    let gone = kill(daemon, None).is_err();
    let _ = kill(daemon, Signal::SIGKILL);
    assert!(gone, "the daemon outlived kubexit");
}

#[test]
fn nothing_outside_the_graveyard_is_written_through_a_planted_link() {
    let yard = Yard::new();
    let graveyard = yard.path().join("graveyard");
    fs::create_dir(&graveyard).unwrap();
    let victim = yard.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    // Links where kubexit's own tombstone and lock file go.
    std::os::unix::fs::symlink(&victim, graveyard.join("app")).unwrap();
    std::os::unix::fs::symlink(&victim, graveyard.join(".app.lock")).unwrap();
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRAVEYARD", &graveyard)
        .args(["true"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    // The tombstone replaced the link by a file of its own.
    assert!(
        fs::symlink_metadata(graveyard.join("app"))
            .unwrap()
            .is_file()
    );
    let _ = Command::new("true").status();
}
