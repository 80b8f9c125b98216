//! Sidecars kubexit does not wrap, several main containers, and the order
//! of shutdown: the death policy `all`, quit endpoints, birth probes, and
//! holding a stop signal until the main containers have drained. Every
//! endpoint here is a real HTTP server on loopback that answers as the
//! proxies do (Istio's pilot-agent, linkerd-proxy, cloud-sql-proxy),
//! including slowly, wrongly, or not at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{
    self, Kubexit, Yard, assert_contains, assert_lacks, eventually, free_port, kubexit,
};

/// How one request is answered.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Answer after a while.
    Slowly(u16, Duration),
    /// Read the request, then never answer (until the test ends).
    Never,
}

/// A loopback HTTP server that answers its requests by a script (the last
/// reply repeats) and records them as `METHOD PATH`.
struct Endpoint {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Endpoint {
    fn start(script: &[Reply]) -> Endpoint {
        Endpoint::on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn on(listener: TcpListener, script: &[Reply]) -> Endpoint {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, script) = (Arc::clone(&seen), script.to_vec());
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let reply = script[n.min(script.len() - 1)];
                let log = Arc::clone(&log);
                thread::spawn(move || answer(stream, reply, &log));
            }
        });
        Endpoint { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(stream: TcpStream, reply: Reply, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let request: Vec<&str> = line.split_whitespace().take(2).collect();
    log.lock().unwrap().push(request.join(" "));
    let mut stream = reader.into_inner();
    let status = match reply {
        Reply::Status(status) => status,
        Reply::Slowly(status, delay) => {
            thread::sleep(delay);
            status
        }
        Reply::Never => {
            let _ = stream.read(&mut [0u8; 1]);
            return;
        }
    };
    let answer =
        format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(answer.as_bytes());
}

fn is_dead(yard: &Yard, name: &str) -> bool {
    yard.read(name).is_some_and(|s| s.contains("Died: "))
}

// --- The death policy ---------------------------------------------------

#[test]
fn under_the_policy_all_a_shared_sidecar_stops_only_once_every_main_has_died() {
    let yard = Yard::new();
    let proxy = Kubexit::named("proxy", &yard)
        .env("KUBEXIT_DEATH_DEPS", "main-a,main-b")
        .env("KUBEXIT_DEATH_POLICY", "all")
        .sh("echo up; exec sleep 1000")
        .spawn();
    proxy.wait_for_output("up");
    yard.bury("main-a");
    proxy.wait_for_log("Still awaiting the deaths of: main-b");
    yard.wait_for("proxy", "Awaiting: \"the deaths of main-b\"");
    let status = kubexit()
        .args(["--status", "--graveyard"])
        .arg_path(yard.path())
        .run();
    assert_contains(&status.stdout, "awaiting the deaths of main-b");
    assert!(!is_dead(&yard, "proxy"));
    yard.bury("main-b");
    let done = proxy.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let stone = yard.read("proxy").unwrap();
    assert_contains(&stone, "Reason: \"stopped because main-a and main-b died");
    assert_lacks(&stone, "Awaiting");
}

#[test]
fn under_the_policy_all_a_dependency_without_a_tombstone_counts_as_alive() {
    let yard = Yard::new();
    yard.bury("main-a");
    let proxy = Kubexit::named("proxy", &yard)
        .env("KUBEXIT_DEATH_DEPS", "main-a,main-b")
        .env("KUBEXIT_DEATH_POLICY", "all")
        .sh("echo up; exec sleep 1000")
        .spawn();
    // main-a is already dead: the child starts all the same, and waits.
    proxy.wait_for_output("up");
    yard.wait_for("proxy", "Awaiting: \"the deaths of main-b\"");
    yard.bury("main-b");
    let done = proxy.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_contains(&done.stderr, "New death: main-b");
}

#[test]
fn under_the_policy_all_every_dependency_dead_before_start_means_no_start() {
    let yard = Yard::new();
    yard.bury("main-a");
    yard.bury("main-b");
    let done = Kubexit::named("proxy", &yard)
        .env("KUBEXIT_DEATH_DEPS", "main-a,main-b")
        .env("KUBEXIT_DEATH_POLICY", "all")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert!(
        yard.read("proxy")
            .unwrap()
            .contains("never started: death dependencies main-a and main-b had already died"),
        "{}",
        done.stderr
    );
}

#[test]
fn under_the_policy_any_the_first_death_stops_the_child() {
    let yard = Yard::new();
    let proxy = Kubexit::named("proxy", &yard)
        .env("KUBEXIT_DEATH_DEPS", "main-a,main-b")
        .sh("echo up; exec sleep 1000")
        .spawn();
    proxy.wait_for_output("up");
    yard.bury("main-b");
    let done = proxy.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(
        yard.read("proxy")
            .unwrap()
            .contains("Reason: \"stopped because main-b died;")
    );
}

// --- Quit endpoints -----------------------------------------------------

#[test]
fn once_the_child_has_ended_every_quit_endpoint_is_called_as_the_proxies_want() {
    let yard = Yard::new();
    // Istio's pilot-agent answers at once; linkerd-proxy takes a moment;
    // cloud-sql-proxy fails twice before it agrees; Envoy's admin port and
    // a GET endpoint of the user's own.
    let istio = Endpoint::start(&[Reply::Status(200)]);
    let linkerd = Endpoint::start(&[Reply::Slowly(202, Duration::from_millis(300))]);
    let cloudsql = Endpoint::start(&[Reply::Status(503), Reply::Status(500), Reply::Status(200)]);
    let envoy = Endpoint::start(&[Reply::Status(200)]);
    let custom = Endpoint::start(&[Reply::Status(204)]);
    let quit = format!(
        "istio:{}, linkerd:{},cloud-sql-proxy:{}, envoy:{}, GET:http://127.0.0.1:{}/stop",
        istio.port, linkerd.port, cloudsql.port, envoy.port, custom.port
    );
    let done = Kubexit::named("main", &yard)
        .env("KUBEXIT_QUIT", &quit)
        .sh("exit 3")
        .run();
    // The child's status, whatever the endpoints said.
    assert_eq!(done.code(), 3, "{}", done.stderr);
    assert_eq!(istio.seen(), ["POST /quitquitquit"]);
    assert_eq!(linkerd.seen(), ["POST /shutdown"]);
    assert_eq!(cloudsql.seen(), ["POST /quitquitquit"; 3]);
    assert_eq!(envoy.seen(), ["POST /quitquitquit"]);
    assert_eq!(custom.seen(), ["GET /stop"]);
    for line in [
        format!(
            "Quit http://127.0.0.1:{}/quitquitquit: HTTP 200",
            istio.port
        ),
        format!("Quit http://127.0.0.1:{}/shutdown: HTTP 202", linkerd.port),
        format!(
            "Quit http://127.0.0.1:{}/quitquitquit: HTTP 200",
            cloudsql.port
        ),
        format!("Quit GET:http://127.0.0.1:{}/stop: HTTP 204", custom.port),
    ] {
        assert!(done.stderr.contains(&line), "{line}\n{}", done.stderr);
    }
    // Died was recorded before any of them was called.
    assert!(
        done.stderr.find("Updating tombstone").unwrap() < done.stderr.find("Quit ").unwrap(),
        "{}",
        done.stderr
    );
}

#[test]
fn a_quit_endpoint_that_fails_is_given_up_after_the_quit_timeout_and_the_status_stays() {
    let yard = Yard::new();
    let broken = Endpoint::start(&[Reply::Status(500)]);
    let silent = Endpoint::start(&[Reply::Never]);
    let started = Instant::now();
    let done = Kubexit::named("main", &yard)
        .env(
            "KUBEXIT_QUIT",
            format!("linkerd:{},istio:{}", broken.port, silent.port),
        )
        .env("KUBEXIT_QUIT_TIMEOUT", "1500ms")
        .sh("exit 4")
        .run();
    assert_eq!(done.code(), 4, "{}", done.stderr);
    assert!(broken.seen().len() >= 2, "{:?}", broken.seen());
    for (port, why) in [
        (broken.port, "HTTP 500"),
        (silent.port, "no answer within 1s"),
    ] {
        assert!(
            done.stderr.contains(&format!(
                "failed for 1.5s: {why}; the sidecar may keep the pod running"
            )) && done.stderr.contains(&port.to_string()),
            "{why}\n{}",
            done.stderr
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn a_child_that_never_started_still_lets_the_sidecars_quit() {
    let yard = Yard::new();
    yard.bury("db");
    let istio = Endpoint::start(&[Reply::Status(200)]);
    let done = Kubexit::named("main", &yard)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .env("KUBEXIT_QUIT", format!("istio:{}", istio.port))
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert_eq!(istio.seen(), ["POST /quitquitquit"]);
}

#[test]
fn bad_quit_endpoints_are_refused_naming_the_setting() {
    let yard = Yard::new();
    for bad in ["envoy", "ftp://x/quit", "istio:http"] {
        let done = Kubexit::named("main", &yard)
            .env("KUBEXIT_QUIT", bad)
            .args(["true"])
            .run();
        assert_eq!(done.code(), 2, "{bad}: {}", done.stderr);
        assert!(
            done.stderr.contains("KUBEXIT_QUIT (--quit)") && done.stderr.contains("envoy:PORT"),
            "{bad}: {}",
            done.stderr
        );
    }
}

// --- Birth probes -------------------------------------------------------

#[test]
fn the_child_starts_once_every_birth_probe_and_graveyard_dependency_is_ready() {
    let yard = Yard::new();
    // Istio's readiness endpoint: 503 until the proxy has its config.
    let istio = Endpoint::start(&[Reply::Status(503), Reply::Status(503), Reply::Status(200)]);
    // A database whose port opens late.
    let db_port = free_port();
    let running = Kubexit::named("main", &yard)
        .env("KUBEXIT_BIRTH_DEPS", "cache")
        .env(
            "KUBEXIT_BIRTH_PROBES",
            format!(
                "http://127.0.0.1:{}/healthz/ready, tcp://127.0.0.1:{db_port}",
                istio.port
            ),
        )
        .env("KUBEXIT_READY_PERIOD", "50ms")
        .sh("echo started")
        .spawn();
    running.wait_for_log("Not ready yet: http://127.0.0.1:");
    running.wait_for_log(&format!("Not ready yet: tcp://127.0.0.1:{db_port}"));
    eventually("three tries of the readiness endpoint", || {
        istio.seen().len() >= 3
    });
    // Both probes pass now; the graveyard dependency still holds it back.
    let listener = TcpListener::bind(("127.0.0.1", db_port)).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(
        !running.stdout().contains("started"),
        "{}",
        running.stderr()
    );
    yard.write(
        "cache",
        "Born: \"2026-11-24T19:47:52Z\"\nReady: \"2026-11-24T19:47:52Z\"\n",
    );
    let done = running.finish();
    drop(listener);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(done.stdout.contains("started"));
    assert!(istio.seen().iter().all(|r| r == "GET /healthz/ready"));
}

#[test]
fn a_birth_probe_that_never_passes_ends_the_wait_naming_why() {
    let yard = Yard::new();
    let linkerd = Endpoint::start(&[Reply::Status(503)]);
    let done = Kubexit::named("main", &yard)
        .env(
            "KUBEXIT_BIRTH_PROBES",
            format!("http://127.0.0.1:{}/ready", linkerd.port),
        )
        .env("KUBEXIT_BIRTH_TIMEOUT", "500ms")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 1, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    let expected = format!(
        "birth dependencies not ready after 500ms: http://127.0.0.1:{}/ready (HTTP status 503)",
        linkerd.port
    );
    assert_contains(&done.stderr, &expected);
}

#[test]
fn a_stop_signal_or_a_death_during_a_birth_probe_wait_means_no_start() {
    let yard = Yard::new();
    let never = Endpoint::start(&[Reply::Status(503)]);
    let probes = format!("http://127.0.0.1:{}/ready", never.port);
    let waiting = Kubexit::named("main", &yard)
        .env("KUBEXIT_BIRTH_PROBES", &probes)
        .sh("echo started")
        .spawn();
    waiting.wait_for_log("Not ready yet");
    waiting.signal(Signal::SIGTERM);
    let done = waiting.finish();
    assert_eq!(done.code(), 143, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));

    let waiting = Kubexit::named("other", &yard)
        .env("KUBEXIT_BIRTH_PROBES", &probes)
        .env("KUBEXIT_DEATH_DEPS", "db")
        .sh("echo started")
        .spawn();
    waiting.wait_for_log("Not ready yet");
    yard.bury("db");
    let done = waiting.finish();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(!done.stdout.contains("started"));
    assert_contains(&done.stderr, "New death: db");
}

#[test]
fn a_notify_birth_probe_is_refused() {
    let yard = Yard::new();
    let done = Kubexit::named("main", &yard)
        .env("KUBEXIT_BIRTH_PROBES", "tcp://127.0.0.1:5432,notify")
        .args(["true"])
        .run();
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert_contains(
        &done.stderr,
        "KUBEXIT_BIRTH_PROBES (--birth-probes): notify is the child's own word",
    );
}

// --- Holding the line at pod shutdown ----------------------------------

/// A loopback forwarder, the sidecar: accepts on `listen` and relays each
/// connection to `upstream`, until SIGTERM, which ends it at once.
const FORWARDER: &str = r#"
import socket, sys, threading
listen, upstream = int(sys.argv[1]), int(sys.argv[2])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen))
server.listen(64)
print("forwarding", flush=True)
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
while True:
    client, _ = server.accept()
    backend = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pipe, args=(client, backend), daemon=True).start()
    threading.Thread(target=pipe, args=(backend, client), daemon=True).start()
"#;

/// The main container: on SIGTERM it drains, sending 20 requests through
/// the forwarder, and says how many succeeded.
const DRAINER: &str = r#"
import signal, socket, sys, time
port = int(sys.argv[1])
def drain(*_):
    ok = 0
    for _ in range(20):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"GET /drain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            if answer.startswith(b"HTTP/1.1 200"):
                ok += 1
            else:
                print("answer", answer, flush=True)
            s.close()
        except OSError as e:
            print("error", e, flush=True)
        time.sleep(0.05)
    print(f"drained {ok}/20", flush=True)
    sys.exit(0 if ok == 20 else 1)
signal.signal(signal.SIGTERM, drain)
print("up", flush=True)
while True:
    time.sleep(1)
"#;

struct Pod {
    yard: Yard,
    backend: Endpoint,
    dir: tempfile::TempDir,
    forward_port: u16,
}

impl Pod {
    fn new() -> Pod {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("forwarder.py"), FORWARDER).unwrap();
        std::fs::write(dir.path().join("drainer.py"), DRAINER).unwrap();
        Pod {
            yard: Yard::new(),
            backend: Endpoint::start(&[Reply::Status(200)]),
            dir,
            forward_port: free_port(),
        }
    }

    fn script(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn sidecar(&self, stop_after: Option<&str>) -> util::Running {
        let mut sidecar = Kubexit::named("proxy", &self.yard);
        sidecar.env("KUBEXIT_DEATH_DEPS", "main");
        if let Some(names) = stop_after {
            sidecar.env("KUBEXIT_STOP_AFTER", names);
        }
        let running = sidecar
            .args(["python3", &self.script("forwarder.py")])
            .args([self.forward_port.to_string(), self.backend.port.to_string()])
            .spawn();
        running.wait_for_output("forwarding");
        running
    }

    fn main(&self) -> util::Running {
        let running = Kubexit::named("main", &self.yard)
            .args(["python3", &self.script("drainer.py")])
            .arg_path(Path::new(&self.forward_port.to_string()))
            .spawn();
        running.wait_for_output("up");
        running
    }
}

#[test]
fn at_pod_deletion_the_sidecar_holds_the_stop_signal_until_the_main_container_has_drained() {
    let pod = Pod::new();
    let proxy = pod.sidecar(Some("main"));
    let main = pod.main();
    // The kubelet signals every container of the pod at once.
    proxy.signal(Signal::SIGTERM);
    main.signal(Signal::SIGTERM);
    let main = main.finish();
    assert!(
        main.stdout.contains("drained 20/20"),
        "{}{}",
        main.stdout,
        main.stderr
    );
    assert_eq!(main.code(), 0);
    let proxy = proxy.finish();
    assert!(
        proxy
            .stderr
            .contains("Stop after: holding SIGTERM until main has died"),
        "{}",
        proxy.stderr
    );
    // Then main's death ends the hold: as a death dependency it stops the
    // forwarder itself.
    let held = proxy.stderr.find("holding SIGTERM").unwrap();
    let death = proxy.stderr.find("New death: main").unwrap();
    assert!(held < death, "{}", proxy.stderr);
    assert_eq!(pod.backend.seen().len(), 20);
}

#[test]
fn without_stop_after_the_sidecar_quits_first_and_the_drain_fails() {
    // The defect the hold closes, shown on the same pod: this is what a
    // Job sees in a mesh today.
    let pod = Pod::new();
    let proxy = pod.sidecar(None);
    let main = pod.main();
    proxy.signal(Signal::SIGTERM);
    eventually("the forwarder gone", || {
        TcpStream::connect(("127.0.0.1", pod.forward_port)).is_err()
    });
    main.signal(Signal::SIGTERM);
    let main = main.finish();
    assert_lacks(&main.stdout, "drained 20/20");
    drop(proxy.finish());
}

/// A proxy named `name` holds SIGTERM for main, and passes it on once the
/// bound has passed.
fn held_until_the_bound(yard: &Yard, name: &str) {
    let proxy = Kubexit::named(name, yard)
        .env("KUBEXIT_STOP_AFTER", "main")
        .env("KUBEXIT_STOP_AFTER_TIMEOUT", "700ms")
        .sh("echo up; exec sleep 1000")
        .spawn();
    proxy.wait_for_output("up");
    let held = Instant::now();
    proxy.signal(Signal::SIGTERM);
    proxy.wait_for_log("holding SIGTERM until main has died (at most 700ms)");
    yard.wait_for(name, "Awaiting: \"the deaths of main before stopping\"");
    let done = proxy.finish();
    assert!(held.elapsed() >= Duration::from_millis(700));
    assert_eq!(done.code(), 143, "{}", done.stderr);
    assert_contains(
        &done.stderr,
        "Stop after: main still running after 700ms; passing the stop signal on",
    );
}

#[test]
fn a_held_stop_signal_is_passed_on_after_the_bound_or_at_a_second_one() {
    let yard = Yard::new();
    held_until_the_bound(&yard, "proxy");

    let proxy = Kubexit::named("proxy2", &yard)
        .env("KUBEXIT_STOP_AFTER", "main")
        .env("KUBEXIT_STOP_AFTER_TIMEOUT", "1h")
        .sh("echo up; exec sleep 1000")
        .spawn();
    proxy.wait_for_output("up");
    proxy.signal(Signal::SIGTERM);
    proxy.wait_for_log("holding SIGTERM");
    proxy.signal(Signal::SIGINT);
    let done = proxy.finish();
    assert_eq!(done.code(), 130, "{}", done.stderr);
    assert_contains(&done.stderr, "a second stop signal; passing it on now");
}

/// With main born, in a graveyard of its own, nothing in the graveyard
/// wakes the proxy (no directory watch, main does not change, no sibling
/// of the graveyard goes): the stop signal and the bound must wake a loop
/// at rest.
#[test]
fn a_held_stop_signal_is_passed_on_after_the_bound_in_a_quiet_graveyard() {
    let yard = Yard::private();
    yard.write("main", "Born: \"2026-11-24T19:47:52.28610517Z\"\n");
    held_until_the_bound(&yard, "proxy");
}

#[test]
fn a_stop_signal_is_not_held_for_processes_already_dead() {
    let yard = Yard::new();
    yard.bury("main");
    let proxy = Kubexit::named("proxy", &yard)
        .env("KUBEXIT_STOP_AFTER", "main")
        .sh("echo up; exec sleep 1000")
        .spawn();
    proxy.wait_for_output("up");
    proxy.signal(Signal::SIGTERM);
    let done = proxy.finish();
    assert_eq!(done.code(), 143, "{}", done.stderr);
    assert_lacks(&done.stderr, "holding");
}
