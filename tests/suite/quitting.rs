//! When a quit endpoint is asked: a sidecar that is not listening yet when
//! the child ends is waited for (up to the quit timeout), one that answered
//! and then closed is gone. Every main is a real kubexit; every sidecar a
//! real HTTP server on loopback that counts the calls.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

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
