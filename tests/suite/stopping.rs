//! The stop sequence: each process gets the stop signal once, newcomers
//! get it when they appear, one deadline counted from the first stop
//! signal, then one SIGKILL sweep; and signals the kernel raised for
//! kubexit's own writes (a broken stderr) are never passed on.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{Finished, Kubexit, Yard, alive, eventually, read_pid, stat_field};

/// The grace period of these tests, and how much longer than it a stop may
/// take on a loaded machine (reaping, scheduling). Restarting the grace
/// period, as kubexit once did, takes at least half of it again.
const GRACE: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(900);

/// A Python program at `dir/NAME` that, once its handler is in place,
/// writes its pid to `dir/NAME.pid`, then appends a line to `dir/NAME.log`
/// for every SIGTERM (exiting after it when `exits`), or ignores SIGTERM
/// when `log` is false. It never forks: every process the stop sequence
/// meets is one the test knows.
fn grandchild(dir: &Path, name: &str, log: bool, exits: bool) -> String {
    let script = dir.join(format!("{name}.py"));
    let handler = if log {
        format!(
            "def on_term(*_):\n    open({log:?}, 'a').write('TERM\\n')\n    {exit}\n\
             signal.signal(signal.SIGTERM, on_term)\n",
            log = dir.join(format!("{name}.log")).display().to_string(),
            exit = if exits { "sys.exit(0)" } else { "pass" },
        )
    } else {
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n".to_owned()
    };
    fs::write(
        &script,
        format!(
            "import os, signal, sys, time\n{handler}\
             signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])\n\
             open({pid:?}, 'w').write(f'{{os.getpid()}}\\n')\n\
             while True:\n    time.sleep(0.1)\n",
            pid = dir.join(format!("{name}.pid")).display().to_string(),
        ),
    )
    .unwrap();
    format!("python3 {}", script.display())
}

/// Runs `app` (death dependency `db`, grace period [`GRACE`]) with
/// `child`, waits until `ready` exists, buries `db`, and returns how long
/// kubexit took from the death to its exit.
fn stop_for_death(yard: &Yard, child: &str, ready: &Path) -> (Finished, Duration) {
    let running = Kubexit::named("app", yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .env("KUBEXIT_GRACE_PERIOD", "2s")
        .env("KUBEXIT_LOG_LEVEL", "debug")
        .sh(child)
        .spawn();
    eventually("the grandchild to start", || ready.exists());
    running.wait_for_output("up");
    let died = Instant::now();
    yard.bury("db");
    let done = running.finish();
    (done, died.elapsed())
}

#[test]
fn a_grandchild_gets_the_stop_signal_once_and_the_stop_lasts_the_grace_period_at_most() {
    let yard = Yard::new();
    let dir = tempfile::tempdir().unwrap();
    let counter = grandchild(dir.path(), "counter", true, false);
    let (done, took) = stop_for_death(
        &yard,
        &format!("{counter} & echo up; wait"),
        &dir.path().join("counter.pid"),
    );
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let counted = fs::read_to_string(dir.path().join("counter.log")).unwrap_or_default();
    assert_eq!(counted, "TERM\n", "{}", done.stderr);
    assert!(took >= GRACE, "stopped in {took:?}: {}", done.stderr);
    assert!(
        took < GRACE + SLACK,
        "the stop took {took:?}, more than the grace period: {}",
        done.stderr
    );
    let pid = read_pid(&dir.path().join("counter.pid"));
    assert!(!alive(pid), "the grandchild outlived kubexit");
}

#[test]
fn a_child_and_grandchild_that_ignore_the_stop_signal_are_killed_when_the_grace_period_ends() {
    let yard = Yard::new();
    let dir = tempfile::tempdir().unwrap();
    let ignorer = grandchild(dir.path(), "ignorer", false, false);
    let (done, took) = stop_for_death(
        &yard,
        &format!("trap '' TERM; {ignorer} & echo up; while :; do sleep 0.1; done"),
        &dir.path().join("ignorer.pid"),
    );
    // The child itself was killed: SIGKILL, 137 in the tombstone; kubexit
    // stopped it on purpose, so it exits 0.
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(yard.read("app").unwrap().contains("ExitCode: 137\n"));
    assert!(took >= GRACE && took < GRACE + SLACK, "took {took:?}");
    assert!(!alive(read_pid(&dir.path().join("ignorer.pid"))));
}

#[test]
fn a_process_that_appears_after_the_stop_signal_gets_it_when_it_appears() {
    let yard = Yard::new();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    // The child holds SIGTERM blocked (pending, not lost) and starts `late`
    // only when told to, after the stop signal; `late` inherits the mask,
    // so a SIGTERM sent to it before its handler is in place waits for it.
    grandchild(dir.path(), "late", true, true);
    let child = format!(
        "import signal, subprocess, os, time\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n\
         print('up', flush=True)\n\
         while not os.path.exists({go:?}): time.sleep(0.01)\n\
         subprocess.run(['python3', {late:?}])\n",
        go = go.display().to_string(),
        late = dir.path().join("late.py").display().to_string(),
    );
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .env("KUBEXIT_GRACE_PERIOD", "10s")
        .args(["python3", "-c", &child])
        .spawn();
    running.wait_for_output("up");
    let died = Instant::now();
    yard.bury("db");
    running.wait_for_log("Terminating child process...");
    fs::write(&go, "").unwrap();
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let told = fs::read_to_string(dir.path().join("late.log")).unwrap_or_default();
    assert_eq!(told, "TERM\n", "{}", done.stderr);
    // It was told, not killed at the end of the grace period.
    assert!(died.elapsed() < Duration::from_secs(10), "{}", done.stderr);
}

#[test]
fn a_broken_stderr_never_kills_the_child() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        // The child's own stderr goes elsewhere: a write of its own to the
        // broken pipe would earn it a SIGPIPE of its own.
        .sh("exec 2>/dev/null; trap 'echo got USR1' USR1; echo up; while :; do sleep 0.05; done")
        .spawn_with_closable_stderr();
    running.wait_for_output("up");
    running.wait_for_log("Starting: ");
    running.close_stderr();
    // kubexit logs the signal it forwards: that write finds no reader,
    // and the kernel answers kubexit with SIGPIPE.
    running.signal(Signal::SIGUSR1);
    running.wait_for_output("got USR1");
    running.signal(Signal::SIGUSR1);
    eventually("the second USR1", || {
        running.stdout().matches("got USR1").count() == 2
    });
    running.signal(Signal::SIGTERM);
    let done = running.finish();
    // Killed by the SIGTERM it was sent (143), not by a SIGPIPE (141).
    assert_eq!(done.code(), 143, "{}", done.stdout);
    assert!(yard.read("app").unwrap().contains("ExitCode: 143\n"));
}

#[test]
fn a_sigpipe_raised_by_kubexits_own_write_is_never_forwarded() {
    let yard = Yard::new();
    let dir = tempfile::tempdir().unwrap();
    let pipes = dir.path().join("pipes");
    let running = Kubexit::named("app", &yard)
        .sh(&format!(
            "exec 2>/dev/null; trap 'echo PIPE >> {}' PIPE; trap 'echo got USR1' USR1; \
             trap 'echo got USR2' USR2; echo up; while :; do sleep 0.05; done",
            pipes.display()
        ))
        .spawn_with_closable_stderr();
    running.wait_for_output("up");
    running.wait_for_log("Starting: ");
    running.close_stderr();
    running.signal(Signal::SIGUSR1);
    running.wait_for_output("got USR1");
    // Signals are read in order: once USR2 is through, the SIGPIPE that
    // logging USR1 raised has been read too.
    running.signal(Signal::SIGUSR2);
    running.wait_for_output("got USR2");
    running.signal(Signal::SIGTERM);
    let done = running.finish();
    assert_eq!(done.code(), 143, "{}", done.stdout);
    assert!(!pipes.exists(), "the child got kubexit's SIGPIPE");
}

/// The nice level of a process, or of the test itself for `self`.
fn nice_of(pid: &str) -> i32 {
    stat_field(pid, 19).unwrap().parse().unwrap()
}

#[test]
fn after_the_stop_signal_kubexit_lowers_its_own_priority_and_never_its_childs() {
    let yard = Yard::new();
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    let release = dir.path().join("release");
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh(&format!(
            "trap 'echo got TERM' TERM; echo $$ > {}; echo up; \
             while [ ! -e {} ]; do sleep 0.05; done",
            child_pid.display(),
            release.display()
        ))
        .spawn();
    running.wait_for_output("up");
    let own = nice_of("self");
    let kubexit = running.pid().to_string();
    let child = read_pid(&child_pid).to_string();
    assert_eq!(nice_of(&kubexit), own, "kubexit's priority before the stop");
    yard.bury("db");
    running.wait_for_output("got TERM");
    let lowered = (own + 10).min(19);
    eventually("kubexit to lower its priority", || {
        nice_of(&kubexit) == lowered
    });
    assert_eq!(nice_of(&child), own, "the child keeps its priority");
    fs::write(&release, "").unwrap();
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
}

#[test]
fn with_its_priority_lowered_kubexit_still_kills_on_time_a_child_that_keeps_the_cpus_busy() {
    let yard = Yard::new();
    let dir = tempfile::tempdir().unwrap();
    let spinning = dir.path().join("spinning");
    // Two processes that ignore the stop signal and never sleep: on a
    // two-core machine, every CPU is busy at the default priority while
    // kubexit, at its lowered one, waits for the deadline.
    let (done, took) = stop_for_death(
        &yard,
        &format!(
            "trap '' TERM; (touch {}; while :; do :; done) & echo up; while :; do :; done",
            spinning.display()
        ),
        &spinning,
    );
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(yard.read("app").unwrap().contains("ExitCode: 137\n"));
    assert!(took >= GRACE, "stopped in {took:?}: {}", done.stderr);
    assert!(
        took < GRACE + SLACK,
        "the SIGKILL came {took:?} after the death, more than the grace period: {}",
        done.stderr
    );
}
