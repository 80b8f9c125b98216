//! Death dependencies: a death that happened before kubexit started, or
//! while its child runs, in whatever way the tombstone was written, stops
//! the child's whole process group and ends with the configured status.

use std::time::{Duration, Instant};

use crate::util::{
    self, Kubexit, Yard, alive, assert_contains, assert_lacks, at_rest, eventually, read_pid,
    voluntary_switches, watch_masks,
};

#[test]
fn death_dependency_already_dead_at_start_stops_nothing_and_exits_zero() {
    let yard = Yard::new();
    yard.bury("db");
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    let stone = yard.read("app").unwrap();
    assert_lacks(&stone, "Born");
    assert_contains(&stone, "Died: ");
    assert_contains(&stone, "ExitCode: -1\n");
    assert_contains(&stone, "db had already died");
}

#[test]
fn death_while_running_stops_the_whole_group_and_exits_zero() {
    let yard = Yard::new();
    let pids = yard.path().join("pids");
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh(&format!(
            "sleep 1000 & echo $! > {0}.bg; echo $$ > {0}; wait",
            pids.display()
        ))
        .spawn();
    let shell = read_pid(&pids);
    let background = read_pid(&pids.with_extension("bg"));
    yard.bury("db");
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "New death: db");
    assert!(done.stderr.contains("Terminating child process..."));
    assert!(
        !alive(shell) && !alive(background),
        "a process of the group survived"
    );
    let stone = yard.read("app").unwrap();
    assert!(
        stone.contains("ExitCode: 143\n"),
        "the real status is recorded: {stone}"
    );
    assert_contains(&stone, "stopped because db died");
}

#[test]
fn death_renamed_into_place_is_seen() {
    let yard = Yard::new();
    yard.write("db", "Born: \"2026-11-24T19:47:52Z\"\n");
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo up; exec sleep 1000")
        .spawn();
    running.wait_for_output("up");
    yard.rename_into_place(
        "db",
        "Born: \"2026-11-24T19:47:52Z\"\nDied: \"2026-11-24T19:47:53Z\"\nExitCode: 0\n",
    );
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stderr.contains("New death: db"));
}

#[test]
fn any_one_of_several_death_dependencies_is_enough() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "a, b, c")
        .sh("echo up; exec sleep 1000")
        .spawn();
    running.wait_for_output("up");
    yard.write("a", "Born: \"2026-11-24T19:47:52Z\"\n");
    yard.bury("b");
    let done = running.finish();
    assert_eq!(done.code(), 0);
    assert_contains(&done.stderr, "New death: b");
}

#[test]
fn a_garbage_tombstone_then_a_real_death_still_stops_the_child() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo up; exec sleep 1000")
        .spawn();
    running.wait_for_output("up");
    yard.write("db", "Died: [this is : not { a tombstone");
    running.wait_for_log("Ignoring unreadable tombstone");
    yard.write("db", "Died: [still garbage");
    yard.bury("db");
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stderr.contains("New death: db"));
}

#[test]
fn the_dependency_of_another_name_changing_stops_nothing() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo up; sleep 1; echo still running")
        .spawn();
    running.wait_for_output("up");
    yard.bury("other");
    let done = running.finish();
    assert_eq!(done.code(), 0);
    assert!(done.stdout.contains("still running"));
    assert!(!done.stderr.contains("New death"));
}

#[test]
fn a_child_that_ignores_the_stop_signal_is_killed_after_the_grace_period() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .env("KUBEXIT_GRACE_PERIOD", "300ms")
        .sh("trap '' TERM; echo up; while :; do sleep 1; done")
        .spawn();
    running.wait_for_output("up");
    let buried = Instant::now();
    yard.bury("db");
    let done = running.finish();
    assert!(buried.elapsed() >= Duration::from_millis(300));
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "Killing child process...");
    assert!(yard.read("app").unwrap().contains("ExitCode: 137\n"));
}

#[test]
fn stopped_exit_code_child_passes_the_childs_status_through() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .env("KUBEXIT_STOPPED_EXIT_CODE", "child")
        .sh("echo up; exec sleep 1000")
        .spawn();
    running.wait_for_output("up");
    yard.bury("db");
    assert_eq!(running.finish().code(), 143);
}

#[test]
fn the_fork_alias_false_passes_the_childs_status_and_a_number_is_used_as_is() {
    for (key, value, expected) in [
        ("KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS", "false", 143),
        ("KUBEXIT_STOPPED_EXIT_CODE", "7", 7),
    ] {
        let yard = Yard::new();
        let running = Kubexit::named("app", &yard)
            .env("KUBEXIT_DEATH_DEPS", "db")
            .env(key, value)
            .sh("echo up; exec sleep 1000")
            .spawn();
        running.wait_for_output("up");
        yard.bury("db");
        assert_eq!(running.finish().code(), expected, "{key}={value}");
    }
}

#[test]
fn the_stop_signal_is_configurable() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .env("KUBEXIT_STOPPED_EXIT_CODE", "child")
        .env("KUBEXIT_STOP_SIGNAL", "SIGINT")
        .sh("trap 'exit 42' INT; echo up; while :; do sleep 0.05; done")
        .spawn();
    running.wait_for_output("up");
    yard.bury("db");
    assert_eq!(running.finish().code(), 42);
}

#[test]
fn romeo_and_juliet_two_kubexits_in_one_graveyard() {
    let yard = Yard::new();
    let juliet = Kubexit::named("juliet", &yard)
        .env("KUBEXIT_DEATH_DEPS", "romeo")
        .sh("echo up; exec sleep 1000")
        .spawn();
    juliet.wait_for_output("up");
    let romeo = Kubexit::named("romeo", &yard).sh("exit 0").run();
    assert_eq!(romeo.code(), 0);
    let juliet = juliet.finish();
    assert_eq!(juliet.code(), 0, "{}", juliet.stderr);
    eventually("juliet's death recorded", || {
        yard.read("juliet").is_some_and(|t| t.contains("Died"))
    });
}

/// kubexit reads its dependencies before the child starts and watches them
/// only after: a death at any moment of that start-up, before, between or
/// after, is acted on. The death is swept across the start-up, round by
/// round, over three times the time this binary takes to write `Born` (measured
/// first: a build under qemu takes many times a native one); a death
/// missed would leave kubexit running past the deadline.
#[test]
fn a_death_at_any_moment_of_the_start_up_is_acted_on() {
    let born = "Born: \"2026-11-24T19:47:52Z\"\n";
    let died = "Born: \"2026-11-24T19:47:52Z\"\nDied: \"2026-11-24T19:47:53Z\"\nExitCode: 0\n";
    let start = |yard: &Yard| {
        yard.write("db", born);
        Kubexit::named("app", yard)
            .env("KUBEXIT_DEATH_DEPS", "db")
            .args(["sleep", "1000"])
            .spawn()
    };
    // The slowest of three start-ups: the first may find cold caches, and
    // a loaded machine slows them all.
    let mut start_up = Duration::ZERO;
    for _ in 0..3 {
        let yard = Yard::new();
        let spawned = Instant::now();
        let running = start(&yard);
        yard.wait_for("app", "Born");
        start_up = start_up.max(spawned.elapsed());
        yard.rename_into_place("db", died);
        assert_eq!(running.finish().code(), 0);
    }

    const ROUNDS: u32 = 32;
    let (mut never_started, mut stopped) = (0, 0);
    for round in 0..ROUNDS {
        let yard = Yard::new();
        let running = start(&yard);
        // Not a wait for a condition: the moment of the death, swept.
        std::thread::sleep(start_up * 3 * round / ROUNDS);
        yard.rename_into_place("db", died);
        let done = running.finish();
        assert_eq!(done.code(), 0, "round {round}: {}", done.stderr);
        let stone = yard.read("app").unwrap();
        if stone.contains("db had already died") {
            never_started += 1;
        } else {
            assert!(stone.contains("ExitCode: 143\n"), "round {round}: {stone}");
            assert_contains(&stone, "stopped because db died");
            stopped += 1;
        }
    }
    assert!(
        stopped > 0,
        "no round stopped a running child (start-up {start_up:?})"
    );
    eprintln!(
        "start-up {start_up:?}: {never_started} rounds never started the child, {stopped} stopped it"
    );
}

/// While a dependency has no tombstone, the graveyard directory is watched
/// for entries made, events of the directory itself: the kernel then has no
/// entry of a crowded graveyard to walk when the watch is set. Read back
/// from the kernel's own account of the watch (`/proc/PID/fdinfo`).
#[test]
fn the_directory_is_watched_for_its_own_events_only() {
    use std::os::unix::fs::MetadataExt;
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .args(["sleep", "1000"])
        .spawn();
    running.wait_for_log("Watching graveyard");
    let inode = std::fs::metadata(yard.path()).unwrap().ino();
    let pid = running.pid();
    let mut masks = Vec::new();
    eventually("the directory's watch listed", || {
        masks = watch_masks(pid.as_raw(), inode);
        !masks.is_empty()
    });
    // IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE,
    // IN_OPEN: the events of the files in a watched directory.
    const OF_FILES: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20;
    for mask in &masks {
        assert_eq!(mask & OF_FILES, 0, "mask {mask:#x} asks for files' events");
        assert_ne!(mask & 0x100, 0, "mask {mask:#x}: no IN_CREATE");
        assert_ne!(mask & 0x80, 0, "mask {mask:#x}: no IN_MOVED_TO");
    }
    yard.bury("db");
    assert_eq!(running.finish().code(), 0);
}

/// While a dependency has no tombstone the graveyard itself is watched, and
/// every sibling's write wakes the sidecar with news that does not concern
/// it. The loop reads that news and goes back to rest in `poll(2)`, not to
/// the runtime's `epoll_wait` (where the next event, a death, would take the
/// slower way), and the death that follows is still acted on.
#[test]
fn siblings_writes_leave_the_loop_at_rest_and_a_death_after_them_is_acted_on() {
    let yard = Yard::private();
    let running = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .args(["sleep", "1000"])
        .spawn();
    running.wait_for_log("Watching graveyard");
    let pid = running.pid().as_raw();
    if !util::rest_is_seen(
        "siblings_writes_leave_the_loop_at_rest_and_a_death_after_them_is_acted_on",
        pid,
    ) {
        return;
    }
    eventually("app at rest in poll(2)", || at_rest(pid));
    let before = voluntary_switches(pid);
    let mut siblings = 0;
    eventually("a sibling's write to wake app", || {
        siblings += 1;
        yard.rename_into_place(
            &format!("sibling{siblings}"),
            "Born: \"2026-11-24T19:47:52Z\"\n",
        );
        voluntary_switches(pid) > before
    });
    for more in 0..20 {
        yard.rename_into_place(&format!("more{more}"), "Born: \"2026-11-24T19:47:52Z\"\n");
    }
    eventually(
        "app back at rest in poll(2) after its siblings' writes",
        || at_rest(pid),
    );
    yard.rename_into_place(
        "db",
        "Born: \"2026-11-24T19:47:52Z\"\nDied: \"2026-11-24T19:47:53Z\"\nExitCode: 0\n",
    );
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "db");
}
