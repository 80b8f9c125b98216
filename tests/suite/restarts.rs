//! Restarts in place (`KUBEXIT_RESTART_POLICY`, docs/jobs.md): a
//! dependency that the kubelet starts again in the same pod has not died
//! for good. Its lives here are real kubexits, one after another, under
//! the same name in one graveyard, as a kubelet's restarts of one container
//! are; what the kubelet does on a real node is `cluster::restarts`.

use crate::util::{Kubexit, Running, Yard, assert_contains, assert_lacks};

/// One life of the container `name`: kubexit running `script`, to its end.
fn life(yard: &Yard, name: &str, policy: &str, script: &str) -> crate::util::Finished {
    Kubexit::named(name, yard)
        .env("KUBEXIT_RESTART_POLICY", policy)
        .sh(script)
        .run()
}

/// A sidecar whose death dependency is `main`, under `policy`, up and
/// running.
fn sidecar(yard: &Yard, policy: &str) -> Running {
    let running = Kubexit::named("sidecar", yard)
        .env("KUBEXIT_DEATH_DEPS", "main")
        .env("KUBEXIT_RESTART_POLICY", policy)
        .sh("echo up; exec sleep 1000")
        .spawn();
    running.wait_for_output("up");
    running.wait_for_log("Watching graveyard");
    running
}

#[test]
fn under_on_failure_a_failed_main_stops_nothing_and_its_success_after_a_restart_stops_the_sidecar()
{
    let yard = Yard::new();
    let sidecar = sidecar(&yard, "OnFailure");
    let first = life(&yard, "main", "OnFailure", "exit 1");
    assert_eq!(first.code(), 1, "{}", first.stderr);
    // The stop would come before this line: a death that stops is acted on
    // first, said after.
    sidecar.wait_for_log(
        "main ended with status 1, and the kubelet starts it again (restartPolicy OnFailure): \
         not a death for good, the child keeps running",
    );
    assert_lacks(&sidecar.stderr(), "Terminating child process");
    let second = life(&yard, "main", "OnFailure", "true");
    assert_eq!(second.code(), 0, "{}", second.stderr);
    let done = sidecar.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(
        done.stderr.matches("New death: main").count(),
        1,
        "{}",
        done.stderr
    );
    assert_contains(&done.stderr, "Terminating child process");
    assert_contains(&yard.read("sidecar").unwrap(), "stopped because main died");
}

#[test]
fn under_always_no_end_of_a_dependency_stops_the_sidecar() {
    let yard = Yard::new();
    let sidecar = sidecar(&yard, "Always");
    for script in ["exit 3", "true"] {
        life(&yard, "main", "Always", script);
    }
    sidecar.wait_for_log("main ended with status 0, and the kubelet starts it again");
    let log = sidecar.stderr();
    assert_eq!(log.matches("main ended with status").count(), 2, "{log}");
    assert_lacks(&log, "New death");
    sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    let done = sidecar.finish();
    assert_eq!(
        done.code(),
        143,
        "stopped by the pod, not by main: {}",
        done.stderr
    );
}

#[test]
fn without_a_restart_policy_every_death_is_for_good_as_upstream() {
    let yard = Yard::new();
    let sidecar = Kubexit::named("sidecar", &yard)
        .env("KUBEXIT_DEATH_DEPS", "main")
        .sh("echo up; exec sleep 1000")
        .spawn();
    sidecar.wait_for_output("up");
    life(&yard, "main", "Never", "exit 1");
    let done = sidecar.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "New death: main");
}

/// main, proxy (stopped when main dies) and shipper (stopped when the proxy
/// dies), under OnFailure. The proxy's child ends with 143, but its kubexit
/// with 0, which is what its container ends with and the kubelet restarts
/// by: its tombstone says so, and the shipper is stopped too, instead of
/// waiting forever for a restart that never comes.
#[test]
fn a_sidecar_stopped_on_purpose_is_done_for_good_and_stops_its_own_dependents() {
    let yard = Yard::new();
    let chain = |name: &str, dependency: &str| {
        let running = Kubexit::named(name, &yard)
            .env("KUBEXIT_DEATH_DEPS", dependency)
            .env("KUBEXIT_RESTART_POLICY", "OnFailure")
            .sh("echo up; exec sleep 1000")
            .spawn();
        running.wait_for_output("up");
        running
    };
    let proxy = chain("proxy", "main");
    let shipper = chain("shipper", "proxy");
    life(&yard, "main", "OnFailure", "true");
    let proxy = proxy.finish();
    assert_eq!(proxy.code(), 0, "{}", proxy.stderr);
    let stone = yard.read("proxy").unwrap();
    assert_contains(&stone, "ExitCode: 143\nExitStatus: 0\n");
    let shipper = shipper.finish();
    assert_eq!(shipper.code(), 0, "{}", shipper.stderr);
    assert_contains(&shipper.stderr, "New death: proxy");
}

#[test]
fn a_birth_dependency_that_fails_is_waited_for_until_its_next_life_is_ready() {
    let yard = Yard::new();
    let db = life(&yard, "db", "OnFailure", "exit 1");
    assert_eq!(db.code(), 1, "{}", db.stderr);
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db")
        .env("KUBEXIT_RESTART_POLICY", "OnFailure")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1m")
        .sh("echo started")
        .spawn();
    app.wait_for_log("db (dead, to be restarted: restartPolicy OnFailure)");
    assert_eq!(app.stdout(), "", "started before db was ready");
    let next = Kubexit::named("db", &yard)
        .env("KUBEXIT_RESTART_POLICY", "OnFailure")
        .sh("exec sleep 1000")
        .spawn();
    let app = app.finish();
    assert_eq!(app.code(), 0, "{}", app.stderr);
    assert_eq!(app.stdout, "started\n");
    drop(next);
}

#[test]
fn a_death_dependency_that_failed_before_the_start_does_not_keep_the_child_from_starting() {
    let yard = Yard::new();
    life(&yard, "main", "OnFailure", "exit 1");
    let sidecar = sidecar(&yard, "OnFailure");
    assert_lacks(&sidecar.stderr(), "already dead");
    drop(sidecar);
}

#[test]
fn a_restart_policy_that_is_none_of_the_pods_is_refused() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_RESTART_POLICY", "sometimes")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert_contains(
        &done.stderr,
        "KUBEXIT_RESTART_POLICY (--restart-policy): \"sometimes\" is not a restartPolicy; write \
         the pod's: Never, OnFailure or Always",
    );
    assert_eq!(done.stdout, "");
}
