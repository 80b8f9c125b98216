//! The command line and environment: upstream's interface, flags of our
//! own, and a clear exit status 2 for every bad input.

use crate::util::assert_contains;
use crate::util::{Kubexit, Yard, kubexit};

/// Runs kubexit with `env` and `args` and expects exit 2 with `message`
/// in its log, and no child started.
fn refused(yard: &Yard, env: &[(&str, &str)], args: &[&str], message: &str) {
    let mut k = kubexit();
    k.env("KUBEXIT_GRAVEYARD", yard.path());
    for (key, value) in env {
        k.env(key, value);
    }
    let done = k.args(args).run();
    assert_eq!(
        done.code(),
        2,
        "{env:?} {args:?} was not refused:\n{}",
        done.stderr
    );
    assert!(
        done.stderr.contains(message),
        "{env:?} {args:?}: expected {message:?} in\n{}",
        done.stderr
    );
    assert!(!done.stdout.contains("started"), "the child ran");
}

const CHILD: &[&str] = &["sh", "-c", "echo started"];

#[test]
fn no_command_exits_2_with_usage() {
    let yard = Yard::new();
    refused(&yard, &[("KUBEXIT_NAME", "a")], &[], "no command given");
}

#[test]
fn missing_or_empty_name_exits_2() {
    let yard = Yard::new();
    refused(&yard, &[], CHILD, "KUBEXIT_NAME is not set");
    refused(&yard, &[("KUBEXIT_NAME", "")], CHILD, "must not be empty");
}

#[test]
fn names_that_would_leave_the_graveyard_exit_2() {
    let yard = Yard::new();
    for (name, message) in [
        ("a/b", "contains '/'"),
        ("..", "starts with '.'"),
        (".", "starts with '.'"),
        (".hidden", "reserved for kubexit"),
        ("../../etc/passwd", "contains '/'"),
    ] {
        refused(&yard, &[("KUBEXIT_NAME", name)], CHILD, message);
    }
    assert_eq!(std::fs::read_dir(yard.path()).unwrap().count(), 0);
}

#[test]
fn bad_dependency_names_and_self_dependency_exit_2() {
    let yard = Yard::new();
    for var in ["KUBEXIT_DEATH_DEPS", "KUBEXIT_BIRTH_DEPS"] {
        refused(
            &yard,
            &[("KUBEXIT_NAME", "a"), (var, "db, ../x")],
            CHILD,
            var,
        );
        refused(
            &yard,
            &[("KUBEXIT_NAME", "a"), (var, ".tmp")],
            CHILD,
            "reserved",
        );
        refused(
            &yard,
            &[("KUBEXIT_NAME", "a"), (var, "db,a")],
            CHILD,
            "depends on itself",
        );
    }
}

#[test]
fn bad_durations_exit_2_naming_the_variable() {
    let yard = Yard::new();
    for var in ["KUBEXIT_GRACE_PERIOD", "KUBEXIT_BIRTH_TIMEOUT"] {
        for value in ["30", "soon", "-5s", "1d", ""] {
            refused(&yard, &[("KUBEXIT_NAME", "a"), (var, value)], CHILD, var);
        }
    }
}

#[test]
fn empty_or_root_graveyard_exits_2() {
    for value in ["", "/", "//"] {
        let done = kubexit()
            .env("KUBEXIT_NAME", "a")
            .env("KUBEXIT_GRAVEYARD", value)
            .args(CHILD)
            .run();
        assert_eq!(done.code(), 2, "{value:?}: {}", done.stderr);
        assert_contains(&done.stderr, "KUBEXIT_GRAVEYARD");
    }
}

#[test]
fn bad_stop_signal_and_stopped_exit_code_exit_2() {
    let yard = Yard::new();
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a"), ("KUBEXIT_STOP_SIGNAL", "SIGFOO")],
        CHILD,
        "not a signal",
    );
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a"), ("KUBEXIT_STOPSIGNAL", "99")],
        CHILD,
        "not a signal",
    );
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a"), ("KUBEXIT_STOPPED_EXIT_CODE", "300")],
        CHILD,
        "0 to 255",
    );
    refused(
        &yard,
        &[
            ("KUBEXIT_NAME", "a"),
            ("KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS", "perhaps"),
        ],
        CHILD,
        "not a boolean",
    );
}

#[test]
fn unknown_flag_before_the_command_exits_2() {
    let yard = Yard::new();
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a")],
        &["--no-such-flag", "true"],
        "--no-such-flag",
    );
}

#[test]
fn flags_override_the_environment_and_the_rest_is_the_childs() {
    let yard = Yard::new();
    let done = kubexit()
        .env("KUBEXIT_NAME", "from-env")
        .args(["--name", "from-flag", "--graveyard"])
        .arg_path(yard.path())
        .args(["--", "sh", "-c", "echo \"$0 $1\"", "--name", "x"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "--name x\n");
    assert!(yard.read("from-flag").is_some());
    assert!(yard.read("from-env").is_none());
}

#[test]
fn help_lists_every_upstream_variable_and_version_prints() {
    let done = kubexit().args(["--help"]).run();
    assert_eq!(done.code(), 0);
    for var in [
        "KUBEXIT_NAME",
        "KUBEXIT_GRAVEYARD",
        "KUBEXIT_DEATH_DEPS",
        "KUBEXIT_GRACE_PERIOD",
        "KUBEXIT_BIRTH_DEPS",
        "KUBEXIT_BIRTH_TIMEOUT",
        "KUBEXIT_POD_NAME",
        "KUBEXIT_NAMESPACE",
        "KUBEXIT_STOP_SIGNAL",
        "KUBEXIT_STOPPED_EXIT_CODE",
    ] {
        assert!(
            done.stdout.contains(var),
            "--help lacks {var}:\n{}",
            done.stdout
        );
    }
    let done = kubexit().args(["--version"]).run();
    assert_eq!(done.code(), 0);
    assert!(done.stdout.starts_with("kubexit "), "{}", done.stdout);
}

#[test]
fn dependency_lists_are_trimmed() {
    let yard = Yard::new();
    yard.bury("db");
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", " x ,, db ")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(
        !done.stdout.contains("started"),
        "the child ran although db is dead"
    );
}

/// Without birth dependencies the pod name has nothing to do, in either
/// build: upstream manifests set it on every container.
#[test]
fn a_pod_name_without_birth_dependencies_changes_nothing() {
    let yard = Yard::new();
    let run = Kubexit::named("sidecar", &yard)
        .env("KUBEXIT_POD_NAME", "job-abc")
        .env("KUBEXIT_NAMESPACE", "batch")
        .args(CHILD)
        .run();
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "started\n");
}
