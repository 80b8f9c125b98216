//! Birth dependencies in the graveyard: each kubexit records when its child
//! is ready (by a probe, or at birth), and kubexits with birth dependencies
//! start their child only when every dependency is ready.

use std::fs;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{
    self, HttpServer, Kubexit, Yard, assert_contains, free_port, is_root, kubexit_binary, skip,
};

/// A dependency named `name` running `sleep` with readiness `probe`.
fn dependency(yard: &Yard, name: &str, probe: &str) -> util::Running {
    Kubexit::named(name, yard)
        .env("KUBEXIT_READY_PROBE", probe)
        .env("KUBEXIT_READY_PERIOD", "20ms")
        .sh("echo up; exec sleep 1000")
        .spawn()
}

fn is_ready(yard: &Yard, name: &str) -> bool {
    yard.read(name).is_some_and(|t| t.contains("Ready: "))
}

fn stop(running: util::Running) {
    running.signal(Signal::SIGTERM);
    running.finish();
}

#[test]
fn without_a_probe_the_child_is_ready_when_born() {
    let yard = Yard::new();
    let db = Kubexit::named("db", &yard)
        .sh("echo up; exec sleep 1000")
        .spawn();
    db.wait_for_output("up");
    let stone = yard.read("db").unwrap();
    let born = stone
        .lines()
        .find_map(|l| l.strip_prefix("Born: "))
        .unwrap();
    let ready = stone
        .lines()
        .find_map(|l| l.strip_prefix("Ready: "))
        .unwrap();
    assert_eq!(born, ready);
    stop(db);
}

#[test]
fn a_tcp_probe_waits_for_a_listener_that_opens_late() {
    let yard = Yard::new();
    let port = free_port();
    let db = dependency(&yard, "db", &format!("tcp://127.0.0.1:{port}"));
    db.wait_for_output("up");
    db.wait_for_log("Not ready yet: tcp://127.0.0.1");
    assert!(!is_ready(&yard, "db"));
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db")
        .sh("echo started")
        .spawn();
    app.wait_for_log("Waiting for birth dependencies: db (born, not ready)");
    assert!(!app.stdout().contains("started"));

    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    yard.wait_for("db", "Ready: ");
    let done = app.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "started\n");
    stop(db);
}

#[test]
fn an_http_probe_is_ready_on_200_after_503() {
    let yard = Yard::new();
    let server = HttpServer::start(503);
    let db = dependency(
        &yard,
        "db",
        &format!("http://127.0.0.1:{}/healthz", server.port),
    );
    db.wait_for_log("Not ready yet: http://127.0.0.1");
    db.wait_for_log("HTTP status 503");
    assert!(!is_ready(&yard, "db"));
    server.set_status(200);
    yard.wait_for("db", "Ready: ");
    let request = server.requests().pop().unwrap();
    assert!(
        request.starts_with("GET /healthz HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains(&format!("Host: 127.0.0.1:{}\r\n", server.port)));
    stop(db);
}

#[test]
fn an_http_probe_accepts_redirects_and_refuses_client_errors() {
    let yard = Yard::new();
    let server = HttpServer::start(404);
    let db = dependency(&yard, "db", &format!("http://127.0.0.1:{}/", server.port));
    db.wait_for_log("HTTP status 404");
    server.set_status(302);
    yard.wait_for("db", "Ready: ");
    stop(db);
}

#[cfg(feature = "tls")]
#[test]
fn an_https_probe_talks_tls_without_verifying_the_certificate() {
    let yard = Yard::new();
    let dir = yard.path().join("tls");
    fs::create_dir(&dir).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(&dir)
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        panic!("openssl is needed to make a self-signed certificate (.ci/run installs it)");
    }
    let port = free_port();
    // A real HTTPS server with a self-signed certificate: python's http.server.
    let server_script = format!(
        "import http.server, ssl\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200); self.end_headers()\n\
         \x20   def log_message(self, *a): pass\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('cert.pem', 'key.pem')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n"
    );
    let db = dependency(&yard, "db", &format!("https://127.0.0.1:{port}/ready"));
    db.wait_for_log("Not ready yet: https://127.0.0.1");
    let mut server = std::process::Command::new("python3")
        .args(["-c", &server_script])
        .current_dir(&dir)
        .spawn()
        .expect("python3");
    let ready = std::panic::catch_unwind(|| yard.wait_for("db", "Ready: "));
    let _ = server.kill();
    let _ = server.wait();
    assert!(ready.is_ok(), "never ready over https:\n{}", db.stderr());
    stop(db);
}

#[test]
fn an_exec_probe_runs_without_a_shell_and_is_ready_on_exit_0() {
    let yard = Yard::new();
    let flag = yard.path().join("flag");
    let db = dependency(&yard, "db", &format!("exec:test -e {}", flag.display()));
    db.wait_for_log("Not ready yet: exec:test -e");
    db.wait_for_log("the command ended with status 1");
    assert!(!is_ready(&yard, "db"));
    fs::write(&flag, "").unwrap();
    yard.wait_for("db", "Ready: ");
    // Probe output never mixes with the child's.
    assert_eq!(db.stdout(), "up\n");
    stop(db);
}

#[test]
fn a_file_probe_is_ready_when_the_file_exists() {
    let yard = Yard::new();
    let flag = yard.path().join("ready-flag");
    let db = dependency(&yard, "db", &format!("file:{}", flag.display()));
    db.wait_for_log("Not ready yet: file:");
    fs::write(&flag, "").unwrap();
    yard.wait_for("db", "Ready: ");
    stop(db);
}

/// The shell that mounts a FUSE file system whose server never answers:
/// `/dev/fuse` is opened on descriptor 3 and never read, so the kernel's
/// first request (`INIT`) waits for ever and with it every later look into
/// the mount, `lstat` included, as on an NFS or FUSE mount whose server
/// hangs. Descriptor 3 stays open in whatever the shell becomes, so the
/// mount hangs for as long as that lives. Run in a mount namespace of its
/// own (`unshare --mount`), the mount is gone with it.
fn hung_mount_script(mount_point: &Path, then: &str) -> String {
    format!(
        "exec 3<>/dev/fuse && mount -i -t fuse \
         -o fd=3,rootmode=40000,user_id=0,group_id=0 kubexit-hung '{}' && {then}",
        mount_point.display()
    )
}

/// Why a hung mount cannot be made here, if it cannot: it needs root and
/// `/dev/fuse`.
fn no_hung_mount() -> Option<String> {
    if !is_root() {
        return Some("mounting a FUSE file system needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("there is no /dev/fuse".into());
    }
    let dir = tempfile::tempdir().unwrap();
    let (unshare, private) = crate::util::PRIVATE_MOUNTS.split_first().unwrap();
    let tried = Command::new(unshare)
        .args(private)
        .arg(hung_mount_script(dir.path(), "true"))
        .stdin(Stdio::null())
        .output();
    match tried {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "cannot mount FUSE: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Some(format!("cannot run unshare: {err}")),
    }
}

/// kubexit named `name` in a mount namespace of its own where `mount_point`
/// hangs, its readiness `file:` a path inside it, each attempt bounded by
/// 100ms; `child` is run by `sh -c`.
fn probing_a_hung_mount(yard: &Yard, name: &str, mount_point: &Path, child: &str) -> Kubexit {
    let mut kubexit = Kubexit::named(name, yard);
    kubexit
        .env(
            "KUBEXIT_READY_PROBE",
            format!("file:{}", hung_file(mount_point).display()),
        )
        .env("KUBEXIT_READY_PERIOD", "20ms")
        .env("KUBEXIT_READY_TIMEOUT", "100ms")
        .args(crate::util::PRIVATE_MOUNTS)
        .args([hung_mount_script(mount_point, r#"exec "$0" "$@""#)])
        .arg_path(&kubexit_binary())
        .sh(child);
    kubexit
}

fn hung_file(mount_point: &Path) -> PathBuf {
    mount_point.join("ready")
}

/// The threads of `pid` now.
fn threads(pid: nix::unistd::Pid) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// The `lstat` of a `file:` probe on a mount that hangs runs off the event
/// loop: each attempt ends at the probe timeout and says so, at most one
/// `lstat` is in flight however many attempts time out, and meanwhile the
/// loop sees a death dependency die and runs the stop sequence to its
/// SIGKILL deadline. (The `lstat` really hangs: the FUSE server never
/// answers. Before, it ran on the loop's thread, and kubexit saw nothing
/// more.)
#[test]
fn a_file_probe_on_a_hung_mount_times_out_and_the_loop_still_stops_the_child() {
    const TEST: &str = "a_file_probe_on_a_hung_mount_times_out...";
    if let Some(why) = no_hung_mount() {
        return skip(TEST, &why);
    }
    let yard = Yard::new();
    let mount_point = tempfile::tempdir().unwrap();
    let running = probing_a_hung_mount(
        &yard,
        "app",
        mount_point.path(),
        "trap '' TERM; echo up; sleep 1; echo waited; while :; do sleep 0.1; done",
    )
    .env("KUBEXIT_DEATH_DEPS", "main")
    .env("KUBEXIT_GRACE_PERIOD", "300ms")
    .spawn_self();
    running.wait_for_output("up");
    // About eight attempts time out while the child waits a second: the
    // loop's thread and one hung lstat, never more.
    let mut most = 0;
    while !running.stdout().contains("waited") {
        most = most.max(threads(running.pid()));
        std::thread::sleep(Duration::from_millis(10));
    }
    yard.bury("main");
    let done = running.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stderr.contains("New death: main"), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "Not ready yet: file:{}: the file system did not answer within 100ms",
            hung_file(mount_point.path()).display()
        )),
        "{}",
        done.stderr
    );
    assert!(most <= 2, "{most} threads at once");
    // The child ignored SIGTERM: the grace period's SIGKILL ended it.
    assert!(
        yard.read("app").unwrap().contains("ExitCode: 137\n"),
        "{}",
        done.stderr
    );
    assert!(!is_ready(&yard, "app"));
}

/// A stop signal reaches the child while the `file:` probe's `lstat`
/// hangs.
#[test]
fn a_stop_signal_reaches_the_child_while_a_file_probe_hangs() {
    const TEST: &str = "a_stop_signal_reaches_the_child_while_a_file_probe_hangs";
    if let Some(why) = no_hung_mount() {
        return skip(TEST, &why);
    }
    let yard = Yard::new();
    let mount_point = tempfile::tempdir().unwrap();
    let running = probing_a_hung_mount(
        &yard,
        "app",
        mount_point.path(),
        "echo up; sleep 0.5; echo waited; exec sleep 1000",
    )
    .spawn_self();
    // By then the first attempt's lstat has hung for half a second.
    running.wait_for_output("waited");
    running.signal(Signal::SIGTERM);
    let done = running.finish();
    assert_eq!(done.code(), 143, "{}", done.stderr);
    assert!(yard.read("app").unwrap().contains("ExitCode: 143\n"));
    assert!(
        done.stderr
            .contains("the file system did not answer within 100ms"),
        "{}",
        done.stderr
    );
}

#[test]
fn notify_marks_ready_on_a_ready_datagram_sent_to_notify_socket() {
    let yard = Yard::new();
    let socket_file = yard.path().join("socket-name");
    let db = Kubexit::named("db", &yard)
        .env("KUBEXIT_READY_PROBE", "notify")
        .sh(&format!(
            "echo \"$NOTIFY_SOCKET\" > {}; exec sleep 1000",
            socket_file.display()
        ))
        .spawn();
    let name = yard.wait_for("socket-name", "\n");
    let name = name.trim();
    assert!(name.starts_with('@'), "{name}");
    let sender = UnixDatagram::unbound().unwrap();
    let address = SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
    sender.send_to_addr(b"STATUS=starting\n", &address).unwrap();
    sender
        .send_to_addr(b"STATUS=warming up\nMAINPID=1\n", &address)
        .unwrap();
    // Both datagrams were read, and still not ready: only READY=1 counts.
    db.wait_for_log("Child status: warming up");
    assert!(!is_ready(&yard, "db"));
    sender
        .send_to_addr(b"STATUS=serving\nREADY=1\n", &address)
        .unwrap();
    yard.wait_for("db", "Ready: ");
    stop(db);
}

#[test]
fn the_birth_timeout_ends_the_wait_naming_what_was_awaited() {
    let yard = Yard::new();
    yard.write(
        "dbb",
        "Born: \"2026-11-24T19:47:52Z\"\nReady: \"2026-11-24T19:47:52Z\"\n",
    );
    yard.write("cache", "Born: \"2026-11-24T19:47:52Z\"\n");
    let started = Instant::now();
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db,cache")
        .env("KUBEXIT_BIRTH_TIMEOUT", "300ms")
        .sh("echo started")
        .run();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(done.code(), 1, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert_contains(
        &done.stderr,
        "birth dependencies not ready after 300ms: cache (born, not ready), \
             db (no tombstone yet; the graveyard holds: cache, dbb)",
    );
    let stone = yard.read("app").unwrap();
    assert!(
        !stone.contains("Born") && stone.contains("ExitCode: -1\n"),
        "{stone}"
    );
}

#[test]
fn a_birth_dependency_that_dies_ends_the_wait_at_once() {
    let yard = Yard::new();
    yard.write("db", "Born: \"2026-11-24T19:47:52Z\"\n");
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1h")
        .sh("echo started")
        .spawn();
    app.wait_for_log("Waiting for birth dependencies");
    yard.bury("db");
    let done = app.finish();
    assert_eq!(done.code(), 1, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert_contains(&done.stderr, "Birth dependency died: db");
    assert!(
        yard.read("app")
            .unwrap()
            .contains("birth dependency db died")
    );
}

#[test]
fn a_death_dependency_dying_during_the_wait_means_the_child_never_starts() {
    let yard = Yard::new();
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db")
        .env("KUBEXIT_DEATH_DEPS", "main")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1h")
        .sh("echo started")
        .spawn();
    app.wait_for_log("Waiting for birth dependencies");
    yard.bury("main");
    let done = app.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert!(done.stderr.contains("New death: main"));
}

#[test]
fn a_stop_signal_during_the_wait_means_the_child_never_starts() {
    let yard = Yard::new();
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1h")
        .sh("echo started")
        .spawn();
    app.wait_for_log("Waiting for birth dependencies");
    app.signal(Signal::SIGTERM);
    let done = app.finish();
    assert_eq!(done.code(), 143, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    let stone = yard.read("app").unwrap();
    assert!(
        stone.contains("Died: ") && stone.contains("ExitCode: -1\n"),
        "{stone}"
    );
}

#[test]
fn a_dependency_ready_before_the_wait_began_counts() {
    let yard = Yard::new();
    yard.write(
        "db",
        "Born: \"2026-11-24T19:47:52Z\"\nReady: \"2026-11-24T19:47:53Z\"\n",
    );
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "db")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "started\n");
}

#[test]
fn a_chain_started_in_reverse_order_starts_in_dependency_order() {
    let yard = Yard::new();
    let order = yard.path().join("order");
    let member = |name: &str, after: Option<&str>| {
        let mut k = Kubexit::named(name, &yard);
        if let Some(after) = after {
            k.env("KUBEXIT_BIRTH_DEPS", after);
        }
        k.env(
            "KUBEXIT_READY_PROBE",
            format!("file:{}/{name}.ready", yard.path().display()),
        )
        .env("KUBEXIT_READY_PERIOD", "20ms")
        .sh(&format!(
            "echo {name} >> {order}; sleep 0.1; touch {dir}/{name}.ready; exec sleep 1000",
            order = order.display(),
            dir = yard.path().display()
        ))
        .spawn()
    };
    let c = member("c", Some("b"));
    c.wait_for_log("Waiting for birth dependencies: b (no tombstone yet");
    let b = member("b", Some("a"));
    b.wait_for_log("Waiting for birth dependencies: a (no tombstone yet");
    let a = member("a", None);
    c.wait_for_log("Starting: ");
    yard.wait_for("c", "Ready: ");
    assert_eq!(fs::read_to_string(&order).unwrap(), "a\nb\nc\n");
    for running in [a, b, c] {
        stop(running);
    }
}

#[test]
fn probing_never_makes_kubexit_miss_a_death() {
    let yard = Yard::new();
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "main")
        .env(
            "KUBEXIT_READY_PROBE",
            format!("tcp://127.0.0.1:{}", free_port()),
        )
        .env("KUBEXIT_READY_PERIOD", "10ms")
        .sh("echo up; exec sleep 1000")
        .spawn();
    app.wait_for_log("Not ready yet");
    yard.bury("main");
    let done = app.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stderr.contains("New death: main"));
}

/// With every dependency's tombstone in place, in a graveyard of its own,
/// nothing in the graveyard wakes a kubexit: a probe still due must, or
/// the child is never ready.
#[test]
fn a_probe_still_due_runs_while_a_quiet_graveyard_is_watched() {
    let yard = Yard::private();
    yard.write("main", "Born: \"2026-11-24T19:47:52.28610517Z\"\n");
    let flag = yard.path().join("ready-flag");
    let app = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", "main")
        .env("KUBEXIT_READY_PROBE", format!("file:{}", flag.display()))
        .env("KUBEXIT_READY_PERIOD", "20ms")
        .sh("echo up; exec sleep 1000")
        .spawn();
    app.wait_for_log("Not ready yet: file:");
    fs::write(&flag, "").unwrap();
    yard.wait_for("app", "Ready: ");
    yard.bury("main");
    let done = app.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "New death: main");
}

/// The README's Hercules and Iphicles, as written: app2 starts only once
/// app1 has started (no probe: ready when born).
#[test]
fn hercules_and_iphicles_app2_waits_for_app1() {
    let yard = Yard::new();
    let app2 = Kubexit::named("app2", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "app1")
        .sh("echo app2 started")
        .spawn();
    app2.wait_for_log("Waiting for birth dependencies: app1 (no tombstone yet");
    assert!(!app2.stdout().contains("started"));
    let app1 = Kubexit::named("app1", &yard)
        .sh("echo up; exec sleep 1000")
        .spawn();
    app1.wait_for_output("up");
    let done = app2.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "app2 started\n");
    stop(app1);
}
