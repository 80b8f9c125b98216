//! Kubernetes API mode for birth dependencies (`KUBEXIT_POD_NAME`), against
//! a loopback API server that speaks the real list/watch wire format over
//! HTTPS with a service account's token and CA.
#![cfg(feature = "kubernetes")]

#[path = "util/apiserver.rs"]
mod apiserver;
mod util;

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use apiserver::{ApiServer, Container, pod};
use nix::sys::signal::Signal;
use util::{Kubexit, Running, Yard, eventually, kubexit};

const NOT_READY: Container = Container::Running { ready: false };
const READY: Container = Container::Running { ready: true };

/// A kubexit named `client` whose birth dependency is the pod's `server`
/// container, in API mode against `server`; its child prints `started`.
fn client(yard: &Yard, api: &ApiServer) -> Kubexit {
    let mut k = Kubexit::named("client", yard);
    api.configure(&mut k);
    k.env("KUBEXIT_BIRTH_DEPS", "server")
        .env("KUBEXIT_NAMESPACE", apiserver::NAMESPACE)
        .sh("echo started");
    k
}

fn assert_started(run: util::Finished) {
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "started\n", "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

fn assert_never_started(run: &util::Finished, yard: &Yard, code: i32) {
    assert_eq!(run.code(), code, "{}", run.stderr);
    assert_eq!(run.stdout, "", "the child must not start\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let stone = yard.read("client").expect("tombstone");
    assert!(stone.contains("Died:"), "{stone}");
    assert!(!stone.contains("Born:"), "{stone}");
}

/// Spawns `k` with a long birth timeout and waits until it is watching the
/// pod: a kubexit in the middle of its wait.
fn waiting(k: &mut Kubexit, api: &ApiServer) -> Running {
    let running = k.env("KUBEXIT_BIRTH_TIMEOUT", "10m").spawn();
    wait_for_watch(api, 1);
    running
}

/// Waits until kubexit has a watch open on the pod.
fn wait_for_watch(api: &ApiServer, count: usize) {
    eventually("a watch of the pod", || api.watches() >= count);
}

#[test]
fn ready_at_the_first_list() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", READY), ("client", NOT_READY)], &[])));
    let run = client(&yard, &api).run();
    assert_started(run);
    assert_eq!(api.lists(), 1);
    let first = &api.requests()[0];
    assert!(
        first.starts_with("/api/v1/namespaces/batch/pods?")
            && first.contains("fieldSelector=metadata.name%3Djob-abc"),
        "{first}"
    );
}

#[test]
fn ready_after_a_modified_event_without_polling() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)], &[])));
    let running = client(&yard, &api).spawn();
    wait_for_watch(&api, 1);
    running.wait_for_log("server (running, not ready)");
    assert_eq!(running.stdout(), "");
    api.update(pod(&[("server", READY)], &[]));
    let run = running.finish();
    assert_started(run);
    // One list and one watch: news came from the watch, not from polling.
    assert_eq!((api.lists(), api.watches()), (1, 1), "{:?}", api.requests());
    let watch = api.requests()[1].clone();
    assert!(watch.contains("resourceVersion=1"), "{watch}");
}

#[test]
fn a_native_sidecar_in_init_container_statuses_counts() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(
        &[("client", NOT_READY)],
        &[("server", Container::Waiting, true)],
    )));
    let running = client(&yard, &api).spawn();
    wait_for_watch(&api, 1);
    running.wait_for_log("server (waiting: ContainerCreating)");
    api.update(pod(&[("client", NOT_READY)], &[("server", READY, true)]));
    assert_started(running.finish());
}

#[test]
fn a_watch_the_server_ends_is_resumed_from_the_last_version() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", Container::Waiting)], &[])));
    let running = client(&yard, &api).spawn();
    wait_for_watch(&api, 1);
    api.update(pod(&[("server", NOT_READY)], &[]));
    running.wait_for_log("server (running, not ready)");
    api.end_watches();
    wait_for_watch(&api, 2);
    api.update(pod(&[("server", READY)], &[]));
    assert_started(running.finish());
    let requests = api.requests();
    assert_eq!(
        api.lists(),
        1,
        "a resumed watch needs no list: {requests:?}"
    );
    // The second watch starts where the first one left off (version 2).
    assert!(requests[2].contains("resourceVersion=2"), "{requests:?}");
}

#[test]
fn gone_410_means_listing_again() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)], &[])));
    let running = client(&yard, &api)
        .env("KUBEXIT_LOG_LEVEL", "debug")
        .spawn();
    wait_for_watch(&api, 1);
    // The change is only visible to a new list: a client that resumed the
    // watch instead would never see it.
    api.expire_with(pod(&[("server", READY)], &[]));
    let run = running.finish();
    assert!(run.stderr.contains("410 Gone"), "{}", run.stderr);
    assert_started(run);
    assert_eq!(api.lists(), 2, "{:?}", api.requests());
}

#[test]
fn forbidden_is_explained_once_then_retried_with_backoff() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", READY)], &[])));
    api.refuse(403);
    let running = client(&yard, &api).spawn();
    running.wait_for_log("403 Forbidden");
    eventually("a few retries", || api.requests().len() >= 3);
    let log = running.stderr();
    assert!(
        log.contains("get, list and watch pods in namespace batch")
            && log.contains("Role")
            && log.contains("RoleBinding"),
        "{log}"
    );
    api.serve_normally();
    let run = running.finish();
    assert_eq!(
        run.stderr.matches("403 Forbidden").count(),
        1,
        "said once, not at every retry:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("answers again"), "{}", run.stderr);
    assert_started(run);
    // Backoff, not a busy loop: a handful of attempts in the time taken.
    assert!(api.requests().len() < 30, "{:?}", api.requests());
}

#[test]
fn a_pod_that_is_not_there_is_said_clearly_and_ends_in_the_timeout() {
    let yard = Yard::new();
    let api = ApiServer::start(None);
    let run = client(&yard, &api).env("KUBEXIT_BIRTH_TIMEOUT", "2s").run();
    assert_never_started(&run, &yard, 1);
    assert!(
        run.stderr
            .contains("pod batch/job-abc is not in the list of pods; check KUBEXIT_POD_NAME"),
        "{}",
        run.stderr
    );
    // The timeout's message names the dependency and the API's trouble.
    assert!(
        run.stderr
            .contains("birth dependencies not ready after 2s: server (pod not seen yet)")
            && run
                .stderr
                .contains("last Kubernetes API error: pod batch/job-abc"),
        "{}",
        run.stderr
    );
    assert!(api.lists() >= 2, "retried: {:?}", api.requests());
}

#[test]
fn not_found_404_is_said_clearly() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", READY)], &[])));
    api.refuse(404);
    let run = client(&yard, &api).env("KUBEXIT_BIRTH_TIMEOUT", "1s").run();
    assert_never_started(&run, &yard, 1);
    assert!(
        run.stderr.contains(
            "pod batch/job-abc was not found (404: namespaces \"batch\" not found); \
             check KUBEXIT_POD_NAME and KUBEXIT_NAMESPACE"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn the_timeout_names_what_is_still_awaited() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)], &[])));
    let run = client(&yard, &api)
        .env("KUBEXIT_BIRTH_DEPS", "server,sidecar")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1s")
        .run();
    assert_never_started(&run, &yard, 1);
    assert!(
        run.stderr.contains(
            "birth dependencies not ready after 1s: server (running, not ready), \
             sidecar (not a container of pod batch/job-abc; its containers: server)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_dependency_that_ended_for_good_fails_fast() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)], &[])));
    let running = waiting(&mut client(&yard, &api), &api);
    // restartPolicy Never: a terminated container will never be ready.
    api.update(pod(&[("server", Container::Terminated(3))], &[]));
    let run = running.finish();
    assert_never_started(&run, &yard, 1);
    assert!(
        run.stderr.contains("Birth dependency died: server"),
        "{}",
        run.stderr
    );
}

#[test]
fn sigterm_during_the_wait_means_the_child_never_starts() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)], &[])));
    let running = waiting(&mut client(&yard, &api), &api);
    running.signal(Signal::SIGTERM);
    let run = running.finish();
    assert_never_started(&run, &yard, 128 + 15);
    assert!(
        run.stderr.contains("Received signal: SIGTERM"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_death_dependency_dying_during_the_wait_ends_it() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)], &[])));
    let running = waiting(client(&yard, &api).env("KUBEXIT_DEATH_DEPS", "main"), &api);
    yard.bury("main");
    let run = running.finish();
    assert_never_started(&run, &yard, 0);
    assert!(run.stderr.contains("New death: main"), "{}", run.stderr);
}

#[test]
fn outside_a_cluster_exits_1_at_once() {
    let yard = Yard::new();
    // A long timeout: the harness's deadline fails the test if kubexit
    // waited for it.
    let run = kubexit()
        .env("KUBEXIT_NAME", "client")
        .env("KUBEXIT_GRAVEYARD", yard.path())
        .env("KUBEXIT_POD_NAME", "job-abc")
        .env("KUBEXIT_BIRTH_DEPS", "server")
        .env("KUBEXIT_BIRTH_TIMEOUT", "1h")
        .sh("echo started")
        .run();
    assert_never_started(&run, &yard, 1);
    assert!(
        run.stderr.contains(
            "KUBEXIT_POD_NAME is set, but kubexit is not running in a Kubernetes cluster"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreachable_api_server_is_said_and_retried() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", READY)], &[])));
    let mut k = client(&yard, &api);
    // Nothing listens on this port.
    k.env("KUBERNETES_SERVICE_PORT", util::free_port().to_string())
        .env("KUBEXIT_BIRTH_TIMEOUT", "2s");
    let run = k.run();
    assert_never_started(&run, &yard, 1);
    assert_eq!(
        run.stderr
            .matches("Warning: cannot reach the Kubernetes API at https://127.0.0.1:")
            .count(),
        1,
        "said once when it happens, not at every retry:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "not ready after 2s: server (pod not seen yet); last Kubernetes API error: \
             cannot reach the Kubernetes API"
        ),
        "{}",
        run.stderr
    );
    // kubexit says it in its own words; the client library's own error
    // events stay out of the log at the default level.
    assert!(!run.stderr.contains("failed with error"), "{}", run.stderr);
}

#[test]
fn the_namespace_comes_from_the_service_account_and_ipv6_works() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        panic!("this test needs IPv6 loopback (::1)");
    }
    let yard = Yard::new();
    let api = ApiServer::start_on("::1", Some(pod(&[("server", READY)], &[])));
    let mut k = client(&yard, &api);
    k.env_remove("KUBEXIT_NAMESPACE");
    let run = k.run();
    assert!(
        run.stderr
            .contains("Watching pod batch/job-abc at https://[::1]:"),
        "{}",
        run.stderr
    );
    assert_started(run);
}

#[test]
fn a_wrong_token_is_refused_and_said() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", READY)], &[])));
    fs::write(api.account_dir().join("token"), "not-the-token").unwrap();
    let run = client(&yard, &api).env("KUBEXIT_BIRTH_TIMEOUT", "1s").run();
    assert_never_started(&run, &yard, 1);
    assert!(run.stderr.contains("401 Unauthorized"), "{}", run.stderr);
}

/// The kubelet rotates projected service account tokens; kubexit reads
/// the token file again (the client reloads it once its copy is 50 s old),
/// so a long wait survives a rotation. Slow by nature: about a minute.
#[test]
fn a_rotated_token_is_read_again() {
    let yard = Yard::new();
    let api = ApiServer::start(Some(pod(&[("server", NOT_READY)], &[])));
    let running = waiting(&mut client(&yard, &api), &api);
    api.rotate_token("rotated-token");
    // The open watch ends; every new request with the old token is refused.
    api.end_watches();
    let deadline = Instant::now() + Duration::from_secs(150);
    while !api.tokens().iter().any(|t| t == "rotated-token") {
        assert!(
            Instant::now() < deadline,
            "the rotated token was never used: {:?}\n{}",
            api.tokens(),
            running.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    running.wait_for_log("401 Unauthorized");
    api.update(pod(&[("server", READY)], &[]));
    let run = running.finish();
    assert_eq!(
        run.stderr.matches("Warning: 401 Unauthorized").count(),
        1,
        "said once, then retried quietly:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the Kubernetes API answers again"),
        "{}",
        run.stderr
    );
    assert_started(run);
}
