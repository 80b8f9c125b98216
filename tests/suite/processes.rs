//! The child as a process: its stdio, its exit status, what it leaves
//! behind (and what kubexit gives up on), and kubexit as PID 1.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::util::{
    Kubexit, Yard, alive, assert_contains, assert_lacks, can_unshare_pid, is_root, read_pid, skip,
    stat_field,
};

#[test]
fn stdout_carries_exactly_the_childs_output() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .sh("echo one; echo two >&2; printf three")
        .run();
    assert_eq!(done.code(), 0);
    assert_eq!(done.stdout, "one\nthree");
    assert!(done.stderr.contains("two\n"));
    assert!(done.stderr.contains("Starting: "), "kubexit logs to stderr");
}

#[test]
fn the_child_inherits_the_environment_and_stdin() {
    let yard = Yard::new();
    let input = yard.path().join("input");
    fs::write(&input, "from stdin\n").unwrap();
    let mut k = Kubexit::named("app", &yard);
    k.env("GREETING", "hello")
        .sh("echo \"$GREETING $KUBEXIT_NAME\"; cat");
    let done = k.stdin_file(&input).run();
    assert_eq!(done.stdout, "hello app\nfrom stdin\n");
}

#[test]
fn exit_codes_pass_through() {
    for code in [0, 1, 3, 42, 255] {
        let yard = Yard::new();
        let done = Kubexit::named("app", &yard)
            .sh(&format!("exit {code}"))
            .run();
        assert_eq!(done.code(), code);
        assert!(
            yard.read("app")
                .unwrap()
                .contains(&format!("ExitCode: {code}\n"))
        );
    }
}

#[test]
fn a_child_killed_by_a_signal_exits_128_plus_n() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard).sh("kill -KILL $$").run();
    assert_eq!(done.code(), 137);
    assert!(yard.read("app").unwrap().contains("ExitCode: 137\n"));
}

#[test]
fn command_not_found_exits_127_and_not_executable_126() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .args(["no-such-command-kubexit"])
        .run();
    assert_eq!(done.code(), 127, "{}", done.stderr);
    assert_contains(&done.stderr, "command not found");
    let stone = yard.read("app").unwrap();
    assert!(
        !stone.contains("Born") && stone.contains("ExitCode: -1\n"),
        "{stone}"
    );

    let script = yard.path().join("not-executable");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let done = Kubexit::named("app2", &yard).arg_path(&script).run();
    assert_eq!(done.code(), 126, "{}", done.stderr);
    assert_contains(&done.stderr, "permission denied");
}

#[test]
fn stopping_sh_with_a_background_job_leaves_no_process_behind() {
    let yard = Yard::new();
    let pids = yard.path().join("pids");
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh(&format!("sleep 1000 & echo $! > {}; wait", pids.display()))
        .spawn();
    let sleeper = read_pid(&pids);
    yard.bury("db");
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!alive(sleeper), "sleep 1000 survived");
}

#[test]
fn what_the_child_leaves_behind_is_stopped_when_it_exits() {
    let yard = Yard::new();
    let pids = yard.path().join("pids");
    // The shell exits at once; its background job stays in the group, and
    // a double-forked daemon escapes the group into a session of its own.
    let script = format!(
        "sleep 1000 & echo $! > {0}.group; setsid sh -c 'echo $$ > {0}.daemon; exec sleep 1000' & \
         while [ ! -s {0}.daemon ]; do sleep 0.01; done; exit 4",
        pids.display()
    );
    let done = Kubexit::named("app", &yard).sh(&script).run();
    assert_eq!(done.code(), 4, "{}", done.stderr);
    let in_group = read_pid(&pids.with_extension("group"));
    let daemon = read_pid(&pids.with_extension("daemon"));
    assert!(!alive(in_group), "the background job survived");
    assert!(!alive(daemon), "the daemon survived");
    assert_contains(&done.stderr, "Stopping processes the child left behind");
}

#[test]
fn leftovers_that_ignore_the_stop_signal_are_killed_after_the_grace_period() {
    let yard = Yard::new();
    let pids = yard.path().join("pids");
    let script = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {0}; while :; do sleep 0.05; done' & \
         while [ ! -s {0} ]; do sleep 0.01; done",
        pids.display()
    );
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRACE_PERIOD", "200ms")
        .sh(&script)
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!alive(read_pid(&pids)));
    assert_contains(&done.stderr, "Killing processes the child left behind");
}

/// Under `unshare --pid`, kubexit is PID 1 of a new pid namespace and
/// inherits every orphan; it must reap them all. The child orphans a
/// process that exits later, then counts zombies in the namespace.
#[test]
fn as_pid_1_kubexit_reaps_orphans() {
    if !can_unshare_pid() {
        assert!(!is_root(), "unshare --pid failed although running as root");
        return skip("as_pid_1_kubexit_reaps_orphans", "unshare --pid needs root");
    }
    let yard = Yard::new();
    let script = "sh -c 'sleep 0.2 & exit 0'; sleep 1; \
                  echo pid $$; \
                  echo zombies $(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)";
    let done = Kubexit::named("app", &yard)
        .args(["unshare", "--pid", "--fork", "--mount-proc"])
        .arg_path(&crate::util::kubexit_binary())
        .sh(script)
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(
        done.stdout.contains("pid 2\n"),
        "kubexit was not PID 1: {}",
        done.stdout
    );
    assert_contains(&done.stdout, "zombies 0\n");
}

/// A process started before kubexit was exec'd into is kubexit's child
/// too, but not something the supervised child left behind: it survives.
#[test]
fn children_kubexit_inherited_are_not_stopped_as_leftovers() {
    let yard = Yard::new();
    let pids = yard.path().join("pids");
    let script = format!(
        "sleep 1000 >/dev/null 2>&1 & echo $! > {}; exec \"$0\" true",
        pids.display()
    );
    let output = Command::new("sh")
        .args(["-c", &script])
        .arg(crate::util::kubexit_binary())
        .env("KUBEXIT_NAME", "app")
        .env("KUBEXIT_GRAVEYARD", yard.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let inherited = read_pid(&pids);
    let survived = alive(inherited);
    let _ = nix::sys::signal::kill(inherited, nix::sys::signal::Signal::SIGKILL);
    assert!(survived, "kubexit stopped a process it inherited");
    assert_lacks(&stderr, "left behind");
}

/// How long after the SIGKILL sweep kubexit waits for leftovers before it
/// gives up on them (`GIVE_UP_AFTER_KILL` in the stop sequence).
const GIVE_UP_AFTER_KILL: Duration = Duration::from_secs(5);

/// kubexit as root without CAP_KILL: it may signal only processes of its
/// own uid, while its child, which keeps CAP_SETUID, can start processes
/// of another uid, which neither SIGTERM nor SIGKILL from kubexit can end.
/// `None`, with the test skipped, where the test does not run as root.
fn without_cap_kill(test: &str, yard: &Yard) -> Option<Kubexit> {
    if !is_root() {
        skip(test, "a process kubexit may not signal needs root to make");
        return None;
    }
    let mut k = Kubexit::named("app", yard);
    k.env("KUBEXIT_GRACE_PERIOD", "200ms")
        .args(["setpriv", "--inh-caps=-kill", "--bounding-set=-kill", "--"])
        .arg_path(&crate::util::kubexit_binary());
    Some(k)
}

/// `command` as uid 65534, in the shell's background, waited for until it
/// runs as that uid; its pid goes to `pids`.
fn as_nobody_in_background(command: &str, pids: &Path) -> String {
    format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups {command} & echo $! > {pids}; \
         while ! grep -q '^Uid:.*65534' /proc/$!/status; do sleep 0.01; done",
        pids = pids.display()
    )
}

#[test]
fn a_leftover_that_outlives_sigkill_is_named_and_given_up_on() {
    let yard = Yard::new();
    let pids = yard.path().join("pids");
    let Some(mut k) = without_cap_kill(
        "a_leftover_that_outlives_sigkill_is_named_and_given_up_on",
        &yard,
    ) else {
        return;
    };
    let script = format!("{}; exit 3", as_nobody_in_background("sleep 1000", &pids));
    let started = Instant::now();
    let done = k.sh(&script).run_self();
    let took = started.elapsed();
    let leftover = read_pid(&pids);
    let outlived = alive(leftover);
    let _ = nix::sys::signal::kill(leftover, nix::sys::signal::Signal::SIGKILL);
    assert_eq!(done.code(), 3, "{}", done.stderr);
    assert!(
        outlived,
        "the leftover did not outlive kubexit: {}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains("Killing processes the child left behind..."),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains(&format!(
            "did not exit after SIGKILL; giving up on them after 5s: pid {leftover}\n"
        )),
        "the leftover given up on is not named: {}",
        done.stderr
    );
    assert!(
        took >= GIVE_UP_AFTER_KILL && took < GIVE_UP_AFTER_KILL + Duration::from_secs(3),
        "gave up after {took:?}: {}",
        done.stderr
    );
    assert!(yard.read("app").unwrap().contains("ExitCode: 3\n"));
}

#[test]
fn a_child_that_sigkill_cannot_end_is_waited_for_past_the_give_up() {
    let yard = Yard::new();
    let Some(mut k) = without_cap_kill(
        "a_child_that_sigkill_cannot_end_is_waited_for_past_the_give_up",
        &yard,
    ) else {
        return;
    };
    let running = k
        .env("KUBEXIT_DEATH_DEPS", "db")
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            "echo up $$; while :; do sleep 0.1; done",
        ])
        .spawn_self();
    running.wait_for_output("up ");
    let child: Pid = Pid::from_raw(
        running.stdout().trim()["up ".len()..]
            .parse()
            .expect("the child's pid"),
    );
    yard.bury("db");
    running.wait_for_log("Killing child process...");
    let swept = Instant::now();
    let kubexit = running.pid().to_string();
    // The give-up for leftovers passes; the child is still waited for.
    while swept.elapsed() < GIVE_UP_AFTER_KILL + Duration::from_secs(1) {
        assert!(
            !matches!(stat_field(&kubexit, 3).as_deref(), None | Some("Z")),
            "kubexit gave up on its child: {}",
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stderr.contains("Child Exited(137)"), "{}", done.stderr);
    assert!(yard.read("app").unwrap().contains("ExitCode: 137\n"));
}
