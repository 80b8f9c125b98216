//! Getting kubexit into a container and watching it work: self-install,
//! the status view, log formats and the termination message.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};

use crate::util::{self, Kubexit, Yard, assert_contains, kubexit, read_pid};

/// Checks that `text` is JSON by asking Python's parser; returns its
/// re-serialised form with sorted keys, for assertions.
fn json_check(text: &str) -> String {
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json,sys; print(json.dumps(json.loads(sys.stdin.read()), sort_keys=True))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "not JSON: {text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn install_copies_the_running_binary_into_a_directory() {
    let yard = Yard::new();
    let dir = yard.path().join("shared/bin");
    let done = kubexit()
        .arg_path(std::path::Path::new("--install"))
        .arg_path(&dir)
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let installed = dir.join("kubexit");
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(crate::util::kubexit_binary()).unwrap()
    );
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kubexit "));
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "a temporary file was left"
    );
}

#[test]
fn status_shows_every_state_for_go_and_kubexit_tombstones() {
    let yard = Yard::new();
    for fixture in ["born-only", "died-exit-3", "died-by-signal"] {
        fs::copy(
            crate::util::files::fixtures("go-tombstones").join(fixture),
            yard.stone_path(&format!("go-{fixture}")),
        )
        .unwrap();
    }
    yard.write("empty", "");
    yard.write("garbage", "Died: [");
    let pids = yard.path().join("lost-child");
    let ready = Kubexit::named("ready", &yard)
        .sh("echo up; exec sleep 1000")
        .spawn();
    ready.wait_for_output("up");
    let lost = Kubexit::named("lost", &yard)
        .sh(&format!("echo $$ > {}; exec sleep 1000", pids.display()))
        .spawn();
    let lost_child = read_pid(&pids);
    yard.wait_for("lost", "Born");
    lost.signal(Signal::SIGKILL);
    lost.finish();
    let _ = kill(lost_child, Signal::SIGKILL);

    let done = kubexit()
        .env("KUBEXIT_GRAVEYARD", yard.path())
        .env("TZ", "UTC")
        .args(["--status"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let state_of = |name: &str| {
        let line = done
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{}", done.stdout));
        line.split_whitespace().nth(1).unwrap().to_owned()
    };
    assert!(done.stdout.starts_with("NAME "), "{}", done.stdout);
    assert_eq!(state_of("go-born-only"), "born");
    assert_eq!(state_of("go-died-exit-3"), "dead");
    assert_eq!(state_of("go-died-by-signal"), "dead");
    assert_eq!(state_of("empty"), "alive");
    assert_eq!(state_of("garbage"), "unreadable");
    assert_eq!(state_of("ready"), "ready");
    assert_eq!(state_of("lost"), "lost");
    assert_contains(&done.stdout, "2026-11-24T19:47:53.327552559Z");

    let done = kubexit()
        .env("KUBEXIT_GRAVEYARD", yard.path())
        .args(["--status", "--json"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let parsed = json_check(&done.stdout);
    assert_contains(
        &parsed,
        r#""exitCode": 3, "name": "go-died-exit-3", "ready": null, "reason": null, "state": "dead""#,
    );
    assert!(
        parsed.contains(r#""name": "lost""#) && parsed.contains(r#""state": "lost""#),
        "{parsed}"
    );
    drop(ready);
}

#[test]
fn status_of_a_missing_graveyard_says_so() {
    let yard = Yard::new();
    let done = kubexit()
        .env("KUBEXIT_GRAVEYARD", yard.path().join("nowhere"))
        .args(["--status"])
        .run();
    assert_eq!(done.code(), 1);
    assert_contains(&done.stderr, "does not exist");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_events_fields() {
    let yard = Yard::new();
    yard.bury("db");
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_LOG_FORMAT", "json")
        .env("KUBEXIT_DEATH_DEPS", "db")
        .args(["true"])
        .run();
    assert_eq!(done.code(), 0);
    let lines: Vec<&str> = done.stderr.lines().collect();
    assert!(lines.len() > 5, "{}", done.stderr);
    for line in &lines {
        let parsed = json_check(line);
        assert!(
            parsed.contains(r#""level": "info""#) && parsed.contains(r#""name": "app""#),
            "{parsed}"
        );
    }
    let death = lines.iter().find(|l| l.contains("already dead")).unwrap();
    assert!(
        json_check(death).contains(r#""dependency": "db""#),
        "{death}"
    );
    let exit = lines.last().unwrap();
    assert!(json_check(exit).contains(r#""status": "0""#), "{exit}");
}

#[test]
fn the_log_level_filters_and_timestamps_start_text_lines() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_LOG_LEVEL", "warn")
        .args(["no-such-command-kubexit"])
        .run();
    assert_eq!(done.code(), 127);
    assert_eq!(done.stderr.lines().count(), 0, "{}", done.stderr);

    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_LOG_DATETIME", "true")
        .args(["true"])
        .run();
    for line in done.stderr.lines() {
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{line}");
        assert!(!rest.is_empty());
    }
    let refused = Kubexit::named("app", &yard)
        .env("KUBEXIT_LOG_FORMAT", "xml")
        .args(["true"])
        .run();
    assert_eq!(refused.code(), 2);
    assert_contains(&refused.stderr, "KUBEXIT_LOG_FORMAT");
}

#[test]
fn the_termination_message_says_why_kubexit_exited() {
    let yard = Yard::new();
    let message = yard.path().join("termination-log");
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_TERMINATION_LOG", &message)
        .sh("exit 3")
        .run();
    assert_eq!(done.code(), 3);
    assert_eq!(
        fs::read_to_string(&message).unwrap(),
        "app: the child exited with status 3 (exit status 3)\n"
    );

    let done = Kubexit::named("bad/name", &yard)
        .env("KUBEXIT_TERMINATION_LOG", &message)
        .args(["true"])
        .run();
    assert_eq!(done.code(), 2);
    let text = fs::read_to_string(&message).unwrap();
    assert!(
        text.starts_with("configuration error: KUBEXIT_NAME"),
        "{text}"
    );

    fs::remove_file(&message).unwrap();
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_TERMINATION_LOG", "none")
        .args(["true"])
        .run();
    assert_eq!(done.code(), 0);
    assert!(!message.exists());
}

/// The configuration's summary at start-up goes out in one write, so that
/// its lines never interleave with another writer's on a shared stderr.
/// stderr is one end of a `SOCK_SEQPACKET` socket pair here, which keeps
/// every write a record of its own: the summary must be one record.
#[test]
fn the_configuration_summary_is_one_write() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};

    let yard = Yard::new();
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`, which is two
    // ints long; each is owned by exactly one OwnedFd below.
    let made = unsafe {
        nix::libc::socketpair(
            nix::libc::AF_UNIX,
            nix::libc::SOCK_SEQPACKET | nix::libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(made, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just made and belong to no one else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let status = {
        let mut command = Command::new(util::kubexit_binary());
        command
            .args(["--name", "app", "--graveyard"])
            .arg(yard.path())
            .args(["--death-deps", "db", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(theirs));
        command.status().unwrap()
        // The command, and with it our copy of the writing end, is dropped
        // here: the reads below end when kubexit's copies are closed too.
    };
    assert!(status.success(), "{status:?}");
    let mut socket = fs::File::from(ours);
    let mut records = Vec::new();
    loop {
        let mut record = vec![0u8; 64 * 1024];
        let read = socket.read(&mut record).unwrap();
        if read == 0 {
            break;
        }
        record.truncate(read);
        records.push(String::from_utf8(record).unwrap());
    }
    let summary: Vec<&String> = records
        .iter()
        .filter(|r| r.contains("Graveyard: "))
        .collect();
    assert_eq!(summary.len(), 1, "{records:#?}");
    for line in [
        "Name: app",
        "Tombstone: ",
        "Birth Deps: ",
        "Death Deps: db",
        "Grace Period: ",
    ] {
        assert!(
            summary[0].contains(line),
            "{line:?} not in {:?}",
            summary[0]
        );
    }
    assert!(
        records.len() > 1,
        "the other lines are writes of their own: {records:#?}"
    );
}
