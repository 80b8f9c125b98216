//! Signals sent to kubexit: forwarded to the child's group, with SIGKILL
//! after the grace period for stop signals, and a stop signal before the
//! child starts means it never does.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, raise, sigprocmask};

use crate::util::{Kubexit, Yard, assert_contains, assert_lacks};

#[test]
fn hup_usr1_and_int_reach_the_child() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .sh(
            "trap 'echo got HUP' HUP; trap 'echo got USR1' USR1; trap 'echo got INT; exit 7' INT; \
             echo up; while :; do sleep 0.05; done",
        )
        .spawn();
    running.wait_for_output("up");
    running.signal(Signal::SIGHUP);
    running.wait_for_output("got HUP");
    running.signal(Signal::SIGUSR1);
    running.wait_for_output("got USR1");
    running.signal(Signal::SIGINT);
    let done = running.finish();
    assert_contains(&done.stdout, "got INT");
    assert_eq!(done.code(), 7);
    assert_contains(&done.stderr, "Received signal: SIGHUP");
}

#[test]
fn sigterm_stops_the_child_and_kubexit_exits_with_its_status() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .sh("echo up; exec sleep 1000")
        .spawn();
    running.wait_for_output("up");
    running.signal(Signal::SIGTERM);
    let done = running.finish();
    assert_eq!(done.code(), 143);
    assert!(yard.read("app").unwrap().contains("ExitCode: 143\n"));
}

#[test]
fn a_forwarded_stop_signal_is_followed_by_sigkill_after_the_grace_period() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRACE_PERIOD", "200ms")
        .sh("trap 'echo ignoring' TERM; echo up; while :; do sleep 0.05; done")
        .spawn();
    running.wait_for_output("up");
    running.signal(Signal::SIGTERM);
    let done = running.finish();
    assert!(done.stdout.contains("ignoring"));
    assert_eq!(done.code(), 137, "{}", done.stderr);
}

/// kubexit is started with SIGTERM already pending (blocked and raised in
/// the forked process; pending signals survive exec), so it arrives before
/// any child could have started.
#[test]
fn a_stop_signal_before_the_child_starts_means_it_never_starts() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .before_exec(|| {
            let mut term = SigSet::empty();
            term.add(Signal::SIGTERM);
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&term), None)?;
            raise(Signal::SIGTERM)?;
            Ok(())
        })
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 143, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    let stone = yard.read("app").unwrap();
    assert_lacks(&stone, "Born");
    assert_contains(&stone, "ExitCode: -1\n");
}

#[test]
fn the_child_starts_with_no_signal_blocked() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .args(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])
        .run();
    assert_eq!(done.code(), 0);
    assert_contains(&done.stdout, "SigBlk:\t0000000000000000");
}
