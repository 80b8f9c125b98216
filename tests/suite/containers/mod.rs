//! kubexit in the shape users run it: PID 1 of containers of a pod, each in
//! its own PID namespace, sharing a graveyard volume, under a real container
//! runtime (podman with runc), from images built by `scripts/build-images.sh`
//! out of the static binary.
//!
//! What is shown here and nowhere else: that the images work as the docs
//! say; that tombstones, liveness locks and signals work across PID
//! namespaces, where every kubexit is PID 1; that `podman stop` (the
//! runtime's stop signal to PID 1) ends a container through its child; and
//! that the examples users copy run end to end: the graveyard-mode Jobs
//! with `podman kube play`, the compose file with podman-compose.
//!
//! The example apps are stand-ins (`stand-ins.sh`): busybox plays curl,
//! nginx, alpine, the Cloud SQL proxy and PostgreSQL, just far enough for
//! kubexit to supervise them. Where podman differs from Kubernetes or
//! docker compose, the manifests are adapted, each adaptation said where it
//! is made. Outside CI, the tests skip when podman or the static binary is
//! missing; under CI they fail.

use crate::util::{self, assert_contains};

mod shapes;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::podman::{Cleanup, Podman, podman, unique};
use serde_json::{Value, json};

/// Long enough for a loaded 2-core machine to start a few containers.
const DEADLINE: Duration = Duration::from_secs(120);

/// The podman of this run, or `None` after saying why the test is skipped.
fn runtime(test: &str) -> Option<&'static Podman> {
    match podman() {
        Ok(p) => Some(p),
        Err(why) => {
            util::skip(test, &why);
            None
        }
    }
}

/// A pod with a fresh graveyard volume, and a second volume, /ready, where
/// the test's own children say they are ready (a shell has set its traps,
/// say): a fact about the test's scripts, not kubexit's, so it stays out
/// of the graveyard. Removed with both at the end.
struct Pod<'a> {
    podman: &'a Podman,
    name: String,
    volume: String,
    ready: String,
    _cleanup: Cleanup<'a>,
}

/// The shell line with which a child in a [`Pod`] says it is ready as
/// `name`; [`Pod::wait_ready`] waits for it from the host, and another
/// container of the pod can wait for `/ready/NAME`.
fn say_ready(name: &str) -> String {
    format!(": > /ready/{name}")
}

impl<'a> Pod<'a> {
    fn new(podman: &'a Podman, what: &str) -> Pod<'a> {
        let name = unique(what);
        let volume = format!("{name}-graveyard");
        let ready = format!("{name}-ready");
        let mut cleanup = Cleanup::new(podman);
        cleanup.pod(&name).volume(&volume).volume(&ready);
        // Loopback only: the containers talk to each other through the
        // pod's own network namespace, and no bridge is needed.
        podman.run(&["pod", "create", "--name", &name, "--network", "none"]);
        podman.run(&["volume", "create", &volume]);
        podman.run(&["volume", "create", &ready]);
        Pod {
            podman,
            name,
            volume,
            ready,
            _cleanup: cleanup,
        }
    }

    /// Creates (without starting) a container of kubexit's image in the
    /// pod, the graveyard mounted at /graveyard and the ready volume at
    /// /ready; `env` are KUBEXIT_* settings, `command` what kubexit
    /// supervises.
    fn create(&self, container: &str, env: &[(&str, &str)], command: &[&str]) -> String {
        let name = format!("{}-{container}", self.name);
        let mount = format!("{}:/graveyard", self.volume);
        let ready = format!("{}:/ready", self.ready);
        let mut args = vec![
            "create", "--pod", &self.name, "--name", &name, "--volume", &mount, "--volume", &ready,
        ];
        let settings: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for setting in &settings {
            args.extend(["--env", setting]);
        }
        args.push("localhost/kubexit:latest");
        args.extend(command);
        self.podman.run(&args);
        name
    }

    fn start(&self, container: &str) {
        self.podman.run(&["start", container]);
    }

    fn graveyard(&self) -> std::path::PathBuf {
        self.podman.volume_path(&self.volume)
    }

    fn tombstone(&self, name: &str) -> String {
        fs::read_to_string(self.graveyard().join(name)).unwrap_or_default()
    }

    /// The host's path of the ready volume.
    fn ready_dir(&self) -> std::path::PathBuf {
        self.podman.volume_path(&self.ready)
    }

    /// Waits until a child has said it is ready as `name` ([`say_ready`]).
    fn wait_ready(&self, name: &str) {
        let path = self.ready_dir().join(name);
        let start = Instant::now();
        while !path.exists() {
            assert!(
                start.elapsed() < DEADLINE,
                "{name} never said it was ready ({})",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `name`'s tombstone contains `needle`.
    fn wait_for_tombstone(&self, name: &str, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.tombstone(name);
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "tombstone {name} never contained {needle:?}: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn exit_code_line(tombstone: &str) -> Option<i32> {
    tombstone
        .lines()
        .find_map(|l| l.strip_prefix("ExitCode: "))
        .and_then(|c| c.trim().parse().ok())
}

#[test]
fn the_images_are_the_dockerfiles_and_rebuild_to_the_same_ids() {
    let Some(podman) = runtime("the_images_are_the_dockerfiles_and_rebuild_to_the_same_ids") else {
        return;
    };
    let dockerfile = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("Dockerfile");
    let entrypoints: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ENTRYPOINT "))
        .collect();
    assert_eq!(entrypoints, [r#"["/bin/kubexit"]"#, r#"["/bin/kubexit"]"#]);
    assert!(!dockerfile.lines().any(|l| l.starts_with("CMD ")));

    let revision = String::from_utf8(
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("git")
            .stdout,
    )
    .unwrap();
    for image in ["localhost/kubexit:latest", "localhost/kubexit:scratch"] {
        let config: Value = serde_json::from_str(&podman.run(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config}}",
            image,
        ]))
        .unwrap();
        assert_eq!(config["Entrypoint"], json!(["/bin/kubexit"]), "{image}");
        assert!(
            config["Cmd"].is_null(),
            "{image} has a CMD: {}",
            config["Cmd"]
        );
        let labels = &config["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION"),
            "{image}"
        );
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert!(
            labels["org.opencontainers.image.source"]
                .as_str()
                .is_some_and(|s| s.starts_with("https://")),
            "{image}: {labels}"
        );
        assert!(
            labels["org.opencontainers.image.revision"]
                .as_str()
                .is_some_and(|r| r.starts_with(revision.trim())),
            "{image}: {labels}"
        );
    }

    // The layout: the scratch image holds kubexit alone; the default one
    // busybox too, with cp on the PATH for the init container's copy.
    let files = |image: &str| -> Vec<String> {
        let mounted = podman.run(&["image", "mount", image]);
        let listing = podman.tool("find", &[&mounted, "-mindepth", "1", "-printf", "%P\\n"]);
        podman.run(&["image", "unmount", image]);
        let mut files: Vec<String> = listing.lines().map(str::to_owned).collect();
        files.sort();
        files
    };
    let scratch = files("localhost/kubexit:scratch");
    assert_eq!(scratch, ["bin", "bin/kubexit"], "{scratch:?}");
    let default = files("localhost/kubexit:latest");
    for needed in ["bin/kubexit", "bin/busybox", "bin/cp", "bin/sh", "tmp"] {
        assert!(
            default.iter().any(|f| f == needed),
            "no {needed}: {default:?}"
        );
    }
    let copied = podman.run(&[
        "run",
        "--rm",
        "--entrypoint",
        "cp",
        "localhost/kubexit:latest",
        "/bin/kubexit",
        "/tmp/k",
    ]);
    assert_eq!(copied, "");

    // Reproducible: the same binaries build the same images.
    let ids = |podman: &Podman| -> Vec<String> {
        ["localhost/kubexit:latest", "localhost/kubexit:scratch"]
            .iter()
            .map(|i| podman.run(&["image", "inspect", "--format", "{{.Id}}", i]))
            .collect()
    };
    let before = ids(podman);
    podman.tool(
        "bash",
        &[
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scripts/build-images.sh")
                .to_str()
                .unwrap(),
            "--arch",
            "amd64",
        ],
    );
    assert_eq!(ids(podman), before, "a rebuild changed the image IDs");
}

#[test]
fn romeo_and_juliet_across_the_containers_of_a_pod() {
    let Some(podman) = runtime("romeo_and_juliet_across_the_containers_of_a_pod") else {
        return;
    };
    let pod = Pod::new(podman, "verona");
    let juliet = pod.create(
        "juliet",
        &[
            ("KUBEXIT_NAME", "juliet"),
            ("KUBEXIT_DEATH_DEPS", "romeo"),
            ("KUBEXIT_GRACE_PERIOD", "20s"),
        ],
        &[
            "sh",
            "-c",
            &format!(
                "trap 'echo juliet: stopped; exit 0' TERM; {}; echo juliet: parent $PPID; \
                 sleep 1000 & wait",
                say_ready("juliet")
            ),
        ],
    );
    let romeo = pod.create(
        "romeo",
        &[("KUBEXIT_NAME", "romeo")],
        &["sh", "-c", "echo romeo: parent $PPID; exit 3"],
    );
    pod.start(&juliet);
    // Born alone is too early: romeo's death could reach juliet's shell
    // before it has set its trap.
    pod.wait_ready("juliet");
    pod.start(&romeo);
    podman.wait_exited(&[&romeo, &juliet], DEADLINE);

    assert_eq!(podman.exit_code(&romeo), 3, "{}", podman.logs(&romeo));
    assert_eq!(podman.exit_code(&juliet), 0, "{}", podman.logs(&juliet));
    // Each kubexit is PID 1 of its own container: its child's parent is 1.
    assert!(podman.logs(&juliet).contains("juliet: parent 1"));
    assert!(podman.logs(&romeo).contains("romeo: parent 1"));
    assert!(podman.logs(&juliet).contains("juliet: stopped"));
    assert_eq!(exit_code_line(&pod.tombstone("romeo")), Some(3));
    let juliet_stone = pod.tombstone("juliet");
    assert_contains(&juliet_stone, "Died:");
    assert_eq!(exit_code_line(&juliet_stone), Some(0), "{juliet_stone}");
}

#[test]
fn a_sigkilled_container_is_noticed_through_its_liveness_lock() {
    let Some(podman) = runtime("a_sigkilled_container_is_noticed_through_its_liveness_lock") else {
        return;
    };
    let pod = Pod::new(podman, "liveness");
    let db = pod.create("db", &[("KUBEXIT_NAME", "db")], &["sleep", "1000"]);
    let app = pod.create(
        "app",
        &[
            ("KUBEXIT_NAME", "app"),
            ("KUBEXIT_DEATH_DEPS", "db"),
            ("KUBEXIT_GRACE_PERIOD", "20s"),
        ],
        &["sleep", "1000"],
    );
    pod.start(&db);
    pod.start(&app);
    pod.wait_for_tombstone("db", "Born:");
    pod.wait_for_tombstone("app", "Born:");
    // SIGKILL to the container's PID 1, kubexit: it can write nothing.
    podman.run(&["kill", "--signal", "KILL", &db]);
    podman.wait_exited(&[&db, &app], DEADLINE);

    assert_eq!(podman.exit_code(&db), 137);
    let stone = pod.tombstone("db");
    assert_contains(&stone, "Reason: \"lost");
    assert_eq!(podman.exit_code(&app), 0, "{}", podman.logs(&app));
    assert!(
        podman.logs(&app).contains("Lost: db"),
        "{}",
        podman.logs(&app)
    );
}

#[test]
fn podman_stop_reaches_the_child_through_kubexit_as_pid_1() {
    let Some(podman) = runtime("podman_stop_reaches_the_child_through_kubexit_as_pid_1") else {
        return;
    };
    let pod = Pod::new(podman, "stop");
    // One child leaves on SIGTERM with its own status; the other ignores
    // it, so kubexit's grace period ends in SIGKILL, long before podman's.
    let polite = pod.create(
        "polite",
        &[("KUBEXIT_NAME", "polite"), ("KUBEXIT_GRACE_PERIOD", "30s")],
        &[
            "sh",
            "-c",
            &format!(
                "trap 'echo polite: stopping; exit 7' TERM; {}; sleep 1000 & wait",
                say_ready("polite")
            ),
        ],
    );
    let stubborn = pod.create(
        "stubborn",
        &[("KUBEXIT_NAME", "stubborn"), ("KUBEXIT_GRACE_PERIOD", "1s")],
        &[
            "sh",
            "-c",
            &format!("trap '' TERM; {}; sleep 1000 & wait", say_ready("stubborn")),
        ],
    );
    let dependent = pod.create(
        "dependent",
        &[
            ("KUBEXIT_NAME", "dependent"),
            ("KUBEXIT_DEATH_DEPS", "polite"),
            ("KUBEXIT_GRACE_PERIOD", "30s"),
        ],
        &["sleep", "1000"],
    );
    for c in [&polite, &stubborn, &dependent] {
        pod.start(c);
    }
    // The stop must find both shells with their traps set.
    pod.wait_ready("polite");
    pod.wait_ready("stubborn");
    pod.wait_for_tombstone("dependent", "Born:");
    podman.run(&["stop", "--time", "60", &polite, &stubborn]);
    podman.wait_exited(&[&polite, &stubborn, &dependent], DEADLINE);

    assert_eq!(podman.exit_code(&polite), 7, "{}", podman.logs(&polite));
    assert_eq!(exit_code_line(&pod.tombstone("polite")), Some(7));
    // 137 from podman's own SIGKILL would leave no Died in the tombstone:
    // this one was written by kubexit after it killed its child.
    assert_eq!(
        podman.exit_code(&stubborn),
        137,
        "{}",
        podman.logs(&stubborn)
    );
    let stone = pod.tombstone("stubborn");
    assert_contains(&stone, "Died:");
    assert_eq!(exit_code_line(&stone), Some(137), "{stone}");
    assert_eq!(
        podman.exit_code(&dependent),
        0,
        "{}",
        podman.logs(&dependent)
    );
}

#[test]
fn dependents_in_separate_pid_namespaces_start_and_stop_together_round_after_round() {
    let Some(podman) =
        runtime("dependents_in_separate_pid_namespaces_start_and_stop_together_round_after_round")
    else {
        return;
    };
    const FOLLOWERS: usize = 5;
    const ROUNDS: usize = 8;
    let pod = Pod::new(podman, "chorus");
    // Every follower waits for the leader's birth, so all start their
    // children at once, and stops when it dies, so all write Died at once;
    // each child leaves with a status of its own, and kubexit passes it on.
    // The leader dies once every follower's child has set its trap (podman
    // starts the containers one after the other; a follower's Born alone
    // is too early, its shell could still meet SIGTERM untrapped).
    let followers_ready: String = (0..FOLLOWERS)
        .map(|i| format!("until [ -e /ready/follower{i} ]; do sleep 0.05; done; "))
        .collect();
    let leader = pod.create(
        "leader",
        &[("KUBEXIT_NAME", "leader")],
        &["sh", "-c", &format!("{followers_ready}exit 0")],
    );
    let mut followers = Vec::new();
    for i in 0..FOLLOWERS {
        let name = format!("follower{i}");
        let code = (10 + i).to_string();
        let script = format!(
            "trap 'exit {code}' TERM; {}; sleep 1000 & wait",
            say_ready(&name)
        );
        followers.push(pod.create(
            &name,
            &[
                ("KUBEXIT_NAME", &name),
                ("KUBEXIT_BIRTH_DEPS", "leader"),
                ("KUBEXIT_DEATH_DEPS", "leader"),
                ("KUBEXIT_STOPPED_EXIT_CODE", "child"),
                ("KUBEXIT_GRACE_PERIOD", "20s"),
            ],
            &["sh", "-c", &script],
        ));
    }
    let all: Vec<&str> = std::iter::once(leader.as_str())
        .chain(followers.iter().map(String::as_str))
        .collect();
    let graveyard = pod.graveyard();
    let ready = pod.ready_dir();
    for round in 0..ROUNDS {
        for dir in [&graveyard, &ready] {
            for entry in fs::read_dir(dir).unwrap() {
                fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
        let mut start = vec!["start"];
        start.extend(&all);
        podman.run(&start);
        podman.wait_exited(&all, DEADLINE);

        let mut problems = Vec::new();
        let files: Vec<String> = fs::read_dir(&graveyard)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| !f.starts_with('.'))
            .collect();
        if files.len() != FOLLOWERS + 1 {
            problems.push(format!("tombstones {files:?}"));
        }
        if podman.exit_code(&leader) != 0 {
            problems.push(format!("leader exited {}", podman.exit_code(&leader)));
        }
        for (i, follower) in followers.iter().enumerate() {
            let expected = 10 + i as i32;
            let stone = pod.tombstone(&format!("follower{i}"));
            let code = podman.exit_code(follower);
            if code != expected
                || exit_code_line(&stone) != Some(expected)
                || !stone.contains("Born:")
            {
                problems.push(format!(
                    "follower{i}: exited {code}, tombstone {stone:?}, expected {expected}\n{}",
                    podman.logs(follower)
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "round {round}:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn the_graveyard_mode_example_jobs_play_end_to_end() {
    let Some(podman) = runtime("the_graveyard_mode_example_jobs_play_end_to_end") else {
        return;
    };
    // Which container's status is the Job's, and what each ends with.
    let cases = [
        (
            "client-server-job-graveyard.yaml",
            vec![("client", 0, Some(0)), ("server", 0, Some(143))],
        ),
        (
            "cloudsql-proxy-job.yaml",
            vec![("main", 0, Some(0)), ("cloudsql-proxy", 0, Some(143))],
        ),
    ];
    for (file, expected) in cases {
        let played = shapes::play_job(podman, file);
        for (container, status, tombstone_code) in expected {
            let name = format!("{}-{container}", played.pod);
            assert_eq!(
                podman.exit_code(&name),
                status,
                "{file}: {container}\n{}",
                podman.logs(&name)
            );
            let stone = fs::read_to_string(played.graveyard.join(container)).unwrap_or_default();
            assert_eq!(
                exit_code_line(&stone),
                tombstone_code,
                "{file}: {container}: {stone}"
            );
        }
    }
}

#[test]
fn the_compose_example_runs_with_podman_compose() {
    let Some(podman) = runtime("the_compose_example_runs_with_podman_compose") else {
        return;
    };
    if let Err(why) = shapes::podman_compose_available() {
        util::skip("the_compose_example_runs_with_podman_compose", &why);
        return;
    }
    let run = shapes::compose_up(podman, "examples/docker-compose.yaml", "migrate");
    assert_eq!(run.status, 0, "{}", run.output);
    assert_eq!(run.exit_codes["migrate"], 0, "{}", run.output);
    // The database was stopped by its kubexit when the migration died:
    // stopped, so 0.
    assert_eq!(run.exit_codes["db"], 0, "{}", run.output);
    assert_contains(&run.output, "psql (stand-in): 1 row");
    let db = fs::read_to_string(run.graveyard.join("db")).unwrap_or_default();
    assert_contains(&db, "Ready:");
    assert_contains(&db, "Died:");
}

#[test]
fn the_arm64_image_runs_kubexit_under_qemu() {
    let test = "the_arm64_image_runs_kubexit_under_qemu";
    let Some(podman) = runtime(test) else {
        return;
    };
    let image = format!("localhost/kubexit:{}-arm64", env!("CARGO_PKG_VERSION"));
    if podman.try_run(&["image", "exists", &image]).is_err() {
        util::skip(
            test,
            "no arm64 image: build it with scripts/build-static.sh --arch arm64",
        );
        return;
    }
    let arch = podman.run(&["image", "inspect", "--format", "{{.Architecture}}", &image]);
    assert_eq!(arch, "arm64");
    // The index names both architectures.
    let index: Value = serde_json::from_str(&podman.run(&[
        "manifest",
        "inspect",
        &format!("localhost/kubexit:{}", env!("CARGO_PKG_VERSION")),
    ]))
    .unwrap();
    let mut platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"]);

    // kubexit (arm64) supervising busybox's sh (arm64), both run by qemu.
    let name = unique("arm64");
    let mut cleanup = Cleanup::new(podman);
    cleanup.pod(&name);
    podman.run(&["pod", "create", "--name", &name, "--network", "none"]);
    let output = podman.output(&[
        "run",
        "--pod",
        &name,
        "--env",
        "KUBEXIT_NAME=arm",
        &image,
        "sh",
        "-c",
        "echo machine $(uname -m); cat /graveyard/arm; exit 5",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(5),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_contains(&stdout, "machine aarch64");
    assert_contains(&stdout, "Born: ");
}
