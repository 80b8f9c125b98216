//! Tombstones on disk: Go's format written byte for byte, every Go fixture
//! read, atomic writes, and nothing in a tombstone able to hurt kubexit.

use std::fs;
use std::path::Path;

use crate::util::{Kubexit, Yard};

/// Checks `text` against Go's RFC 3339 with trimmed nanoseconds.
fn is_go_time(text: &str, offset: &str) -> bool {
    let Some(rest) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return false;
    };
    let Some(body) = rest.strip_suffix(offset) else {
        return false;
    };
    let (clock, fraction) = body.split_once('.').unwrap_or((body, ""));
    let shape_ok = clock.len() == 19
        && clock.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            _ => c.is_ascii_digit(),
        });
    let fraction_ok = fraction.is_empty()
        || (fraction.len() <= 9
            && fraction.chars().all(|c| c.is_ascii_digit())
            && !fraction.ends_with('0'));
    shape_ok && fraction_ok
}

#[test]
fn a_death_is_written_in_gos_format_with_keys_in_order() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard)
        .env("TZ", "UTC")
        .sh("exit 3")
        .run();
    assert_eq!(done.code(), 3);
    let text = yard.read("app").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'));
    // Go's keys in Go's order; kubexit's own keys (Ready: no probe, so
    // ready at birth; Reason) are plain YAML that Go ignores.
    assert_eq!(lines.len(), 5, "{text}");
    let value = |line: &str, key: &str| line.strip_prefix(key).map(str::to_owned);
    let born = value(lines[0], "Born: ").unwrap();
    assert!(is_go_time(&born, "Z"), "{text}");
    assert_eq!(value(lines[1], "Ready: "), Some(born), "{text}");
    assert!(
        is_go_time(&value(lines[2], "Died: ").unwrap(), "Z"),
        "{text}"
    );
    assert_eq!(lines[3], "ExitCode: 3");
    assert_eq!(lines[4], "Reason: \"the child exited with status 3\"");
}

#[test]
fn while_running_the_tombstone_holds_born_and_ready_only() {
    let yard = Yard::new();
    let running = Kubexit::named("app", &yard)
        .env("TZ", "UTC")
        .sh("echo up; sleep 30")
        .spawn();
    running.wait_for_output("up");
    let text = yard.read("app").unwrap();
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(": ").unwrap().0)
        .collect();
    assert_eq!(keys, ["Born", "Ready"], "{text}");
    for line in text.lines() {
        assert!(is_go_time(line.split_once(": ").unwrap().1, "Z"), "{text}");
    }
    running.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(running.finish().code(), 143);
}

#[test]
fn times_are_written_in_the_local_zone_like_go() {
    let yard = Yard::new();
    // A POSIX TZ string: no zoneinfo files needed.
    let done = Kubexit::named("app", &yard)
        .env("TZ", "IST-5:30")
        .args(["true"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let text = yard.read("app").unwrap();
    for line in text.lines().take(2) {
        let (_, time) = line.split_once(": ").unwrap();
        assert!(is_go_time(time, "+05:30"), "{text}");
    }
}

#[test]
fn writes_are_atomic_renames_that_leave_no_temporary_files() {
    let yard = Yard::new();
    let done = Kubexit::named("app", &yard).args(["true"]).run();
    assert_eq!(done.code(), 0);
    let mut entries: Vec<String> = fs::read_dir(yard.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    // The tombstone and the liveness lock file; no temporary file is left.
    assert_eq!(entries, [".app.lock", "app"]);
}

#[test]
fn the_graveyard_is_created_when_missing() {
    let yard = Yard::new();
    let nested = yard.path().join("a/b/graveyard");
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_GRAVEYARD", &nested)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .args(["true"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(nested.join("app").is_file());
}

/// Runs kubexit with the fixture `file` as its death dependency's
/// tombstone; returns whether the child started.
fn child_starts_beside(file: &Path) -> bool {
    let yard = Yard::new();
    fs::copy(file, yard.stone_path("dep")).unwrap();
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "dep")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    done.stdout.contains("started")
}

#[test]
fn every_go_fixture_is_read_and_only_deaths_count() {
    let mut seen = 0;
    for entry in fs::read_dir(crate::util::files::fixtures("go-tombstones")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        seen += 1;
        let alive = name == "born-only";
        assert_eq!(child_starts_beside(&path), alive, "fixture {name}");
    }
    assert_eq!(
        seen, 6,
        "fixtures missing from tests/fixtures/go-tombstones"
    );
}

#[test]
fn go_kubexit_reads_what_kubexit_writes_field_for_field() {
    // Go's reader takes Born and Died as RFC 3339 times and ExitCode as an
    // integer, ignoring other keys: our file must parse the same way here.
    let yard = Yard::new();
    Kubexit::named("app", &yard).sh("exit 5").run();
    let text = yard.read("app").unwrap();
    let died = text.lines().find_map(|l| l.strip_prefix("Died: ")).unwrap();
    let died: jiff::Timestamp = died.trim_matches('"').parse().unwrap();
    assert!(jiff::Timestamp::now().duration_since(died).as_secs() < 60);
    assert!(text.contains("\nExitCode: 5\n"));
}

#[test]
fn tombstones_in_other_forms_are_read_leniently() {
    for (form, content) in [
        (
            "json",
            r#"{"born":"2026-11-24T19:47:52Z","died":"2026-11-24T19:47:53Z","exitCode":0}"#,
        ),
        (
            "unquoted, lower case",
            "born: 2026-11-24T19:47:52Z\ndied: 2026-11-24T19:47:53Z\n",
        ),
        (
            "extra keys",
            "Born: \"2026-11-24T19:47:52Z\"\nDied: \"2026-11-24T19:47:53Z\"\nWho: x\n",
        ),
    ] {
        let yard = Yard::new();
        yard.write("dep", content);
        let done = Kubexit::named("app", &yard)
            .env("KUBEXIT_DEATH_DEPS", "dep")
            .sh("echo started")
            .run();
        assert!(
            !done.stdout.contains("started"),
            "{form}: death not seen\n{}",
            done.stderr
        );
    }
}

#[test]
fn hostile_tombstones_are_ignored_without_harm() {
    let yard = Yard::new();
    let outside = yard.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("target"), "Died: \"2026-11-24T19:47:53Z\"\n").unwrap();
    std::os::unix::fs::symlink(outside.join("target"), yard.stone_path("link")).unwrap();
    nix::unistd::mkfifo(&yard.stone_path("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    fs::create_dir(yard.stone_path("dir")).unwrap();
    fs::write(yard.stone_path("huge"), vec![b' '; 1 << 20]).unwrap();
    fs::write(yard.stone_path("binary"), [0u8, 159, 146, 150, 255]).unwrap();
    yard.write("half", "Born: \"2026-11-24T19:47:52Z\"\nDied: \"2026-11-2");

    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "link,fifo,dir,huge,binary,half")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(
        done.stdout.contains("started"),
        "a bad file counted as a death\n{}",
        done.stderr
    );
    for name in ["link", "fifo", "dir", "huge", "binary", "half"] {
        let path = yard.stone_path(name);
        assert!(
            done.stderr
                .contains(&format!("unreadable tombstone {}", path.display())),
            "{name} not reported:\n{}",
            done.stderr
        );
    }
    // Nothing was written through the link.
    let target = fs::read_to_string(outside.join("target")).unwrap();
    assert_eq!(target, "Died: \"2026-11-24T19:47:53Z\"\n");
}
