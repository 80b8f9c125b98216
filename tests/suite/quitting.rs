//! When a quit endpoint is asked, and by whom: a sidecar that is not
//! listening yet when the child ends is waited for (up to the quit
//! timeout), one that answered and then closed is gone; a sidecar shared
//! by several main containers is asked by the last one out, as their
//! tombstones tell (`Quit`), and a main named in `KUBEXIT_QUIT_AFTER` that
//! never comes delays the quit only up to the quit timeout. Every main is
//! a real kubexit in one graveyard; every sidecar a real HTTP server on
//! loopback that counts the calls.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{HttpServer, Kubexit, Yard, assert_contains, assert_lacks, free_port};

fn quit_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/quitquitquit")
}

/// The POSTs a server has had, as their request lines.
fn quits(server: &HttpServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|request| request.lines().next().unwrap_or_default().to_owned())
        .collect()
}

/// A file outside the graveyard whose creation ends the children waiting
/// for it.
struct Gate {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Gate {
    fn new() -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open");
        Gate { _dir: dir, path }
    }

    /// A child that ends once the gate is open.
    fn script(&self) -> String {
        waits_for(&self.path)
    }

    fn open(&self) {
        fs::write(&self.path, "").unwrap();
    }
}

impl Drop for Gate {
    /// A child left behind by a kubexit killed in a test ends too.
    fn drop(&mut self) {
        let _ = fs::write(&self.path, "");
    }
}

fn waits_for(path: &Path) -> String {
    format!(
        "echo up; while [ ! -e '{}' ]; do sleep 0.02; done",
        path.display()
    )
}

/// A main container's kubexit that asks `server` to quit once its child,
/// `script`, has ended.
fn main(name: &str, yard: &Yard, server: &HttpServer, script: &str) -> Kubexit {
    let mut kubexit = Kubexit::named(name, yard);
    kubexit
        .env("KUBEXIT_QUIT", quit_url(server.port))
        .sh(script);
    kubexit
}

// --- A sidecar not listening yet ----------------------------------------

#[test]
fn a_sidecar_that_starts_listening_after_the_child_has_ended_still_gets_its_quit() {
    let yard = Yard::new();
    let port = free_port();
    let main = Kubexit::named("main", &yard)
        .env("KUBEXIT_QUIT", quit_url(port))
        .env("KUBEXIT_QUIT_TIMEOUT", "10s")
        .args(["true"])
        .spawn();
    main.wait_for_log("connection refused, not listening yet; trying again until the quit timeout (10s) has passed");
    // The proxy starts a second after the main container has ended: this
    // pause is the scenario, not a wait for something.
    thread::sleep(Duration::from_secs(1));
    let proxy = HttpServer::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), 200);
    let done = main.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(quits(&proxy), ["POST /quitquitquit HTTP/1.1"]);
    assert_contains(&done.stderr, &format!("Quit {}: HTTP 200", quit_url(port)));
    assert_lacks(&done.stderr, "already gone");
}

#[test]
fn a_sidecar_that_never_listens_is_given_up_at_the_quit_timeout_and_the_status_stays() {
    let yard = Yard::new();
    let port = free_port();
    let started = Instant::now();
    let done = Kubexit::named("main", &yard)
        .env("KUBEXIT_QUIT", quit_url(port))
        .env("KUBEXIT_QUIT_TIMEOUT", "1500ms")
        .sh("exit 5")
        .run();
    assert_eq!(done.code(), 5, "{}", done.stderr);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_contains(
        &done.stderr,
        "connection refused, not listening yet; trying again until the quit timeout (1.5s) has passed",
    );
    assert_contains(
        &done.stderr,
        &format!(
            "Quit {} failed for 1.5s: connection refused throughout: nothing listened there",
            quit_url(port)
        ),
    );
    assert_lacks(&done.stderr, "already gone");
}

#[test]
fn a_refused_quit_after_the_sidecar_answered_means_it_is_already_gone() {
    let yard = Yard::new();
    // The sidecar answers the first call with a 503 and closes its port:
    // it is going, and the next call is refused.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sidecar = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        drop(listener);
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {}
        let _ = reader
            .into_inner()
            .write_all(b"HTTP/1.1 503 Draining\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let started = Instant::now();
    let done = Kubexit::named("main", &yard)
        .env("KUBEXIT_QUIT", format!("istio:{port}"))
        .env("KUBEXIT_QUIT_TIMEOUT", "10s")
        .args(["true"])
        .run();
    sidecar.join().unwrap();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(
        &done.stderr,
        "connection refused, the sidecar is already gone",
    );
    assert_lacks(&done.stderr, "not listening yet");
    // Not retried until the timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
}

// --- One sidecar, several main containers -------------------------------

#[test]
fn a_sidecar_shared_by_mains_that_end_one_after_the_other_is_asked_once_by_the_last() {
    let yard = Yard::new();
    let proxy = HttpServer::start(200);
    let gate = Gate::new();
    let second = main("second", &yard, &proxy, &gate.script()).spawn();
    second.wait_for_output("up");
    yard.wait_for("second", &format!("Quit: \"{}\"", quit_url(proxy.port)));

    let first = main("first", &yard, &proxy, "exit 0").run();
    assert_eq!(first.code(), 0, "{}", first.stderr);
    assert_contains(
        &first.stderr,
        &format!(
            "Quit {}: left to second, which uses it too and has not ended",
            quit_url(proxy.port)
        ),
    );
    assert!(quits(&proxy).is_empty(), "{:?}", proxy.requests());

    gate.open();
    let second = second.finish();
    assert_eq!(second.code(), 0, "{}", second.stderr);
    assert_eq!(quits(&proxy), ["POST /quitquitquit HTTP/1.1"]);
    assert_contains(
        &second.stderr,
        &format!("Quit {}: HTTP 200", quit_url(proxy.port)),
    );
}

#[test]
fn mains_that_end_at_once_ask_their_shared_sidecar_at_least_once() {
    let yard = Yard::new();
    let proxy = HttpServer::start(200);
    let gate = Gate::new();
    let mains: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| main(name, &yard, &proxy, &gate.script()).spawn())
        .collect();
    for (main, name) in mains.iter().zip(["a", "b", "c"]) {
        main.wait_for_output("up");
        yard.wait_for(name, "Quit: ");
    }
    gate.open();
    for main in mains {
        let done = main.finish();
        assert_eq!(done.code(), 0, "{}", done.stderr);
    }
    let asked = quits(&proxy).len();
    assert!((1..=3).contains(&asked), "{:?}", proxy.requests());
}

#[test]
fn a_main_named_in_quit_after_that_never_starts_delays_the_quit_by_the_quit_timeout_at_most() {
    let yard = Yard::new();
    let proxy = HttpServer::start(200);
    let started = Instant::now();
    let done = main("report", &yard, &proxy, "exit 3")
        .env("KUBEXIT_QUIT_AFTER", "migrate")
        .env("KUBEXIT_QUIT_TIMEOUT", "1500ms")
        .run();
    assert_eq!(done.code(), 3, "{}", done.stderr);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(quits(&proxy), ["POST /quitquitquit HTTP/1.1"]);
    assert_contains(
        &done.stderr,
        "Quit: waiting for migrate (KUBEXIT_QUIT_AFTER)",
    );
    let warning = format!(
        "Quit {}: migrate neither ended nor took it over within 1.5s; asking now",
        quit_url(proxy.port)
    );
    assert_contains(&done.stderr, &warning);
    assert!(done.stderr.find(&warning) < done.stderr.find("HTTP 200"));
}

#[test]
fn a_main_named_in_quit_after_that_starts_late_takes_the_quit_over() {
    let yard = Yard::new();
    let proxy = HttpServer::start(200);
    let gate = Gate::new();
    let report = main("report", &yard, &proxy, "exit 0")
        .env("KUBEXIT_QUIT_AFTER", "migrate")
        .env("KUBEXIT_QUIT_TIMEOUT", "10s")
        .spawn();
    report.wait_for_log("Quit: waiting for migrate");
    // migrate was still waiting for its birth dependencies; it starts now.
    let migrate = main("migrate", &yard, &proxy, &gate.script())
        .env("KUBEXIT_QUIT_AFTER", "report")
        .spawn();
    let report = report.finish();
    assert_eq!(report.code(), 0, "{}", report.stderr);
    assert_contains(&report.stderr, "left to migrate");
    assert!(quits(&proxy).is_empty(), "{:?}", proxy.requests());

    gate.open();
    let migrate = migrate.finish();
    assert_eq!(migrate.code(), 0, "{}", migrate.stderr);
    assert_eq!(quits(&proxy), ["POST /quitquitquit HTTP/1.1"]);
}

#[test]
fn a_main_whose_kubexit_was_killed_counts_as_dead_and_the_last_one_out_asks() {
    let yard = Yard::new();
    let proxy = HttpServer::start(200);
    let gate = Gate::new();
    let killed = main("killed", &yard, &proxy, &gate.script()).spawn();
    killed.wait_for_output("up");
    yard.wait_for("killed", "Quit: ");
    killed.signal(Signal::SIGKILL);
    let _ = killed.finish();

    let done = main("last", &yard, &proxy, "exit 0").run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(
        &done.stderr,
        "Lost: killed's kubexit ended without recording a death",
    );
    assert_eq!(quits(&proxy), ["POST /quitquitquit HTTP/1.1"]);
}
