//! The shape users run: every kubexit PID 1 of its own PID namespace, as in
//! the containers of a pod, all sharing one graveyard. Whatever is unique
//! only within one process tree (a pid) is not unique here: these tests
//! would see it collide.

use std::fs;

use crate::util::{Kubexit, Running, Yard, can_unshare_pid, skip};

const ROUNDS: usize = 12;
const DEPENDENTS: usize = 6;

#[test]
fn dependents_in_separate_pid_namespaces_start_and_stop_together_round_after_round() {
    if !can_unshare_pid() {
        return skip(
            "dependents_in_separate_pid_namespaces...",
            "unshare --pid needs root",
        );
    }
    for round in 0..ROUNDS {
        let yard = Yard::new();
        let outside = tempfile::tempdir().unwrap();
        let go = outside.path().join("go");
        let main = Kubexit::pid_1("main", &yard)
            .sh(&format!(
                "echo up; while [ ! -e {} ]; do sleep 0.01; done",
                go.display()
            ))
            .spawn();
        // All born at once, each writing its tombstone as PID 1.
        let dependents: Vec<(String, Running)> = (0..DEPENDENTS)
            .map(|i| {
                let name = format!("dep{i}");
                let running = Kubexit::pid_1(&name, &yard)
                    .env("KUBEXIT_DEATH_DEPS", "main")
                    .sh("echo up; exec sleep 1000")
                    .spawn();
                (name, running)
            })
            .collect();
        main.wait_for_output("up");
        for (_, dependent) in &dependents {
            dependent.wait_for_output("up");
        }
        fs::write(&go, "").unwrap();

        let main = main.finish();
        assert_eq!(main.code(), 0, "round {round}: main: {}", main.stderr);
        let stone = yard.read("main").unwrap();
        assert!(
            stone.contains("Born: ") && stone.contains("ExitCode: 0\n"),
            "round {round}: {stone}"
        );
        for (name, dependent) in dependents {
            let done = dependent.finish();
            assert_eq!(done.code(), 0, "round {round}: {name}: {}", done.stderr);
            assert!(
                done.stderr.contains("New death: main"),
                "round {round}: {name}: {}",
                done.stderr
            );
            let stone = yard.read(&name).unwrap_or_default();
            assert!(
                stone.contains("Born: ")
                    && stone.contains("Died: ")
                    && stone.contains("Reason: \"stopped because main died"),
                "round {round}: {name}: {stone}"
            );
        }
        // Nothing but tombstones and liveness locks is left behind.
        let mut entries: Vec<String> = fs::read_dir(yard.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        let mut expected: Vec<String> = std::iter::once("main".to_owned())
            .chain((0..DEPENDENTS).map(|i| format!("dep{i}")))
            .flat_map(|n| [format!(".{n}.lock"), n])
            .collect();
        expected.sort();
        assert_eq!(entries, expected, "round {round}");
    }
}

#[test]
fn a_planted_directory_at_a_pid_1_temporary_name_does_not_stop_the_child() {
    if !can_unshare_pid() {
        return skip(
            "a_planted_directory_at_a_pid_1_temporary_name...",
            "unshare --pid needs root",
        );
    }
    let yard = Yard::new();
    // The names a PID-1 kubexit would have used when they were made of its
    // pid and a counter.
    for n in 0..4 {
        fs::create_dir(yard.path().join(format!(".kubexit-1-{n}.tmp"))).unwrap();
    }
    let done = Kubexit::pid_1("app", &yard).sh("echo started").run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stdout.contains("started"));
    assert!(yard.read("app").unwrap().contains("Died: "));
    assert!(yard.path().join(".kubexit-1-0.tmp").is_dir());
}
